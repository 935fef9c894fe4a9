//! Names with a meaning to the union: whiteouts, opaque markers and cowfs' own temp names.
//!
//! Two whiteout dialects are read, because branches come from both worlds:
//! - UnionFS: an entry `.wh.NAME` in a branch hides `NAME` in every branch to its right;
//!   `.wh..wh..opq` inside a directory hides the same directory in every branch to its right.
//! - overlayfs: a character device 0/0 named `NAME` hides `NAME` (in its own branch and below);
//!   the xattr `trusted.overlay.opaque=y` makes a directory opaque.
//!
//! cowfs writes the UnionFS dialect, except for names so long that `.wh.NAME` would exceed
//! `NAME_MAX`: those get a 0/0 device, the only whiteout that fits, marked with the private
//! xattr [`DEVICE_WHITEOUT_XATTR`]. In a writable branch only marked devices are whiteouts, so a
//! guest may still `mknod c 0 0`; in a read-only branch (an overlayfs layer) every 0/0 device is
//! one.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use crate::sys::{self, XattrTarget};

/// Prefix of a UnionFS whiteout entry.
pub const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// Entry that makes its directory opaque (UnionFS dialect).
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// Xattr that makes a directory opaque (overlayfs dialect).
pub const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// Prefix of overlayfs' private xattrs: metadata of a branch, never shown through the mount.
pub const OVERLAY_XATTR_PREFIX: &str = "trusted.overlay.";
/// Marks a 0/0 device made by cowfs as a whiteout (hidden and protected like all of
/// `trusted.cowfs.*`).
pub const DEVICE_WHITEOUT_XATTR: &str = "trusted.cowfs.whiteout";
/// Prefix of every temporary name cowfs (and vhashify) creates inside a branch.
pub const TEMP_PREFIX: &[u8] = b".cowfs.tmp.";
/// Longest name a Linux filesystem accepts.
pub const NAME_MAX: usize = 255;

/// The `.wh.NAME` entry hiding `name`, or `None` when it would be longer than `NAME_MAX`.
pub fn whiteout_name(name: &OsStr) -> Option<OsString> {
    let bytes = name.as_bytes();
    if bytes.len() + WHITEOUT_PREFIX.len() > NAME_MAX {
        return None;
    }
    let mut out = Vec::with_capacity(WHITEOUT_PREFIX.len() + bytes.len());
    out.extend_from_slice(WHITEOUT_PREFIX);
    out.extend_from_slice(bytes);
    Some(OsString::from_vec(out))
}

/// The name a `.wh.NAME` entry hides (`None` for other names and for the opaque marker).
pub fn whiteout_target(entry: &OsStr) -> Option<&OsStr> {
    let bytes = entry.as_bytes();
    if entry == OPAQUE_MARKER {
        return None;
    }
    bytes
        .strip_prefix(WHITEOUT_PREFIX)
        .filter(|rest| !rest.is_empty())
        .map(OsStr::from_bytes)
}

/// Entries that exist in branches but never appear through the mount: whiteouts, opaque
/// markers, and cowfs temp files (including the per-branch work directory).
pub fn is_hidden(name: &OsStr) -> bool {
    let bytes = name.as_bytes();
    bytes.starts_with(WHITEOUT_PREFIX) || bytes.starts_with(TEMP_PREFIX)
}

/// Whether a guest may create or rename something to `name` through the mount: the hidden
/// names are reserved, or a guest could forge a whiteout or hide files from everybody.
pub fn is_reserved(name: &OsStr) -> bool {
    is_hidden(name)
}

/// Whether an xattr is cowfs' or overlayfs' own metadata: hidden from guests, never settable.
pub fn is_private_xattr(name: &OsStr) -> bool {
    let bytes = name.as_bytes();
    bytes.starts_with(hashstore::RESERVED_XATTR_PREFIX.as_bytes())
        || bytes.starts_with(OVERLAY_XATTR_PREFIX.as_bytes())
}

/// Whether the 0/0 device `name` in `dir` carries cowfs' whiteout mark.
pub fn is_marked_device_whiteout(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<bool> {
    match sys::get_xattr(
        XattrTarget::At(dir, name),
        OsStr::new(DEVICE_WHITEOUT_XATTR),
    ) {
        Ok(v) => Ok(v.is_some()),
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether entry `name` of a writable branch's `dir` is a whiteout device cowfs made.
pub fn is_cowfs_device_whiteout(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<bool> {
    match sys::try_stat_at(dir, name)? {
        Some(st) if st.is_overlay_whiteout() => is_marked_device_whiteout(dir, name),
        _ => Ok(false),
    }
}

/// Marks the 0/0 device `name` in `dir` as a whiteout.
pub fn mark_device_whiteout(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    sys::set_xattr(
        XattrTarget::At(dir, name),
        OsStr::new(DEVICE_WHITEOUT_XATTR),
        b"y",
        0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whiteout_names_round_trip() {
        let wh = whiteout_name(OsStr::new("passwd")).expect("short name");
        assert_eq!(wh, OsStr::new(".wh.passwd"));
        assert_eq!(whiteout_target(&wh), Some(OsStr::new("passwd")));
        assert_eq!(whiteout_target(OsStr::new(OPAQUE_MARKER)), None);
        assert_eq!(whiteout_target(OsStr::new(".wh.")), None);
        assert_eq!(whiteout_target(OsStr::new("plain")), None);
    }

    #[test]
    fn long_names_have_no_unionfs_whiteout() {
        let name = OsString::from_vec(vec![b'x'; 252]);
        assert_eq!(whiteout_name(&name), None);
        let name = OsString::from_vec(vec![b'x'; 251]);
        assert_eq!(whiteout_name(&name).map(|n| n.len()), Some(255));
    }

    #[test]
    fn non_utf8_names_work() {
        let name = OsStr::from_bytes(b"caf\xe9");
        let wh = whiteout_name(name).expect("short name");
        assert_eq!(whiteout_target(&wh), Some(name));
    }

    #[test]
    fn hidden_and_private_names() {
        assert!(is_hidden(OsStr::new(".wh.foo")));
        assert!(is_hidden(OsStr::new(OPAQUE_MARKER)));
        assert!(is_hidden(OsStr::new(".cowfs.tmp.work")));
        assert!(!is_hidden(OsStr::new(".whatever")));
        assert!(!is_hidden(OsStr::new("wh.foo")));
        assert!(is_private_xattr(OsStr::new(hashstore::MARK_XATTR)));
        assert!(is_private_xattr(OsStr::new(OVERLAY_OPAQUE_XATTR)));
        assert!(!is_private_xattr(OsStr::new("user.foo")));
        assert!(!is_private_xattr(OsStr::new("trusted.other")));
    }
}
