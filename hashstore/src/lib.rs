//! The cowfs hash store: immutable, content-addressed file objects shared by hard links.
//!
//! An object is an *inode*: its content and the metadata every hard link shares (type, mode,
//! owner, rdev, xattrs, and mtime unless ignored). Objects never change after insertion; links
//! to them may be added, removed or renamed.
//!
//! Layout of a store: `objects/ab/<62 more hex digits>[.N]` (one file per object; `.N` when a
//! key needs several inodes), `index.db` (SQLite in WAL mode: a cache of the tree that `fsck`
//! rebuilds), `tmp/` (staging on the same filesystem), `format`, `lock` (flock: shared for
//! inserters and collectors, exclusive for fsck).
//!
//! Entry points: [`Store`] (open, insert, lookup), [`gc::gc`], [`verify::verify`],
//! [`fsck::fsck`], [`stats::stats`], [`unify::unify`] (what `vhashify` runs) and
//! [`du::usage`] (what `vdu` runs). [`mark::read_mark`] tells whether an inode is unified.

pub mod du;
pub mod error;
pub mod fsck;
pub mod gc;
pub mod index;
pub mod key;
pub mod layout;
pub mod lock;
pub mod mark;
pub mod objects;
pub mod stats;
pub mod store;
pub mod sys;
pub mod unify;
pub mod verify;
pub mod walk;

pub use error::{Error, Result};
pub use key::{ContentHash, FileMeta, Key, KeyPolicy, Timestamp};
pub use layout::ObjectId;
pub use lock::LockMode;
pub use store::{InsertSource, Inserted, LinkFailure, Store};

/// Extended attribute that marks an inode as a store object.
///
/// It lives in the `trusted.` namespace so that only root sees it on the host, and the union mount
/// hides it from guests (and refuses to let a guest set or remove it): a `user.*` mark would show up
/// in every guest's `getfattr` and could be removed by the guest to defeat copy-on-write.
/// Its value is the object's 32-byte key. It is excluded from the key's metadata header.
pub const MARK_XATTR: &str = "trusted.cowfs.key";

/// Prefix of every xattr name cowfs reserves for itself; the mount hides and protects all of them.
pub const RESERVED_XATTR_PREFIX: &str = "trusted.cowfs.";
