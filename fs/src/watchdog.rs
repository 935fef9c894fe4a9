//! A small process that ends a dead daemon's FUSE connection.
//!
//! A daemon killed while one of its threads waits in the kernel (sending a cache invalidation
//! waits for the directory lock that a request holds while it waits for the daemon's answer)
//! cannot finish dying: its `/dev/fuse` descriptors stay open, so the kernel never aborts the
//! connection, and every guest process touching the mount hangs, unkillable. The watchdog,
//! forked before the daemon starts any thread, sees the daemon's main thread gone (a zombie
//! leader) and aborts the connection through fusectl; the stuck thread then returns and the
//! daemon is gone. On a clean end the daemon says so and the watchdog leaves quietly.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::unistd::{ForkResult, Pid};

/// Where the kernel's FUSE control filesystem lists connections.
const FUSECTL: &str = "/sys/fs/fuse/connections";

/// The daemon's end: tells the watchdog what to guard and when it may leave.
pub struct Watchdog {
    to_watchdog: File,
}

impl Watchdog {
    /// Forks the watchdog process.
    ///
    /// # Safety
    /// The calling process must be single-threaded (the child runs ordinary Rust code).
    pub unsafe fn start() -> io::Result<Watchdog> {
        let (read_end, write_end) = nix::unistd::pipe()?;
        let daemon = nix::unistd::getpid();
        // SAFETY: the caller guarantees that no other thread exists.
        match unsafe { nix::unistd::fork() }? {
            ForkResult::Parent { .. } => {
                drop(read_end);
                Ok(Watchdog {
                    to_watchdog: File::from(write_end),
                })
            }
            ForkResult::Child => {
                drop(write_end);
                let code = watch(read_end, daemon);
                std::process::exit(code)
            }
        }
    }

    /// The mount is ready: guard its connection. (From the mount table: a `stat` of the mount
    /// would wait for the daemon, which does not serve yet.)
    pub fn guard(&mut self, mountpoint: &Path) -> io::Result<()> {
        let table = crate::mount::mounts()?;
        let entry = table
            .iter()
            .rev()
            .find(|m| m.mountpoint == mountpoint && m.fstype == crate::mount::FSTYPE)
            .ok_or_else(|| io::Error::other("the mount is not in the mount table"))?;
        let (major, minor) = entry.dev;
        // fusectl names a connection by the kernel's encoding of the device number.
        writeln!(
            self.to_watchdog,
            "dev {}",
            (u64::from(major) << 20) | u64::from(minor)
        )
    }

    /// The daemon ends cleanly: the watchdog leaves without touching anything.
    pub fn release(mut self) {
        let _ = writeln!(self.to_watchdog, "bye");
    }
}

/// The watchdog's loop: returns its exit code.
fn watch(from_daemon: OwnedFd, daemon: Pid) -> i32 {
    // Told apart from the daemon in `ps` (it shares the daemon's command line).
    let _ = nix::sys::prctl::set_name(c"cowfs-watchdog");
    // Hold nothing of the daemon's: its descriptors are what must close when it dies, and a
    // caller reading `cowfs mount`'s output waits for every copy of its stdout to close.
    let keep = from_daemon.as_raw_fd() as u32;
    // SAFETY: closing descriptors this process never uses again; `keep` stays open.
    unsafe {
        if keep > 3 {
            libc::close_range(3, keep - 1, 0);
        }
        libc::close_range(keep + 1, u32::MAX, 0);
    }
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let _ = nix::unistd::dup2_stdin(null.as_fd());
        let _ = nix::unistd::dup2_stdout(null.as_fd());
        let _ = nix::unistd::dup2_stderr(null.as_fd());
    }
    let mut lines = BufReader::new(File::from(from_daemon));
    let mut connection: Option<u64> = None;
    loop {
        let ready = {
            let fd = lines.get_ref().as_fd();
            let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
            poll(&mut fds, PollTimeout::from(200u16)).unwrap_or(0)
        };
        if ready > 0 {
            let mut line = String::new();
            match lines.read_line(&mut line) {
                // Every descriptor of the daemon is closed: it is gone, and so is its
                // connection.
                Ok(0) | Err(_) => return 0,
                Ok(_) => match line.trim().split_once(' ') {
                    Some(("dev", n)) => connection = n.parse().ok(),
                    _ if line.trim() == "bye" => return 0,
                    _ => {}
                },
            }
            continue;
        }
        if main_thread_exited(daemon) {
            if let Some(conn) = connection {
                abort(conn);
            }
            return 0;
        }
    }
}

/// Whether the daemon's main thread is gone while the process lingers (a zombie leader), or
/// the process is gone altogether.
fn main_thread_exited(daemon: Pid) -> bool {
    match std::fs::read_to_string(format!("/proc/{daemon}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state == 'Z' || state == 'X'),
        Err(_) => true,
    }
}

/// Aborts FUSE connection `conn`: every waiting request fails, and the daemon's stuck thread
/// can return.
fn abort(conn: u64) {
    let dir = PathBuf::from(FUSECTL).join(conn.to_string());
    if !dir.exists() {
        // fusectl not mounted yet (it is not, on some systems).
        let _ = nix::mount::mount(
            Some("fusectl"),
            FUSECTL,
            Some("fusectl"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        );
    }
    let abort = dir.join("abort");
    if std::fs::write(&abort, b"1").is_err() {
        // Gone meanwhile: the connection ended by itself.
        return;
    }
    // The daemon needs a moment to finish dying once its thread returns.
    std::thread::sleep(Duration::from_millis(100));
}
