//! Operations that change names: lookup, create (files, directories, nodes, symlinks), link,
//! unlink, rmdir and rename, with whiteouts wherever a removed or moved name still exists in a
//! branch to the right of the writable one.
//!
//! Order of effects, so that a daemon killed at any point leaves a consistent view: a
//! whiteout is created *before* the entry it stands for leaves the writable branch (an entry
//! and its `.wh.` sibling in the same branch mean "this entry, nothing below"), and new entries
//! appear by one `rename` from the work directory.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::fcntl::{AtFlags, OFlag, RenameFlags};
use nix::sys::stat::Mode;
use nix::unistd::UnlinkatFlags;

use crate::attr::{FileKind, Stat};
use crate::branch::{BranchDir, BranchSet, PinnedDir, RealBranches, open_beneath, remove_tree_at};
use crate::copyup::{self, Install, NewKind, Owner};
use crate::inode::{self, Node, NodeId, Place};
use crate::sys;
use crate::union::{self, BranchFs, Found};
use crate::unionfs::{Caller, CopyUp, UnionFs, check_name, identity_for, is_marked, is_marked_at};
use crate::whiteout;

/// Lookups of many names in one directory (see [`UnionFs::dir_lookups`]).
pub struct DirLookups {
    dir: DirCtx,
    pinned: PinnedDir,
}

/// A directory an operation works in.
pub(crate) struct DirCtx {
    pub node: Arc<Node>,
    pub path: PathBuf,
    pub place: Place,
}

impl UnionFs {
    pub(crate) fn dir_ctx(&self, set: &BranchSet, id: NodeId) -> io::Result<DirCtx> {
        let node = self.nodes.get(id)?;
        if !node.is_dir() {
            return Err(sys::err(libc::ENOTDIR));
        }
        let place = self.place(set, &node)?;
        let path = self.nodes.path(id)?;
        Ok(DirCtx { node, path, place })
    }

    fn find(&self, set: &BranchSet, dir: &DirCtx, name: &OsStr) -> io::Result<Option<Found>> {
        union::lookup(&RealBranches(set), &dir.path, &dir.place.layers, name)
    }

    /// The writable branch, if `dir` may change (EROFS when a read-only branch left of the
    /// writable one holds the directory).
    fn writable(&self, set: &BranchSet, dir: &DirCtx) -> io::Result<usize> {
        let w = Self::write_branch(set)?;
        if dir.place.branch() < w {
            return Err(sys::err(libc::EROFS));
        }
        Ok(w)
    }

    /// Looks `name` up in directory `parent`; the kernel will `forget` the returned node.
    pub fn lookup(&self, parent: NodeId, name: &OsStr) -> io::Result<(Arc<Node>, Stat)> {
        let set = self.snapshot();
        let dir = self.dir_ctx(&set, parent)?;
        self.lookup_in(&set, &dir, &RealBranches(&set), name)
    }

    /// Prepares lookups of many names of `parent` (the entries of a READDIRPLUS reply): the
    /// directory's layers are opened once instead of once per name.
    pub fn dir_lookups(&self, parent: NodeId) -> io::Result<DirLookups> {
        let set = self.snapshot();
        let dir = self.dir_ctx(&set, parent)?;
        let pinned = PinnedDir::open(set, &dir.path, &dir.place.layers)?;
        Ok(DirLookups { dir, pinned })
    }

    /// One lookup prepared by [`UnionFs::dir_lookups`]; the kernel will `forget` the node.
    pub fn lookup_prepared(&self, d: &DirLookups, name: &OsStr) -> io::Result<(Arc<Node>, Stat)> {
        self.lookup_in(d.pinned.set(), &d.dir, &d.pinned, name)
    }

    fn lookup_in<F: BranchFs<Dir = BranchDir>>(
        &self,
        set: &BranchSet,
        dir: &DirCtx,
        fs: &F,
        name: &OsStr,
    ) -> io::Result<(Arc<Node>, Stat)> {
        check_name(name)?;
        if whiteout::is_hidden(name) {
            return Err(sys::err(libc::ENOENT));
        }
        let stamp = self.stamp();
        let found = union::lookup(fs, &dir.path, &dir.place.layers, name)?
            .ok_or_else(|| sys::err(libc::ENOENT))?;
        let kind = found.stat.kind().ok_or_else(|| sys::err(libc::EIO))?;
        let marked = if found.stat.is_file() && found.stat.nlink > 1 {
            match fs.open_dir(found.branch, &dir.path)? {
                Some(bdir) => is_marked_at(bdir.fd.as_fd(), name)?,
                None => return Err(sys::err(libc::ENOENT)),
            }
        } else {
            false
        };
        let layers = found.layers.len();
        let node = self.nodes.lookup(
            dir.node.id,
            name,
            inode::Found {
                kind,
                backing: Some((found.stat.dev, found.stat.ino)),
                place: Place::new(set.epoch(), stamp, found.layers),
                identity: identity_for(found.branch, &found.stat, marked),
            },
        );
        let st = self.present(&node, found.stat, layers, marked);
        Ok((node, st))
    }

