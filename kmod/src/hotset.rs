//! Hot sets: the byte ranges worth loading into the page cache before a guest starts, merged
//! from access logs (e.g. of several starts of guests of one template).
//!
//! A file is identified by its guest path and pinned by what it looked like when it was
//! traced — size, mtime and a fingerprint of its first 4 KiB — so that [`crate::prewarm`]
//! can skip, and report, a file that changed since. Guests cloned from one template have the
//! same paths, sizes and mtimes (restores and unification keep them), so a hot set recorded on
//! one guest applies to the others.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::access::log::{AccessLog, Status, load_versioned};
use crate::access::ranges::RangeSet;
use crate::{Error, Result};

pub const HOTSET_FORMAT: &str = "cowfs-hotset";
pub const HOTSET_VERSION: u32 = 1;
/// How much of a file's head the fingerprint covers.
pub const FINGERPRINT_BYTES: usize = 4096;

/// A log a hot set was built from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub context: String,
    pub started: String,
    pub records: u64,
    pub dropped: u64,
}

/// One file to preload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HotFile {
    /// Guest path relative to the root (encoded as in the access log).
    pub path: String,
    pub size: u64,
    pub mtime_ns: i64,
    /// `blake3-head:<hex>` of the first [`FINGERPRINT_BYTES`] bytes, when it was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// In how many logs the file was touched (in this version).
    pub seen: u32,
    /// Mean position of its first touch, 0 (first file) to 1 (last).
    pub first: f64,
    /// `[offset, length]` ranges to load.
    pub ranges: Vec<[u64; 2]>,
}

impl HotFile {
    pub fn bytes(&self) -> u64 {
        self.ranges.iter().map(|r| r[1]).sum()
    }
}

/// A hot set (format [`HOTSET_FORMAT`], version [`HOTSET_VERSION`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HotSet {
    pub format: String,
    pub version: u32,
    pub sources: Vec<Source>,
    /// Bytes in `files`, and bytes left out by the size cap.
    pub bytes: u64,
    pub capped_bytes: u64,
    /// In the order to load them (earliest first touch first).
    pub files: Vec<HotFile>,
}

/// How to build a hot set.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Keep at most this many bytes: the files seen in most logs, then the earliest, first.
    pub max_bytes: Option<u64>,
    /// Only files seen in at least this many logs.
    pub min_logs: u32,
    /// Merge ranges less than this many bytes apart (fewer, larger reads).
    pub gap: u64,
    /// Also load what the kernel read ahead around the accesses (the `cached` ranges), not
    /// only what was accessed.
    pub readahead: bool,
}

