//! The FUSE adapter: each request becomes one call into [`UnionFs`], each result one reply.
//! It holds no policy; it converts types and maps `io::Error`s to errnos.

use std::ffi::OsStr;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, BsdFileFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType,
    Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty,
    ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow,
    WriteFlags,
};

use crate::attr::{FileKind, Stat, Timespec};
use crate::fileops::{SetAttr, SetTime};
use crate::inode::Node;
use crate::passthrough::{Backings, Mode, OpenRequest};
use crate::stats::Op;
use crate::unionfs::{Caller, UnionFs};

/// Which of the kernel's shortcuts a mount uses (each can be turned off with a mount option,
/// for benchmarks and for kernels without it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelCache {
    /// Hand open files to the kernel (FUSE passthrough): reads and writes skip the daemon.
    pub passthrough: bool,
    /// Keep a file's page cache across opens (files served through the daemon).
    pub keep_cache: bool,
    /// Let the kernel cache directory listings.
    pub cache_dir: bool,
    /// Answer OPENDIR; without it the kernel stops sending OPENDIR and RELEASEDIR and caches
    /// listings itself (two round trips less per directory read).
    pub opendir: bool,
    /// Send attributes with listings (READDIRPLUS), so a walk needs no LOOKUP per entry.
    pub readdirplus: bool,
    /// Read-only opens of files smaller than this are served through the daemon and the
    /// kernel's page cache instead of passthrough (writable opens always pass through).
    pub passthrough_min: u64,
    /// Let the kernel cache symlink targets (no READLINK per resolution).
    pub cache_symlinks: bool,
    /// Let the kernel run lookups and listings of one directory in parallel.
    pub parallel_dirops: bool,
    /// Answer OPEN (and FLUSH). Without it (`noopen`, read-only unions only) the kernel stops
    /// sending both and reads files by inode: a warm open+read+close costs no round trip, but
    /// no file is passed through either, so large files are read through the daemon.
    pub open: bool,
}

impl Default for KernelCache {
    fn default() -> Self {
        KernelCache {
            passthrough: true,
            keep_cache: true,
            cache_dir: true,
            opendir: false,
            readdirplus: true,
            passthrough_min: 64 * 1024,
            cache_symlinks: true,
            parallel_dirops: true,
            open: true,
        }
    }
}

/// The `fuser::Filesystem` face of a union.
pub struct FuseAdapter {
    fs: Arc<UnionFs>,
    cache: KernelCache,
    backings: Backings,
}

impl FuseAdapter {
    /// A request about a file the kernel did not open (the `noopen` mount): handle 0.
    fn unopened(&self, fh: FileHandle) -> bool {
        fh.0 == 0 && !self.cache.open
    }

    pub fn new(fs: Arc<UnionFs>, cache: KernelCache) -> FuseAdapter {
        FuseAdapter {
            fs,
            cache,
            backings: Backings::default(),
        }
    }

    fn count(&self, op: Op) {
        self.fs.stats().count(op);
    }

    fn entry_ttl(&self) -> Duration {
        self.fs.config().entry_ttl
    }

    fn attr_ttl(&self) -> Duration {
        self.fs.config().attr_ttl
    }

    fn generation(&self) -> Generation {
        Generation(self.fs.generation())
    }

