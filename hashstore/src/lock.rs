//! The store lock: `flock(2)` on `STORE/lock`. Inserters, collectors and readers share it;
//! fsck and format changes take it exclusively, so they never see a half-done insert. `init`
//! holds it exclusively while it creates a store, so concurrent inits and opens wait for a
//! complete store instead of seeing a half-made one.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, IoContext, Result};
use crate::layout::LOCK_FILE;

/// How the store is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    /// Inserting, collecting, reading: any number at once.
    Shared,
    /// Rebuilding the index or changing the format: alone.
    Exclusive,
}

/// A held store lock; released on drop (or when the process dies).
#[derive(Debug)]
pub struct StoreLock {
    lock: Flock<File>,
    mode: LockMode,
}

/// What [`StoreLock::wait_for`] came back with.
#[derive(Debug)]
pub(crate) enum Waited {
    /// The lock is held.
    Held(StoreLock),
    /// The lock file does not exist (and was not to be created).
    NoLockFile,
    /// The caller's `stop` condition became true before the lock could be taken.
    Stopped,
}

fn arg(mode: LockMode) -> FlockArg {
    match mode {
        LockMode::Shared => FlockArg::LockSharedNonblock,
        LockMode::Exclusive => FlockArg::LockExclusiveNonblock,
    }
}

impl StoreLock {
    /// Takes the lock of the store at `root` without waiting; `Error::Locked` if a conflicting
    /// holder exists.
    pub fn acquire(root: &Path, mode: LockMode) -> Result<StoreLock> {
        match StoreLock::wait_for(root, mode, true, Duration::ZERO, || false)? {
            Waited::Held(lock) => Ok(lock),
            // Neither can happen with `create` set and a `stop` that never fires; say "locked"
            // rather than panic should that ever change.
            Waited::NoLockFile | Waited::Stopped => Err(Error::Locked(root.to_path_buf())),
        }
    }

    /// Takes the lock of the store at `root`, retrying for up to `patience` while a conflicting
    /// holder has it. The lock file is created if `create` is set; otherwise a missing one is
    /// [`Waited::NoLockFile`] (opening must not leave a lock file in a directory that is not a
    /// store). `stop` is asked before every retry: when it returns true the wait ends with
    /// [`Waited::Stopped`]. `Error::Locked` once `patience` is used up.
    ///
    /// flock(2) has no timeout, and a blocking wait in another thread could not be abandoned
    /// without leaking the lock to that thread, so this polls with a growing pause (1 ms up to
    /// 50 ms): the holders it waits for (a store being created) are done within milliseconds.
    pub(crate) fn wait_for(
        root: &Path,
        mode: LockMode,
        create: bool,
        patience: Duration,
        mut stop: impl FnMut() -> bool,
    ) -> Result<Waited> {
        let path = root.join(LOCK_FILE);
        let opened = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(&path);
        let mut file = match opened {
            Ok(f) => f,
            Err(e) if !create && e.kind() == io::ErrorKind::NotFound => {
                return Ok(Waited::NoLockFile);
            }
            Err(e) => return Err(e).at(&path),
        };
        let start = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            match Flock::lock(file, arg(mode)) {
                Ok(lock) => return Ok(Waited::Held(StoreLock { lock, mode })),
                Err((f, Errno::EWOULDBLOCK)) => file = f,
                Err((_, e)) => return Err(e).at(&path),
            }
            if stop() {
                return Ok(Waited::Stopped);
            }
            if start.elapsed() >= patience {
                return Err(Error::Locked(root.to_path_buf()));
            }
            std::thread::sleep(pause.min(patience.saturating_sub(start.elapsed())));
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Turns an exclusive hold into a shared one. flock(2) does not promise that the
    /// conversion is atomic: the exclusive lock may be dropped before the shared one is
    /// granted, and another process may take it exclusively in between (another `init` that
    /// then finds the store complete and converts too, or an fsck). So a refused conversion is
    /// retried for up to `patience` like any other wait.
    pub(crate) fn downgrade(&mut self, root: &Path, patience: Duration) -> Result<()> {
        if self.mode == LockMode::Shared {
            return Ok(());
        }
        let start = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            match self.lock.relock(FlockArg::LockSharedNonblock) {
                Ok(()) => {
                    self.mode = LockMode::Shared;
                    return Ok(());
                }
                Err(Errno::EWOULDBLOCK) if start.elapsed() < patience => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(Errno::EWOULDBLOCK) => return Err(Error::Locked(root.to_path_buf())),
                Err(e) => return Err(e).at(root.join(LOCK_FILE)),
            }
        }
    }

    /// The mode this lock was taken in.
    pub fn mode(&self) -> LockMode {
        self.mode
    }
}