/// `blake3-head:<hex>` of the first [`FINGERPRINT_BYTES`] of `file`.
pub fn fingerprint(file: &mut impl Read) -> std::io::Result<String> {
    let mut buf = vec![0u8; FINGERPRINT_BYTES];
    let mut len = 0;
    while len < buf.len() {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(format!(
        "blake3-head:{}",
        blake3::hash(&buf[..len]).to_hex()
    ))
}

/// What identifies one version of a file across logs.
type Version = (u64, i64, Option<String>);

#[derive(Default)]
struct Candidate {
    /// version → (logs that have it, latest log index, ranges, first-touch positions)
    versions: HashMap<Version, (u32, usize, RangeSet, Vec<f64>)>,
}

/// Merges `logs` into a hot set.
pub fn build(logs: &[AccessLog], opts: &BuildOptions) -> HotSet {
    let mut by_path: HashMap<&str, Candidate> = HashMap::new();
    for (li, log) in logs.iter().enumerate() {
        let n = log.files.len().max(1) as f64;
        for f in &log.files {
            if f.status == Status::Deleted || f.path.is_empty() {
                continue;
            }
            let mut ranges = RangeSet::from_pairs(&f.read);
            if opts.readahead {
                ranges.extend(&RangeSet::from_pairs(&f.cached), 0);
            }
            if ranges.is_empty() {
                continue;
            }
            let version = (f.size, f.mtime_ns, f.fingerprint.clone());
            let entry = by_path
                .entry(f.path.as_str())
                .or_default()
                .versions
                .entry(version)
                .or_default();
            entry.0 += 1;
            entry.1 = li;
            entry.2.extend(&ranges, opts.gap);
            entry.3.push(f.first as f64 / n);
        }
    }
    let mut files: Vec<HotFile> = by_path
        .into_iter()
        .filter_map(|(path, c)| {
            // The version most logs saw; on a tie, the one of the latest log.
            let ((size, mtime_ns, fingerprint), (seen, _, mut ranges, firsts)) = c
                .versions
                .into_iter()
                .max_by_key(|(_, (seen, latest, _, _))| (*seen, *latest))?;
            if seen < opts.min_logs.max(1) {
                return None;
            }
            ranges.clip(size);
            if ranges.is_empty() {
                return None;
            }
            Some(HotFile {
                path: path.to_string(),
                size,
                mtime_ns,
                fingerprint,
                seen,
                first: firsts.iter().sum::<f64>() / firsts.len().max(1) as f64,
                ranges: ranges.to_pairs(),
            })
        })
        .collect();

    // The cap keeps what most logs agree on, then what is needed first.
    files.sort_by(|a, b| {
        b.seen
            .cmp(&a.seen)
            .then(a.first.total_cmp(&b.first))
            .then(a.path.cmp(&b.path))
    });
    let mut capped_bytes = 0;
    if let Some(cap) = opts.max_bytes {
        let mut left = cap;
        for f in &mut files {
            let before = f.bytes();
            let mut kept = Vec::new();
            for [off, len] in f.ranges.drain(..) {
                let take = len.min(left);
                if take > 0 {
                    kept.push([off, take]);
                    left -= take;
                }
            }
            f.ranges = kept;
            capped_bytes += before - f.bytes();
        }
        files.retain(|f| !f.ranges.is_empty());
    }
    files.sort_by(|a, b| a.first.total_cmp(&b.first).then(a.path.cmp(&b.path)));
    HotSet {
        format: HOTSET_FORMAT.into(),
        version: HOTSET_VERSION,
        sources: logs
            .iter()
            .map(|l| Source {
                context: l.context.clone(),
                started: l.started.clone(),
                records: l.records,
                dropped: l.dropped,
            })
            .collect(),
        bytes: files.iter().map(HotFile::bytes).sum(),
        capped_bytes,
        files,
    }
}

impl HotSet {
    /// Reads a hot set, refusing other formats and versions.
    pub fn load(path: &Path) -> Result<Self> {
        load_versioned(path, "hot set", HOTSET_FORMAT, HOTSET_VERSION)
    }
}

/// Writes `value` as JSON to `path` crash-safely: a temp file in the same directory, fsync,
/// rename, fsync of the directory.
pub fn write_json_atomic(path: &Path, value: &impl Serialize) -> Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let what = |e| Error::io(format!("writing {}", path.display()), e);
    let mut tmp = tempfile::Builder::new()
        .prefix(".cowfs.tmp.")
        .tempfile_in(dir)
        .map_err(what)?;
    serde_json::to_writer(&mut tmp, value).map_err(|e| what(e.into()))?;
    tmp.write_all(b"\n").map_err(what)?;
    tmp.as_file().sync_all().map_err(what)?;
    tmp.persist(path).map_err(|e| what(e.error))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(what)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::log::{FileAccess, LOG_FORMAT, LOG_VERSION};

    fn file(path: &str, first: u64, read: &[[u64; 2]], size: u64) -> FileAccess {
        FileAccess {
            path: path.into(),
            status: Status::Present,
            was: None,
            tree: "root".into(),
            dev: "8:1".into(),
            ino: 1,
            size,
            mtime_ns: 5,
            fingerprint: Some("blake3-head:ab".into()),
            first,
            touches: 1,
            read: read.to_vec(),
            cached: vec![[0, size]],
            written: vec![],
        }
    }

    fn log(files: Vec<FileAccess>) -> AccessLog {
        AccessLog {
            format: LOG_FORMAT.into(),
            version: LOG_VERSION,
            context: "g".into(),
            xid: 2,
            root: "/g".into(),
            branches: vec![],
            started: "2026-01-01T00:00:00Z".into(),
            duration_ms: 1,
            page_size: 4096,
            buffer_bytes: 4096,
            hooks: vec![],
            records: 3,
            dropped: 0,
            unreadable: 0,
            files,
            unresolved: vec![],
        }
    }

    #[test]
    fn merges_ranges_ranks_by_agreement_then_first_touch_and_caps() {
        let a = log(vec![
            file("bin/sh", 0, &[[0, 4096]], 100_000),
            file("lib/libc", 1, &[[0, 8192], [65536, 4096]], 100_000),
            file("etc/rare", 2, &[[0, 100]], 100),
        ]);
        let b = log(vec![
            file("lib/libc", 0, &[[8192, 4096]], 100_000),
            file("bin/sh", 1, &[[4096, 4096]], 100_000),
        ]);
        let hot = build(&[a.clone(), b.clone()], &BuildOptions::default());
        let paths: Vec<&str> = hot.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["lib/libc", "bin/sh", "etc/rare"]);
        assert_eq!(hot.files[0].ranges, [[0, 12288], [65536, 4096]]);
        assert_eq!(hot.files[1].ranges, [[0, 8192]]);
        assert_eq!(hot.files[0].seen, 2);
        assert_eq!(hot.bytes, 16384 + 8192 + 100);

        let two = build(
            &[a.clone(), b.clone()],
            &BuildOptions {
                min_logs: 2,
                ..Default::default()
            },
        );
        assert_eq!(two.files.len(), 2);

        // A cap keeps the files both logs agree on, earliest first.
        let capped = build(
            &[a.clone(), b],
            &BuildOptions {
                max_bytes: Some(20000),
                ..Default::default()
            },
        );
        assert_eq!(capped.bytes, 20000);
        assert_eq!(capped.capped_bytes, hot.bytes - 20000);
        assert!(capped.files.iter().all(|f| f.path != "etc/rare"));

        let gap = build(
            &[a],
            &BuildOptions {
                gap: 65536,
                readahead: false,
                ..Default::default()
            },
        );
        assert_eq!(gap.files[1].ranges, [[0, 69632]]);
    }

    #[test]
    fn the_majority_version_of_a_file_wins() {
        let old = file("lib/x", 0, &[[0, 4096]], 50_000);
        let mut new = file("lib/x", 0, &[[8192, 4096]], 60_000);
        new.mtime_ns = 9;
        let hot = build(
            &[
                log(vec![old.clone()]),
                log(vec![new.clone()]),
                log(vec![new]),
            ],
            &BuildOptions::default(),
        );
        assert_eq!(hot.files.len(), 1);
        assert_eq!((hot.files[0].size, hot.files[0].seen), (60_000, 2));
        assert_eq!(hot.files[0].ranges, [[8192, 4096]]);
    }

    #[test]
    fn files_round_trip_and_foreign_formats_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hot = build(
            &[log(vec![file("a", 0, &[[0, 1]], 1)])],
            &BuildOptions::default(),
        );
        let path = dir.path().join("hot.json");
        write_json_atomic(&path, &hot).expect("write");
        assert_eq!(HotSet::load(&path).expect("load"), hot);
        std::fs::write(&path, r#"{"format":"cowfs-hotset","version":99}"#).expect("write");
        let err = HotSet::load(&path).expect_err("future version").to_string();
        assert!(err.contains("version 99"), "{err}");
        assert!(HotSet::load(&dir.path().join("missing")).is_err());
    }
}