    /// Drops `n` kernel references to a node.
    pub fn forget(&self, id: NodeId, n: u64) {
        self.nodes.forget(id, n);
    }

    /// Creates `name` in `parent`, owned by the caller (group inherited from a set-group-id
    /// directory, which also passes its bit on to subdirectories).
    pub(crate) fn create_entry(
        &self,
        parent: NodeId,
        name: &OsStr,
        kind: NewKind<'_>,
        perm: u32,
        caller: Caller,
    ) -> io::Result<(Arc<Node>, Stat, Option<std::fs::File>)> {
        check_new_name(name)?;
        let set = self.snapshot();
        let dir = self.dir_ctx(&set, parent)?;
        let w = self.writable(&set, &dir)?;
        if self.find(&set, &dir, name)?.is_some() {
            return Err(sys::err(libc::EEXIST));
        }
        let file_kind = match &kind {
            NewKind::File(_) => FileKind::File,
            NewKind::Dir => FileKind::Dir,
            NewKind::Symlink(_) => FileKind::Symlink,
            NewKind::Node(k, _) => *k,
        };
        let pdir = self.ensure_dir_in_rw(&set, &dir.node)?;
        let pst = sys::fstat(pdir.as_fd())?;
        let setgid_dir = pst.mode & libc::S_ISGID != 0;
        let owner = Owner {
            uid: caller.uid,
            gid: if setgid_dir { pst.gid } else { caller.gid },
        };
        let perm = if setgid_dir && file_kind == FileKind::Dir {
            perm | libc::S_ISGID
        } else {
            perm
        };
        // A long name's whiteout is an overlayfs 0/0 device occupying the name itself.
        let install = match sys::try_stat_at(pdir.as_fd(), name)? {
            None => Install::NoReplace,
            Some(_) if whiteout::is_cowfs_device_whiteout(pdir.as_fd(), name)? => {
                if file_kind == FileKind::Dir {
                    Install::Exchange
                } else {
                    Install::Replace
                }
            }
            Some(_) => return Err(sys::err(libc::EEXIST)),
        };
        let work = set
            .get(w)?
            .work_dir()
            .ok_or_else(|| sys::err(libc::EROFS))?;
        let (staged, file) = copyup::stage_new(work, kind, perm, owner)?;
        if install == Install::Exchange {
            // The device whiteout no longer hides the directories below: the new one must.
            let marker = open_beneath(
                work,
                &Path::new(staged.name()).join(whiteout::OPAQUE_MARKER),
                OFlag::O_CREAT | OFlag::O_WRONLY,
                Mode::from_bits_truncate(0o600),
            )?;
            drop(marker);
        }
        staged.install(pdir.as_fd(), name, install)?;
        let st = sys::stat_at(pdir.as_fd(), name)?;
        let node = self.nodes.lookup(
            parent,
            name,
            inode::Found {
                kind: file_kind,
                backing: Some((st.dev, st.ino)),
                place: Place::new(set.epoch(), self.bump(), vec![w]),
                identity: None,
            },
        );
        let st = self.present(&node, st, 1, false);
        Ok((node, st, file))
    }

    pub fn mkdir(
        &self,
        parent: NodeId,
        name: &OsStr,
        perm: u32,
        caller: Caller,
    ) -> io::Result<(Arc<Node>, Stat)> {
        let (node, st, _) = self.create_entry(parent, name, NewKind::Dir, perm, caller)?;
        Ok((node, st))
    }

