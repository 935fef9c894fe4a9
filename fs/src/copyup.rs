//! The one atomic path by which anything appears in a writable branch: build it under a temp
//! name in the branch's work directory, give it its final content and metadata, `fsync`, then
//! `rename` it into place.
//!
//! Copy-up (a file of a read-only branch about to change), link breaking (a store-linked file
//! about to change) and creation (a new file, directory, node or symlink) all go through
//! [`Staged`]: a killed daemon leaves at most a temp entry in the work directory (cleaned at the
//! next mount), never a half-copied or wrongly-owned file at a guest's path.
//!
//! Data is copied with `FICLONE` when the filesystem can share extents, else `copy_file_range`
//! over the source's data segments (holes stay holes), else `read`/`write`.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{AtFlags, OFlag, RenameFlags};
use nix::sys::stat::{FchmodatFlags, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid};

use crate::attr::{FileKind, Stat, Timespec};
use crate::branch::{open_beneath, remove_tree_at};
use crate::sys::{self, XattrTarget};
use crate::whiteout;

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh temp name (`.cowfs.tmp.<pid>.<n>`): hidden from the mount, unique in the work dir.
pub fn temp_name() -> OsString {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut name = OsStr::from_bytes(whiteout::TEMP_PREFIX).to_os_string();
    name.push(format!("{}.{}", std::process::id(), n));
    name
}

/// Owner of something new.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// How a staged entry takes its place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Install {
    /// Fail with EEXIST if the name exists.
    NoReplace,
    /// Atomically replace whatever has the name.
    Replace,
    /// Atomically swap with the existing entry, which is then deleted (replacing a non-directory
    /// with a directory, which `rename` refuses).
    Exchange,
}

/// An entry under a temp name in a work directory; removed on drop unless installed.
pub struct Staged<'a> {
    work: BorrowedFd<'a>,
    name: OsString,
    installed: bool,
}

impl<'a> Staged<'a> {
    fn new(work: BorrowedFd<'a>) -> Staged<'a> {
        Staged {
            work,
            name: temp_name(),
            installed: false,
        }
    }

    pub fn name(&self) -> &OsStr {
        &self.name
    }

    fn target(&self) -> XattrTarget<'_> {
        XattrTarget::At(self.work, &self.name)
    }

    /// Moves the entry to `name` in `dir` (same filesystem as the work directory).
    pub fn install(mut self, dir: BorrowedFd<'_>, name: &OsStr, how: Install) -> io::Result<()> {
        let flags = match how {
            Install::NoReplace => RenameFlags::RENAME_NOREPLACE,
            Install::Replace => RenameFlags::empty(),
            Install::Exchange => RenameFlags::RENAME_EXCHANGE,
        };
        nix::fcntl::renameat2(self.work, self.name.as_os_str(), dir, name, flags)?;
        // After an exchange the temp name holds the old entry, which the drop removes.
        self.installed = how != Install::Exchange;
        Ok(())
    }

