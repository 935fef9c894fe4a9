//! FUSE passthrough: the kernel serves reads and writes of an open file straight from its
//! backing file, so data never crosses /dev/fuse.
//!
//! The kernel accepts one backing file per inode at a time: every open of an inode must name
//! the same registered backing file while any of them is open, and an inode cannot have
//! passthrough and cached opens at once (the kernel fails the open with EIO). So this table
//! keeps, per node, the backing file registered for it (shared by all its opens, released with
//! the last) or the fact that it is open in cached mode (when the kernel refused a backing
//! file), and new opens follow suit.
//!
//! A registered backing file is reused only for an open of the very same file (same device
//! and inode): after a copy-up or link break the node's file changes, and an open must never
//! be given the old one — a writer would write into a store object. The union makes sure the
//! kernel never needs two at once: a file replaced while open moves its name to a new node
//! (`NodeTable::supersede`).

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use fuser::BackingId;

use crate::inode::NodeId;
use crate::shard::Sharded;
use crate::sys;

/// How an open is answered.
pub enum Mode {
    Passthrough(Arc<BackingId>),
    Cached,
}

enum NodeBacking {
    Passthrough {
        file: (u64, u64),
        id: Weak<BackingId>,
    },
    Cached {
        opens: usize,
    },
}

/// An open's share: a reference to the backing file, or to the node's cached mode.
enum Held {
    Passthrough(Arc<BackingId>),
    Cached,
}

#[derive(Default)]
pub struct Backings {
    enabled: AtomicBool,
    by_node: Sharded<NodeId, NodeBacking>,
    by_handle: Sharded<u64, (NodeId, Held)>,
    refusal_reported: AtomicBool,
}

impl Backings {
    /// Called once the kernel agreed to passthrough.
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::SeqCst);
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::SeqCst)
    }

    /// Decides how open `fh` of `node`, on `file`, is answered, registering a backing file
    /// with `register` when the node has none for this file.
    pub fn open(
        &self,
        node: NodeId,
        fh: u64,
        file: &File,
        register: impl FnOnce(&File) -> io::Result<BackingId>,
    ) -> Mode {
        if !self.enabled() {
            return Mode::Cached;
        }
        let identity = match sys::fstat(file.as_fd()) {
            Ok(st) => (st.dev, st.ino),
            Err(e) => {
                self.report_refusal(&e);
                return self.hold_cached(node, fh);
            }
        };
        let mode = self.by_node.with_mut(&node, |nodes| {
            match nodes.get_mut(&node) {
                Some(NodeBacking::Cached { opens }) if *opens > 0 => {
                    // The kernel has this inode in cached mode: passthrough would fail.
                    *opens += 1;
                    return Mode::Cached;
                }
                Some(NodeBacking::Passthrough { file, id }) if *file == identity => {
                    if let Some(id) = id.upgrade() {
                        return Mode::Passthrough(id);
                    }
                }
                _ => {}
            }
            match register(file) {
                Ok(id) => {
                    let id = Arc::new(id);
                    nodes.insert(
                        node,
                        NodeBacking::Passthrough {
                            file: identity,
                            id: Arc::downgrade(&id),
                        },
                    );
                    Mode::Passthrough(id)
                }
                Err(e) => {
                    self.report_refusal(&e);
                    nodes.insert(node, NodeBacking::Cached { opens: 1 });
                    Mode::Cached
                }
            }
        });
        let held = match &mode {
            Mode::Passthrough(id) => Held::Passthrough(id.clone()),
            Mode::Cached => Held::Cached,
        };
        self.by_handle.insert(fh, (node, held));
        mode
    }

    fn hold_cached(&self, node: NodeId, fh: u64) -> Mode {
        self.by_node
            .with_mut(&node, |nodes| match nodes.get_mut(&node) {
                Some(NodeBacking::Cached { opens }) => *opens += 1,
                _ => {
                    nodes.insert(node, NodeBacking::Cached { opens: 1 });
                }
            });
        self.by_handle.insert(fh, (node, Held::Cached));
        Mode::Cached
    }

    /// The kernel closed `fh`: its share of the backing file (or of cached mode) goes.
    pub fn release(&self, fh: u64) {
        let Some((node, held)) = self.by_handle.remove(&fh) else {
            return;
        };
        match held {
            Held::Passthrough(id) => {
                // Dropping the last reference closes the backing file in the kernel.
                drop(id);
                self.by_node.remove_if(
                    &node,
                    |b| matches!(b, NodeBacking::Passthrough { id, .. } if id.strong_count() == 0),
                );
            }
            Held::Cached => {
                self.by_node.with_mut(&node, |nodes| {
                    if let Some(NodeBacking::Cached { opens }) = nodes.get_mut(&node) {
                        *opens = opens.saturating_sub(1);
                        if *opens == 0 {
                            nodes.remove(&node);
                        }
                    }
                });
            }
        }
    }

    /// Backing files currently registered (for statistics and leak checks).
    pub fn registered(&self) -> usize {
        self.by_node
            .count(|b| matches!(b, NodeBacking::Passthrough { id, .. } if id.strong_count() > 0))
    }

    fn report_refusal(&self, e: &io::Error) {
        if !self.refusal_reported.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                error = %e,
                "the kernel refused a passthrough backing file; such files are served through \
                 the daemon (reported once)"
            );
        } else {
            tracing::debug!(error = %e, "passthrough refused");
        }
    }
}