    /// `mknod`: any file type but directories and symlinks (`mode` carries the type).
    pub fn mknod(
        &self,
        parent: NodeId,
        name: &OsStr,
        mode: u32,
        rdev: u64,
        caller: Caller,
    ) -> io::Result<(Arc<Node>, Stat)> {
        let kind = match FileKind::from_mode(mode) {
            Some(FileKind::File) | None
                if mode & libc::S_IFMT == 0 || mode & libc::S_IFMT == libc::S_IFREG =>
            {
                NewKind::File(OFlag::O_RDONLY)
            }
            Some(
                k @ (FileKind::CharDev | FileKind::BlockDev | FileKind::Fifo | FileKind::Socket),
            ) => NewKind::Node(k, rdev),
            _ => return Err(sys::err(libc::EINVAL)),
        };
        let (node, st, _) = self.create_entry(parent, name, kind, mode & 0o7777, caller)?;
        Ok((node, st))
    }

    pub fn symlink(
        &self,
        parent: NodeId,
        name: &OsStr,
        target: &Path,
        caller: Caller,
    ) -> io::Result<(Arc<Node>, Stat)> {
        let (node, st, _) =
            self.create_entry(parent, name, NewKind::Symlink(target), 0o777, caller)?;
        Ok((node, st))
    }

    /// Removes a non-directory.
    pub fn unlink(&self, parent: NodeId, name: &OsStr) -> io::Result<()> {
        self.remove(parent, name, false)
    }

    /// Removes an empty directory (entries hidden by whiteouts do not count).
    pub fn rmdir(&self, parent: NodeId, name: &OsStr) -> io::Result<()> {
        self.remove(parent, name, true)
    }

    fn remove(&self, parent: NodeId, name: &OsStr, want_dir: bool) -> io::Result<()> {
        check_name(name)?;
        if whiteout::is_hidden(name) {
            return Err(sys::err(libc::ENOENT));
        }
        let set = self.snapshot();
        let dir = self.dir_ctx(&set, parent)?;
        let w = self.writable(&set, &dir)?;
        let found = self
            .find(&set, &dir, name)?
            .ok_or_else(|| sys::err(libc::ENOENT))?;
        match (want_dir, found.stat.is_dir()) {
            (true, false) => return Err(sys::err(libc::ENOTDIR)),
            (false, true) => return Err(sys::err(libc::EISDIR)),
            _ => {}
        }
        if found.branch < w {
            return Err(sys::err(libc::EROFS));
        }
        if want_dir
            && !union::is_empty_dir(&RealBranches(&set), &dir.path.join(name), &found.layers)?
        {
            return Err(sys::err(libc::ENOTEMPTY));
        }
        let below =
            union::needs_whiteout(&RealBranches(&set), &dir.path, &dir.place.layers, w, name)?;
        let pdir = self.ensure_dir_in_rw(&set, &dir.node)?;
        remove_from_rw(
            &set,
            w,
            pdir.as_fd(),
            name,
            found.branch == w,
            below,
            want_dir,
        )?;
        if let Some(node) = self.nodes.remove_name(parent, name) {
            self.nodes.reap(&node);
        }
        Ok(())
    }

    /// A new name for a non-directory. A store-linked file gets its private copy first: the
    /// two names are one file to the guest and must stay one after a write.
    pub fn link(
        &self,
        id: NodeId,
        newparent: NodeId,
        newname: &OsStr,
    ) -> io::Result<(Arc<Node>, Stat)> {
        check_new_name(newname)?;
        let set = self.snapshot();
        let node = self.nodes.current(id)?;
        if node.is_dir() {
            return Err(sys::err(libc::EPERM));
        }
        let dir = self.dir_ctx(&set, newparent)?;
        let w = self.writable(&set, &dir)?;
        if self.find(&set, &dir, newname)?.is_some() {
            return Err(sys::err(libc::EEXIST));
        }
        let (node, loc) = {
            let _copying = node.copy_lock.lock();
            let loc = self.locate(&set, &node)?;
            if loc.branch < w {
                return Err(sys::err(libc::EROFS));
            }
            let st = loc.stat()?;
            let marked = st.is_file() && is_marked(&loc)?;
            let holder = if marked {
                self.copy_to_rw(&set, &node, &loc, &st, CopyUp::Private(None))?
            } else if loc.branch > w {
                self.copy_to_rw(&set, &node, &loc, &st, CopyUp::Share)?
            } else {
                node.clone()
            };
            // A link to a file left in a read-only branch would let writes through the new
            // name reach it.
            let loc = self.locate_writable(&set, &holder)?;
            (holder, loc)
        };
        let pdir = self.ensure_dir_in_rw(&set, &dir.node)?;
        match sys::try_stat_at(pdir.as_fd(), newname)? {
            None => nix::unistd::linkat(
                loc.dir.as_fd(),
                loc.name.as_os_str(),
                pdir.as_fd(),
                newname,
                AtFlags::empty(),
            )?,
            Some(_) if whiteout::is_cowfs_device_whiteout(pdir.as_fd(), newname)? => {
                let work = set
                    .get(w)?
                    .work_dir()
                    .ok_or_else(|| sys::err(libc::EROFS))?;
                let tmp = copyup::temp_name();
                nix::unistd::linkat(
                    loc.dir.as_fd(),
                    loc.name.as_os_str(),
                    work,
                    tmp.as_os_str(),
                    AtFlags::empty(),
                )?;
                nix::fcntl::renameat2(
                    work,
                    tmp.as_os_str(),
                    pdir.as_fd(),
                    newname,
                    RenameFlags::empty(),
                )?;
            }
            Some(_) => return Err(sys::err(libc::EEXIST)),
        }
        let st = loc.stat()?;
        self.nodes.add_alias(&node, newparent, newname);
        self.nodes
            .set_identity(&node, identity_for(w, &st, false), (st.dev, st.ino));
        self.invalidate(crate::unionfs::Invalidation::Inode(node.id));
        let st = self.present(&node, st, 1, false);
        Ok((node, st))
    }

