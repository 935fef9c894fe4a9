//! The store lock: `flock(2)` on `STORE/lock`. Inserters, collectors and readers share it;
//! fsck and format changes take it exclusively, so they never see a half-done insert.

use std::fs::{File, OpenOptions};
use std::path::Path;

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
    _lock: Flock<File>,
    mode: LockMode,
}

impl StoreLock {
    /// Takes the lock of the store at `root` without waiting; `Error::Locked` if a conflicting
    /// holder exists.
    pub fn acquire(root: &Path, mode: LockMode) -> Result<StoreLock> {
        let path = root.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .at(&path)?;
        let arg = match mode {
            LockMode::Shared => FlockArg::LockSharedNonblock,
            LockMode::Exclusive => FlockArg::LockExclusiveNonblock,
        };
        match Flock::lock(file, arg) {
            Ok(lock) => Ok(StoreLock { _lock: lock, mode }),
            Err((_, Errno::EWOULDBLOCK)) => Err(Error::Locked(root.to_path_buf())),
            Err((_, e)) => Err(e).at(&path),
        }
    }

    /// The mode this lock was taken in.
    pub fn mode(&self) -> LockMode {
        self.mode
    }
}
