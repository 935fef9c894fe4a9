//! Operations on existing nodes: attributes, open files, data, xattrs, directory listings.
//! Anything that modifies goes through `ensure_private` first (copy-up / link breaking).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FchmodatFlags, Mode, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid};

use crate::attr::{Stat, Timespec};
use crate::branch::{RealBranches, open_beneath};
use crate::copyup::timespec;
use crate::handles::OpenFile;
use crate::inode::NodeId;
use crate::listing::{DirItem, Listing};
use crate::sys;
use crate::union;
use crate::unionfs::{Caller, Located, UnionFs};
use crate::whiteout;

/// A new value for a timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetTime {
    Now,
    At(Timespec),
}

/// The attribute changes of one `setattr`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
    /// The caller may not keep set-ID bits (it lacks CAP_FSETID): a truncate drops them, as the
    /// kernel leaves that to the filesystem (see [`kill_privileges`]).
    pub unprivileged: bool,
}

/// Filesystem statistics (of the writable branch, or the first one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}

/// One entry of a listing at an offset: the offset of the next entry comes with it.
#[derive(Clone, Debug)]
pub struct Listed {
    pub next_offset: u64,
    pub ino: u64,
    pub item: DirItem,
}

/// Most entries one `readdir` returns; the kernel asks again from the next offset.
pub const READDIR_BATCH: usize = 512;

/// Open flags passed on to the backing file (the rest is the kernel's business or unsafe).
const PASSED_OPEN_FLAGS: i32 = libc::O_ACCMODE
    | libc::O_APPEND
    | libc::O_TRUNC
    | libc::O_SYNC
    | libc::O_DSYNC
    | libc::O_NOATIME;

fn time_spec(t: Option<SetTime>) -> TimeSpec {
    match t {
        None => TimeSpec::UTIME_OMIT,
        Some(SetTime::Now) => TimeSpec::UTIME_NOW,
        Some(SetTime::At(t)) => timespec(t),
    }
}

