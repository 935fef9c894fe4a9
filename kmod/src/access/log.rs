//! The access log: what a context touched, by path, with byte ranges, in first-touch order.
//!
//! Records arrive as `{dev, ino, pages, kind}`; [`Collector`] folds them per inode as they come
//! (so memory grows with the files touched, not with the records), and [`Collector::resolve`]
//! turns inodes into guest paths with two walk snapshots: `first` (taken before tracing, and
//! extended while tracing for inodes it did not know, so it holds the path each file had when
//! it was first touched) and `last` (taken when tracing stops). An inode whose first path is
//! gone but that has another path now was **renamed**; one that no walk finds any more (or whose
//! birth time changed: the number was reused by a new file) was **deleted**. Neither is ever
//! reported under a path it does not have.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ranges::RangeSet;
use super::walk::{InodeKey, Seen, Snapshot};
use crate::abi::{
    ACCESS_CACHE_ADD, ACCESS_FAULT, ACCESS_MAP, ACCESS_READ, ACCESS_WRITE, AccessRecord,
};
use crate::{Error, Result};

pub const LOG_FORMAT: &str = "cowfs-access-log";
pub const LOG_VERSION: u32 = 1;

/// Where a file is at the end of the trace, compared with when it was first touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// At the path it had when first touched (or created during the trace).
    Present,
    /// Moved: `path` is where it is now, `was` where it was when first touched.
    Renamed,
    /// Gone: `was` is where it was when first touched; `path` is empty.
    Deleted,
}

/// One file of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileAccess {
    /// Guest path, relative to the root (see [`encode_path`]); empty when deleted.
    pub path: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub was: Option<String>,
    /// Which tree the path is in: "root" (the guest's view) or the branch directory.
    pub tree: String,
    /// `major:minor` of the file system the kernel saw, and the inode number.
    pub dev: String,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    /// Of the file's head, read when the trace ended (see [`crate::hotset::fingerprint`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// Position of the first touch among the log's files (0 = first).
    pub first: u64,
    /// Records seen for this file.
    pub touches: u64,
    /// Ranges read (buffered reads, mmap faults, fault-around), as `[offset, length]`.
    pub read: Vec<[u64; 2]>,
    /// Ranges that entered the page cache (from disk, readahead included).
    pub cached: Vec<[u64; 2]>,
    /// Ranges dirtied (written).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub written: Vec<[u64; 2]>,
}

/// Accesses to inodes no walked tree has (outside the root, or created and removed between
/// two walks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unresolved {
    pub dev: String,
    pub ino: u64,
    pub touches: u64,
    pub bytes: u64,
}

/// A whole access log (format [`LOG_FORMAT`], version [`LOG_VERSION`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessLog {
    pub format: String,
    pub version: u32,
    pub context: String,
    pub xid: u32,
    pub root: String,
    /// The branch directories walked besides the root.
    pub branches: Vec<String>,
    /// RFC 3339 start time, and how long the trace ran.
    pub started: String,
    pub duration_ms: u64,
    pub page_size: u64,
    pub buffer_bytes: u64,
    /// Tracepoints that were attached.
    pub hooks: Vec<String>,
    /// Records received, and records the kernel dropped because the buffer was full.
    pub records: u64,
    pub dropped: u64,
    /// Accesses skipped because a kernel struct could not be read.
    pub unreadable: u64,
    pub files: Vec<FileAccess>,
    pub unresolved: Vec<Unresolved>,
}

impl AccessLog {
    /// Reads a log, refusing other formats and versions.
    pub fn load(path: &Path) -> Result<Self> {
        load_versioned(path, "access log", LOG_FORMAT, LOG_VERSION)
    }

    /// Bytes read (sum of the read ranges of every file).
    pub fn read_bytes(&self) -> u64 {
        self.files
            .iter()
            .map(|f| f.read.iter().map(|r| r[1]).sum::<u64>())
            .sum()
    }

    /// Bytes that entered the page cache.
    pub fn cached_bytes(&self) -> u64 {
        self.files
            .iter()
            .map(|f| f.cached.iter().map(|r| r[1]).sum::<u64>())
            .sum()
    }
}

/// Reads a JSON document of `format` and `version` (the access log, the hot set), refusing any
/// other with a clear reason.
pub(crate) fn load_versioned<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &'static str,
    format: &str,
    version: u32,
) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let bad = |why: String| Error::BadValue {
        what,
        value: path.display().to_string(),
        why,
    };
    let doc: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if doc["format"] != format {
        return Err(bad(format!("not a {format} (format {})", doc["format"])));
    }
    if doc["version"] != version {
        return Err(bad(format!(
            "version {} (this cowfs reads version {version})",
            doc["version"]
        )));
    }
    serde_json::from_value(doc).map_err(|e| bad(e.to_string()))
}

