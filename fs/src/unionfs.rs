//! The union filesystem as a library: every operation a FUSE request needs, in terms of nodes,
//! names and bytes, with `io::Error`s carrying the errno. No FUSE types appear here; the adapter
//! in `fuse.rs` only translates.
//!
//! This module holds the state (branch set, node table, open handles), path resolution, the
//! copy-up / link-breaking policy and attribute presentation; `namespace.rs` (create, remove,
//! rename, link) and `fileops.rs` (open, read, write, attributes, xattrs, listings) build on it.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

use crate::attr::Stat;
use crate::branch::{Branch, BranchError, BranchMode, BranchSet, RealBranches};
use crate::copyup::{self, Install, Source};
use crate::handles::HandleTable;
use crate::inode::{Alias, Identity, Node, NodeId, NodeTable, Place, ROOT};
use crate::stats::RequestStats;
use crate::sys::{self, XattrTarget};
use crate::union;
use crate::whiteout;

/// Tunables of a mounted union.
#[derive(Clone, Debug)]
pub struct FsConfig {
    /// How long the kernel may cache a name → node mapping.
    pub entry_ttl: Duration,
    /// How long the kernel may cache attributes.
    pub attr_ttl: Duration,
    /// How long the kernel may remember that a name does not exist (0: not at all).
    pub negative_ttl: Duration,
    /// The mountpoint, so that no branch is ever added inside it (the daemon would deadlock
    /// reading its own mount).
    pub mountpoint: Option<PathBuf>,
    /// Distinguishes this mount's node ids from an earlier mount's.
    pub generation: u64,
    /// No writable branch may ever join (the `noopen` mount: files are read without being
    /// opened, so nothing could be copied up before a write).
    pub read_only: bool,
}

impl Default for FsConfig {
    fn default() -> Self {
        FsConfig {
            entry_ttl: Duration::from_secs(1),
            attr_ttl: Duration::from_secs(1),
            negative_ttl: Duration::ZERO,
            mountpoint: None,
            generation: 0,
            read_only: false,
        }
    }
}

/// Who is asking (from the FUSE request header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
}

impl Caller {
    pub const ROOT: Caller = Caller {
        uid: 0,
        gid: 0,
        pid: 0,
    };
}

/// A change of the view the kernel may have cached, to be told to it (asynchronously: a
/// notification sent from inside a request handler could deadlock on the kernel's locks).
#[derive(Clone, Debug)]
pub enum Invalidation {
    /// The name may now refer to something else.
    Entry { parent: NodeId, name: OsString },
    /// The node's attributes and data may have changed.
    Inode(NodeId),
    /// Everything queued before has been told to the kernel: answer on the channel.
    Barrier(crossbeam::channel::Sender<()>),
}

/// A branch as reported to `unionctl list`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BranchInfo {
    pub path: PathBuf,
    pub mode: BranchMode,
}

/// Where `unionctl add` puts a new branch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Position {
    /// Leftmost: highest priority (UnionFS' default).
    First,
    Last,
    Before(PathBuf),
    After(PathBuf),
}

/// Why the branch list cannot change as asked.
#[derive(Debug, thiserror::Error)]
pub enum BranchChangeError {
    #[error(transparent)]
    Branch(#[from] BranchError),
    #[error("{0} is already a branch of this union")]
    Duplicate(PathBuf),
    #[error("{new} overlaps branch {existing} (one is inside the other)")]
    Overlap { new: PathBuf, existing: PathBuf },
    #[error("{path} is inside the mountpoint {mountpoint}: the union cannot contain itself")]
    InsideMount { path: PathBuf, mountpoint: PathBuf },
    #[error("{0} is not a branch of this union")]
    NotABranch(PathBuf),
    #[error("{0} is the only branch: a union needs at least one")]
    LastBranch(PathBuf),
    #[error("{0}: this union was mounted with noopen and takes read-only branches only")]
    ReadOnlyUnion(PathBuf),
}

/// Where a node's backing entry is: its branch, the fd of its directory there, and its name
/// in that directory ("." for the root, whose "directory" is the branch root itself).
pub(crate) struct Located {
    pub branch: usize,
    pub layers: Arc<[usize]>,
    pub dir: OwnedFd,
    pub name: OsString,
}

impl Located {
    pub fn stat(&self) -> io::Result<Stat> {
        sys::stat_at(self.dir.as_fd(), &self.name)
    }

