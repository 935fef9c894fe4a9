//! The unified-file mark: xattr [`MARK_XATTR`](crate::MARK_XATTR) on every object inode, whose
//! value is the object's 32-byte key. It is how the union layer recognises a unified inode with
//! one `getxattr`, and it is set before any guest path links to the object.

use std::io;
use std::os::fd::BorrowedFd;
use std::path::Path;

use crate::MARK_XATTR;
use crate::key::Key;
use crate::sys;

fn mark_name() -> &'static std::ffi::CStr {
    c"trusted.cowfs.key"
}

/// The key an open inode is marked with, if any. A mark that is not 32 bytes is reported as
/// `Ok(None)`: it is not one of ours.
pub fn read_mark(fd: BorrowedFd<'_>) -> io::Result<Option<Key>> {
    debug_assert_eq!(mark_name().to_bytes(), MARK_XATTR.as_bytes());
    Ok(sys::fgetxattr(fd, mark_name())?.and_then(|v| Key::from_slice(&v)))
}

/// The key `path` (not following a final symlink) is marked with, if any.
pub fn read_mark_path(path: &Path) -> io::Result<Option<Key>> {
    Ok(sys::lgetxattr(path, mark_name())?.and_then(|v| Key::from_slice(&v)))
}

/// Marks an open inode as object `key`.
pub fn set_mark(fd: BorrowedFd<'_>, key: &Key) -> io::Result<()> {
    sys::fsetxattr(fd, MARK_XATTR.as_bytes(), &key.0)
}

/// Removes the mark (when an inode did not become an object after all).
pub fn remove_mark(fd: BorrowedFd<'_>) -> io::Result<()> {
    sys::fremovexattr(fd, MARK_XATTR.as_bytes())
}