    /// Renames `name` in `parent` to `newname` in `newparent` (`flags`: `RENAME_NOREPLACE`,
    /// `RENAME_EXCHANGE`). Files move across branches by copy-up; a directory moves only when
    /// it lives in the writable branch alone, else EXDEV (as overlayfs without redirect_dir),
    /// which makes `mv` fall back to copying.
    pub fn rename(
        &self,
        parent: NodeId,
        name: &OsStr,
        newparent: NodeId,
        newname: &OsStr,
        flags: u32,
    ) -> io::Result<()> {
        check_name(name)?;
        check_new_name(newname)?;
        if whiteout::is_hidden(name) {
            return Err(sys::err(libc::ENOENT));
        }
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        let noreplace = flags & libc::RENAME_NOREPLACE != 0;
        if flags & !(libc::RENAME_EXCHANGE | libc::RENAME_NOREPLACE) != 0 || (exchange && noreplace)
        {
            return Err(sys::err(libc::EINVAL));
        }
        let set = self.snapshot();
        let from = self.dir_ctx(&set, parent)?;
        let to = self.dir_ctx(&set, newparent)?;
        let w = self.writable(&set, &from)?;
        self.writable(&set, &to)?;
        let src = self
            .find(&set, &from, name)?
            .ok_or_else(|| sys::err(libc::ENOENT))?;
        let dst = self.find(&set, &to, newname)?;
        if src.branch < w || dst.as_ref().is_some_and(|d| d.branch < w) {
            return Err(sys::err(libc::EROFS));
        }
        if exchange && dst.is_none() {
            return Err(sys::err(libc::ENOENT));
        }
        if noreplace && dst.is_some() {
            return Err(sys::err(libc::EEXIST));
        }
        if let Some(d) = &dst
            && !exchange
        {
            if d.branch == src.branch && d.stat.dev == src.stat.dev && d.stat.ino == src.stat.ino {
                return Ok(()); // two names of one file: POSIX says do nothing
            }
            match (src.stat.is_dir(), d.stat.is_dir()) {
                (false, true) => return Err(sys::err(libc::EISDIR)),
                (true, false) => return Err(sys::err(libc::ENOTDIR)),
                (true, true) => {
                    if !union::is_empty_dir(&RealBranches(&set), &to.path.join(newname), &d.layers)?
                    {
                        return Err(sys::err(libc::ENOTEMPTY));
                    }
                }
                (false, false) => {}
            }
        }
        // Directories move only when nothing of them lives in another branch.
        let merged_dir = |f: &Found| f.stat.is_dir() && f.layers.as_slice() != [w];
        if merged_dir(&src) || (exchange && dst.as_ref().is_some_and(merged_dir)) {
            return Err(sys::err(libc::EXDEV));
        }
        // Bring the moving files into the writable branch (a store link stays a link).
        self.bring_to_rw(&set, &from, name, &src, w)?;
        if let Some(d) = &dst
            && exchange
        {
            self.bring_to_rw(&set, &to, newname, d, w)?;
        }
        let fs = RealBranches(&set);
        let src_below = union::needs_whiteout(&fs, &from.path, &from.place.layers, w, name)?;
        let dst_below = union::needs_whiteout(&fs, &to.path, &to.place.layers, w, newname)?;
        let fdir = self.ensure_dir_in_rw(&set, &from.node)?;
        let tdir = self.ensure_dir_in_rw(&set, &to.node)?;
        let work = set
            .get(w)?
            .work_dir()
            .ok_or_else(|| sys::err(libc::EROFS))?;

        // Copies below of a name stay hidden by whatever non-directory sits on top of them; a
        // directory landing on the name would merge with them instead, so it needs a whiteout
        // (or, for a name too long for `.wh.`, to be opaque itself).
        let hide_below =
            |dir: BorrowedFd<'_>, landing_dir: BorrowedFd<'_>, landing: &OsStr, target: &OsStr| {
                if whiteout::whiteout_name(target).is_some() {
                    whiteout_before_replace(work, dir, target)
                } else {
                    make_opaque(landing_dir, landing)
                }
            };
        if exchange {
            let dst_is_dir = dst.as_ref().is_some_and(|d| d.stat.is_dir());
            if src_below && dst_is_dir {
                hide_below(fdir.as_fd(), tdir.as_fd(), newname, name)?;
            }
            if dst_below && src.stat.is_dir() {
                hide_below(tdir.as_fd(), fdir.as_fd(), name, newname)?;
            }
            nix::fcntl::renameat2(
                fdir.as_fd(),
                name,
                tdir.as_fd(),
                newname,
                RenameFlags::RENAME_EXCHANGE,
            )?;
            self.nodes.exchange((parent, name), (newparent, newname));
            return Ok(());
        }

        let mut rename_flags = RenameFlags::empty();
        if dst_below && src.stat.is_dir() {
            hide_below(tdir.as_fd(), fdir.as_fd(), name, newname)?;
        }
        if let Some(d) = &dst
            && d.stat.is_dir()
            && d.branch == w
        {
            // Empty in the merged view: only whiteouts and markers are left in it.
            clear_dir(tdir.as_fd(), newname)?;
        } else if dst.is_none()
            && src.stat.is_dir()
            && whiteout::is_cowfs_device_whiteout(tdir.as_fd(), newname)?
        {
            // Replacing a long name's device whiteout with a directory: make it opaque first.
            make_opaque(fdir.as_fd(), name)?;
            nix::unistd::unlinkat(tdir.as_fd(), newname, UnlinkatFlags::NoRemoveDir)?;
        }
        // The source: leave a whiteout if copies of it remain below.
        if src_below {
            match whiteout::whiteout_name(name) {
                Some(wh) => create_whiteout_file(fdir.as_fd(), &wh)?,
                None => rename_flags |= RenameFlags::RENAME_WHITEOUT,
            }
        }
        nix::fcntl::renameat2(fdir.as_fd(), name, tdir.as_fd(), newname, rename_flags)?;
        if rename_flags.contains(RenameFlags::RENAME_WHITEOUT) {
            // The kernel made a plain 0/0 device; in a writable branch it must carry our mark.
            whiteout::mark_device_whiteout(fdir.as_fd(), name)?;
        }
        self.nodes.rename((parent, name), (newparent, newname));
        if let Some(node) = self.nodes.child(newparent, newname) {
            node.set_place(Place::new(set.epoch(), self.bump(), vec![w]));
        }
        Ok(())
    }

