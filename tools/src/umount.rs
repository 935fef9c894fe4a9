//! `cowfs umount`: unmounts a cowfs union; its daemon then exits.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};

/// Unmount a cowfs union (its daemon exits once the kernel lets it go).
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Detach now even if busy; the union goes away when its last user does.
    #[arg(short, long)]
    pub lazy: bool,
    /// For a daemon that died or hangs: abort the FUSE connection (every request waiting on it
    /// fails with ECONNABORTED instead of hanging), then unmount, lazily if busy.
    #[arg(short, long, conflicts_with = "lazy")]
    pub force: bool,
    /// The mountpoint.
    pub mountpoint: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.force {
        force(&args.mountpoint)?;
        return Ok(ExitCode::SUCCESS);
    }
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

/// `umount2(MNT_FORCE)`, which for FUSE aborts the connection before unmounting, then a lazy
/// unmount if the mount is still busy.
///
/// Why it is needed: a daemon killed while its invalidation thread waits in the kernel for a
/// directory lock (held by a request that waits for the daemon's answer) cannot finish dying,
/// so its /dev/fuse descriptors are never closed and the kernel never aborts the connection by
/// itself; the waiting guest processes hang unkillably until something aborts it. The mount
/// itself is never stat'ed here: on such a connection any request would hang too.
fn force(mountpoint: &Path) -> anyhow::Result<()> {
    let abs = if mountpoint.is_absolute() {
        mountpoint.to_path_buf()
    } else {
        std::env::current_dir()
            .context("current directory")?
            .join(mountpoint)
    };
    let (Some(parent), Some(name)) = (abs.parent(), abs.file_name()) else {
        bail!("{} is not a mountpoint", abs.display());
    };
    let mnt = parent
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", parent.display()))?
        .join(name);
    let table = cowfs_fs::mount::mounts().context("cannot read the mount table")?;
    match table.iter().rev().find(|m| m.mountpoint == mnt) {
        Some(m) if m.fstype == cowfs_fs::mount::FSTYPE => {}
        Some(m) => bail!(
            "{} is not a cowfs mount (it is {})",
            mnt.display(),
            m.fstype
        ),
        None => bail!(
            "{} is not a cowfs mount (nothing is mounted there)",
            mnt.display()
        ),
    }
    use nix::mount::{MntFlags, umount2};
    match umount2(&mnt, MntFlags::MNT_FORCE) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EBUSY) => umount2(&mnt, MntFlags::MNT_DETACH)
            .with_context(|| format!("lazy unmount of {} failed", mnt.display())),
        Err(e) => Err(e).with_context(|| format!("forced unmount of {} failed", mnt.display())),
    }
}