    fn set_owner(&self, owner: Owner) -> io::Result<()> {
        nix::unistd::fchownat(
            self.work,
            self.name.as_os_str(),
            Some(Uid::from_raw(owner.uid)),
            Some(Gid::from_raw(owner.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )?;
        Ok(())
    }

    fn set_perm(&self, perm: u32) -> io::Result<()> {
        nix::sys::stat::fchmodat(
            self.work,
            self.name.as_os_str(),
            Mode::from_bits_truncate(perm & 0o7777),
            FchmodatFlags::FollowSymlink,
        )?;
        Ok(())
    }

    fn set_times(&self, atime: Timespec, mtime: Timespec) -> io::Result<()> {
        nix::sys::stat::utimensat(
            self.work,
            self.name.as_os_str(),
            &timespec(atime),
            &timespec(mtime),
            UtimensatFlags::NoFollowSymlink,
        )?;
        Ok(())
    }
}

impl Drop for Staged<'_> {
    fn drop(&mut self) {
        if !self.installed
            && let Err(e) = remove_tree_at(self.work, &self.name)
        {
            tracing::warn!(name = ?self.name, error = %e, "cannot remove a staged temp entry");
        }
    }
}

pub fn timespec(t: Timespec) -> TimeSpec {
    TimeSpec::new(t.sec, t.nsec)
}

/// What to create.
pub enum NewKind<'p> {
    /// A regular file, opened with these flags (access mode, `O_APPEND`, …).
    File(OFlag),
    Dir,
    Symlink(&'p Path),
    /// A device, fifo or socket, with its device number.
    Node(FileKind, u64),
}

/// Creates a new entry in the work directory with its final owner and permissions. For a file,
/// also returns it opened with the requested flags.
pub fn stage_new<'a>(
    work: BorrowedFd<'a>,
    kind: NewKind<'_>,
    perm: u32,
    owner: Owner,
) -> io::Result<(Staged<'a>, Option<File>)> {
    let staged = Staged::new(work);
    let name = staged.name.as_os_str();
    let mode = Mode::from_bits_truncate(0o600);
    let is_symlink = matches!(kind, NewKind::Symlink(_));
    let mut file = None;
    match kind {
        NewKind::File(flags) => {
            let fd = nix::fcntl::openat(
                work,
                name,
                flags | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                mode,
            )?;
            file = Some(File::from(fd));
        }
        NewKind::Dir => nix::sys::stat::mkdirat(work, name, Mode::from_bits_truncate(0o700))?,
        NewKind::Symlink(target) => nix::unistd::symlinkat(target, work, name)?,
        NewKind::Node(kind, rdev) => {
            let sflag = match kind {
                FileKind::CharDev => SFlag::S_IFCHR,
                FileKind::BlockDev => SFlag::S_IFBLK,
                FileKind::Fifo => SFlag::S_IFIFO,
                FileKind::Socket => SFlag::S_IFSOCK,
                FileKind::File => SFlag::S_IFREG,
                FileKind::Dir | FileKind::Symlink => return Err(sys::err(libc::EINVAL)),
            };
            nix::sys::stat::mknodat(work, name, sflag, mode, rdev as libc::dev_t)?;
        }
    }
    staged.set_owner(owner)?;
    if !is_symlink {
        // After chown, which clears set-id bits, and regardless of the umask: the mode is exact.
        staged.set_perm(perm)?;
    }
    Ok((staged, file))
}

/// An entry of a branch to copy: its directory, its name and its attributes.
#[derive(Clone, Copy)]
pub struct Source<'a> {
    pub dir: BorrowedFd<'a>,
    pub name: &'a OsStr,
    pub stat: &'a Stat,
}

/// Stages a private copy of `src`: content (only the first `data_limit` bytes when the caller is
/// about to truncate to that size), owner, mode, times and xattrs except
/// cowfs' and overlayfs' own, so the copy is never marked as a store object. Directories are
/// copied without their entries.
pub fn stage_copy<'a>(
    work: BorrowedFd<'a>,
    src: Source<'_>,
    data_limit: Option<u64>,
) -> io::Result<Staged<'a>> {
    let st = src.stat;
    let kind = st.kind().ok_or_else(|| sys::err(libc::EIO))?;
    let staged = Staged::new(work);
    let name = staged.name.as_os_str();
    let mut file = None;
    match kind {
        FileKind::File => {
            let input = File::from(open_beneath(
                src.dir,
                Path::new(src.name),
                OFlag::O_RDONLY,
                Mode::empty(),
            )?);
            let output = File::from(nix::fcntl::openat(
                work,
                name,
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )?);
            let len = data_limit.map_or(st.size, |l| l.min(st.size));
            copy_data(&input, &output, len)?;
            file = Some(output);
        }
        FileKind::Dir => nix::sys::stat::mkdirat(work, name, Mode::from_bits_truncate(0o700))?,
        FileKind::Symlink => {
            let target = nix::fcntl::readlinkat(src.dir, src.name)?;
            nix::unistd::symlinkat(target.as_os_str(), work, name)?;
        }
        FileKind::CharDev | FileKind::BlockDev | FileKind::Fifo | FileKind::Socket => {
            let sflag = SFlag::from_bits_truncate(st.mode & libc::S_IFMT);
            nix::sys::stat::mknodat(
                work,
                name,
                sflag,
                Mode::from_bits_truncate(0o600),
                st.rdev as libc::dev_t,
            )?;
        }
    }
    staged.set_owner(Owner {
        uid: st.uid,
        gid: st.gid,
    })?;
    if kind != FileKind::Symlink {
        staged.set_perm(st.perm())?;
    }
    copy_xattrs(XattrTarget::At(src.dir, src.name), staged.target())?;
    staged.set_times(st.atime, st.mtime)?;
    if let Some(file) = file {
        file.sync_all()?;
    }
    Ok(staged)
}