    pub fn xattrs(&self) -> XattrTarget<'_> {
        XattrTarget::At(self.dir.as_fd(), &self.name)
    }
}

/// How a copy-up treats the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CopyUp {
    /// The file is about to change: make a private copy (only the first `n` bytes when it is
    /// about to be truncated to `n`).
    Private(Option<u64>),
    /// The file only moves (rename, link): a store-linked file may keep sharing the object.
    Share,
}

pub struct UnionFs {
    set: RwLock<Arc<BranchSet>>,
    next_epoch: AtomicU64,
    /// Advanced after every change of where something lives (see `inode::Place`).
    changes: AtomicU64,
    branch_change: Mutex<()>,
    pub(crate) nodes: NodeTable,
    pub(crate) handles: HandleTable,
    invalidations: crossbeam::channel::Sender<Invalidation>,
    config: FsConfig,
    stats: RequestStats,
    /// Names the kernel was told do not exist in the root directory (see
    /// [`UnionFs::negative_ttl`]).
    negative_in_root: Mutex<HashSet<OsString>>,
}

/// Most names remembered as missing in the root directory; past that, root-level misses are
/// not cached.
const NEGATIVE_IN_ROOT_MAX: usize = 4096;

impl UnionFs {
    /// A union over `branches` (leftmost first). The receiver yields the kernel-cache
    /// invalidations the mount must forward; drop it when there is no kernel to tell.
    pub fn new(
        branches: Vec<Branch>,
        config: FsConfig,
    ) -> (Arc<UnionFs>, crossbeam::channel::Receiver<Invalidation>) {
        let (tx, rx) = crossbeam::channel::unbounded();
        let set = BranchSet::new(branches.into_iter().map(Arc::new).collect(), 1);
        let fs = UnionFs {
            set: RwLock::new(Arc::new(set)),
            next_epoch: AtomicU64::new(2),
            changes: AtomicU64::new(1),
            branch_change: Mutex::new(()),
            nodes: NodeTable::new(config.generation),
            handles: HandleTable::default(),
            invalidations: tx,
            config,
            stats: RequestStats::default(),
            negative_in_root: Mutex::new(HashSet::new()),
        };
        (Arc::new(fs), rx)
    }

    pub fn config(&self) -> &FsConfig {
        &self.config
    }

    pub fn generation(&self) -> u64 {
        self.nodes.generation()
    }

    /// What the kernel asked of this union so far.
    pub fn stats(&self) -> &RequestStats {
        &self.stats
    }

    /// The branch set requests work on (a request keeps the set it started with).
    pub(crate) fn snapshot(&self) -> Arc<BranchSet> {
        self.set.read().clone()
    }

    /// The change counter, read before looking at the branches.
    pub(crate) fn stamp(&self) -> u64 {
        self.changes.load(Ordering::SeqCst)
    }

    /// Advances the change counter after changing where something lives; the new value stamps
    /// the new place.
    pub(crate) fn bump(&self) -> u64 {
        self.changes.fetch_add(1, Ordering::SeqCst) + 1
    }

    pub(crate) fn invalidate(&self, inval: Invalidation) {
        // Nobody listening (no kernel, or unmounting): nothing to invalidate.
        let _ = self.invalidations.send(inval);
    }

    /// How long the kernel may cache that `name` does not exist in `parent`. A branch change
    /// must reach such entries: invalidating a directory's entry drops the negative entries
    /// below it, but the root's entry cannot be invalidated, so misses in the root are
    /// remembered (up to a bound) to be invalidated by name.
    pub fn negative_ttl(&self, parent: NodeId, name: &OsStr) -> Duration {
        let ttl = self.config.negative_ttl;
        if ttl.is_zero() || parent != ROOT {
            return ttl;
        }
        let mut names = self.negative_in_root.lock();
        if names.len() >= NEGATIVE_IN_ROOT_MAX && !names.contains(name) {
            return Duration::ZERO;
        }
        names.insert(name.to_os_string());
        ttl
    }

