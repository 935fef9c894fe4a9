//! The FUSE adapter: each request becomes one call into [`UnionFs`], each result one reply.
//! It holds no policy; it converts types and maps `io::Error`s to errnos.

use std::ffi::OsStr;
use std::io;
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
use crate::unionfs::{Caller, UnionFs};

/// The `fuser::Filesystem` face of a union.
pub struct FuseAdapter {
    fs: Arc<UnionFs>,
}

impl FuseAdapter {
    pub fn new(fs: Arc<UnionFs>) -> FuseAdapter {
        FuseAdapter { fs }
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

    fn reply_entry(&self, reply: ReplyEntry, r: io::Result<(Arc<crate::inode::Node>, Stat)>) {
        match r {
            Ok((_, st)) => reply.entry_with_ttls(
                &self.attr_ttl(),
                &self.entry_ttl(),
                &file_attr(&st),
                self.generation(),
            ),
            Err(e) => reply.error(errno(e)),
        }
    }
}

fn errno(e: io::Error) -> Errno {
    if e.raw_os_error().is_none() {
        tracing::warn!(error = %e, "error without errno; answering EIO");
    }
    Errno::from(e)
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

/// Answers an open/opendir request.
fn opened(reply: ReplyOpen, r: io::Result<u64>) {
    match r {
        Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
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
        for (flag, what) in [
            (InitFlags::FUSE_DO_READDIRPLUS, "readdirplus"),
            (
                InitFlags::FUSE_PARALLEL_DIROPS,
                "parallel directory operations",
            ),
            (InitFlags::FUSE_ATOMIC_O_TRUNC, "atomic O_TRUNC"),
            (InitFlags::FUSE_CACHE_SYMLINKS, "symlink caching"),
        ] {
            if let Err(missing) = config.add_capabilities(flag) {
                tracing::info!(?missing, "kernel lacks {what}");
            }
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.reply_entry(reply, self.fs.lookup(parent.0, name));
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        self.reply_attr(reply, self.fs.getattr(ino.0, fh.map(|f| f.0)))
    }

    fn setattr(
        &self,
        _req: &Request,
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
        let attr = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: set_time(atime),
            mtime: set_time(mtime),
        };
        self.reply_attr(reply, self.fs.setattr(ino.0, attr, fh.map(|f| f.0)))
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
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
        self.reply_entry(
            reply,
            self.fs.mkdir(parent.0, name, mode & 0o7777, caller(req)),
        );
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        done(reply, self.fs.unlink(parent.0, name))
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
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
        self.reply_entry(reply, self.fs.link(ino.0, newparent.0, newname));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        opened(reply, self.fs.open(ino.0, flags.0))
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.fs.read(fh.0, offset, size) {
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
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.fs.write(fh.0, offset, data) {
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
        self.fs.release(fh.0);
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
        done(reply, self.fs.fsync(fh.0, datasync))
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        opened(reply, self.fs.opendir(ino.0))
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
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
        let entries = match self.fs.readdir(ino.0, fh.0, offset) {
            Ok(entries) => entries,
            Err(e) => return reply.error(errno(e)),
        };
        let ttl = self.entry_ttl();
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
            let (node, st) = match self.fs.lookup(ino.0, &e.item.name) {
                Ok(found) => found,
                Err(_) => continue, // vanished since the listing was read
            };
            if reply.add(
                INodeNo(node.id),
                e.next_offset,
                &e.item.name,
                &ttl,
                &file_attr(&st),
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
        done(reply, self.fs.fsyncdir(ino.0))
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
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
        done(reply, self.fs.setxattr(ino.0, name, value, flags))
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        reply_xattr(reply, size, self.fs.getxattr(ino.0, name));
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
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
        done(reply, self.fs.removexattr(ino.0, name))
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
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
        match self
            .fs
            .create(parent.0, name, mode & 0o7777, flags, caller(req))
        {
            Ok((_, st, fh)) => reply.created(
                &self.entry_ttl(),
                &file_attr(&st),
                self.generation(),
                FileHandle(fh),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(errno(e)),
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
        match self
            .fs
            .copy_file_range(fh_in.0, offset_in, fh_out.0, offset_out, len)
        {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(e)),
        }
    }
}
