//! Counters of the requests the kernel sends, per kind, so a benchmark or a test can prove what
//! reaches the daemon (with passthrough, no READ or WRITE should) instead of assuming it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// A kind of request, or an event of the kernel fast path worth counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Lookup,
    Forget,
    Getattr,
    Setattr,
    Readlink,
    Mknod,
    Mkdir,
    Unlink,
    Rmdir,
    Symlink,
    Rename,
    Link,
    Open,
    Read,
    Write,
    Flush,
    Release,
    Fsync,
    Opendir,
    Readdir,
    Readdirplus,
    Releasedir,
    Fsyncdir,
    Statfs,
    Setxattr,
    Getxattr,
    Listxattr,
    Removexattr,
    Access,
    Create,
    Fallocate,
    Lseek,
    CopyFileRange,
    /// Opens (and creates) answered with a passthrough backing file.
    PassthroughOpen,
    /// Backing files registered with the kernel (one per inode while it is open).
    BackingRegistered,
    /// Opens answered without passthrough (disabled, or refused by the kernel).
    CachedOpen,
}

impl Op {
    const ALL: [Op; 36] = [
        Op::Lookup,
        Op::Forget,
        Op::Getattr,
        Op::Setattr,
        Op::Readlink,
        Op::Mknod,
        Op::Mkdir,
        Op::Unlink,
        Op::Rmdir,
        Op::Symlink,
        Op::Rename,
        Op::Link,
        Op::Open,
        Op::Read,
        Op::Write,
        Op::Flush,
        Op::Release,
        Op::Fsync,
        Op::Opendir,
        Op::Readdir,
        Op::Readdirplus,
        Op::Releasedir,
        Op::Fsyncdir,
        Op::Statfs,
        Op::Setxattr,
        Op::Getxattr,
        Op::Listxattr,
        Op::Removexattr,
        Op::Access,
        Op::Create,
        Op::Fallocate,
        Op::Lseek,
        Op::CopyFileRange,
        Op::PassthroughOpen,
        Op::BackingRegistered,
        Op::CachedOpen,
    ];

    /// The name in reports: the FUSE opcode's name in lower case.
    pub fn name(self) -> &'static str {
        match self {
            Op::Lookup => "lookup",
            Op::Forget => "forget",
            Op::Getattr => "getattr",
            Op::Setattr => "setattr",
            Op::Readlink => "readlink",
            Op::Mknod => "mknod",
            Op::Mkdir => "mkdir",
            Op::Unlink => "unlink",
            Op::Rmdir => "rmdir",
            Op::Symlink => "symlink",
            Op::Rename => "rename",
            Op::Link => "link",
            Op::Open => "open",
            Op::Read => "read",
            Op::Write => "write",
            Op::Flush => "flush",
            Op::Release => "release",
            Op::Fsync => "fsync",
            Op::Opendir => "opendir",
            Op::Readdir => "readdir",
            Op::Readdirplus => "readdirplus",
            Op::Releasedir => "releasedir",
            Op::Fsyncdir => "fsyncdir",
            Op::Statfs => "statfs",
            Op::Setxattr => "setxattr",
            Op::Getxattr => "getxattr",
            Op::Listxattr => "listxattr",
            Op::Removexattr => "removexattr",
            Op::Access => "access",
            Op::Create => "create",
            Op::Fallocate => "fallocate",
            Op::Lseek => "lseek",
            Op::CopyFileRange => "copy_file_range",
            Op::PassthroughOpen => "passthrough_opens",
            Op::BackingRegistered => "backing_files_registered",
            Op::CachedOpen => "cached_opens",
        }
    }

    /// Whether this counts kernel requests (the rest count fast-path events).
    pub fn is_request(self) -> bool {
        !matches!(
            self,
            Op::PassthroughOpen | Op::BackingRegistered | Op::CachedOpen
        )
    }
}

/// Whether a counter name (as in [`RequestStats::snapshot`]) counts kernel requests.
pub fn is_request_name(name: &str) -> bool {
    Op::ALL
        .iter()
        .any(|op| op.is_request() && op.name() == name)
}

pub struct RequestStats {
    counts: [AtomicU64; Op::ALL.len()],
}

impl Default for RequestStats {
    fn default() -> Self {
        RequestStats {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl RequestStats {
    pub fn count(&self, op: Op) {
        self.counts[op as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, op: Op) -> u64 {
        self.counts[op as usize].load(Ordering::Relaxed)
    }

    /// Every counter by name (zeros included, so reports have stable columns).
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        Op::ALL
            .iter()
            .map(|&op| (op.name().to_string(), self.get(op)))
            .collect()
    }

    /// Kernel requests received in all.
    pub fn requests(&self) -> u64 {
        Op::ALL
            .iter()
            .filter(|op| op.is_request())
            .map(|&op| self.get(op))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_has_its_own_counter_and_name() {
        let stats = RequestStats::default();
        for (i, op) in Op::ALL.iter().enumerate() {
            assert_eq!(*op as usize, i, "{op:?} is out of order in Op::ALL");
            for _ in 0..=i {
                stats.count(*op);
            }
        }
        let snap = stats.snapshot();
        assert_eq!(snap.len(), Op::ALL.len(), "names must be unique");
        for (i, op) in Op::ALL.iter().enumerate() {
            assert_eq!(snap[op.name()], i as u64 + 1);
        }
        let requests: u64 = (1..=Op::ALL.len() as u64 - 3).sum();
        assert_eq!(stats.requests(), requests);
    }
}