    /// Whether the node still exists (the kernel may still use it).
    pub fn knows(&self, id: NodeId) -> bool {
        self.nodes.get(id).is_ok()
    }

    /// Waits until every invalidation queued so far has reached the kernel (up to `timeout`),
    /// so that a branch change is visible as soon as `unionctl` returns. Only for callers
    /// outside request handlers: the kernel may hold locks a handler's request needs.
    pub fn sync_invalidations(&self, timeout: Duration) {
        let (tx, rx) = crossbeam::channel::bounded(1);
        if self.invalidations.send(Invalidation::Barrier(tx)).is_ok()
            && rx.recv_timeout(timeout).is_err()
        {
            tracing::warn!("kernel cache invalidations are slow to go through");
        }
    }

    /// Known nodes and open handles (files, directories), for statistics and tests.
    pub fn counts(&self) -> (usize, usize, usize) {
        let (files, dirs) = self.handles.counts();
        (self.nodes.len(), files, dirs)
    }

    // ----- resolution -------------------------------------------------------------------

    /// Where `node` lives for the branch set `set` (cached per branch-set epoch).
    pub(crate) fn place(&self, set: &BranchSet, node: &Node) -> io::Result<Place> {
        if let Some(p) = node.place(set.epoch()) {
            return Ok(p);
        }
        let stamp = self.stamp();
        let fs = RealBranches(set);
        let place = if node.id == ROOT {
            let layers = union::root_layers(&fs, set.len())?;
            if layers.is_empty() {
                return Err(sys::err(libc::ENOENT));
            }
            Place::new(set.epoch(), stamp, layers)
        } else {
            let (parent, ppath, name) = self.nodes.entry(node)?;
            let pnode = self.nodes.get(parent)?;
            let pplace = self.place(set, &pnode)?;
            let found = union::lookup(&fs, &ppath, &pplace.layers, &name)?
                .ok_or_else(|| sys::err(libc::ENOENT))?;
            if found.stat.kind() != Some(node.kind) {
                return Err(sys::err(libc::ESTALE));
            }
            Place::new(set.epoch(), stamp, found.layers)
        };
        node.set_place(place.clone());
        Ok(place)
    }

    /// The backing entry of `node` in the branch that answers for it.
    pub(crate) fn locate(&self, set: &BranchSet, node: &Node) -> io::Result<Located> {
        let place = self.place(set, node)?;
        let branch = set.get(place.branch())?;
        let (dir, name) = if node.id == ROOT {
            (branch.root().try_clone_to_owned()?, OsString::from("."))
        } else {
            let (_, ppath, name) = self.nodes.entry(node)?;
            (branch.open_dir(&ppath)?, name)
        };
        Ok(Located {
            branch: place.branch(),
            layers: place.layers,
            dir,
            name,
        })
    }

    /// The branch receiving writes, or EROFS.
    pub(crate) fn write_branch(set: &BranchSet) -> io::Result<usize> {
        set.write_branch().ok_or_else(|| sys::err(libc::EROFS))
    }

