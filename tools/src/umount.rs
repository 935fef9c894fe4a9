//! `cowfs umount`: unmounts a cowfs union; its daemon then exits.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

/// Unmount a cowfs union (its daemon exits once the kernel lets it go).
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Detach now even if busy; the union goes away when its last user does.
    #[arg(short, long)]
    pub lazy: bool,
    /// The mountpoint.
    pub mountpoint: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let socket = args
        .mountpoint
        .canonicalize()
        .ok()
        .map(|m| cowfs_fs::control::socket_path(&m));
    cowfs_fs::mount::unmount(&args.mountpoint, args.lazy).context("umount failed")?;
    // Give the daemon a moment to exit, so that a remount right away finds everything clean.
    // A daemon that was killed answers no more: its socket is stale, remove it.
    if let Some(socket) = socket
        && !args.lazy
    {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            match std::os::unix::net::UnixStream::connect(&socket) {
                Ok(_) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    let _ = std::fs::remove_file(&socket);
                    break;
                }
                Err(_) => break,
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
