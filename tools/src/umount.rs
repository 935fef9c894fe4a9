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
    // Give the daemon a moment to exit so that a remount right away finds everything clean.
    if let Some(socket) = socket
        && !args.lazy
    {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while socket.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(ExitCode::SUCCESS)
}
