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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use fuser::BackingId;

use crate::inode::NodeId;
use crate::shard::Sharded;

/// How an open is answered.
pub enum Mode {
    Passthrough(Arc<BackingId>),
    /// Through the daemon and the kernel's page cache of the inode; `keep_cache` says whether
    /// what that cache holds is still the file's content.
    Cached {
        keep_cache: bool,
    },
}

/// What an open asks for.
pub struct OpenRequest<'a> {
    pub node: NodeId,
    pub fh: u64,
    pub file: &'a File,
    /// (device, inode) of `file`: a backing file is shared only by opens of the same file.
    pub identity: (u64, u64),
    pub writable: bool,
    /// Passthrough is worth it for this open (a writer, or a large enough file).
    pub wants_passthrough: bool,
}

enum NodeBacking {
    Passthrough {
        file: (u64, u64),
        id: Weak<BackingId>,
        /// Written through passthrough: the inode's page cache (from an earlier cached open)
        /// no longer matches the file.
        wrote: bool,
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
    /// Nodes whose kernel page cache went stale while they were in passthrough mode.
    stale_cache: Sharded<NodeId, ()>,
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

    /// Decides how an open is answered, registering a backing file with `register` when it
    /// goes through passthrough and the node has none for this file. The node's current mode
    /// wins over what the open would like: the kernel cannot mix them on one inode.
    pub fn open(
        &self,
        req: OpenRequest<'_>,
        register: impl FnOnce(&File) -> io::Result<BackingId>,
    ) -> Mode {
        let node = req.node;
        let mode = self.by_node.with_mut(&node, |nodes| {
            match nodes.get_mut(&node) {
                Some(NodeBacking::Cached { opens }) if *opens > 0 => {
                    *opens += 1;
                    return Mode::Cached { keep_cache: true };
                }
                Some(NodeBacking::Passthrough { file, id, wrote }) => match id.upgrade() {
                    Some(id) if *file == req.identity => {
                        *wrote |= req.writable;
                        return Mode::Passthrough(id);
                    }
                    Some(_) => tracing::warn!(
                        node,
                        "an inode's file changed while it was open through passthrough"
                    ),
                    None => {}
                },
                _ => {}
            }
            if req.wants_passthrough && self.enabled() {
                match register(req.file) {
                    Ok(id) => {
                        let id = Arc::new(id);
                        nodes.insert(
                            node,
                            NodeBacking::Passthrough {
                                file: req.identity,
                                id: Arc::downgrade(&id),
                                wrote: req.writable,
                            },
                        );
                        return Mode::Passthrough(id);
                    }
                    Err(e) => self.report_refusal(&e),
                }
            }
            nodes.insert(node, NodeBacking::Cached { opens: 1 });
            Mode::Cached {
                keep_cache: self.stale_cache.remove(&node).is_none(),
            }
        });
        let held = match &mode {
            Mode::Passthrough(id) => Held::Passthrough(id.clone()),
            Mode::Cached { .. } => Held::Cached,
        };
        self.by_handle.insert(req.fh, (node, held));
        mode
    }

    /// The kernel closed `fh`: its share of the backing file (or of cached mode) goes.
    pub fn release(&self, fh: u64) {
        let Some((node, held)) = self.by_handle.remove(&fh) else {
            return;
        };
        self.by_node.with_mut(&node, |nodes| {
            match (held, nodes.get_mut(&node)) {
                (Held::Passthrough(id), Some(NodeBacking::Passthrough { wrote, .. })) => {
                    // Dropping the last reference closes the backing file in the kernel.
                    let last = Arc::strong_count(&id) == 1;
                    let wrote = *wrote;
                    drop(id);
                    if last {
                        nodes.remove(&node);
                        if wrote {
                            self.stale_cache.insert(node, ());
                        }
                    }
                }
                (Held::Cached, Some(NodeBacking::Cached { opens })) => {
                    *opens = opens.saturating_sub(1);
                    if *opens == 0 {
                        nodes.remove(&node);
                    }
                }
                // The node moved on to another backing file meanwhile: nothing of ours is left.
                _ => {}
            }
        });
    }

    /// Forgets a node the kernel forgot.
    pub fn forget(&self, node: NodeId) {
        self.stale_cache.remove(&node);
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