/// Guest paths are bytes; the log is UTF-8 JSON. Bytes that are not UTF-8 are written as
/// `\xNN` and a backslash as `\\`, so every path survives the round trip.
pub fn encode_path(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for chunk in path.as_os_str().as_bytes().utf8_chunks() {
        out.push_str(&chunk.valid().replace('\\', "\\\\"));
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// The inverse of [`encode_path`].
pub fn decode_path(text: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if bytes.get(i + 1) == Some(&b'\\') {
                out.push(b'\\');
                i += 2;
                continue;
            }
            if bytes.get(i + 1) == Some(&b'x')
                && let Some(hex) = text.get(i + 2..i + 4)
                && let Ok(b) = u8::from_str_radix(hex, 16)
            {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

fn dev_string(dev: u32) -> String {
    format!("{}:{}", dev >> 20, dev & 0xfffff)
}

/// Per-inode aggregation of records.
#[derive(Debug, Clone, Default)]
struct Inode {
    first: u64,
    touches: u64,
    read: RangeSet,
    cached: RangeSet,
    written: RangeSet,
}

/// Folds records as they arrive.
#[derive(Debug, Default)]
pub struct Collector {
    page_size: u64,
    inodes: HashMap<InodeKey, Inode>,
    records: u64,
}

impl Collector {
    pub fn new(page_size: u64) -> Self {
        Collector {
            page_size,
            ..Default::default()
        }
    }

    /// Adds one record; returns true when its inode is new (a first touch).
    pub fn add(&mut self, rec: &AccessRecord) -> bool {
        self.records += 1;
        let next = self.inodes.len() as u64;
        let key = (rec.dev, rec.ino);
        let mut new = false;
        let inode = self.inodes.entry(key).or_insert_with(|| {
            new = true;
            Inode {
                first: next,
                ..Default::default()
            }
        });
        inode.touches += 1;
        let start = rec.index.saturating_mul(self.page_size);
        let end = start.saturating_add(u64::from(rec.pages.max(1)) * self.page_size);
        let set = match rec.kind {
            ACCESS_READ | ACCESS_FAULT | ACCESS_MAP => &mut inode.read,
            ACCESS_CACHE_ADD => &mut inode.cached,
            ACCESS_WRITE => &mut inode.written,
            _ => return new,
        };
        set.insert(start, end);
        new
    }

    pub fn records(&self) -> u64 {
        self.records
    }

    pub fn knows(&self, key: &InodeKey) -> bool {
        self.inodes.contains_key(key)
    }

    /// Inodes touched so far.
    pub fn keys(&self) -> impl Iterator<Item = &InodeKey> {
        self.inodes.keys()
    }

    /// Files (in first-touch order) and unresolved inodes, given the snapshot of first paths
    /// and the one taken at the end; `trees` names the walked trees in snapshot order.
    pub fn resolve(
        &self,
        first: &Snapshot,
        last: &Snapshot,
        trees: &[String],
    ) -> (Vec<FileAccess>, Vec<Unresolved>) {
        let mut order: Vec<(&InodeKey, &Inode)> = self.inodes.iter().collect();
        order.sort_by_key(|(_, i)| i.first);
        let mut files = Vec::new();
        let mut unresolved = Vec::new();
        let tree_name = |t: usize| trees.get(t).cloned().unwrap_or_default();
        for (key, inode) in order {
            let then = first.files.get(key);
            let now = last.files.get(key);
            // The same file only if its birth time (where known) did not change.
            let now = now.filter(|n| match (then, n.btime_ns) {
                (Some(t), Some(b)) => t.btime_ns.is_none_or(|tb| tb == b),
                _ => true,
            });
            let (status, at, was): (Status, Option<&Seen>, Option<&PathBuf>) = match (then, now) {
                (Some(t), Some(n)) => match t.paths.iter().find(|p| n.paths.contains(p)) {
                    Some(_) => (Status::Present, Some(n), None),
                    None => (Status::Renamed, Some(n), t.paths.first()),
                },
                (None, Some(n)) => (Status::Present, Some(n), None),
                (Some(t), None) => (Status::Deleted, None, t.paths.first()),
                (None, None) => {
                    unresolved.push(Unresolved {
                        dev: dev_string(key.0),
                        ino: key.1,
                        touches: inode.touches,
                        bytes: inode.read.bytes().max(inode.cached.bytes()),
                    });
                    continue;
                }
            };
            let meta = at.or(then).expect("at least one snapshot has the inode");
            let path = match (status, at) {
                (Status::Present, Some(n)) => then
                    .and_then(|t| t.paths.iter().find(|p| n.paths.contains(p)))
                    .or(n.paths.first()),
                (Status::Renamed, Some(n)) => n.paths.first(),
                _ => None,
            };
            let clip = |set: &RangeSet| {
                let mut set = set.clone();
                if status != Status::Deleted {
                    set.clip(meta.size);
                }
                set.to_pairs()
            };
            files.push(FileAccess {
                path: path.map(|p| encode_path(p)).unwrap_or_default(),
                status,
                was: was.map(|p| encode_path(p)),
                tree: tree_name(meta.tree),
                dev: dev_string(key.0),
                ino: key.1,
                size: meta.size,
                mtime_ns: meta.mtime_ns,
                fingerprint: None,
                first: files.len() as u64,
                touches: inode.touches,
                read: clip(&inode.read),
                cached: clip(&inode.cached),
                written: clip(&inode.written),
            });
        }
        (files, unresolved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(dev: u32, ino: u64, index: u64, pages: u32, kind: u32) -> AccessRecord {
        AccessRecord {
            ino,
            cgroup: 1,
            index,
            pages,
            dev,
            kind,
            _pad: 0,
        }
    }

    fn seen(path: &str, size: u64, btime: i64) -> Seen {
        Seen {
            paths: vec![PathBuf::from(path)],
            tree: 0,
            size,
            mtime_ns: 7,
            btime_ns: Some(btime),
        }
    }

    #[test]
    fn paths_survive_encoding() {
        use std::os::unix::ffi::OsStrExt;
        for raw in [
            &b"usr/lib/x.so"[..],
            b"a\\b",
            b"caf\xc3\xa9",
            b"bad\xff\xfe name",
            b"\\x41",
        ] {
            let p = Path::new(std::ffi::OsStr::from_bytes(raw));
            assert_eq!(decode_path(&encode_path(p)), p, "{raw:?}");
        }
        assert_eq!(encode_path(Path::new("usr/bin/python3")), "usr/bin/python3");
    }

    #[test]
    fn present_renamed_deleted_reused_and_unknown_inodes() {
        let mut c = Collector::new(4096);
        for (ino, kind) in [
            (1, ACCESS_READ),
            (2, ACCESS_FAULT),
            (3, ACCESS_CACHE_ADD),
            (4, ACCESS_READ),
            (5, ACCESS_READ),
        ] {
            assert!(c.add(&rec(9, ino, 0, 2, kind)));
        }
        assert!(!c.add(&rec(9, 1, 10, 1, ACCESS_READ)));
        let mut first = Snapshot::default();
        first.files.insert((9, 1), seen("etc/a", 1 << 20, 1));
        first.files.insert((9, 2), seen("etc/b", 100, 1));
        first.files.insert((9, 3), seen("etc/c", 1 << 20, 1));
        first.files.insert((9, 4), seen("etc/d", 1 << 20, 1));
        let mut last = Snapshot::default();
        last.files.insert((9, 1), seen("etc/a", 1 << 20, 1));
        last.files.insert((9, 2), seen("etc/b2", 100, 1));
        // ino 3 gone; ino 4 reused by another file (new birth time).
        last.files.insert((9, 4), seen("tmp/new", 10, 2));
        let (files, unresolved) = c.resolve(&first, &last, &["root".into()]);
        let by: Vec<(&str, Status, Option<&str>)> = files
            .iter()
            .map(|f| (f.path.as_str(), f.status, f.was.as_deref()))
            .collect();
        assert_eq!(
            by,
            [
                ("etc/a", Status::Present, None),
                ("etc/b2", Status::Renamed, Some("etc/b")),
                ("", Status::Deleted, Some("etc/c")),
                ("", Status::Deleted, Some("etc/d")),
            ]
        );
        assert_eq!(files[0].read, [[0, 8192], [40960, 4096]]);
        assert_eq!(files[0].touches, 2);
        // Clipped to the file size.
        assert_eq!(files[1].read, [[0, 100]]);
        assert_eq!(files[2].cached, [[0, 8192]]);
        assert_eq!(unresolved.len(), 1);
        assert_eq!((unresolved[0].ino, unresolved[0].dev.as_str()), (5, "0:9"));
    }
}