/// Stages a new hard link to `src` (a store-linked file moving into the writable branch without
/// being modified: sharing the immutable object is safe, copying it would waste space).
pub fn stage_link<'a>(work: BorrowedFd<'a>, src: Source<'_>) -> io::Result<Staged<'a>> {
    let staged = Staged::new(work);
    nix::unistd::linkat(
        src.dir,
        src.name,
        work,
        staged.name.as_os_str(),
        AtFlags::empty(),
    )?;
    Ok(staged)
}

/// Copies every xattr but the private ones. A namespace the target filesystem does not support
/// is skipped with a warning rather than failing the copy.
fn copy_xattrs(src: XattrTarget<'_>, dst: XattrTarget<'_>) -> io::Result<()> {
    let names = match sys::list_xattrs(src) {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(()),
        Err(e) => return Err(e),
    };
    for name in names {
        if whiteout::is_private_xattr(&name) {
            continue;
        }
        let Some(value) = sys::get_xattr(src, &name)? else {
            continue;
        };
        match sys::set_xattr(dst, &name, &value, 0) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => {
                tracing::warn!(xattr = ?name, "the writable branch does not support this xattr; not copied");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Copies the first `len` bytes of `src` into the empty `dst` and sets `dst`'s size to `len`.
pub fn copy_data(src: &File, dst: &File, len: u64) -> io::Result<()> {
    let whole = src.metadata()?.len() == len;
    // SAFETY: FICLONE takes the source fd as its argument and touches no memory of ours.
    if whole
        && len > 0
        && unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) } == 0
    {
        return Ok(());
    }
    let mut pos: u64 = 0;
    while pos < len {
        let (data, hole) = match next_segment(src, pos, len)? {
            Some(seg) => seg,
            None => break,
        };
        copy_range(src, dst, data, hole - data)?;
        pos = hole;
    }
    nix::unistd::ftruncate(dst.as_fd(), len as libc::off_t)?;
    Ok(())
}

/// The next data segment `[start, end)` of `src` at or after `pos`, clipped to `len`.
fn next_segment(src: &File, pos: u64, len: u64) -> io::Result<Option<(u64, u64)>> {
    use nix::unistd::{Whence, lseek};
    let data = match lseek(src.as_fd(), pos as libc::off_t, Whence::SeekData) {
        Ok(d) => d as u64,
        Err(nix::errno::Errno::ENXIO) => return Ok(None),
        // No hole support: treat the rest as one segment.
        Err(nix::errno::Errno::EINVAL) => return Ok(Some((pos, len))),
        Err(e) => return Err(e.into()),
    };
    if data >= len {
        return Ok(None);
    }
    let hole = match lseek(src.as_fd(), data as libc::off_t, Whence::SeekHole) {
        Ok(h) => (h as u64).min(len),
        Err(_) => len,
    };
    Ok(Some((data, hole)))
}

fn copy_range(src: &File, dst: &File, start: u64, count: u64) -> io::Result<()> {
    let mut off_in = start as i64;
    let mut off_out = start as i64;
    let mut left = count;
    while left > 0 {
        let chunk = left.min(1 << 30) as usize;
        match nix::fcntl::copy_file_range(
            src.as_fd(),
            Some(&mut off_in),
            dst.as_fd(),
            Some(&mut off_out),
            chunk,
        ) {
            Ok(0) => break,
            Ok(n) => left -= n as u64,
            Err(
                nix::errno::Errno::EXDEV
                | nix::errno::Errno::ENOSYS
                | nix::errno::Errno::EOPNOTSUPP
                | nix::errno::Errno::EINVAL,
            ) => break,
            Err(e) => return Err(e.into()),
        }
    }
    if left == 0 {
        return Ok(());
    }
    // The kernel cannot copy between these files: do it by hand.
    let mut buf = vec![0u8; (left.min(1 << 20)) as usize];
    let mut pos = off_in as u64;
    let end = start + count;
    while pos < end {
        let want = ((end - pos) as usize).min(buf.len());
        let n = src.read_at(&mut buf[..want], pos)?;
        if n == 0 {
            break;
        }
        dst.write_all_at(&buf[..n], pos)?;
        pos += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};
    use std::os::unix::fs::MetadataExt;

    fn open_dir(p: &Path) -> std::os::fd::OwnedFd {
        nix::fcntl::open(
            p,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .expect("open dir")
    }

    #[test]
    fn copy_keeps_content_metadata_and_holes_but_not_the_mark() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (src_dir, work_dir, dst_dir) = (
            tmp.path().join("src"),
            tmp.path().join("work"),
            tmp.path().join("dst"),
        );
        for d in [&src_dir, &work_dir, &dst_dir] {
            std::fs::create_dir(d).expect("mkdir");
        }
        let path = src_dir.join("f");
        let mut f = File::create(&path).expect("create");
        f.write_all(b"head").expect("write");
        f.seek(SeekFrom::Start(8 << 20)).expect("seek");
        f.write_all(b"tail").expect("write");
        drop(f);
        let st = std::fs::metadata(&path).expect("stat");
        nix::unistd::chown(&path, Some(Uid::from_raw(1234)), Some(Gid::from_raw(5678)))
            .expect("chown");
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o4751))
            .expect("chmod");
        let srcfd = open_dir(&src_dir);
        sys::set_xattr(
            XattrTarget::At(srcfd.as_fd(), OsStr::new("f")),
            OsStr::new("user.keep"),
            b"v",
            0,
        )
        .expect("xattr");
        sys::set_xattr(
            XattrTarget::At(srcfd.as_fd(), OsStr::new("f")),
            OsStr::new(hashstore::MARK_XATTR),
            &[7u8; 32],
            0,
        )
        .expect("xattr");
        let when = Timespec {
            sec: 1_000_000_000,
            nsec: 5,
        };
        nix::sys::stat::utimensat(
            srcfd.as_fd(),
            "f",
            &timespec(when),
            &timespec(when),
            UtimensatFlags::NoFollowSymlink,
        )
        .expect("utimes");
        let stat = sys::stat_at(srcfd.as_fd(), OsStr::new("f")).expect("stat");

        let work = open_dir(&work_dir);
        let dst = open_dir(&dst_dir);
        let src = Source {
            dir: srcfd.as_fd(),
            name: OsStr::new("f"),
            stat: &stat,
        };
        let staged = stage_copy(work.as_fd(), src, None).expect("copy");
        staged
            .install(dst.as_fd(), OsStr::new("f"), Install::NoReplace)
            .expect("install");

        let copy = dst_dir.join("f");
        let data = std::fs::read(&copy).expect("read");
        assert_eq!(data.len() as u64, st.len());
        assert_eq!(&data[..4], b"head");
        assert_eq!(&data[data.len() - 4..], b"tail");
        let meta = std::fs::symlink_metadata(&copy).expect("stat copy");
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (1234, 5678, 0o4751)
        );
        assert_eq!((meta.mtime(), meta.mtime_nsec()), (when.sec, when.nsec));
        assert!(
            meta.blocks() < 1024,
            "holes are kept: {} blocks",
            meta.blocks()
        );
        let t = XattrTarget::At(dst.as_fd(), OsStr::new("f"));
        assert_eq!(
            sys::get_xattr(t, OsStr::new("user.keep")).expect("get"),
            Some(b"v".to_vec())
        );
        assert_eq!(
            sys::get_xattr(t, OsStr::new(hashstore::MARK_XATTR)).expect("get"),
            None
        );
        assert_eq!(std::fs::read_dir(&work_dir).expect("list").count(), 0);
    }

    #[test]
    fn a_failed_stage_leaves_nothing_behind() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let work = open_dir(tmp.path());
        {
            let (staged, _) =
                stage_new(work.as_fd(), NewKind::Dir, 0o755, Owner { uid: 0, gid: 0 })
                    .expect("stage");
            assert!(
                sys::try_stat_at(work.as_fd(), staged.name())
                    .expect("stat")
                    .is_some()
            );
        }
        assert_eq!(std::fs::read_dir(tmp.path()).expect("list").count(), 0);
    }

    #[test]
    fn truncating_copy_copies_only_the_prefix() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(tmp.path().join("f"), vec![9u8; 100_000]).expect("write");
        let dir = open_dir(tmp.path());
        let stat = sys::stat_at(dir.as_fd(), OsStr::new("f")).expect("stat");
        let src = Source {
            dir: dir.as_fd(),
            name: OsStr::new("f"),
            stat: &stat,
        };
        let staged = stage_copy(dir.as_fd(), src, Some(10)).expect("copy");
        staged
            .install(dir.as_fd(), OsStr::new("g"), Install::NoReplace)
            .expect("install");
        let g = std::fs::read(tmp.path().join("g")).expect("read");
        assert_eq!(g.len(), 10);
        assert_eq!(
            std::fs::metadata(tmp.path().join("f"))
                .expect("stat")
                .size(),
            100_000
        );
    }
}
