//! The mount table as the kernel shows it to this process (/proc/self/mountinfo).

use std::path::{Path, PathBuf};

use procfs::process::{MountInfo, Process};

use crate::{Error, Result};

/// Every mount visible to this process, in mount order.
pub fn table() -> Result<Vec<MountInfo>> {
    Process::myself()
        .and_then(|p| p.mountinfo())
        .map(|m| m.0)
        .map_err(|e| Error::io("reading /proc/self/mountinfo", std::io::Error::other(e)))
}

/// Mount point of the first mount of filesystem type `fs_type` (e.g. `cgroup2`, `bpf`).
pub fn find_fs(fs_type: &str) -> Result<Option<PathBuf>> {
    Ok(table()?
        .into_iter()
        .find(|m| m.fs_type == fs_type)
        .map(|m| m.mount_point))
}

/// Whether something is mounted exactly on `path` (which should be canonical).
pub fn is_mount_point(path: &Path) -> Result<bool> {
    Ok(table()?.iter().any(|m| m.mount_point == path))
}

/// The mounts on `path` or beneath it (e.g. what a context left behind).
pub fn under(path: &Path) -> Result<Vec<PathBuf>> {
    Ok(table()?
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| p.starts_with(path))
        .collect())
}
