//! Open files and directories, by the handle (`fh`) the kernel passes back.
//!
//! An open file owns one descriptor of its backing file, fixed at open time: a reader that
//! opened a store-linked file before someone broke the link keeps reading the unchanged object,
//! and a writer always writes the private copy it was given.
//!
//! Designed for FUSE passthrough (the next step): the kernel accepts one backing file per inode,
//! so the backing id will live on the node (shared by every concurrent open, released with the
//! last one) and each `OpenFile` will only hold a reference to it; because link breaking and
//! copy-up happen before a writable open is answered, an inode never needs two backing files.

use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::inode::NodeId;
use crate::shard::Sharded;

pub struct OpenFile {
    pub node: NodeId,
    pub file: File,
    /// Opened for writing (so it already points at a private, writable copy).
    pub writable: bool,
}

/// An open directory (when the kernel opens directories at all: see `listing.rs`).
pub struct OpenDir {
    pub node: NodeId,
}

#[derive(Default)]
pub struct HandleTable {
    next: AtomicU64,
    files: Sharded<u64, Arc<OpenFile>>,
    dirs: Sharded<u64, Arc<OpenDir>>,
}

impl HandleTable {
    fn next(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn add_file(&self, file: OpenFile) -> u64 {
        let fh = self.next();
        self.files.insert(fh, Arc::new(file));
        fh
    }

    pub fn file(&self, fh: u64) -> Option<Arc<OpenFile>> {
        self.files.get(&fh)
    }

    pub fn remove_file(&self, fh: u64) -> Option<Arc<OpenFile>> {
        self.files.remove(&fh)
    }

    pub fn add_dir(&self, node: NodeId) -> u64 {
        let fh = self.next();
        self.dirs.insert(fh, Arc::new(OpenDir { node }));
        fh
    }

    pub fn dir(&self, fh: u64) -> Option<Arc<OpenDir>> {
        self.dirs.get(&fh)
    }

    pub fn remove_dir(&self, fh: u64) -> Option<Arc<OpenDir>> {
        self.dirs.remove(&fh)
    }

    /// Open files and directories (for statistics and leak checks).
    pub fn counts(&self) -> (usize, usize) {
        (self.files.len(), self.dirs.len())
    }
}
