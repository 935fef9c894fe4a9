//! The inode table: our own node ids, the names the kernel knows them by, lookup counts.
//!
//! A node holds no file descriptor (the open-file limit here is 20,000 and guests have more
//! files than that): it remembers the (parent node, name) pairs it was reached by, and every
//! access re-resolves that path from a branch root fd. Renaming a directory therefore moves
//! its whole subtree for free.
//!
//! Node ids are allocated from a counter and never given to another file during a mount, so
//! the generation only has to distinguish mounts: it is the mount's start time. A node the
//! kernel forgets (memory pressure, `drop_caches`) leaves a small record of its name, number
//! and backing file; looking the same file up again under that name brings the same number
//! back, so inode numbers are stable for the life of the mount (git's index, incremental tar
//! and hard-link detection compare them across runs).
//!
//! A node keeps its id across copy-up and link breaking, which replace the backing file under
//! it, so the inode number a guest sees is stable. Hard links inside a branch share one node
//! (found by the backing file's identity), so that a change made through one name is seen at
//! once through the other; files linked to a store object are the exception (their links are
//! the store's, not the guest's) and get a node per name.
//!
//! Locks are sharded maps plus a small mutex per node; the order is always
//! names shard → identities shard → nodes shard → node state, and no lock is held across I/O
//! except `Node::copy_lock`, which serializes the copy-up of one node.

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::attr::FileKind;
use crate::listing::Listing;
use crate::shard::Sharded;
use crate::sys;

pub type NodeId = u64;

/// The root's node id (fixed by the FUSE protocol).
pub const ROOT: NodeId = 1;

/// One name a node is known by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Alias {
    pub parent: NodeId,
    pub name: OsString,
}

/// The identity of a backing file within one branch: hard links share it. (The branch is part
/// of it because a node's place is per node: two branches on one filesystem may share inodes,
/// but a node must be reachable by every name it has in the branch it lives in.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    pub branch: usize,
    pub dev: u64,
    pub ino: u64,
}

/// Where a node lives, computed for one branch-set epoch: `layers[0]` is the branch answering
/// for it; a directory also merges the other layers.
///
/// `stamp` orders the facts a place was computed from: the union's change counter as read
/// *before* looking (for a lookup), or as advanced *after* changing the branches (copy-up,
/// rename, creation). A place never replaces one with a newer stamp, so a lookup that raced
/// with a copy-up cannot put the pre-copy location back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    pub epoch: u64,
    pub stamp: u64,
    pub layers: Arc<[usize]>,
}

impl Place {
    pub fn new(epoch: u64, stamp: u64, layers: Vec<usize>) -> Place {
        Place {
            epoch,
            stamp,
            layers: layers.into(),
        }
    }

    pub fn branch(&self) -> usize {
        self.layers.first().copied().unwrap_or(0)
    }
}

#[derive(Default)]
struct NodeState {
    aliases: Vec<Alias>,
    place: Option<Place>,
    identity: Option<Identity>,
    open_handles: Vec<u64>,
    /// The node that took over this node's name when its file was replaced while open (see
    /// [`NodeTable::supersede`]).
    successor: Option<NodeId>,
    /// (device, inode) of the backing entry, as last seen: a forgotten node's number goes
    /// back only to the same file.
    backing: Option<(u64, u64)>,
}

pub struct Node {
    pub id: NodeId,
    /// The inode number the guest sees. Equal to `id`, except for a node that took over a name
    /// from a superseded one: the guest keeps seeing the old number.
    pub ino: u64,
    pub kind: FileKind,
    lookups: AtomicU64,
    state: Mutex<NodeState>,
    /// Held while this node is copied up or its link broken, so that concurrent writers make
    /// exactly one copy.
    pub copy_lock: Mutex<()>,
    /// A directory's listing as last read from the branches (see `listing.rs`).
    pub listing: Mutex<Option<Arc<Listing>>>,
}

impl Node {
    fn new(id: NodeId, kind: FileKind, lookups: u64) -> Node {
        Node {
            id,
            ino: id,
            kind,
            lookups: AtomicU64::new(lookups),
            state: Mutex::new(NodeState::default()),
            copy_lock: Mutex::new(()),
            listing: Mutex::new(None),
        }
    }

    pub fn is_dir(&self) -> bool {
        self.kind == FileKind::Dir
    }