    /// Makes sure directory `node` exists in the writable branch (copying up its missing
    /// ancestors, then itself, with their metadata) and returns it opened there.
    pub(crate) fn ensure_dir_in_rw(&self, set: &BranchSet, node: &Node) -> io::Result<OwnedFd> {
        let w = Self::write_branch(set)?;
        let place = self.place(set, node)?;
        if place.branch() == w {
            return set.get(w)?.open_dir(&self.nodes.path(node.id)?);
        }
        if place.branch() < w || node.id == ROOT {
            // Shadowed by a read-only branch left of the writable one.
            return Err(sys::err(libc::EROFS));
        }
        // Lock order: a node before its parent (ensure_dir_in_rw of the parent runs below).
        let _copying = node.copy_lock.lock();
        if let Some(p) = node.place(set.epoch())
            && p.branch() == w
        {
            return set.get(w)?.open_dir(&self.nodes.path(node.id)?);
        }
        let (parent, ppath, name) = self.nodes.entry(node)?;
        let pdir = self.ensure_dir_in_rw(set, &*self.nodes.get(parent)?)?;
        let src_dir = set.get(place.branch())?.open_dir(&ppath)?;
        let st = sys::stat_at(src_dir.as_fd(), &name)?;
        let work = set
            .get(w)?
            .work_dir()
            .ok_or_else(|| sys::err(libc::EROFS))?;
        let staged = copyup::stage_copy(
            work,
            Source {
                dir: src_dir.as_fd(),
                name: &name,
                stat: &st,
            },
            None,
        )?;
        match staged.install(pdir.as_fd(), &name, Install::NoReplace) {
            Ok(()) => {}
            // Made meanwhile by another path to the same directory: fine if it is one.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                if !sys::stat_at(pdir.as_fd(), &name)?.is_dir() {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
        let mut layers = vec![w];
        layers.extend(place.layers.iter().copied());
        node.set_place(Place::new(set.epoch(), self.bump(), layers));
        if let Ok(st) = sys::stat_at(pdir.as_fd(), &name) {
            self.nodes.set_backing(node, (st.dev, st.ino));
        }
        set.get(w)?.open_dir(&self.nodes.path(node.id)?)
    }

    /// Makes `node` safe to modify: in the writable branch, and not linked to a store object.
    /// Copy-up and link breaking both happen here, before the first modification, through the
    /// same staged copy. `truncate_to` is the size the caller is about to truncate to (so only
    /// that much is copied). Returns where the node's name now leads (see
    /// [`UnionFs::copy_to_rw`] for why that may be a new node).
    pub(crate) fn ensure_private(
        &self,
        set: &BranchSet,
        node: &Node,
        truncate_to: Option<u64>,
    ) -> io::Result<Located> {
        if node.is_dir() {
            self.ensure_dir_in_rw(set, node)?;
            return self.locate_writable(set, node);
        }
        let _copying = node.copy_lock.lock();
        self.make_private(set, node, truncate_to)
    }

    /// [`UnionFs::ensure_private`] of a non-directory whose copy lock the caller holds.
    pub(crate) fn make_private(
        &self,
        set: &BranchSet,
        node: &Node,
        truncate_to: Option<u64>,
    ) -> io::Result<Located> {
        let w = Self::write_branch(set)?;
        let loc = self.locate(set, node)?;
        if loc.branch < w {
            return Err(sys::err(libc::EROFS));
        }
        let st = loc.stat()?;
        let marked = st.is_file() && is_marked(&loc)?;
        if loc.branch == w && !marked {
            return Ok(loc);
        }
        let holder = self.copy_to_rw(set, node, &loc, &st, CopyUp::Private(truncate_to))?;
        self.locate_writable(set, &holder)
    }

    /// [`UnionFs::locate`] for a caller about to modify what it finds: the node must be in the
    /// writable branch. It was put there just before, but a racing unlink or rename can take
    /// the copy away before it is reached again, and the name may then lead to a read-only
    /// branch, where nothing may change (`tests/reliability_hostile.rs` caught an append that
    /// landed in the read-only branch this way). ESTALE makes the kernel look the name up
    /// again and retry the operation on what the name is now.
    pub(crate) fn locate_writable(&self, set: &BranchSet, node: &Node) -> io::Result<Located> {
        let w = Self::write_branch(set)?;
        let loc = self.locate(set, node)?;
        if loc.branch != w {
            tracing::debug!(
                node = node.id,
                branch = loc.branch,
                "moved out of the writable branch by a racing change"
            );
            return Err(sys::err(libc::ESTALE));
        }
        Ok(loc)
    }

    /// Copies (or, for `CopyUp::Share` of a store-linked file, links) the entry of `node` into
    /// the writable branch at the same path, replacing it there when it already is there (a
    /// link being broken). The caller holds `node.copy_lock`. Returns the node that now holds
    /// the name: `node` itself, or, when `node` is open, a successor (its opens go on reading
    /// the file they opened).
    pub(crate) fn copy_to_rw(
        &self,
        set: &BranchSet,
        node: &Node,
        loc: &Located,
        st: &Stat,
        how: CopyUp,
    ) -> io::Result<Arc<Node>> {
        let w = Self::write_branch(set)?;
        let (parent, _, name) = self.nodes.entry(node)?;
        let work = set
            .get(w)?
            .work_dir()
            .ok_or_else(|| sys::err(libc::EROFS))?;
        let src = Source {
            dir: loc.dir.as_fd(),
            name: &loc.name,
            stat: st,
        };
        let share = how == CopyUp::Share && st.is_file() && is_marked(loc)?;
        let staged = match how {
            CopyUp::Share if share => match copyup::stage_link(work, src) {
                Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                    copyup::stage_copy(work, src, None)?
                }
                other => other?,
            },
            CopyUp::Share => copyup::stage_copy(work, src, None)?,
            CopyUp::Private(limit) => copyup::stage_copy(work, src, limit)?,
        };
        let (pdir, install) = if loc.branch == w {
            // Breaking a link in place: the private copy replaces the link atomically.
            (loc.dir.try_clone()?, Install::Replace)
        } else {
            (
                self.ensure_dir_in_rw(set, &*self.nodes.get(parent)?)?,
                Install::NoReplace,
            )
        };
        staged.install(pdir.as_fd(), &name, install)?;
        let place = Place::new(set.epoch(), self.bump(), vec![w]);
        let new_st = sys::stat_at(pdir.as_fd(), &name)?;
        let identity = identity_for(w, &new_st, share);
        // Other names of a hard link still reach the old file: they become separate nodes.
        let keep = Alias { parent, name };
        for a in self.nodes.split_aliases(node, &keep) {
            self.invalidate(Invalidation::Entry {
                parent: a.parent,
                name: a.name,
            });
        }
        let superseded = node.is_open();
        tracing::debug!(
            node = node.id,
            name = ?keep.name,
            share,
            broke_link = loc.branch == w,
            superseded,
            "copied to the writable branch"
        );
        if superseded {
            // Open files keep the old file, and the kernel keeps it as their inode's backing
            // file: the replacement gets an inode (node) of its own, with the same number.
            let (parent, name) = (keep.parent, keep.name.clone());
            let backing = Some((new_st.dev, new_st.ino));
            let successor = self.nodes.supersede(node, &keep, place, identity, backing);
            self.invalidate(Invalidation::Entry { parent, name });
            return Ok(successor);
        }
        node.set_place(place);
        self.nodes
            .set_identity(node, identity, (new_st.dev, new_st.ino));
        self.invalidate(Invalidation::Inode(node.id));
        self.nodes.get(node.id)
    }

