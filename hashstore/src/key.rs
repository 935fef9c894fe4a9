//! Object keys: what makes two files "the same inode".
//!
//! The content is hashed once with plain BLAKE3 (the *content hash*, kept for statistics and
//! reusable from the index on re-runs). The *key* is BLAKE3 in `derive_key` mode over a
//! canonical, versioned, length-prefixed header of everything a hard link shares (file type, full
//! `st_mode`, uid, gid, rdev, size, every xattr except `trusted.cowfs.*`, and mtime unless
//! ignored) followed by the 32-byte content hash. One read of the content thus serves every
//! metadata variant, and collision resistance is that of BLAKE3.

use std::fmt;
use std::os::fd::BorrowedFd;
use std::str::FromStr;

use crate::RESERVED_XATTR_PREFIX;
use crate::sys::{self, Stat};

/// Context string of the key derivation; changing the header format means a new context.
const KEY_CONTEXT: &str = "cowfs object key v1";
/// Version byte at the start of the header.
const HEADER_VERSION: u8 = 1;

/// A 32-byte BLAKE3 value shown as 64 lowercase hex digits.
macro_rules! hash_type {
    ($name:ident, $doc:literal) => {
        #[doc = $doc]
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// 64 lowercase hex digits.
            pub fn to_hex(&self) -> String {
                blake3::Hash::from_bytes(self.0).to_hex().to_string()
            }
            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
            /// From a 32-byte slice (as stored in the index or in the mark xattr).
            pub fn from_slice(bytes: &[u8]) -> Option<Self> {
                <[u8; 32]>::try_from(bytes).ok().map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), &self.to_hex()[..16])
            }
        }

        impl FromStr for $name {
            type Err = blake3::HexError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                blake3::Hash::from_hex(s).map(|h| Self(*h.as_bytes()))
            }
        }
    };
}

hash_type!(
    Key,
    "The key of an object: BLAKE3 over its metadata header and content hash."
);
hash_type!(ContentHash, "BLAKE3 of a file's content alone.");

/// Which metadata takes part in the key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct KeyPolicy {
    /// Unify files that differ only in mtime (the object keeps the mtime of the first one seen).
    pub ignore_mtime: bool,
}

/// A timestamp with nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timestamp {
    pub sec: i64,
    pub nsec: i64,
}

/// The metadata an inode shares with all its hard links, as the key sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FileMeta {
    /// Full `st_mode` (type bits included).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub size: u64,
    pub mtime: Timestamp,
    /// Every xattr except `trusted.cowfs.*`, sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl FileMeta {
    /// From a `stat` and the file's xattrs (reserved ones are dropped, the rest sorted).
    pub fn from_stat(st: &Stat, mut xattrs: Vec<(Vec<u8>, Vec<u8>)>) -> FileMeta {
        xattrs.retain(|(name, _)| !name.starts_with(RESERVED_XATTR_PREFIX.as_bytes()));
        xattrs.sort();
        FileMeta {
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev,
            size: st.st_size as u64,
            mtime: mtime_of(st),
            xattrs,
        }
    }

    /// Reads the metadata of an open file: `fstat` plus its xattrs.
    pub fn from_fd(fd: BorrowedFd<'_>) -> std::io::Result<(FileMeta, Stat)> {
        let st = sys::fstat(fd)?;
        let xattrs = sys::list_xattrs(fd)?;
        Ok((FileMeta::from_stat(&st, xattrs), st))
    }

    /// The file type bits of the mode (`S_IFMT`).
    pub fn file_type(&self) -> u32 {
        self.mode & libc::S_IFMT
    }

    /// The canonical header: versioned, fixed field order, length-prefixed variable parts,
    /// little-endian integers. Two headers are equal exactly when the metadata (under `policy`)
    /// is equal.
    pub fn header(&self, policy: KeyPolicy) -> Vec<u8> {
        let mut h = Vec::with_capacity(64 + self.xattrs.len() * 48);
        h.push(HEADER_VERSION);
        h.push((self.file_type() >> 12) as u8);
        h.extend_from_slice(&self.mode.to_le_bytes());
        h.extend_from_slice(&self.uid.to_le_bytes());
        h.extend_from_slice(&self.gid.to_le_bytes());
        h.extend_from_slice(&self.rdev.to_le_bytes());
        h.extend_from_slice(&self.size.to_le_bytes());
        if policy.ignore_mtime {
            h.push(0);
        } else {
            h.push(1);
            h.extend_from_slice(&self.mtime.sec.to_le_bytes());
            h.extend_from_slice(&(self.mtime.nsec as u32).to_le_bytes());
        }
        h.extend_from_slice(&(self.xattrs.len() as u32).to_le_bytes());
        for (name, value) in &self.xattrs {
            h.extend_from_slice(&(name.len() as u32).to_le_bytes());
            h.extend_from_slice(name);
            h.extend_from_slice(&(value.len() as u32).to_le_bytes());
            h.extend_from_slice(value);
        }
        h
    }

    /// The object key of a file with this metadata and content.
    pub fn key(&self, policy: KeyPolicy, content: &ContentHash) -> Key {
        let mut hasher = blake3::Hasher::new_derive_key(KEY_CONTEXT);
        hasher.update(&self.header(policy));
        hasher.update(&content.0);
        Key(*hasher.finalize().as_bytes())
    }
}

/// The mtime of a `stat`.
pub fn mtime_of(st: &Stat) -> Timestamp {
    Timestamp {
        sec: st.st_mtime,
        nsec: st.st_mtime_nsec,
    }
}