    /// Copies up (sharing store links) the entry `name` of `dir` found as `found`.
    fn bring_to_rw(
        &self,
        set: &BranchSet,
        dir: &DirCtx,
        name: &OsStr,
        found: &Found,
        w: usize,
    ) -> io::Result<()> {
        if found.branch == w || found.stat.is_dir() {
            return Ok(());
        }
        // The kernel looked the name up before renaming it, so the node normally exists; if
        // not, a transient lookup reference is enough.
        let (node, transient) = match self.nodes.child(dir.node.id, name) {
            Some(node) => (node, false),
            None => (self.lookup(dir.node.id, name)?.0, true),
        };
        let result = (|| {
            let _copying = node.copy_lock.lock();
            let loc = self.locate(set, &node)?;
            if loc.branch == w {
                return Ok(());
            }
            let st = loc.stat()?;
            self.copy_to_rw(set, &node, &loc, &st, CopyUp::Share)
                .map(drop)
        })();
        if transient {
            self.forget(node.id, 1);
        }
        result
    }
}

/// Names a guest may not create: the union's own, and invalid ones.
fn check_new_name(name: &OsStr) -> io::Result<()> {
    check_name(name)?;
    if whiteout::is_reserved(name) {
        return Err(sys::err(libc::EPERM));
    }
    Ok(())
}