    /// Attributes as the guest sees them: our node id as inode number; a directory merged from
    /// several branches reports one link (the "unknown" convention `find` understands); a
    /// store-linked file reports one link (the others are the store's, not the guest's).
    pub(crate) fn present(&self, node: &Node, mut st: Stat, layers: usize, marked: bool) -> Stat {
        st.ino = node.ino;
        if (node.is_dir() && layers > 1) || marked {
            st.nlink = 1;
        }
        st
    }

    /// Attributes of a located node, presented.
    pub(crate) fn attr_of(&self, node: &Node, loc: &Located) -> io::Result<Stat> {
        let st = loc.stat()?;
        let marked = st.is_file() && st.nlink > 1 && is_marked(loc)?;
        Ok(self.present(node, st, loc.layers.len(), marked))
    }

    // ----- branch management ------------------------------------------------------------

    pub fn branches(&self) -> Vec<BranchInfo> {
        self.snapshot()
            .branches()
            .iter()
            .map(|b| BranchInfo {
                path: b.path().to_path_buf(),
                mode: b.mode(),
            })
            .collect()
    }

    /// Adds a branch at run time; the kernel's cached view is invalidated.
    pub fn add_branch(
        &self,
        path: &Path,
        mode: BranchMode,
        position: Position,
    ) -> Result<(), BranchChangeError> {
        if self.config.read_only && mode == BranchMode::Rw {
            return Err(BranchChangeError::ReadOnlyUnion(path.to_path_buf()));
        }
        let _changing = self.branch_change.lock();
        let current = self.snapshot();
        // Check before opening: opening a writable branch cleans its work directory, and a
        // path inside our own mount would be served by ourselves.
        let canonical = match path.canonicalize() {
            Ok(c) => c,
            // Let the branch report why it cannot be opened.
            Err(_) => {
                return Err(Branch::open(path, mode, None).err().map_or_else(
                    || BranchChangeError::NotABranch(path.to_path_buf()),
                    BranchChangeError::from,
                ));
            }
        };
        if let Some(mnt) = &self.config.mountpoint
            && (path.starts_with(mnt) || canonical.starts_with(mnt))
        {
            return Err(BranchChangeError::InsideMount {
                path: path.to_path_buf(),
                mountpoint: mnt.clone(),
            });
        }
        for b in current.branches() {
            if b.path() == canonical {
                return Err(BranchChangeError::Duplicate(canonical));
            }
            if b.path().starts_with(&canonical) || canonical.starts_with(b.path()) {
                return Err(BranchChangeError::Overlap {
                    new: canonical,
                    existing: b.path().to_path_buf(),
                });
            }
        }
        let branch = Branch::open(&canonical, mode, None)?;
        let new_path = branch.path().to_path_buf();
        let mut list: Vec<Arc<Branch>> = current.branches().to_vec();
        let index = match &position {
            Position::First => 0,
            Position::Last => list.len(),
            Position::Before(p) => self.index_of(&current, p)?,
            Position::After(p) => self.index_of(&current, p)? + 1,
        };
        list.insert(index, Arc::new(branch));
        self.replace_set(list);
        tracing::info!(branch = %new_path.display(), %mode, index, "branch added");
        Ok(())
    }