/// The ctime of a `stat`.
pub fn ctime_of(st: &Stat) -> Timestamp {
    Timestamp {
        sec: st.st_ctime,
        nsec: st.st_ctime_nsec,
    }
}

/// Hashes exactly `size` bytes of content from `fd` (at its current offset) with `buf` as the
/// read buffer. Returns `None` when the file turned out shorter or longer than `size`: it
/// changed under us.
pub fn hash_fd(
    fd: BorrowedFd<'_>,
    size: u64,
    buf: &mut [u8],
) -> std::io::Result<Option<ContentHash>> {
    let mut hasher = blake3::Hasher::new();
    let mut left = size;
    while left > 0 {
        let want = buf.len().min(left.min(usize::MAX as u64) as usize);
        let n = sys::read(fd, &mut buf[..want])?;
        if n == 0 {
            return Ok(None);
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(Some(ContentHash(*hasher.finalize().as_bytes())))
}

/// Metadata, `stat` and content hash of an open file, in one go; the hash is `None` when the
/// file changed size while it was read.
pub fn describe_fd(fd: BorrowedFd<'_>) -> std::io::Result<(FileMeta, Stat, Option<ContentHash>)> {
    let (meta, st) = FileMeta::from_fd(fd)?;
    let mut buf = vec![0u8; 256 * 1024];
    let content = hash_fd(fd, st.st_size as u64, &mut buf)?;
    Ok((meta, st, content))
}

/// The content hash of a byte string (tests, small files).
pub fn hash_bytes(data: &[u8]) -> ContentHash {
    ContentHash(*blake3::hash(data).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> FileMeta {
        FileMeta {
            mode: libc::S_IFREG | 0o644,
            uid: 0,
            gid: 0,
            rdev: 0,
            size: 5,
            mtime: Timestamp {
                sec: 1_700_000_000,
                nsec: 5,
            },
            xattrs: vec![(b"user.a".to_vec(), b"1".to_vec())],
        }
    }

    #[test]
    fn every_field_changes_the_key_and_equal_metadata_gives_equal_keys() {
        let c = hash_bytes(b"hello");
        let p = KeyPolicy::default();
        let base = meta().key(p, &c);
        assert_eq!(base, meta().key(p, &c));
        let variants: [fn(&mut FileMeta); 11] = [
            |m| m.mode = libc::S_IFREG | 0o600,
            |m| m.mode = libc::S_IFREG | 0o4644,
            |m| m.uid = 1000,
            |m| m.gid = 1000,
            |m| m.rdev = 1,
            |m| m.size = 6,
            |m| m.mtime.sec += 1,
            |m| m.mtime.nsec += 1,
            |m| m.xattrs[0].1 = b"2".to_vec(),
            |m| {
                m.xattrs
                    .push((b"security.capability".to_vec(), vec![1, 0, 0, 2]))
            },
            |m| m.xattrs.clear(),
        ];
        for (i, change) in variants.iter().enumerate() {
            let mut m = meta();
            change(&mut m);
            assert_ne!(m.key(p, &c), base, "variant {i} must change the key");
        }
        assert_ne!(meta().key(p, &hash_bytes(b"hellO")), base);
    }

    #[test]
    fn ignore_mtime_only_drops_mtime() {
        let c = hash_bytes(b"hello");
        let p = KeyPolicy { ignore_mtime: true };
        let mut m = meta();
        m.mtime.sec += 100;
        assert_eq!(m.key(p, &c), meta().key(p, &c));
        assert_ne!(meta().key(p, &c), meta().key(KeyPolicy::default(), &c));
        m.uid = 1;
        assert_ne!(m.key(p, &c), meta().key(p, &c));
    }

    #[test]
    fn header_is_canonical_and_unambiguous() {
        let st = {
            // SAFETY: an all-zero stat is a valid value.
            let mut st: Stat = unsafe { std::mem::zeroed() };
            st.st_mode = libc::S_IFREG | 0o644;
            st.st_size = 3;
            st
        };
        let a = FileMeta::from_stat(
            &st,
            vec![
                (b"user.b".to_vec(), b"x".to_vec()),
                (b"user.a".to_vec(), b"y".to_vec()),
                (crate::MARK_XATTR.as_bytes().to_vec(), vec![7; 32]),
            ],
        );
        let b = FileMeta::from_stat(
            &st,
            vec![
                (b"user.a".to_vec(), b"y".to_vec()),
                (b"user.b".to_vec(), b"x".to_vec()),
            ],
        );
        // Order of xattrs does not matter; the mark is not part of the key.
        assert_eq!(
            a.header(KeyPolicy::default()),
            b.header(KeyPolicy::default())
        );
        // Moving bytes between name and value must not collide (length prefixes).
        let c = FileMeta {
            xattrs: vec![(b"user.ab".to_vec(), b"".to_vec())],
            ..b.clone()
        };
        let d = FileMeta {
            xattrs: vec![(b"user.a".to_vec(), b"b".to_vec())],
            ..b.clone()
        };
        assert_ne!(
            c.header(KeyPolicy::default()),
            d.header(KeyPolicy::default())
        );
    }

    #[test]
    fn hex_round_trip() {
        let k = meta().key(KeyPolicy::default(), &hash_bytes(b"x"));
        assert_eq!(k.to_hex().len(), 64);
        assert_eq!(k.to_hex().parse::<Key>().ok(), Some(k));
    }
}
