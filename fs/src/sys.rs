//! Thin, safe wrappers over the syscalls the union needs and `nix` does not cover (xattrs,
//! `fstatat` into [`Stat`], directory listings), all addressed relative to directory fds.
//!
//! Xattrs of an entry are reached through `/proc/self/fd/DIRFD/NAME` with the `l*xattr` calls:
//! the daemon's own, already-safely-opened directory fd is followed, the guest-controlled last
//! component is not (so a symlink's own xattrs are read, never its target's). This works for
//! every file type, where `f*xattr` would need an fd opened for I/O (impossible for devices,
//! sockets and symlinks without side effects).

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;

use crate::attr::{FileKind, Stat};

/// An `io::Error` for a raw errno value.
pub fn err(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

/// Whether `e` says "this entry does not exist here" (as opposed to a real failure).
pub fn is_absent(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP | libc::ENAMETOOLONG)
    )
}

fn cstr(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| err(libc::EINVAL))
}

/// Attributes of `name` in `dir` without following a final symlink.
pub fn stat_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Stat> {
    let st = nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
    Ok(Stat::from(st))
}

/// Like [`stat_at`], with "absent" as `None`.
pub fn try_stat_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<Stat>> {
    match stat_at(dir, name) {
        Ok(st) => Ok(Some(st)),
        Err(e) if is_absent(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Attributes of an open file (works on `O_PATH` descriptors too).
pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<Stat> {
    Ok(Stat::from(nix::sys::stat::fstat(fd)?))
}

/// The raw entries of an open directory, except `.` and `..`.
pub fn read_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<(OsString, Option<FileKind>)>> {
    // A fresh descriptor: a listing consumes its position, and `dir` may be an O_PATH fd.
    let mut listing = nix::dir::Dir::openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut out = Vec::new();
    for entry in listing.iter() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let kind = entry.file_type().map(|t| {
            use nix::dir::Type;
            match t {
                Type::Directory => FileKind::Dir,
                Type::File => FileKind::File,
                Type::Symlink => FileKind::Symlink,
                Type::Fifo => FileKind::Fifo,
                Type::Socket => FileKind::Socket,
                Type::CharacterDevice => FileKind::CharDev,
                Type::BlockDevice => FileKind::BlockDev,
            }
        });
        out.push((OsString::from_vec(name.to_vec()), kind));
    }
    Ok(out)
}

/// Where an xattr call is aimed: an entry of a directory (its last component never followed),
/// or an already-open file (a branch root, or an entry opened `O_PATH | O_NOFOLLOW`).
#[derive(Clone, Copy)]
pub enum XattrTarget<'a> {
    At(BorrowedFd<'a>, &'a OsStr),
    Fd(BorrowedFd<'a>),
}

impl XattrTarget<'_> {
    /// The `/proc/self/fd/…` path, and whether the call may follow its last component.
    fn path(&self) -> io::Result<(CString, bool)> {
        match self {
            XattrTarget::At(dir, name) => {
                let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
                p.extend_from_slice(name.as_bytes());
                Ok((cstr(&p)?, false))
            }
            // Following the magic link lands on the opened inode itself, symlink or not.
            XattrTarget::Fd(fd) => Ok((
                cstr(format!("/proc/self/fd/{}", fd.as_raw_fd()).as_bytes())?,
                true,
            )),
        }
    }
}

fn check(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// Runs a size-or-fill syscall (`*getxattr`, `*listxattr`): once for the size, then to fill a
/// buffer of that size, and again if the value grew in between.
fn sized(call: impl Fn(*mut libc::c_void, usize) -> libc::ssize_t) -> io::Result<Vec<u8>> {
    loop {
        let size = check(call(std::ptr::null_mut(), 0))?;
        let mut buf = vec![0u8; size];
        match check(call(buf.as_mut_ptr().cast(), buf.len())) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The value of xattr `name`, `None` when the file does not have it.
pub fn get_xattr(target: XattrTarget<'_>, name: &OsStr) -> io::Result<Option<Vec<u8>>> {
    let (path, follow) = target.path()?;
    let cname = cstr(name.as_bytes())?;
    // SAFETY: both strings are NUL-terminated; `sized` passes a writable buffer of `len` bytes,
    // or null and 0, which asks for the size only.
    let value = sized(|ptr, len| unsafe {
        if follow {
            libc::getxattr(path.as_ptr(), cname.as_ptr(), ptr, len)
        } else {
            libc::lgetxattr(path.as_ptr(), cname.as_ptr(), ptr, len)
        }
    });
    match value {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.raw_os_error() == Some(libc::ENODATA) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The names of all xattrs of the file.
pub fn list_xattrs(target: XattrTarget<'_>) -> io::Result<Vec<OsString>> {
    let (path, follow) = target.path()?;
    // SAFETY: as in `get_xattr`.
    let names = sized(|ptr, len| unsafe {
        if follow {
            libc::listxattr(path.as_ptr(), ptr.cast(), len)
        } else {
            libc::llistxattr(path.as_ptr(), ptr.cast(), len)
        }
    })?;
    Ok(names
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| OsString::from_vec(n.to_vec()))
        .collect())
}

/// Sets xattr `name` (`flags`: 0, `XATTR_CREATE` or `XATTR_REPLACE`).
pub fn set_xattr(
    target: XattrTarget<'_>,
    name: &OsStr,
    value: &[u8],
    flags: i32,
) -> io::Result<()> {
    let (path, follow) = target.path()?;
    let cname = cstr(name.as_bytes())?;
    // SAFETY: NUL-terminated strings and a readable buffer of `value.len()` bytes.
    let ret = unsafe {
        if follow {
            libc::setxattr(
                path.as_ptr(),
                cname.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                flags,
            )
        } else {
            libc::lsetxattr(
                path.as_ptr(),
                cname.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                flags,
            )
        }
    };
    check(ret as libc::ssize_t).map(drop)
}

/// Removes xattr `name`.
pub fn remove_xattr(target: XattrTarget<'_>, name: &OsStr) -> io::Result<()> {
    let (path, follow) = target.path()?;
    let cname = cstr(name.as_bytes())?;
    // SAFETY: NUL-terminated strings.
    let ret = unsafe {
        if follow {
            libc::removexattr(path.as_ptr(), cname.as_ptr())
        } else {
            libc::lremovexattr(path.as_ptr(), cname.as_ptr())
        }
    };
    check(ret as libc::ssize_t).map(drop)
}
