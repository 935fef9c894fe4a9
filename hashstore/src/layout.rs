//! Names on disk: `STORE/objects/ab/<62 more hex digits>[.N]`, `index.db`, `tmp/`, `format`,
//! `lock`, `quarantine/`.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::OsStrExt;

use crate::key::Key;

/// File naming the on-disk format; its first line must be [`FORMAT_LINE`].
pub const FORMAT_FILE: &str = "format";
/// The format this code reads and writes.
pub const FORMAT_LINE: &str = "cowfs-hashstore 1";
/// Directory of the objects, fanned out by the first byte of the key.
pub const OBJECTS_DIR: &str = "objects";
/// Staging directory on the store's filesystem (copies, objects being collected).
pub const TMP_DIR: &str = "tmp";
/// Objects that fsck found damaged are moved here (guest links to them keep working).
pub const QUARANTINE_DIR: &str = "quarantine";
/// The SQLite index (a cache of the tree).
pub const INDEX_FILE: &str = "index.db";
/// The flock(2) target.
pub const LOCK_FILE: &str = "lock";

/// One object inode. Several inodes may carry the same key when one filled up its link count
/// (EMLINK) or when a collector raced with an inserter; `seq` tells them apart.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ObjectId {
    pub key: Key,
    pub seq: u32,
}

impl ObjectId {
    /// The first object of a key.
    pub fn first(key: Key) -> ObjectId {
        ObjectId { key, seq: 0 }
    }

    /// The fan-out directory under `objects/` (two hex digits).
    pub fn subdir(&self) -> String {
        self.key.to_hex()[..2].to_string()
    }

    /// The file name inside the fan-out directory.
    pub fn file_name(&self) -> OsString {
        let hex = self.key.to_hex();
        if self.seq == 0 {
            OsString::from(&hex[2..])
        } else {
            OsString::from(format!("{}.{}", &hex[2..], self.seq))
        }
    }

    /// Path relative to `objects/`: `ab/cdef…[.N]`.
    pub fn rel_path(&self) -> OsString {
        let mut p = OsString::from(self.subdir());
        p.push("/");
        p.push(self.file_name());
        p
    }

    /// Parses `subdir`/`name` back into an id; `None` for anything that is not an object name.
    pub fn parse(subdir: &OsStr, name: &OsStr) -> Option<ObjectId> {
        let subdir = std::str::from_utf8(subdir.as_bytes()).ok()?;
        let name = std::str::from_utf8(name.as_bytes()).ok()?;
        let (rest, seq) = match name.split_once('.') {
            Some((rest, seq)) => {
                let seq: u32 = seq.parse().ok().filter(|&s| s > 0)?;
                // Reject "01" etc. so that every id has exactly one name.
                if seq.to_string().len() != name.len() - rest.len() - 1 {
                    return None;
                }
                (rest, seq)
            }
            None => (name, 0),
        };
        if subdir.len() != 2 || rest.len() != 62 {
            return None;
        }
        let lower = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if !lower(subdir) || !lower(rest) {
            return None;
        }
        let key: Key = format!("{subdir}{rest}").parse().ok()?;
        Some(ObjectId { key, seq })
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.rel_path().to_string_lossy())
    }
}

/// All 256 fan-out directory names.
pub fn subdirs() -> impl Iterator<Item = String> {
    (0..=255u8).map(|b| format!("{b:02x}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_junk_is_rejected() {
        let key = Key([0xab; 32]);
        for seq in [0, 1, 17] {
            let id = ObjectId { key, seq };
            let parsed = ObjectId::parse(OsStr::new(&id.subdir()), &id.file_name());
            assert_eq!(parsed, Some(id));
        }
        let id = ObjectId::first(key);
        let name = id.file_name().to_string_lossy().into_owned();
        for bad in [
            format!("{name}.0"),
            format!("{name}.01"),
            format!("{name}.x"),
            name[1..].to_string(),
            name.to_uppercase(),
            format!("{name}.tmp"),
        ] {
            assert_eq!(
                ObjectId::parse(OsStr::new("ab"), OsStr::new(&bad)),
                None,
                "{bad}"
            );
        }
        assert_eq!(
            ObjectId::parse(OsStr::new("ac"), &id.file_name()).map(|i| i.key == key),
            Some(false)
        );
    }
}