/// Creates the `.wh.` whiteout `wh` in `dir` (kept if it already exists).
fn create_whiteout_file(dir: BorrowedFd<'_>, wh: &OsStr) -> io::Result<()> {
    let fd = nix::fcntl::openat(
        dir,
        wh,
        OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )?;
    drop(fd);
    Ok(())
}

/// Hides the copies below of `name`, whose writable copy is about to be replaced (by a rename
/// or an exchange). A long name, which has no room for `.wh.`, gets its device whiteout only
/// if nothing occupies the name in the writable branch (otherwise the replacing entry hides
/// what is below by itself, being a non-directory, or the caller refused the case).
fn whiteout_before_replace(
    work: BorrowedFd<'_>,
    dir: BorrowedFd<'_>,
    name: &OsStr,
) -> io::Result<()> {
    match whiteout::whiteout_name(name) {
        Some(wh) => create_whiteout_file(dir, &wh),
        None => {
            if sys::try_stat_at(dir, name)?.is_none() {
                stage_device_whiteout(work)?.install(dir, name, Install::NoReplace)?;
            }
            Ok(())
        }
    }
}

/// A marked 0/0 device whiteout in the work directory, ready to take a long name's place.
fn stage_device_whiteout(work: BorrowedFd<'_>) -> io::Result<copyup::Staged<'_>> {
    let (staged, _) = copyup::stage_new(
        work,
        NewKind::Node(FileKind::CharDev, 0),
        0,
        Owner { uid: 0, gid: 0 },
    )?;
    whiteout::mark_device_whiteout(work, staged.name())?;
    Ok(staged)
}

/// Removes `name` from the writable branch's `dir` (`in_rw`: it is there), leaving a whiteout
/// first when `whiteout` says copies remain below.
fn remove_from_rw(
    set: &BranchSet,
    w: usize,
    dir: BorrowedFd<'_>,
    name: &OsStr,
    in_rw: bool,
    needs_whiteout: bool,
    is_dir: bool,
) -> io::Result<()> {
    let unlink_flag = if is_dir {
        UnlinkatFlags::RemoveDir
    } else {
        UnlinkatFlags::NoRemoveDir
    };
    if needs_whiteout {
        match whiteout::whiteout_name(name) {
            Some(wh) => create_whiteout_file(dir, &wh)?,
            None => {
                // No room for `.wh.NAME`: a 0/0 device takes the name's place in one rename.
                let work = set
                    .get(w)?
                    .work_dir()
                    .ok_or_else(|| sys::err(libc::EROFS))?;
                let staged = stage_device_whiteout(work)?;
                let how = match (in_rw, is_dir) {
                    (false, _) => Install::NoReplace,
                    (true, false) => Install::Replace,
                    (true, true) => {
                        clear_dir(dir, name)?;
                        Install::Exchange
                    }
                };
                return staged.install(dir, name, how);
            }
        }
    }
    if in_rw {
        if is_dir {
            clear_dir(dir, name)?;
        }
        nix::unistd::unlinkat(dir, name, unlink_flag)?;
    }
    Ok(())
}

/// Empties the writable copy of a directory that is empty in the merged view: what remains
/// in it are whiteouts, opaque markers and stale temp entries.
fn clear_dir(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let dir: OwnedFd = open_beneath(
        parent,
        Path::new(name),
        OFlag::O_PATH | OFlag::O_DIRECTORY,
        Mode::empty(),
    )?;
    for (entry, _) in sys::read_dir(dir.as_fd())? {
        remove_tree_at(dir.as_fd(), &entry)?;
    }
    Ok(())
}

/// Puts an opaque marker into directory `name` of `parent`.
fn make_opaque(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let path = Path::new(name).join(whiteout::OPAQUE_MARKER);
    let fd = open_beneath(
        parent,
        &path,
        OFlag::O_CREAT | OFlag::O_WRONLY,
        Mode::from_bits_truncate(0o600),
    )?;
    drop(fd);
    Ok(())
}