    fn reply_attr(&self, reply: ReplyAttr, r: io::Result<Stat>) {
        match r {
            Ok(st) => reply.attr(&self.attr_ttl(), &file_attr(&st)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn reply_entry(&self, reply: ReplyEntry, r: io::Result<(Arc<Node>, Stat)>) {
        match r {
            Ok((node, st)) => {
                let (attr, attr_ttl, entry_ttl) = self.entry_attr(&node, &st);
                reply.entry_with_ttls(&attr_ttl, &entry_ttl, &attr, self.generation())
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    /// Attributes and TTLs of an entry reply. fuser takes the node id from the attributes'
    /// inode number; a node that presents another number (a successor, see
    /// `NodeTable::supersede`) is sent with its id and attributes that expire at once, so the
    /// kernel asks GETATTR, whose reply sets the number the guest sees.
    fn entry_attr(&self, node: &Node, st: &Stat) -> (FileAttr, Duration, Duration) {
        let mut attr = file_attr(st);
        if node.ino == node.id {
            return (attr, self.attr_ttl(), self.entry_ttl());
        }
        attr.ino = INodeNo(node.id);
        (attr, Duration::ZERO, Duration::ZERO)
    }

    /// Answers an open of `fh` (file node `node`), through passthrough when possible.
    fn reply_open(&self, reply: ReplyOpen, node: u64, fh: u64, privileged: bool) {
        match self.open_mode(node, fh, privileged, |f| reply.open_backing(f)) {
            (Mode::Passthrough(id), flags) => reply.opened_passthrough(FileHandle(fh), flags, &id),
            (Mode::Cached { .. }, flags) => reply.opened(FileHandle(fh), flags),
        }
    }

    /// How open `fh` of `node` is answered. A backing file registered here writes with the
    /// daemon's credentials; for an unprivileged opener they lack CAP_FSETID (see
    /// [`without_fsetid`]); later opens of the node share the backing file as registered.
    fn open_mode(
        &self,
        node: u64,
        fh: u64,
        privileged: bool,
        register: impl FnOnce(&std::fs::File) -> io::Result<fuser::BackingId>,
    ) -> (Mode, FopenFlags) {
        // Flushing does nothing here (writes reach the backing file at once): spare the
        // round trip at every close.
        let mut flags = FopenFlags::FOPEN_NOFLUSH;
        let opened = self.fs.open_file_of(fh).and_then(|open| {
            let st = crate::sys::fstat(open.file.as_fd()).ok()?;
            Some((open, st))
        });
        let mode = match &opened {
            Some((open, st)) => self.backings.open(
                OpenRequest {
                    node,
                    fh,
                    file: &open.file,
                    identity: (st.dev, st.ino),
                    writable: open.writable,
                    // Reading a small file costs one READ round trip the first time and none
                    // once cached; through passthrough it costs none, but every read makes the
                    // kernel ask GETATTR again at the next stat (atime).
                    wants_passthrough: open.writable || st.size >= self.cache.passthrough_min,
                },
                |f| {
                    let id = if privileged {
                        register(f)?
                    } else {
                        without_fsetid(|| register(f))?
                    };
                    self.count(Op::BackingRegistered);
                    Ok(id)
                },
            ),
            None => Mode::Cached { keep_cache: false },
        };
        match mode {
            Mode::Passthrough(_) => self.count(Op::PassthroughOpen),
            Mode::Cached { keep_cache } => {
                self.count(Op::CachedOpen);
                if keep_cache && self.cache.keep_cache {
                    flags |= FopenFlags::FOPEN_KEEP_CACHE;
                }
            }
        }
        (mode, flags)
    }
}

fn errno(e: io::Error) -> Errno {
    if e.raw_os_error().is_none() {
        tracing::warn!(error = %e, "error without errno; answering EIO");
    }
    Errno::from(e)
}

/// Whether the caller is taken to lack CAP_FSETID (the kernel does not tell): anyone but root.
fn unprivileged(req: &Request) -> bool {
    req.uid() != 0
}

/// Runs `f` without CAP_FSETID in this thread's effective set. A passthrough backing file
/// writes with the credentials of whoever registered it: without CAP_FSETID, the backing
/// filesystem drops set-ID bits on every write through it, as the kernel does for an
/// unprivileged writer. (A node's opens share one backing file: an unprivileged writer joining
/// a root's open of a set-ID file keeps the bits, as if root wrote.)
fn without_fsetid<T>(f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    use caps::{CapSet, Capability};
    let had = caps::has_cap(None, CapSet::Effective, Capability::CAP_FSETID).unwrap_or(false);
    if had {
        caps::drop(None, CapSet::Effective, Capability::CAP_FSETID).map_err(io::Error::other)?;
    }
    let r = f();
    if had && let Err(e) = caps::raise(None, CapSet::Effective, Capability::CAP_FSETID) {
        tracing::error!(error = %e, "cannot take CAP_FSETID back");
    }
    r
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
    }
}

fn system_time(t: Timespec) -> SystemTime {
    let nsec = Duration::from_nanos(t.nsec.clamp(0, 999_999_999) as u64);
    if t.sec >= 0 {
        UNIX_EPOCH + Duration::from_secs(t.sec as u64) + nsec
    } else {
        UNIX_EPOCH - Duration::from_secs(t.sec.unsigned_abs()) + nsec
    }
}

fn timespec(t: SystemTime) -> Timespec {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Timespec {
            sec: d.as_secs() as i64,
            nsec: d.subsec_nanos() as i64,
        },
        Err(e) => {
            let d = e.duration();
            let (sec, nsec) = (d.as_secs() as i64, d.subsec_nanos() as i64);
            if nsec == 0 {
                Timespec { sec: -sec, nsec: 0 }
            } else {
                Timespec {
                    sec: -sec - 1,
                    nsec: 1_000_000_000 - nsec,
                }
            }
        }
    }
}

fn set_time(t: Option<TimeOrNow>) -> Option<SetTime> {
    t.map(|t| match t {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(t) => SetTime::At(timespec(t)),
    })
}

fn file_type(kind: FileKind) -> FileType {
    match kind {
        FileKind::Dir => FileType::Directory,
        FileKind::File => FileType::RegularFile,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
        FileKind::CharDev => FileType::CharDevice,
        FileKind::BlockDev => FileType::BlockDevice,
    }
}

pub(crate) fn file_attr(st: &Stat) -> FileAttr {
    FileAttr {
        ino: INodeNo(st.ino),
        size: st.size,
        blocks: st.blocks,
        atime: system_time(st.atime),
        mtime: system_time(st.mtime),
        ctime: system_time(st.ctime),
        crtime: UNIX_EPOCH,
        kind: file_type(st.kind().unwrap_or(FileKind::File)),
        perm: (st.mode & 0o7777) as u16,
        nlink: u32::try_from(st.nlink).unwrap_or(u32::MAX),
        uid: st.uid,
        gid: st.gid,
        rdev: st.rdev as u32,
        blksize: u32::try_from(st.blksize).unwrap_or(4096),
        flags: 0,
    }
}

/// Answers a request whose success carries no data.
fn done(reply: ReplyEmpty, r: io::Result<()>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(e)),
    }
}

/// Answers a getxattr/listxattr request: the size when asked for it, ERANGE when too small.
fn reply_xattr(reply: ReplyXattr, size: u32, data: io::Result<Vec<u8>>) {
    match data {
        Ok(data) if size == 0 => reply.size(data.len() as u32),
        Ok(data) if data.len() > size as usize => reply.error(Errno::ERANGE),
        Ok(data) => reply.data(&data),
        Err(e) => reply.error(errno(e)),
    }
}

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // Ask for what saves round trips; each one the kernel lacks is simply not used.
        let mut wanted = vec![
            (InitFlags::FUSE_ATOMIC_O_TRUNC, "atomic O_TRUNC"),
            // Set-ID bits and capabilities are dropped here, not by the kernel, which would
            // otherwise ask GETXATTR(security.capability) before every single write.
            (
                InitFlags::FUSE_HANDLE_KILLPRIV_V2,
                "privilege dropping by the filesystem",
            ),
        ];
        for (on, flag, what) in [
            (
                self.cache.parallel_dirops,
                InitFlags::FUSE_PARALLEL_DIROPS,
                "parallel directory operations",
            ),
            (
                self.cache.cache_symlinks,
                InitFlags::FUSE_CACHE_SYMLINKS,
                "symlink caching",
            ),
            (
                self.cache.readdirplus,
                InitFlags::FUSE_DO_READDIRPLUS,
                "readdirplus",
            ),
        ] {
            if on {
                wanted.push((flag, what));
            }
        }
        for (flag, what) in wanted {
            if let Err(missing) = config.add_capabilities(flag) {
                tracing::info!(?missing, "kernel lacks {what}");
            }
        }
        if self.cache.passthrough {
            match config.add_capabilities(InitFlags::FUSE_PASSTHROUGH) {
                // Depth 1: backing files on a plain filesystem, and this mount usable as an
                // overlayfs layer.
                Ok(()) => match config.set_max_stack_depth(1) {
                    Ok(_) => self.backings.enable(),
                    Err(max) => tracing::warn!(max, "passthrough: stacking depth refused"),
                },
                Err(_) => tracing::warn!(
                    "this kernel offers no FUSE passthrough: file data goes through the daemon"
                ),
            }
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.count(Op::Lookup);
        match self.fs.lookup(parent.0, name) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let ttl = self.fs.negative_ttl(parent.0, name);
                if ttl.is_zero() {
                    return reply.error(Errno::ENOENT);
                }
                // Node id 0: "no such name", cached by the kernel for the entry timeout.
                let mut attr = file_attr(&Stat::default());
                attr.ino = INodeNo(0);
                reply.entry_with_ttls(&Duration::ZERO, &ttl, &attr, self.generation());
            }
            r => self.reply_entry(reply, r),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.count(Op::Forget);
        self.fs.forget(ino.0, nlookup);
        if !self.fs.knows(ino.0) {
            self.backings.forget(ino.0);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        self.count(Op::Getattr);
        self.reply_attr(reply, self.fs.getattr(ino.0, fh.map(|f| f.0)))
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        self.count(Op::Setattr);
        let attr = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: set_time(atime),
            mtime: set_time(mtime),
            unprivileged: unprivileged(req),
        };
        self.reply_attr(reply, self.fs.setattr(ino.0, attr, fh.map(|f| f.0)))
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.count(Op::Readlink);
        match self.fs.readlink(ino.0) {
            Ok(target) => reply.data(target.as_bytes()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        self.count(Op::Mknod);
        self.reply_entry(
            reply,
            self.fs
                .mknod(parent.0, name, mode, u64::from(rdev), caller(req)),
        );
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        self.count(Op::Mkdir);
        self.reply_entry(
            reply,
            self.fs.mkdir(parent.0, name, mode & 0o7777, caller(req)),
        );
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.count(Op::Unlink);
        done(reply, self.fs.unlink(parent.0, name))
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.count(Op::Rmdir);
        done(reply, self.fs.rmdir(parent.0, name))
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        self.count(Op::Symlink);
        self.reply_entry(
            reply,
            self.fs.symlink(parent.0, link_name, target, caller(req)),
        );
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        self.count(Op::Rename);
        done(
            reply,
            self.fs
                .rename(parent.0, name, newparent.0, newname, flags.bits()),
        )
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.count(Op::Link);
        self.reply_entry(reply, self.fs.link(ino.0, newparent.0, newname));
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.count(Op::Open);
        if !self.cache.open {
            // The kernel stops asking: later opens cost nothing, READs come with handle 0.
            return reply.error(Errno::ENOSYS);
        }
        let unprivileged = unprivileged(req);
        match self.fs.open(ino.0, flags.0, unprivileged) {
            Ok(fh) => self.reply_open(reply, ino.0, fh, !unprivileged),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.count(Op::Read);
        let data = if self.unopened(fh) {
            self.fs.read_unopened(ino.0, offset, size)
        } else {
            self.fs.read(fh.0, offset, size)
        };
        match data {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        self.count(Op::Write);
        if self.unopened(fh) {
            // A noopen union has no writable branch.
            return reply.error(Errno::EROFS);
        }
        let kill_setid = write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
        match self.fs.write(fh.0, offset, data, kill_setid) {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.count(Op::Flush);
        if !self.cache.open {
            // Nothing is ever buffered, and unopened files have nothing to flush: the kernel
            // stops sending FLUSH on every close.
            return reply.error(Errno::ENOSYS);
        }
        // Data goes straight to the backing file on write; nothing is buffered here.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.count(Op::Release);
        self.fs.release(fh.0);
        self.backings.release(fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.count(Op::Fsync);
        if self.unopened(fh) {
            return reply.ok(); // nothing was written through it
        }
        done(reply, self.fs.fsync(fh.0, datasync))
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.count(Op::Opendir);
        if !self.cache.opendir {
            // The kernel stops asking and reads listings with file handle 0 (listing.rs).
            return reply.error(Errno::ENOSYS);
        }
        let flags = if self.cache.cache_dir {
            FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE
        } else {
            FopenFlags::empty()
        };
        match self.fs.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), flags),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.count(Op::Readdir);
        match self.fs.readdir(ino.0, fh.0, offset) {
            Ok(entries) => {
                for e in entries {
                    if reply.add(
                        INodeNo(e.ino),
                        e.next_offset,
                        file_type(e.item.kind),
                        &e.item.name,
                    ) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        self.count(Op::Readdirplus);
        let entries = match self.fs.readdir(ino.0, fh.0, offset) {
            Ok(entries) => entries,
            Err(e) => return reply.error(errno(e)),
        };
        if entries.is_empty() {
            // The end of the listing (every pass ends with one): no directory to open.
            return reply.ok();
        }
        let ttl = self.entry_ttl();
        let lookups = match self.fs.dir_lookups(ino.0) {
            Ok(l) => l,
            Err(e) => return reply.error(errno(e)),
        };
        for e in entries {
            let name = e.item.name.as_bytes();
            if name == b"." || name == b".." {
                // The kernel takes no reference on these; attributes only.
                let Ok(st) = self.fs.getattr(e.ino, None) else {
                    continue;
                };
                if reply.add(
                    INodeNo(e.ino),
                    e.next_offset,
                    &e.item.name,
                    &ttl,
                    &file_attr(&st),
                    self.generation(),
                ) {
                    break;
                }
                continue;
            }
            // Each entry the kernel receives counts as a lookup; one that does not fit is undone.
            let (node, st) = match self.fs.lookup_prepared(&lookups, &e.item.name) {
                Ok(found) => found,
                Err(_) => continue, // vanished since the listing was read
            };
            let (attr, _, ttl) = self.entry_attr(&node, &st);
            if reply.add(
                INodeNo(node.id),
                e.next_offset,
                &e.item.name,
                &ttl,
                &attr,
                self.generation(),
            ) {
                self.fs.forget(node.id, 1);
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.count(Op::Releasedir);
        self.fs.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.count(Op::Fsyncdir);
        done(reply, self.fs.fsyncdir(ino.0))
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.count(Op::Statfs);
        match self.fs.statfs() {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        self.count(Op::Setxattr);
        done(reply, self.fs.setxattr(ino.0, name, value, flags))
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        self.count(Op::Getxattr);
        reply_xattr(reply, size, self.fs.getxattr(ino.0, name));
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.count(Op::Listxattr);
        let list = self.fs.listxattr(ino.0).map(|names| {
            let mut buf = Vec::new();
            for n in names {
                buf.extend_from_slice(n.as_bytes());
                buf.push(0);
            }
            buf
        });
        reply_xattr(reply, size, list);
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.count(Op::Removexattr);
        done(reply, self.fs.removexattr(ino.0, name))
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        self.count(Op::Access);
        done(reply, self.fs.access(ino.0, mask.bits(), caller(req)))
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        self.count(Op::Create);
        let (node, st, fh) = match self
            .fs
            .create(parent.0, name, mode & 0o7777, flags, caller(req))
        {
            Ok(created) => created,
            Err(e) => return reply.error(errno(e)),
        };
        let (attr, _, ttl) = self.entry_attr(&node, &st);
        match self.open_mode(node.id, fh, !unprivileged(req), |f| reply.open_backing(f)) {
            (Mode::Passthrough(id), flags) => reply.created_passthrough(
                &ttl,
                &attr,
                self.generation(),
                FileHandle(fh),
                flags,
                &id,
            ),
            (Mode::Cached { .. }, flags) => {
                reply.created(&ttl, &attr, self.generation(), FileHandle(fh), flags)
            }
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.count(Op::Fallocate);
        if self.unopened(fh) {
            return reply.error(Errno::EROFS);
        }
        done(reply, self.fs.fallocate(fh.0, mode, offset, length))
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        self.count(Op::Lseek);
        if self.unopened(fh) {
            // The kernel seeks by itself from now on.
            return reply.error(Errno::ENOSYS);
        }
        match self.fs.lseek(fh.0, offset, whence) {
            Ok(off) => reply.offset(off),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        self.count(Op::CopyFileRange);
        if self.unopened(fh_in) || self.unopened(fh_out) {
            // The kernel copies through reads and writes from now on.
            return reply.error(Errno::ENOSYS);
        }
        match self
            .fs
            .copy_file_range(fh_in.0, offset_in, fh_out.0, offset_out, len)
        {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(e)),
        }
    }
}