    pub fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }

    pub fn aliases(&self) -> Vec<Alias> {
        self.state.lock().aliases.clone()
    }

    /// The cached place, if it was computed for `epoch`.
    pub fn place(&self, epoch: u64) -> Option<Place> {
        self.state.lock().place.clone().filter(|p| p.epoch == epoch)
    }

    /// Records where the node lives, unless a newer fact is already recorded (see [`Place`]).
    pub fn set_place(&self, place: Place) {
        let mut st = self.state.lock();
        let newer = st
            .place
            .as_ref()
            .is_some_and(|p| p.epoch == place.epoch && p.stamp > place.stamp);
        if !newer {
            st.place = Some(place);
        }
    }

    pub fn identity(&self) -> Option<Identity> {
        self.state.lock().identity
    }

    pub fn add_open_handle(&self, fh: u64) {
        self.state.lock().open_handles.push(fh);
    }

    pub fn remove_open_handle(&self, fh: u64) {
        self.state.lock().open_handles.retain(|&h| h != fh);
    }

    pub fn open_handles(&self) -> Vec<u64> {
        self.state.lock().open_handles.clone()
    }

    pub fn is_open(&self) -> bool {
        !self.state.lock().open_handles.is_empty()
    }

    /// The node now answering for this one's name, if its file was replaced while open.
    pub fn successor(&self) -> Option<NodeId> {
        self.state.lock().successor
    }

    fn add_alias(&self, alias: Alias) {
        let mut st = self.state.lock();
        if !st.aliases.contains(&alias) {
            // The newest name first: it is the one the kernel is using right now.
            st.aliases.insert(0, alias);
        }
    }

    fn drop_alias(&self, alias: &Alias) {
        self.state.lock().aliases.retain(|a| a != alias);
    }
}

/// What a lookup found, as the table needs it to pick or create a node.
pub struct Found {
    pub kind: FileKind,
    pub place: Place,
    /// (device, inode) of the entry that answers.
    pub backing: Option<(u64, u64)>,
    /// Set for files that may be hard links the guest made (several names, no store mark).
    pub identity: Option<Identity>,
}

/// What remains of a forgotten node: enough to give the same file its number back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Retired {
    id: NodeId,
    ino: u64,
    kind: FileKind,
    backing: (u64, u64),
}

pub struct NodeTable {
    nodes: Sharded<NodeId, Arc<Node>>,
    names: Sharded<(NodeId, OsString), NodeId>,
    identities: Sharded<Identity, NodeId>,
    retired: Sharded<(NodeId, OsString), Retired>,
    next_id: AtomicU64,
    generation: u64,
}

impl NodeTable {
    pub fn new(generation: u64) -> NodeTable {
        let table = NodeTable {
            nodes: Sharded::default(),
            names: Sharded::default(),
            identities: Sharded::default(),
            retired: Sharded::default(),
            next_id: AtomicU64::new(ROOT + 1),
            generation,
        };
        // The kernel holds the root for the whole mount; it is never forgotten.
        table
            .nodes
            .insert(ROOT, Arc::new(Node::new(ROOT, FileKind::Dir, 1)));
        table
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn get(&self, id: NodeId) -> io::Result<Arc<Node>> {
        self.nodes.get(&id).ok_or_else(|| sys::err(libc::ESTALE))
    }

    /// The node the kernel knows as `name` in `parent`, without taking a lookup reference.
    pub fn child(&self, parent: NodeId, name: &OsStr) -> Option<Arc<Node>> {
        let id = self.names.get(&(parent, name.to_os_string()))?;
        self.nodes.get(&id).filter(|n| {
            n.state
                .lock()
                .aliases
                .iter()
                .any(|a| a.parent == parent && a.name == name)
        })
    }

    /// Records a lookup of `name` in `parent` that found `found`, and returns its node with one
    /// more lookup reference (the kernel will `forget` it).
    pub fn lookup(&self, parent: NodeId, name: &OsStr, found: Found) -> Arc<Node> {
        let key = (parent, name.to_os_string());
        let alias = Alias {
            parent,
            name: name.to_os_string(),
        };
        self.names.with_mut(&key, |names| {
            if let Some(&id) = names.get(&key) {
                let existing = self.nodes.with(&id, |n| {
                    n.filter(|n| n.kind == found.kind).map(|n| {
                        n.lookups.fetch_add(1, Ordering::Relaxed);
                        n.clone()
                    })
                });
                if let Some(node) = existing {
                    node.add_alias(alias);
                    self.refresh_identity(&node, found.identity);
                    node.set_place(found.place);
                    node.state.lock().backing = found.backing;
                    return node;
                }
                // The name now refers to something of another kind: the old node loses it.
                if let Some(old) = self.nodes.get(&id) {
                    old.drop_alias(&alias);
                }
                names.remove(&key);
            }
            // The number this name had when the kernel last forgot it, if it is the same file.
            let retired = self
                .retired
                .remove(&key)
                .filter(|r| r.kind == found.kind && Some(r.backing) == found.backing);
            let fresh = || match retired {
                Some(r) => self.revive(r),
                None => self.new_node(found.kind),
            };
            let node = match found.identity {
                Some(identity) => self.identities.with_mut(&identity, |ids| {
                    let linked = ids.get(&identity).and_then(|&id| {
                        self.nodes.with(&id, |n| {
                            n.filter(|n| n.kind == found.kind).map(|n| {
                                n.lookups.fetch_add(1, Ordering::Relaxed);
                                n.clone()
                            })
                        })
                    });
                    linked.unwrap_or_else(|| {
                        let node = fresh();
                        node.state.lock().identity = Some(identity);
                        ids.insert(identity, node.id);
                        node
                    })
                }),
                None => fresh(),
            };
            node.add_alias(alias);
            node.set_place(found.place);
            node.state.lock().backing = found.backing;
            names.insert(key.clone(), node.id);
            node
        })
    }

    fn new_node(&self, kind: FileKind) -> Arc<Node> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let node = Arc::new(Node::new(id, kind, 1));
        self.nodes.insert(id, node.clone());
        node
    }