    /// Removes a branch at run time. Files already open in it stay readable until closed.
    pub fn remove_branch(&self, path: &Path) -> Result<(), BranchChangeError> {
        let _changing = self.branch_change.lock();
        let current = self.snapshot();
        let index = self.index_of(&current, path)?;
        if current.len() == 1 {
            return Err(BranchChangeError::LastBranch(path.to_path_buf()));
        }
        let mut list: Vec<Arc<Branch>> = current.branches().to_vec();
        let removed = list.remove(index);
        self.replace_set(list);
        tracing::info!(branch = %removed.path().display(), "branch removed");
        Ok(())
    }

    fn index_of(&self, set: &BranchSet, path: &Path) -> Result<usize, BranchChangeError> {
        let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        set.branches()
            .iter()
            .position(|b| b.path() == canonical || b.path() == path)
            .ok_or_else(|| BranchChangeError::NotABranch(path.to_path_buf()))
    }

    fn replace_set(&self, branches: Vec<Arc<Branch>>) {
        let epoch = self.next_epoch.fetch_add(1, Ordering::Relaxed);
        *self.set.write() = Arc::new(BranchSet::new(branches, epoch));
        self.nodes.clear_identities();
        // Everything the kernel cached may now be wrong.
        for name in self.negative_in_root.lock().drain() {
            self.invalidate(Invalidation::Entry { parent: ROOT, name });
        }
        for node in self.nodes.snapshot() {
            self.invalidate(Invalidation::Inode(node.id));
            for a in node.aliases() {
                self.invalidate(Invalidation::Entry {
                    parent: a.parent,
                    name: a.name,
                });
            }
        }
    }
}

/// Whether the entry is linked to a store object (carries the store's mark).
pub(crate) fn is_marked(loc: &Located) -> io::Result<bool> {
    is_marked_at(loc.dir.as_fd(), &loc.name)
}

/// Whether entry `name` of `dir` carries the store's mark.
pub(crate) fn is_marked_at(dir: std::os::fd::BorrowedFd<'_>, name: &OsStr) -> io::Result<bool> {
    match sys::get_xattr(
        XattrTarget::At(dir, name),
        OsStr::new(hashstore::MARK_XATTR),
    ) {
        Ok(v) => Ok(v.is_some()),
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The identity under which hard links of this entry share a node: only for files the guest
/// may have linked itself (several links, not a store object).
pub(crate) fn identity_for(branch: usize, st: &Stat, marked: bool) -> Option<Identity> {
    (!st.is_dir() && st.nlink > 1 && !marked).then_some(Identity {
        branch,
        dev: st.dev,
        ino: st.ino,
    })
}

/// Rejects names no single directory entry can have.
pub(crate) fn check_name(name: &OsStr) -> io::Result<()> {
    let bytes = name.as_bytes();
    if bytes.len() > whiteout::NAME_MAX {
        return Err(sys::err(libc::ENAMETOOLONG));
    }
    if bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.contains(&b'/') {
        return Err(sys::err(libc::EINVAL));
    }
    Ok(())
}
