//! The cowfs hash store: immutable, content-addressed file objects shared by hard links.
//!
//! An object is an *inode*: its content and the metadata every hard link shares (type, mode,
//! owner, rdev, xattrs, and mtime unless ignored). Objects never change after insertion; links
//! to them may be added, removed or renamed.

/// Extended attribute that marks an inode as a store object.
///
/// It lives in the `trusted.` namespace so that only root sees it on the host, and the union mount
/// hides it from guests (and refuses to let a guest set or remove it): a `user.*` mark would show up
/// in every guest's `getfattr` and could be removed by the guest to defeat copy-on-write.
/// Its value is the object's 32-byte key. It is excluded from the key's metadata header.
pub const MARK_XATTR: &str = "trusted.cowfs.key";

/// Prefix of every xattr name cowfs reserves for itself; the mount hides and protects all of them.
pub const RESERVED_XATTR_PREFIX: &str = "trusted.cowfs.";