    /// A forgotten node back under its old id and number.
    fn revive(&self, r: Retired) -> Arc<Node> {
        let mut node = Node::new(r.id, r.kind, 1);
        node.ino = r.ino;
        let node = Arc::new(node);
        self.nodes.insert(r.id, node.clone());
        node
    }

    /// Keeps the identity index in step when the backing file of a node changed (copy-up).
    fn refresh_identity(&self, node: &Node, identity: Option<Identity>) {
        let old = node.identity();
        if old == identity {
            return;
        }
        if let Some(old) = old {
            self.identities.remove_if(&old, |&id| id == node.id);
        }
        node.state.lock().identity = identity;
        if let Some(new) = identity {
            self.identities.insert(new, node.id);
        }
    }

    /// Records the backing file of a node whose entry was replaced (a directory copied up).
    pub fn set_backing(&self, node: &Node, backing: (u64, u64)) {
        node.state.lock().backing = Some(backing);
    }

    /// Sets (or clears) the hard-link identity of a node and records its backing file, after
    /// the backing file was replaced.
    pub fn set_identity(&self, node: &Node, identity: Option<Identity>, backing: (u64, u64)) {
        self.refresh_identity(node, identity);
        node.state.lock().backing = Some(backing);
    }

    /// Drops `n` lookup references; the node goes away when none is left.
    pub fn forget(&self, id: NodeId, n: u64) {
        if id == ROOT {
            return;
        }
        let Some(node) = self.nodes.get(&id) else {
            return;
        };
        let prev = node
            .lookups
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |l| {
                Some(l.saturating_sub(n))
            })
            .unwrap_or(0);
        if prev > n {
            return;
        }
        let (aliases, identity, backing) = {
            let st = node.state.lock();
            (st.aliases.clone(), st.identity, st.backing)
        };
        // Under each name's lock (the lock a lookup of that name holds), so that a lookup
        // racing this forget either takes a new reference first (the node stays) or finds the
        // record this leaves (and the same number).
        let remove = || self.nodes.remove_if(&id, |n| n.lookups() == 0).is_some();
        let mut removed = false;
        for a in &aliases {
            let key = (a.parent, a.name.clone());
            let gone = self.names.with_mut(&key, |names| {
                removed = removed || remove();
                if removed && names.get(&key) == Some(&id) {
                    names.remove(&key);
                    if let Some(backing) = backing {
                        let r = Retired {
                            id,
                            ino: node.ino,
                            kind: node.kind,
                            backing,
                        };
                        self.retired.insert(key.clone(), r);
                    }
                }
                removed
            });
            if !gone {
                return; // looked up again meanwhile
            }
        }
        if (removed || remove())
            && let Some(identity) = identity
        {
            self.identities.remove_if(&identity, |&v| v == id);
        }
    }

    /// A new name for an existing node (after `link`).
    pub fn add_alias(&self, node: &Arc<Node>, parent: NodeId, name: &OsStr) {
        let key = (parent, name.to_os_string());
        self.names.with_mut(&key, |names| {
            node.add_alias(Alias {
                parent,
                name: name.to_os_string(),
            });
            if let Some(old) = names.insert(key.clone(), node.id)
                && old != node.id
                && let Some(old) = self.nodes.get(&old)
            {
                old.drop_alias(&Alias {
                    parent,
                    name: name.to_os_string(),
                });
            }
        });
    }

    /// Forgets that `name` in `parent` names anything (after `unlink`/`rmdir`, or before the
    /// name is taken over by a rename). Returns the node that lost the name.
    pub fn remove_name(&self, parent: NodeId, name: &OsStr) -> Option<Arc<Node>> {
        self.retired.remove(&(parent, name.to_os_string()));
        let id = self.names.remove(&(parent, name.to_os_string()))?;
        let node = self.nodes.get(&id)?;
        node.drop_alias(&Alias {
            parent,
            name: name.to_os_string(),
        });
        Some(node)
    }

    /// Removes a node nobody refers to any more: the kernel never looked it up (a successor
    /// whose name went away before anyone used it), it has no name and nothing has it open.
    pub fn reap(&self, node: &Node) {
        let removed = self.nodes.remove_if(&node.id, |n| {
            n.lookups() == 0 && n.id != ROOT && n.aliases().is_empty() && !n.is_open()
        });
        if let Some(identity) = removed.and_then(|n| n.identity()) {
            self.identities.remove_if(&identity, |&v| v == node.id);
        }
    }

    /// Moves a name: whatever `to` named loses it, and the node named `from` is now `to`.
    pub fn rename(&self, from: (NodeId, &OsStr), to: (NodeId, &OsStr)) {
        if let Some(victim) = self.remove_name(to.0, to.1) {
            self.reap(&victim);
        }
        if let Some(node) = self.remove_name(from.0, from.1) {
            self.add_alias(&node, to.0, to.1);
        }
    }

    /// Swaps two names (`RENAME_EXCHANGE`).
    pub fn exchange(&self, a: (NodeId, &OsStr), b: (NodeId, &OsStr)) {
        let na = self.remove_name(a.0, a.1);
        let nb = self.remove_name(b.0, b.1);
        if let Some(na) = na {
            self.add_alias(&na, b.0, b.1);
        }
        if let Some(nb) = nb {
            self.add_alias(&nb, a.0, a.1);
        }
    }

    /// Detaches every name of `node` except `keep` (a hard link split by a copy-up: the other
    /// names still reach the old file and must become their own nodes on the next lookup).
    /// Returns the detached names, whose kernel entries the caller invalidates.
    pub fn split_aliases(&self, node: &Node, keep: &Alias) -> Vec<Alias> {
        let others: Vec<Alias> = node.aliases().into_iter().filter(|a| a != keep).collect();
        for a in &others {
            self.names
                .remove_if(&(a.parent, a.name.clone()), |&v| v == node.id);
            node.drop_alias(a);
        }
        others
    }

    /// Gives the name `keep` of `old` to a new node, because `old`'s file was replaced (copy-up,
    /// link break) while open: the kernel ties an open file's backing file to its inode, so
    /// the replacement needs an inode of its own, while the opens keep reading the old file.
    /// The new node presents the old inode number; `old` keeps its opens and lookup count and
    /// answers requests through its successor (see [`NodeTable::current`]).
    pub fn supersede(
        &self,
        old: &Node,
        keep: &Alias,
        place: Place,
        identity: Option<Identity>,
        backing: Option<(u64, u64)>,
    ) -> Arc<Node> {
        let key = (keep.parent, keep.name.clone());
        self.names.with_mut(&key, |names| {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let mut node = Node::new(id, old.kind, 0);
            node.ino = old.ino;
            let node = Arc::new(node);
            {
                let mut st = node.state.lock();
                st.aliases.push(keep.clone());
                st.place = Some(place);
                st.backing = backing;
            }
            self.nodes.insert(id, node.clone());
            names.insert(key.clone(), id);
            old.drop_alias(keep);
            old.state.lock().successor = Some(id);
            self.refresh_identity(old, None);
            self.refresh_identity(&node, identity);
            node
        })
    }

    /// The node that answers for `id` now: `id` itself, or the end of its successor chain.
    pub fn current(&self, id: NodeId) -> io::Result<Arc<Node>> {
        let mut node = self.get(id)?;
        for _ in 0..64 {
            match node.successor() {
                Some(next) => node = self.get(next)?,
                None => return Ok(node),
            }
        }
        Err(sys::err(libc::ELOOP))
    }

    /// The node's current name: (parent id, parent path relative to the union root, name).
    pub fn entry(&self, node: &Node) -> io::Result<(NodeId, PathBuf, OsString)> {
        let alias = self.live_alias(node)?;
        let parent_path = self.path(alias.parent)?;
        Ok((alias.parent, parent_path, alias.name))
    }

    /// The path of node `id` relative to the union root (empty for the root).
    pub fn path(&self, id: NodeId) -> io::Result<PathBuf> {
        let mut names: Vec<OsString> = Vec::new();
        let mut cur = id;
        while cur != ROOT {
            if names.len() > 4096 {
                return Err(sys::err(libc::ELOOP));
            }
            let node = self.get(cur)?;
            let alias = self.live_alias(&node)?;
            names.push(alias.name);
            cur = alias.parent;
        }
        Ok(names.iter().rev().collect())
    }

    /// The first name of `node` whose parent is still known (ENOENT once all were unlinked).
    fn live_alias(&self, node: &Node) -> io::Result<Alias> {
        let aliases = node.aliases();
        aliases
            .iter()
            .find(|a| a.parent == ROOT || self.nodes.with(&a.parent, |p| p.is_some()))
            .cloned()
            .ok_or_else(|| sys::err(libc::ENOENT))
    }

    /// Every node with its names (to invalidate the kernel's view after a branch change).
    pub fn snapshot(&self) -> Vec<Arc<Node>> {
        self.nodes.values()
    }

    /// Forgets all hard-link identities (they are recomputed by the next lookups).
    pub fn clear_identities(&self) {
        self.identities.clear();
        for node in self.nodes.values() {
            node.state.lock().identity = None;
        }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(epoch: u64) -> Found {
        Found {
            kind: FileKind::File,
            place: Place::new(epoch, 0, vec![0]),
            backing: Some((1, 100)),
            identity: None,
        }
    }

    fn dir() -> Found {
        Found {
            kind: FileKind::Dir,
            place: Place::new(0, 0, vec![0, 1]),
            backing: Some((1, 200)),
            identity: None,
        }
    }

    #[test]
    fn same_name_same_node_and_counts() {
        let t = NodeTable::new(7);
        let a = t.lookup(ROOT, OsStr::new("a"), file(0));
        let again = t.lookup(ROOT, OsStr::new("a"), file(0));
        assert_eq!(a.id, again.id);
        assert_eq!(a.lookups(), 2);
        t.forget(a.id, 1);
        assert!(t.get(a.id).is_ok());
        t.forget(a.id, 1);
        assert!(t.get(a.id).is_err());
        assert!(t.child(ROOT, OsStr::new("a")).is_none());
        // The same file looked up again gets its number back; another file under the name
        // gets a fresh one: ids are never given to another file.
        let b = t.lookup(ROOT, OsStr::new("a"), file(0));
        assert_eq!((a.id, a.ino), (b.id, b.ino));
        t.forget(b.id, 1);
        let other = Found {
            backing: Some((1, 101)),
            ..file(0)
        };
        let c = t.lookup(ROOT, OsStr::new("a"), other);
        assert_ne!(c.id, a.id);
        t.forget(c.id, 1);
        // A name that went away takes its record along.
        t.remove_name(ROOT, OsStr::new("a"));
        assert_ne!(t.lookup(ROOT, OsStr::new("a"), file(0)).id, c.id);
    }

    #[test]
    fn paths_follow_renames_of_ancestors() {
        let t = NodeTable::new(0);
        let d = t.lookup(ROOT, OsStr::new("d"), dir());
        let f = t.lookup(d.id, OsStr::new("f"), file(0));
        assert_eq!(t.path(f.id).expect("path"), PathBuf::from("d/f"));
        t.rename((ROOT, OsStr::new("d")), (ROOT, OsStr::new("e")));
        assert_eq!(t.path(f.id).expect("path"), PathBuf::from("e/f"));
        assert!(t.child(ROOT, OsStr::new("d")).is_none());
        assert_eq!(t.child(ROOT, OsStr::new("e")).map(|n| n.id), Some(d.id));
        let (parent, ppath, name) = t.entry(&f).expect("entry");
        assert_eq!(
            (parent, ppath, name),
            (d.id, PathBuf::from("e"), OsString::from("f"))
        );
    }

    #[test]
    fn rename_over_an_existing_name_detaches_the_victim() {
        let t = NodeTable::new(0);
        let a = t.lookup(ROOT, OsStr::new("a"), file(0));
        let b = t.lookup(ROOT, OsStr::new("b"), file(0));
        t.rename((ROOT, OsStr::new("a")), (ROOT, OsStr::new("b")));
        assert_eq!(t.child(ROOT, OsStr::new("b")).map(|n| n.id), Some(a.id));
        assert!(
            t.path(b.id).is_err(),
            "the replaced file has no name any more"
        );
    }

    #[test]
    fn hard_links_share_a_node_until_split() {
        let t = NodeTable::new(0);
        let ident = Identity {
            branch: 0,
            dev: 1,
            ino: 42,
        };
        let linked = |epoch| Found {
            identity: Some(ident),
            ..file(epoch)
        };
        let a = t.lookup(ROOT, OsStr::new("a"), linked(0));
        let b = t.lookup(ROOT, OsStr::new("b"), linked(0));
        assert_eq!(a.id, b.id);
        assert_eq!(a.aliases().len(), 2);
        let keep = Alias {
            parent: ROOT,
            name: OsString::from("a"),
        };
        let detached = t.split_aliases(&a, &keep);
        assert_eq!(detached.len(), 1);
        t.set_identity(
            &a,
            Some(Identity {
                branch: 0,
                dev: 1,
                ino: 43,
            }),
            (1, 43),
        );
        let b2 = t.lookup(ROOT, OsStr::new("b"), linked(0));
        assert_ne!(b2.id, a.id);
    }

    #[test]
    fn an_older_place_never_replaces_a_newer_one() {
        let t = NodeTable::new(0);
        let f = t.lookup(ROOT, OsStr::new("f"), file(0));
        f.set_place(Place::new(0, 5, vec![0]));
        // A lookup that started before the change (stamp 4) found the file still below.
        f.set_place(Place::new(0, 4, vec![1]));
        assert_eq!(f.place(0).map(|p| p.branch()), Some(0));
        f.set_place(Place::new(0, 6, vec![1]));
        assert_eq!(f.place(0).map(|p| p.branch()), Some(1));
        // A new branch-set epoch always replaces.
        f.set_place(Place::new(1, 0, vec![2]));
        assert_eq!(f.place(1).map(|p| p.branch()), Some(2));
    }

    #[test]
    fn a_name_changing_kind_gets_a_new_node() {
        let t = NodeTable::new(0);
        let f = t.lookup(ROOT, OsStr::new("x"), file(0));
        let d = t.lookup(ROOT, OsStr::new("x"), dir());
        assert_ne!(f.id, d.id);
        assert!(f.aliases().is_empty());
    }

    #[test]
    fn a_successor_takes_the_name_and_the_number_and_outlives_forgets() {
        let t = NodeTable::new(0);
        let old = t.lookup(ROOT, OsStr::new("f"), file(0));
        old.add_open_handle(7);
        let keep = Alias {
            parent: ROOT,
            name: OsString::from("f"),
        };
        let new = t.supersede(&old, &keep, Place::new(0, 1, vec![0]), None, Some((1, 300)));
        assert_ne!(new.id, old.id);
        assert_eq!(new.ino, old.ino, "the guest keeps seeing the same number");
        assert_eq!(t.child(ROOT, OsStr::new("f")).map(|n| n.id), Some(new.id));
        assert_eq!(old.successor(), Some(new.id));
        assert_eq!(t.current(old.id).expect("current").id, new.id);
        assert!(t.path(old.id).is_err(), "the old node lost its name");
        // The kernel looks the successor up once and forgets it: it keeps its number.
        let copy = || Found {
            backing: Some((1, 300)),
            ..file(0)
        };
        let again = t.lookup(ROOT, OsStr::new("f"), copy());
        assert_eq!(again.id, new.id);
        t.forget(new.id, 1);
        let back = t.lookup(ROOT, OsStr::new("f"), copy());
        assert_eq!((back.id, back.ino), (new.id, old.ino));
        // Once the name goes, nothing keeps it.
        let gone = t.remove_name(ROOT, OsStr::new("f")).expect("named");
        t.forget(gone.id, 1);
        assert!(t.get(new.id).is_err());
    }

    #[test]
    fn unlinked_nodes_have_no_path() {
        let t = NodeTable::new(0);
        let f = t.lookup(ROOT, OsStr::new("f"), file(0));
        t.remove_name(ROOT, OsStr::new("f"));
        assert_eq!(
            t.path(f.id).map_err(|e| e.raw_os_error()),
            Err(Some(libc::ENOENT))
        );
    }
}
