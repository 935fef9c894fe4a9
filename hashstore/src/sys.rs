//! Thin, safe wrappers over the Linux system calls the store needs and `nix` does not cover
//! (xattrs on fds, `AT_EMPTY_PATH` links, `O_TMPFILE`, leases), plus the "resolve beneath a root
//! fd" open that every guest path goes through.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{FileStat, Mode};

/// `stat` of a file, as the kernel returns it.
pub type Stat = FileStat;

fn cstr(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

/// Opens `rel` (relative to `root`) without ever leaving `root` and without following any
/// symlink, not even in the last component: guests are untrusted and may plant symlinks that
/// point at the host. An empty `rel` opens `root` itself.
pub fn open_beneath(root: BorrowedFd<'_>, rel: &Path, flags: OFlag) -> io::Result<OwnedFd> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
    match nix::fcntl::openat2(root, rel, how) {
        // O_NOATIME is refused for files we do not own unless we have CAP_FOWNER: retry without.
        Err(Errno::EPERM) if flags.contains(OFlag::O_NOATIME) => {
            open_beneath(root, rel, flags - OFlag::O_NOATIME)
        }
        r => r.map_err(io::Error::from),
    }
}

/// Opens a directory path of the host (not of a guest) as an `O_PATH` handle.
pub fn open_dir_path(path: &Path) -> io::Result<OwnedFd> {
    nix::fcntl::open(
        path,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

/// Opens an entry of `dir` for reading, never following a symlink, without updating its atime
/// when we may.
pub fn open_read_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
    match nix::fcntl::openat(dir, name, flags | OFlag::O_NOATIME, Mode::empty()) {
        Err(Errno::EPERM) => nix::fcntl::openat(dir, name, flags, Mode::empty()),
        r => r,
    }
    .map_err(io::Error::from)
}

/// `fstat`.
pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<Stat> {
    nix::sys::stat::fstat(fd).map_err(io::Error::from)
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`.
pub fn lstat_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Stat> {
    nix::sys::stat::fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(io::Error::from)
}

/// Every extended attribute of the open file, sorted by name (values included).
pub fn list_xattrs(fd: BorrowedFd<'_>) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let names = flistxattr(fd)?;
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = cstr(name)?;
        match fgetxattr(fd, &cname)? {
            Some(value) => out.push((name.to_vec(), value)),
            // Removed between list and get: it no longer exists, which is what we report.
            None => continue,
        }
    }
    out.sort();
    Ok(out)
}

/// Runs an xattr call that fills a buffer — `call(ptr, len)`, returning the length or -1 — growing
/// the buffer on ERANGE (the value may grow between the size query and the read). `None` when the
/// attribute does not exist or the filesystem has none.
fn sized_xattr_call(
    initial: usize,
    call: impl Fn(*mut libc::c_void, usize) -> isize,
) -> io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; initial];
    loop {
        let n = call(buf.as_mut_ptr().cast(), buf.len());
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(Some(buf));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::ENOTSUP) => return Ok(None),
            Some(libc::ERANGE) => {
                let need = call(std::ptr::null_mut(), 0);
                if need < 0 {
                    return Err(io::Error::last_os_error());
                }
                buf.resize(need as usize + 64, 0);
            }
            _ => return Err(err),
        }
    }
}

fn flistxattr(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    // SAFETY (closure): the buffer is valid for `len` bytes, or null with 0 (a size query).
    sized_xattr_call(256, |ptr, len| unsafe {
        libc::flistxattr(fd.as_raw_fd(), ptr.cast::<libc::c_char>(), len)
    })
    .map(Option::unwrap_or_default)
}

/// The value of xattr `name` of the open file, `None` if it has none.
pub fn fgetxattr(fd: BorrowedFd<'_>, name: &CStr) -> io::Result<Option<Vec<u8>>> {
    // SAFETY (closure): as above; `name` is NUL-terminated.
    sized_xattr_call(64, |ptr, len| unsafe {
        libc::fgetxattr(fd.as_raw_fd(), name.as_ptr(), ptr, len)
    })
}

/// The value of xattr `name` of `path` (not following a final symlink), `None` if it has none.
pub fn lgetxattr(path: &Path, name: &CStr) -> io::Result<Option<Vec<u8>>> {
    let cpath = cstr(path.as_os_str().as_bytes())?;
    // SAFETY (closure): as above; both strings are NUL-terminated.
    sized_xattr_call(64, |ptr, len| unsafe {
        libc::lgetxattr(cpath.as_ptr(), name.as_ptr(), ptr, len)
    })
}

/// Sets xattr `name` on the open file (create or replace).
pub fn fsetxattr(fd: BorrowedFd<'_>, name: &[u8], value: &[u8]) -> io::Result<()> {
    let cname = cstr(name)?;
    // SAFETY: value is valid for value.len() bytes; name is NUL-terminated.
    let r = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            cname.as_ptr(),
            value.as_ptr().cast::<libc::c_void>(),
            value.len(),
            0,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Removes xattr `name` from the open file; absent is fine.
pub fn fremovexattr(fd: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    let cname = cstr(name)?;
    // SAFETY: name is NUL-terminated.
    let r = unsafe { libc::fremovexattr(fd.as_raw_fd(), cname.as_ptr()) };
    if r < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ENODATA) {
            return Ok(());
        }
        return Err(err);
    }
    Ok(())
}

/// Links the inode behind `fd` as `dir/name` (`linkat` with `AT_EMPTY_PATH`): exactly the inode
/// we opened and checked, whatever happened to its name meanwhile. Needs CAP_DAC_READ_SEARCH,
/// which root has; otherwise falls back to the `/proc/self/fd` form.
pub fn link_fd(fd: BorrowedFd<'_>, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let cname = cstr(name.as_bytes())?;
    // SAFETY: both strings are NUL-terminated; fds are valid for the call.
    let r = unsafe {
        libc::linkat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            dir.as_raw_fd(),
            cname.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::ENOENT) && err.raw_os_error() != Some(libc::EPERM) {
        return Err(err);
    }
    let proc_path = cstr(format!("/proc/self/fd/{}", fd.as_raw_fd()).as_bytes())?;
    // SAFETY: as above.
    let r = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            proc_path.as_ptr(),
            dir.as_raw_fd(),
            cname.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `linkat(olddir, oldname, newdir, newname, 0)`: never follows a symlink.
pub fn link_at(
    olddir: BorrowedFd<'_>,
    oldname: &OsStr,
    newdir: BorrowedFd<'_>,
    newname: &OsStr,
) -> io::Result<()> {
    nix::unistd::linkat(
        olddir,
        oldname,
        newdir,
        newname,
        nix::fcntl::AtFlags::empty(),
    )
    .map_err(io::Error::from)
}

/// `renameat(olddir, oldname, newdir, newname)`, replacing the target atomically.
pub fn rename_at(
    olddir: BorrowedFd<'_>,
    oldname: &OsStr,
    newdir: BorrowedFd<'_>,
    newname: &OsStr,
) -> io::Result<()> {
    nix::fcntl::renameat(olddir, oldname, newdir, newname).map_err(io::Error::from)
}

/// `renameat2(…, RENAME_NOREPLACE)`: fails with EEXIST instead of replacing.
pub fn rename_noreplace(
    olddir: BorrowedFd<'_>,
    oldname: &OsStr,
    newdir: BorrowedFd<'_>,
    newname: &OsStr,
) -> io::Result<()> {
    nix::fcntl::renameat2(
        olddir,
        oldname,
        newdir,
        newname,
        nix::fcntl::RenameFlags::RENAME_NOREPLACE,
    )
    .map_err(io::Error::from)
}

/// `unlinkat(dir, name, 0)`.
pub fn unlink_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    nix::unistd::unlinkat(dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir)
        .map_err(io::Error::from)
}

/// Sets atime and mtime of the open file or directory exactly (nanoseconds).
pub fn set_times(fd: BorrowedFd<'_>, atime: (i64, i64), mtime: (i64, i64)) -> io::Result<()> {
    let a = nix::sys::time::TimeSpec::new(atime.0, atime.1);
    let m = nix::sys::time::TimeSpec::new(mtime.0, mtime.1);
    nix::sys::stat::futimens(fd, &a, &m).map_err(io::Error::from)
}

/// An unnamed file in `dir` (`O_TMPFILE`): it can only appear in the tree by `link_fd`, complete.
pub fn open_tmpfile(dir: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    nix::fcntl::openat(
        dir,
        ".",
        OFlag::O_TMPFILE | OFlag::O_RDWR | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(io::Error::from)
}

/// Tries to take a read lease on `fd` (opened read-only). The kernel grants it only when no one
/// has the file open for writing (or mapped writable), and while we hold it any open for writing
/// waits: that is the window in which a file can safely become an immutable object.
/// Returns `Ok(false)` when a writer exists.
pub fn take_read_lease(fd: BorrowedFd<'_>) -> io::Result<bool> {
    // SAFETY: plain fcntl on a valid fd.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETLEASE, libc::F_RDLCK) };
    if r == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EBUSY) => Ok(false),
        // Filesystems without lease support (some network/FUSE ones): we cannot know; go on.
        Some(libc::EINVAL) | Some(libc::ENOTSUP) => Ok(true),
        _ => Err(err),
    }
}

/// Releases a lease taken with [`take_read_lease`].
pub fn release_lease(fd: BorrowedFd<'_>) {
    // SAFETY: plain fcntl on a valid fd; failure only means there was no lease.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETLEASE, libc::F_UNLCK) };
}

/// Ignores SIGIO: a lease break would otherwise deliver it and kill the process. Our leases last
/// microseconds, so we never need the notification.
pub fn ignore_lease_signals() {
    // SAFETY: installing SIG_IGN for SIGIO has no preconditions.
    unsafe { libc::signal(libc::SIGIO, libc::SIG_IGN) };
}

/// Wraps a raw fd returned by a successful libc call.
///
/// # Safety
/// `fd` must be a valid, open file descriptor that nobody else owns.
pub unsafe fn owned(fd: i32) -> OwnedFd {
    // SAFETY: guaranteed by the caller.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// `fsync`.
pub fn fsync(fd: BorrowedFd<'_>) -> io::Result<()> {
    nix::unistd::fsync(fd).map_err(io::Error::from)
}

/// Reads up to `buf.len()` bytes at the current offset, retrying on EINTR.
pub fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match nix::unistd::read(fd, buf) {
            Err(Errno::EINTR) => continue,
            r => return r.map_err(io::Error::from),
        }
    }
}

/// Writes all of `buf`, retrying on short writes and EINTR.
pub fn write_all(fd: BorrowedFd<'_>, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match nix::unistd::write(fd, buf) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => buf = &buf[n..],
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Hint that the file will be read sequentially once (bigger readahead on a cold cache).
pub fn advise_sequential(fd: BorrowedFd<'_>) {
    let _ = nix::fcntl::posix_fadvise(
        fd,
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_SEQUENTIAL,
    );
}

/// The fd as a `BorrowedFd` (shorthand).
pub fn b<F: AsFd>(f: &F) -> BorrowedFd<'_> {
    f.as_fd()
}