impl UnionFs {
    /// Attributes of a node; through `fh` when given (works for unlinked open files). A node
    /// whose name moved to a successor answers with the successor's file.
    pub fn getattr(&self, id: NodeId, fh: Option<u64>) -> io::Result<Stat> {
        let node = self.nodes.get(id)?;
        if let Some(h) = fh
            .and_then(|fh| self.handles.file(fh))
            .filter(|h| h.node == id)
        {
            return self.attr_of_open(&node, &h);
        }
        let current = self.nodes.current(id)?;
        let set = self.snapshot();
        match self.locate(&set, &current) {
            Ok(loc) => self.attr_of(&current, &loc),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                // Unlinked but still open: the open file still knows it.
                let h = node
                    .open_handles()
                    .into_iter()
                    .find_map(|fh| self.handles.file(fh))
                    .ok_or(e)?;
                self.attr_of_open(&node, &h)
            }
            Err(e) => Err(e),
        }
    }

    fn attr_of_open(&self, node: &crate::inode::Node, h: &OpenFile) -> io::Result<Stat> {
        let st = sys::fstat(h.file.as_fd())?;
        let marked = !h.writable
            && st.nlink > 1
            && sys::get_xattr(
                sys::XattrTarget::Fd(h.file.as_fd()),
                OsStr::new(hashstore::MARK_XATTR),
            )?
            .is_some();
        Ok(self.present(node, st, 1, marked))
    }

    /// chmod, chown, truncate, utimes. The file is copied up / its link broken first; a
    /// truncate through a file opened for writing (`fh`) uses that file.
    pub fn setattr(&self, id: NodeId, attr: SetAttr, fh: Option<u64>) -> io::Result<Stat> {
        let node = self.nodes.current(id)?;
        let handle = fh
            .and_then(|fh| self.handles.file(fh))
            .filter(|h| h.node == id && h.writable);
        let set = self.snapshot();
        let only_size = attr
            == SetAttr {
                size: attr.size,
                unprivileged: attr.unprivileged,
                ..SetAttr::default()
            };
        if let (Some(h), Some(size), true) = (&handle, attr.size, only_size) {
            nix::unistd::ftruncate(h.file.as_fd(), size as libc::off_t)?;
            kill_privileges(h.file.as_fd(), attr.unprivileged)?;
            return self.attr_of_open(&node, h);
        }
        let loc = match self.ensure_private(&set, &node, attr.size) {
            Ok(loc) => loc,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && handle.is_some() => {
                let h = handle.ok_or(e)?;
                return self.setattr_open(&node, &h, attr);
            }
            Err(e) => return Err(e),
        };
        if attr.uid.is_some() || attr.gid.is_some() {
            nix::unistd::fchownat(
                loc.dir.as_fd(),
                loc.name.as_os_str(),
                attr.uid.map(Uid::from_raw),
                attr.gid.map(Gid::from_raw),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )?;
        }
        if let Some(mode) = attr.mode {
            nix::sys::stat::fchmodat(
                loc.dir.as_fd(),
                loc.name.as_os_str(),
                Mode::from_bits_truncate(mode & 0o7777),
                FchmodatFlags::NoFollowSymlink,
            )?;
        }
        if let Some(size) = attr.size {
            let f = open_beneath(
                loc.dir.as_fd(),
                Path::new(&loc.name),
                OFlag::O_WRONLY,
                Mode::empty(),
            )?;
            nix::unistd::ftruncate(f.as_fd(), size as libc::off_t)?;
            kill_privileges(f.as_fd(), attr.unprivileged)?;
        }
        if attr.atime.is_some() || attr.mtime.is_some() {
            nix::sys::stat::utimensat(
                loc.dir.as_fd(),
                loc.name.as_os_str(),
                &time_spec(attr.atime),
                &time_spec(attr.mtime),
                UtimensatFlags::NoFollowSymlink,
            )?;
        }
        self.attr_of(&node, &loc)
    }

    /// setattr of an unlinked file through its writable open file.
    fn setattr_open(
        &self,
        node: &crate::inode::Node,
        h: &OpenFile,
        attr: SetAttr,
    ) -> io::Result<Stat> {
        let fd = h.file.as_fd();
        if attr.uid.is_some() || attr.gid.is_some() {
            nix::unistd::fchown(fd, attr.uid.map(Uid::from_raw), attr.gid.map(Gid::from_raw))?;
        }
        if let Some(mode) = attr.mode {
            nix::sys::stat::fchmod(fd, Mode::from_bits_truncate(mode & 0o7777))?;
        }
        if let Some(size) = attr.size {
            nix::unistd::ftruncate(fd, size as libc::off_t)?;
            kill_privileges(fd, attr.unprivileged)?;
        }
        if attr.atime.is_some() || attr.mtime.is_some() {
            nix::sys::stat::futimens(fd, &time_spec(attr.atime), &time_spec(attr.mtime))?;
        }
        self.attr_of_open(node, h)
    }

    pub fn readlink(&self, id: NodeId) -> io::Result<OsString> {
        let node = self.nodes.get(id)?;
        let loc = self.locate(&self.snapshot(), &node)?;
        Ok(nix::fcntl::readlinkat(
            loc.dir.as_fd(),
            loc.name.as_os_str(),
        )?)
    }

    /// Opens a file. Opening for writing (or with `O_TRUNC`) copies the file up / breaks its
    /// store link first, so a writable descriptor never points at a shared file.
    ///
    /// The open is registered under the node's copy lock, so a copy-up or link break that
    /// comes later sees it and gives the name a new node instead of replacing the file under
    /// this one. Conversely an open of a node whose name moved on answers ESTALE: the kernel
    /// then looks the name up again and opens the new node.
    /// `unprivileged`: the caller may not keep set-ID bits, which an `O_TRUNC` then drops.
    pub fn open(&self, id: NodeId, flags: i32, unprivileged: bool) -> io::Result<u64> {
        let node = self.nodes.get(id)?;
        if node.is_dir() {
            return Err(sys::err(libc::EISDIR));
        }
        let truncate = flags & libc::O_TRUNC != 0;
        let modifies = flags & libc::O_ACCMODE != libc::O_RDONLY || truncate;
        let set = self.snapshot();
        let _copying = node.copy_lock.lock();
        let stale = || sys::err(libc::ESTALE);
        if node.successor().is_some() {
            return Err(stale());
        }
        let loc = if modifies {
            let loc = self.make_private(&set, &node, truncate.then_some(0))?;
            if node.successor().is_some() {
                return Err(stale());
            }
            loc
        } else {
            self.locate(&set, &node)?
        };
        let file = self.open_located(&loc, flags)?;
        if truncate {
            kill_privileges(file.as_fd(), unprivileged)?;
        }
        Ok(self.add_open(id, file, modifies))
    }

    /// The open file behind a handle.
    pub fn open_file_of(&self, fh: u64) -> Option<Arc<OpenFile>> {
        self.handles.file(fh)
    }

    fn open_located(&self, loc: &Located, flags: i32) -> io::Result<File> {
        let oflags = OFlag::from_bits_truncate(flags & PASSED_OPEN_FLAGS);
        let fd = open_beneath(loc.dir.as_fd(), Path::new(&loc.name), oflags, Mode::empty())?;
        Ok(File::from(fd))
    }

    pub(crate) fn add_open(&self, id: NodeId, file: File, writable: bool) -> u64 {
        let fh = self.handles.add_file(OpenFile {
            node: id,
            file,
            writable,
        });
        if let Ok(node) = self.nodes.get(id) {
            node.add_open_handle(fh);
        }
        fh
    }

    /// Creates and opens a new regular file.
    pub fn create(
        &self,
        parent: NodeId,
        name: &OsStr,
        perm: u32,
        flags: i32,
        caller: Caller,
    ) -> io::Result<(Arc<crate::inode::Node>, Stat, u64)> {
        let oflags = OFlag::from_bits_truncate(flags & PASSED_OPEN_FLAGS & !libc::O_TRUNC);
        let (node, st, file) = self.create_entry(
            parent,
            name,
            crate::copyup::NewKind::File(oflags),
            perm,
            caller,
        )?;
        let file = file.ok_or_else(|| sys::err(libc::EIO))?;
        let fh = self.add_open(node.id, file, true);
        Ok((node, st, fh))
    }

    fn open_file(&self, fh: u64) -> io::Result<Arc<OpenFile>> {
        self.handles.file(fh).ok_or_else(|| sys::err(libc::EBADF))
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32) -> io::Result<Vec<u8>> {
        read_fully(&self.open_file(fh)?.file, offset, size)
    }

    /// A read of a file the kernel never opened (the `noopen` mount): the backing file is
    /// opened for this one read, so no descriptor is held per inode.
    pub fn read_unopened(&self, id: NodeId, offset: u64, size: u32) -> io::Result<Vec<u8>> {
        let node = self.nodes.current(id)?;
        if node.is_dir() {
            return Err(sys::err(libc::EISDIR));
        }
        let loc = self.locate(&self.snapshot(), &node)?;
        read_fully(&self.open_located(&loc, libc::O_RDONLY)?, offset, size)
    }

    /// Writes through the daemon (no passthrough); `kill_setid` is the kernel's request to
    /// drop set-ID bits (the writer lacks CAP_FSETID).
    pub fn write(&self, fh: u64, offset: u64, data: &[u8], kill_setid: bool) -> io::Result<usize> {
        let h = self.open_file(fh)?;
        if !h.writable {
            return Err(sys::err(libc::EBADF));
        }
        h.file.write_all_at(data, offset)?;
        kill_privileges(h.file.as_fd(), kill_setid)?;
        Ok(data.len())
    }

    pub fn fsync(&self, fh: u64, datasync: bool) -> io::Result<()> {
        let h = self.open_file(fh)?;
        if datasync {
            h.file.sync_data()
        } else {
            h.file.sync_all()
        }
    }

    pub fn release(&self, fh: u64) {
        if let Some(h) = self.handles.remove_file(fh)
            && let Ok(node) = self.nodes.get(h.node)
        {
            node.remove_open_handle(fh);
        }
    }

    pub fn fallocate(&self, fh: u64, mode: i32, offset: u64, length: u64) -> io::Result<()> {
        let h = self.open_file(fh)?;
        if !h.writable {
            return Err(sys::err(libc::EBADF));
        }
        nix::fcntl::fallocate(
            h.file.as_fd(),
            nix::fcntl::FallocateFlags::from_bits_truncate(mode),
            offset as libc::off_t,
            length as libc::off_t,
        )?;
        Ok(())
    }

    pub fn lseek(&self, fh: u64, offset: i64, whence: i32) -> io::Result<i64> {
        let h = self.open_file(fh)?;
        let whence = match whence {
            libc::SEEK_SET => nix::unistd::Whence::SeekSet,
            libc::SEEK_CUR => nix::unistd::Whence::SeekCur,
            libc::SEEK_END => nix::unistd::Whence::SeekEnd,
            libc::SEEK_DATA => nix::unistd::Whence::SeekData,
            libc::SEEK_HOLE => nix::unistd::Whence::SeekHole,
            _ => return Err(sys::err(libc::EINVAL)),
        };
        Ok(nix::unistd::lseek(h.file.as_fd(), offset, whence)?)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn copy_file_range(
        &self,
        fh_in: u64,
        off_in: u64,
        fh_out: u64,
        off_out: u64,
        len: u64,
    ) -> io::Result<usize> {
        let (src, dst) = (self.open_file(fh_in)?, self.open_file(fh_out)?);
        if !dst.writable {
            return Err(sys::err(libc::EBADF));
        }
        let (mut i, mut o) = (off_in as i64, off_out as i64);
        Ok(nix::fcntl::copy_file_range(
            src.file.as_fd(),
            Some(&mut i),
            dst.file.as_fd(),
            Some(&mut o),
            len as usize,
        )?)
    }

    // ----- xattrs -------------------------------------------------------------------------

    /// The value of an xattr. cowfs' and overlayfs' own xattrs do not exist for the guest.
    pub fn getxattr(&self, id: NodeId, name: &OsStr) -> io::Result<Vec<u8>> {
        if whiteout::is_private_xattr(name) {
            return Err(sys::err(libc::ENODATA));
        }
        let node = self.nodes.current(id)?;
        let loc = self.locate(&self.snapshot(), &node)?;
        sys::get_xattr(loc.xattrs(), name)?.ok_or_else(|| sys::err(libc::ENODATA))
    }

    pub fn listxattr(&self, id: NodeId) -> io::Result<Vec<OsString>> {
        let node = self.nodes.current(id)?;
        let loc = self.locate(&self.snapshot(), &node)?;
        let mut names = sys::list_xattrs(loc.xattrs())?;
        names.retain(|n| !whiteout::is_private_xattr(n));
        Ok(names)
    }

    /// Sets an xattr (after copy-up / link breaking). The private ones are refused: a guest
    /// removing the store mark could otherwise write into a shared object.
    pub fn setxattr(&self, id: NodeId, name: &OsStr, value: &[u8], flags: i32) -> io::Result<()> {
        if whiteout::is_private_xattr(name) {
            return Err(sys::err(libc::EPERM));
        }
        let node = self.nodes.current(id)?;
        let loc = self.ensure_private(&self.snapshot(), &node, None)?;
        sys::set_xattr(loc.xattrs(), name, value, flags)
    }

    pub fn removexattr(&self, id: NodeId, name: &OsStr) -> io::Result<()> {
        if whiteout::is_private_xattr(name) {
            return Err(sys::err(libc::EPERM));
        }
        let node = self.nodes.current(id)?;
        let set = self.snapshot();
        // Removing what is not there must not cost a copy-up.
        let loc = self.locate(&set, &node)?;
        if sys::get_xattr(loc.xattrs(), name)?.is_none() {
            return Err(sys::err(libc::ENODATA));
        }
        let loc = self.ensure_private(&set, &node, None)?;
        sys::remove_xattr(loc.xattrs(), name)
    }

    // ----- directories --------------------------------------------------------------------

    pub fn opendir(&self, id: NodeId) -> io::Result<u64> {
        let node = self.nodes.get(id)?;
        if !node.is_dir() {
            return Err(sys::err(libc::ENOTDIR));
        }
        Ok(self.handles.add_dir(id))
    }

    /// Makes a directory's entries durable: the writable branch's copy is the one that changes.
    pub fn fsyncdir(&self, id: NodeId) -> io::Result<()> {
        let node = self.nodes.get(id)?;
        let set = self.snapshot();
        let Some(w) = set.write_branch() else {
            return Ok(()); // nothing can have changed
        };
        if self.place(&set, &node)?.branch() != w {
            return Ok(()); // not in the writable branch: no entry of it was written
        }
        let dir = set
            .get(w)?
            .open_at(&self.nodes.path(id)?, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
        nix::unistd::fsync(dir.as_fd())?;
        Ok(())
    }

    pub fn releasedir(&self, fh: u64) {
        self.handles.remove_dir(fh);
    }

    /// The merged listing after `offset` (see `listing.rs`). A read from offset 0 (a new
    /// pass) reads the branches again; a continuation uses the listing the node has, so a
    /// directory of many entries is read from the branches once per pass, not once per piece.
    /// `fh` is 0 when the kernel does not open directories.
    pub fn readdir(&self, id: NodeId, fh: u64, offset: u64) -> io::Result<Vec<Listed>> {
        if fh != 0 && self.handles.dir(fh).is_none_or(|d| d.node != id) {
            return Err(sys::err(libc::EBADF));
        }
        let node = self.nodes.get(id)?;
        if !node.is_dir() {
            return Err(sys::err(libc::ENOTDIR));
        }
        let cached = node.listing.lock().clone();
        let listing = match cached {
            Some(l) if offset != 0 => l,
            _ => {
                let l = Arc::new(self.list_dir(id)?);
                *node.listing.lock() = Some(l.clone());
                l
            }
        };
        let parent_ino = node
            .aliases()
            .first()
            .and_then(|a| self.nodes.get(a.parent).ok())
            .map_or(node.ino, |p| p.ino);
        // One reply holds at most a few thousand entries: handing over (and numbering) the
        // whole rest of the listing on every call made a big directory quadratic to list.
        Ok(listing
            .after(offset)
            .take(READDIR_BATCH)
            .map(|(next_offset, item)| {
                let ino = match item.name.as_bytes() {
                    b"." => node.ino,
                    b".." => parent_ino,
                    _ => self
                        .nodes
                        .child(id, &item.name)
                        .map(|n| n.ino)
                        .unwrap_or_else(|| unknown_ino(id, &item.name)),
                };
                Listed {
                    next_offset,
                    ino,
                    item: item.clone(),
                }
            })
            .collect())
    }

    fn list_dir(&self, id: NodeId) -> io::Result<Listing> {
        let set = self.snapshot();
        let dir = self.dir_ctx(&set, id)?;
        let merged = union::read_dir(&RealBranches(&set), &dir.path, &dir.place.layers)?;
        Ok(Listing::new(merged.into_iter().map(|e| DirItem {
            name: e.name,
            kind: e.kind,
        })))
    }

    pub fn statfs(&self) -> io::Result<StatFs> {
        let set = self.snapshot();
        let b = set.write_branch().unwrap_or(0);
        let st = nix::sys::statvfs::fstatvfs(set.get(b)?.root())?;
        Ok(StatFs {
            blocks: st.blocks(),
            bfree: st.blocks_free(),
            bavail: st.blocks_available(),
            files: st.files(),
            ffree: st.files_free(),
            bsize: st.block_size() as u32,
            namelen: st.name_max().min(whiteout::NAME_MAX as u64) as u32,
            frsize: st.fragment_size() as u32,
        })
    }

    /// `access(2)` when the kernel does not check permissions itself: the classic owner /
    /// group / other bits (root may do anything but execute a file nobody may execute).
    pub fn access(&self, id: NodeId, mask: i32, caller: Caller) -> io::Result<()> {
        let st = self.getattr(id, None)?;
        if mask == libc::F_OK {
            return Ok(());
        }
        if mask & libc::W_OK != 0 {
            let set = self.snapshot();
            let w = Self::write_branch(&set)?;
            let node = self.nodes.current(id)?;
            if self.place(&set, &node)?.branch() < w {
                return Err(sys::err(libc::EROFS));
            }
        }
        let bits = if caller.uid == 0 {
            let any_x = st.mode & 0o111 != 0 || st.is_dir();
            if mask & libc::X_OK != 0 && !any_x {
                return Err(sys::err(libc::EACCES));
            }
            return Ok(());
        } else if caller.uid == st.uid {
            (st.mode >> 6) & 7
        } else if caller.gid == st.gid {
            (st.mode >> 3) & 7
        } else {
            st.mode & 7
        };
        if (mask as u32) & !bits != 0 {
            return Err(sys::err(libc::EACCES));
        }
        Ok(())
    }
}

/// What the kernel does to a file that is written or truncated, done by the daemon because the
/// mount asks the filesystem to do it (`FUSE_HANDLE_KILLPRIV_V2`, which spares a GETXATTR
/// round trip per write): file capabilities go; with `setid`, for a caller lacking CAP_FSETID,
/// the set-user-ID bit goes, and the set-group-ID bit when the group may execute. (The daemon
/// writes as root, so the backing filesystem would not drop them by itself; passthrough writes
/// run with the daemon's credentials minus CAP_FSETID, see `fuse.rs`, and do get them dropped.)
pub(crate) fn kill_privileges(fd: std::os::fd::BorrowedFd<'_>, setid: bool) -> io::Result<()> {
    match sys::remove_xattr(sys::XattrTarget::Fd(fd), OsStr::new("security.capability")) {
        Err(e) if !matches!(e.raw_os_error(), Some(libc::ENODATA | libc::ENOTSUP)) => {
            return Err(e);
        }
        _ => {}
    }
    if !setid {
        return Ok(());
    }
    let mode = sys::fstat(fd)?.mode & 0o7777;
    let mut kept = mode & !libc::S_ISUID;
    if kept & libc::S_IXGRP != 0 {
        kept &= !libc::S_ISGID;
    }
    if kept != mode {
        nix::sys::stat::fchmod(fd, Mode::from_bits_truncate(kept))?;
    }
    Ok(())
}

/// The inode number shown by a plain `readdir` for a name the kernel has not looked up yet
/// (readdirplus, which the mount asks the kernel to use, gives the real one). The top bit keeps
/// it apart from node ids, which count up from 1.
fn unknown_ino(dir: NodeId, name: &OsStr) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(&dir.to_le_bytes());
    h.update(std::os::unix::ffi::OsStrExt::as_bytes(name));
    let bytes = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes.as_bytes()[..8]);
    u64::from_le_bytes(first) | (1 << 63)
}

/// Up to `size` bytes at `offset`; fewer only at the end of the file.
fn read_fully(file: &File, offset: u64, size: u32) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; size as usize];
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    buf.truncate(done);
    Ok(buf)
}
