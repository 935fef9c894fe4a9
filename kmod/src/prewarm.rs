//! Loading a hot set into the page cache, in parallel, with bounded memory.
//!
//! Where the pages must land for the guest's later reads to hit depends on the root:
//! - a plain directory or kernel overlayfs: the real file's cache; any method through the root
//!   fills it (overlayfs forwards reads and readahead to the real file);
//! - a FUSE union without passthrough: the FUSE inode's own cache, which only reads through the
//!   mount fill (the daemon's reads of the backing file fill another cache);
//! - FUSE with passthrough: the backing file's cache. A read through the mount is passed to the
//!   backing file and fills it; `readahead(2)` on the FUSE file works on the FUSE inode's
//!   mapping instead, which passthrough reads never look at.
//!
//! So the default method is [`Method::Read`] *through the guest's root*: right for every kind,
//! each worker holding one buffer. [`Method::Readahead`] only asks the kernel to read (no copy,
//! returns before the I/O is done) and is for plain directories and overlayfs.
//! docs/benchmarks/prewarm.md has the measurements.
//!
//! Every file is opened beneath the root ([`crate::beneath`]) and checked against the hot set
//! first: a file whose type, size, mtime or head fingerprint changed is skipped and reported.
//!
//! The directories on the way to the hot files are listed first. A cold start spends as much on
//! metadata as on data: every path lookup walks those directories, and module loaders (Python's
//! importlib, the dynamic linker's search) list or probe them. Through a FUSE mount with
//! readdirplus, one listing brings every entry's name and attributes into the kernel's caches
//! (and the backing inodes into the daemon's filesystem's), so those lookups no longer wait for
//! a round trip and a disk read each. Listing, not `stat`ing every entry, keeps this cheap on a
//! plain directory, where a big directory's entries would each cost a disk read.

use std::collections::BTreeSet;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

use crate::access::log::decode_path;
use crate::access::walk::statx;
use crate::hotset::{HotFile, HotSet, fingerprint};
use crate::{Error, Result, beneath};

/// How pages are brought in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// `pread` into a per-worker buffer: the data is cached when the call returns.
    Read,
    /// `readahead(2)`: I/O is started, not waited for.
    Readahead,
}

impl std::str::FromStr for Method {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "read" => Ok(Method::Read),
            "readahead" => Ok(Method::Readahead),
            _ => Err(format!("unknown method {s:?} (read, readahead)")),
        }
    }
}

/// How to prewarm.
#[derive(Debug, Clone)]
pub struct Options {
    pub workers: usize,
    pub method: Method,
    /// Stop after this many bytes.
    pub max_bytes: Option<u64>,
    /// Size of each worker's read buffer (bounds memory to workers × buffer).
    pub buffer: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            workers: 8,
            method: Method::Read,
            max_bytes: None,
            buffer: 256 << 10,
        }
    }
}

/// A file not loaded, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}

/// What a prewarm did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub files: usize,
    pub loaded: usize,
    pub bytes: u64,
    pub skipped: Vec<Skipped>,
    /// Files not reached because of `max_bytes`.
    pub over_budget: usize,
    /// Directories on the way to the hot files that were listed, and their entries.
    pub dirs_listed: usize,
    pub dir_entries: u64,
    pub method: Method,
    pub workers: usize,
    pub elapsed_ms: u64,
}

impl Report {
    /// One line: what was loaded, how fast.
    pub fn summary(&self) -> String {
        let mut line = format!(
            "prewarm: {} of {} files, {:.1} MiB, {} directories in {} ms ({}, {} workers)",
            self.loaded,
            self.files,
            self.bytes as f64 / 1048576.0,
            self.dirs_listed,
            self.elapsed_ms,
            match self.method {
                Method::Read => "read",
                Method::Readahead => "readahead",
            },
            self.workers
        );
        if !self.skipped.is_empty() {
            line.push_str(&format!("; {} skipped", self.skipped.len()));
        }
        if self.over_budget > 0 {
            line.push_str(&format!("; {} over the byte budget", self.over_budget));
        }
        line
    }

    /// The skipped files and why, the first `max` of them.
    pub fn skipped_summary(&self, max: usize) -> String {
        let mut parts: Vec<String> = self
            .skipped
            .iter()
            .take(max)
            .map(|s| format!("{} ({})", s.path, s.reason))
            .collect();
        if self.skipped.len() > max {
            parts.push(format!("and {} more", self.skipped.len() - max));
        }
        format!(
            "prewarm skipped {} file(s) that changed since the hot set was recorded: {}",
            self.skipped.len(),
            parts.join(", ")
        )
    }
}

enum Outcome {
    Loaded(u64),
    Skipped(String),
    OverBudget,
}

/// Why the file at hand is not the one the hot set describes, if it is not.
fn changed(file: &HotFile, fd: &OwnedFd) -> std::io::Result<Option<String>> {
    let st = statx(fd.as_fd(), c"")?;
    if !st.is_file() {
        return Ok(Some("not a regular file any more".into()));
    }
    if st.size != file.size {
        return Ok(Some(format!(
            "size changed ({} → {} bytes)",
            file.size, st.size
        )));
    }
    if st.mtime_ns != file.mtime_ns {
        return Ok(Some("modified (mtime changed)".into()));
    }
    if let Some(expected) = &file.fingerprint {
        let mut f = std::fs::File::from(fd.try_clone()?);
        if &fingerprint(&mut f)? != expected {
            return Ok(Some("content changed (same size and mtime)".into()));
        }
    }
    Ok(None)
}

fn load(fd: &OwnedFd, file: &HotFile, method: Method, buf: &mut [u8]) -> std::io::Result<u64> {
    let mut bytes = 0;
    for &[off, len] in &file.ranges {
        let end = off.saturating_add(len).min(file.size);
        if end <= off {
            continue;
        }
        match method {
            Method::Readahead => {
                // SAFETY: a valid fd; readahead reads no user memory.
                let rc = unsafe {
                    libc::readahead(fd.as_raw_fd(), off as libc::off64_t, (end - off) as usize)
                };
                if rc != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                bytes += end - off;
            }
            Method::Read => {
                let mut pos = off;
                while pos < end {
                    let want = ((end - pos) as usize).min(buf.len());
                    match nix::sys::uio::pread(fd, &mut buf[..want], pos as libc::off_t) {
                        Ok(0) => break,
                        Ok(n) => {
                            pos += n as u64;
                            bytes += n as u64;
                        }
                        Err(nix::errno::Errno::EINTR) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
    }
    Ok(bytes)
}

/// Every directory on the way to a hot file (the root itself is open already), parents first.
fn dirs_of(set: &HotSet) -> Vec<PathBuf> {
    let mut dirs = BTreeSet::new();
    for f in &set.files {
        let path = decode_path(&f.path);
        dirs.extend(
            path.ancestors()
                .skip(1)
                .filter(|d| !d.as_os_str().is_empty())
                .map(Path::to_path_buf),
        );
    }
    // Sorted paths put a parent before its children: a child's listing finds its own entry
    // in the parent cached already.
    dirs.into_iter().collect()
}

/// Lists `dir` beneath `root`; the number of entries, or `None` when it cannot be listed (a
/// directory that changed is the files' problem: their own checks report it).
fn list(root: &OwnedFd, dir: &Path) -> Option<u64> {
    let fd = beneath::open_dir(root, dir).ok()?;
    let mut d = nix::dir::Dir::from_fd(fd).ok()?;
    let mut n = 0;
    for entry in d.iter() {
        entry.ok()?;
        n += 1;
    }
    Some(n)
}

fn one(root: &OwnedFd, file: &HotFile, method: Method, buf: &mut [u8]) -> Outcome {
    let path = decode_path(&file.path);
    let fd = match beneath::open_file(root, &path) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Outcome::Skipped("missing".into()),
        Err(nix::errno::Errno::ELOOP) => {
            return Outcome::Skipped("a symlink on the way (not followed)".into());
        }
        Err(e) => return Outcome::Skipped(format!("cannot open: {e}")),
    };
    match changed(file, &fd) {
        Ok(Some(why)) => return Outcome::Skipped(why),
        Ok(None) => {}
        Err(e) => return Outcome::Skipped(format!("cannot check: {e}")),
    }
    match load(&fd, file, method, buf) {
        Ok(n) => Outcome::Loaded(n),
        Err(e) => Outcome::Skipped(format!("read failed: {e}")),
    }
}

fn worker_panicked() -> Error {
    Error::io("prewarm", std::io::Error::other("a worker panicked"))
}

/// Loads `set` into the page cache through `root` (the guest's root as the guest sees it).
pub fn prewarm(root: &Path, set: &HotSet, opts: &Options) -> Result<Report> {
    let clock = Instant::now();
    let root_fd = beneath::open_root(root)
        .map_err(|e| Error::sys(format!("opening {}", root.display()), e))?;
    let workers = opts.workers.clamp(1, 64);
    let budget = opts.max_bytes.unwrap_or(u64::MAX);
    let dirs = dirs_of(set);
    let listed = Mutex::new((0usize, 0u64));
    // Directories, then files in hot-set order, are handed out from one counter; the budget is
    // taken when a file is handed out.
    let next = Mutex::new((0usize, 0u64));
    let outcomes: Mutex<Vec<Option<Outcome>>> =
        Mutex::new((0..set.files.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                let mut buf = vec![0u8; opts.buffer.max(4096)];
                loop {
                    let claim = {
                        let Ok(mut n) = next.lock() else { return };
                        let (i, used) = *n;
                        n.0 += 1;
                        if let Some(dir) = dirs.get(i) {
                            drop(n);
                            if let (Some(entries), Ok(mut l)) = (list(&root_fd, dir), listed.lock())
                            {
                                l.0 += 1;
                                l.1 += entries;
                            }
                            continue;
                        }
                        let i = i - dirs.len();
                        let Some(file) = set.files.get(i) else { return };
                        if used.saturating_add(file.bytes()) > budget {
                            Err(i)
                        } else {
                            n.1 = used + file.bytes();
                            Ok(i)
                        }
                    };
                    let (i, outcome) = match claim {
                        Ok(i) => (i, one(&root_fd, &set.files[i], opts.method, &mut buf)),
                        Err(i) => (i, Outcome::OverBudget),
                    };
                    if let Ok(mut o) = outcomes.lock() {
                        o[i] = Some(outcome);
                    }
                }
            });
        }
    });
    let outcomes = outcomes.into_inner().map_err(|_| worker_panicked())?;
    let (dirs_listed, dir_entries) = listed.into_inner().map_err(|_| worker_panicked())?;
    let mut report = Report {
        files: set.files.len(),
        loaded: 0,
        bytes: 0,
        skipped: Vec::new(),
        over_budget: 0,
        dirs_listed,
        dir_entries,
        method: opts.method,
        workers,
        elapsed_ms: 0,
    };
    for (file, outcome) in set.files.iter().zip(outcomes) {
        match outcome {
            Some(Outcome::Loaded(n)) => {
                report.loaded += 1;
                report.bytes += n;
            }
            Some(Outcome::Skipped(reason)) => report.skipped.push(Skipped {
                path: file.path.clone(),
                reason,
            }),
            Some(Outcome::OverBudget) => report.over_budget += 1,
            None => report.skipped.push(Skipped {
                path: file.path.clone(),
                reason: "not reached (a worker failed)".into(),
            }),
        }
    }
    report.elapsed_ms = u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hotset::{HOTSET_FORMAT, HOTSET_VERSION};

    fn hot_file(root: &Path, rel: &str) -> HotFile {
        let st = statx(
            beneath::open_root(root).expect("root").as_fd(),
            &std::ffi::CString::new(rel).expect("name"),
        )
        .expect("stat");
        let mut f = std::fs::File::open(root.join(rel)).expect("open");
        HotFile {
            path: rel.into(),
            size: st.size,
            mtime_ns: st.mtime_ns,
            fingerprint: Some(fingerprint(&mut f).expect("fingerprint")),
            seen: 1,
            first: 0.0,
            ranges: vec![[0, st.size]],
        }
    }

    #[test]
    fn loads_unchanged_files_and_skips_changed_ones_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let names = ["same", "grown", "rewritten", "swapped", "gone", "fifo"];
        for n in names {
            std::fs::write(root.join(n), vec![b'a'; 10000]).expect("write");
        }
        let files: Vec<HotFile> = names.iter().map(|n| hot_file(root, n)).collect();
        let set = HotSet {
            format: HOTSET_FORMAT.into(),
            version: HOTSET_VERSION,
            sources: vec![],
            bytes: 60000,
            capped_bytes: 0,
            files,
        };
        std::fs::write(root.join("grown"), vec![b'a'; 20000]).expect("write");
        // Same size, mtime put back: only the fingerprint can tell.
        let mtime = std::fs::metadata(root.join("rewritten"))
            .expect("stat")
            .modified()
            .expect("mtime");
        std::fs::write(root.join("rewritten"), vec![b'b'; 10000]).expect("write");
        std::fs::File::options()
            .write(true)
            .open(root.join("rewritten"))
            .and_then(|f| f.set_modified(mtime))
            .expect("utimes");
        std::fs::remove_file(root.join("swapped")).expect("rm");
        std::os::unix::fs::symlink("/etc/passwd", root.join("swapped")).expect("ln");
        std::fs::remove_file(root.join("gone")).expect("rm");
        std::fs::remove_file(root.join("fifo")).expect("rm");
        nix::unistd::mkfifo(&root.join("fifo"), nix::sys::stat::Mode::S_IRWXU).expect("fifo");

        for method in [Method::Read, Method::Readahead] {
            let report = prewarm(
                root,
                &set,
                &Options {
                    method,
                    workers: 3,
                    ..Default::default()
                },
            )
            .expect("prewarm");
            assert_eq!((report.loaded, report.bytes), (1, 10000), "{report:?}");
            let reasons: Vec<(&str, &str)> = report
                .skipped
                .iter()
                .map(|s| (s.path.as_str(), s.reason.as_str()))
                .collect();
            assert_eq!(reasons.len(), 5, "{reasons:?}");
            let reason = |p: &str| {
                reasons
                    .iter()
                    .find(|r| r.0 == p)
                    .map(|r| r.1)
                    .unwrap_or_default()
            };
            assert!(reason("grown").starts_with("size changed"), "{reasons:?}");
            assert!(
                reason("rewritten").starts_with("content changed"),
                "{reasons:?}"
            );
            assert!(reason("swapped").contains("symlink"), "{reasons:?}");
            assert_eq!(reason("gone"), "missing");
            assert!(reason("fifo").contains("not a regular file"), "{reasons:?}");
        }

        let budget = prewarm(
            root,
            &set,
            &Options {
                max_bytes: Some(5000),
                workers: 1,
                ..Default::default()
            },
        )
        .expect("prewarm");
        assert_eq!((budget.loaded, budget.over_budget), (0, 6), "{budget:?}");
    }

    #[test]
    fn lists_the_directories_on_the_way_once_and_follows_no_symlink() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        for d in ["a/b", "a/c", "elsewhere"] {
            std::fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        for f in ["a/b/f", "a/b/g", "a/c/h"] {
            std::fs::write(root.join(f), b"data").expect("write");
        }
        std::fs::write(root.join("elsewhere/x"), b"data").expect("write");
        let mut files: Vec<HotFile> = ["a/b/f", "a/b/g", "a/c/h", "elsewhere/x"]
            .iter()
            .map(|f| hot_file(&root, f))
            .collect();
        // A directory swapped for a symlink after recording: neither listed nor read through.
        std::fs::rename(root.join("elsewhere"), dir.path().join("moved")).expect("mv");
        std::os::unix::fs::symlink(dir.path().join("moved"), root.join("elsewhere")).expect("ln");
        files.sort_by(|a, b| b.path.cmp(&a.path));
        let set = HotSet {
            format: HOTSET_FORMAT.into(),
            version: HOTSET_VERSION,
            sources: vec![],
            bytes: 16,
            capped_bytes: 0,
            files,
        };
        assert_eq!(
            dirs_of(&set),
            ["a", "a/b", "a/c", "elsewhere"].map(PathBuf::from),
            "every directory once, parents first"
        );
        let report = prewarm(&root, &set, &Options::default()).expect("prewarm");
        // a: b, c; a/b: f, g; a/c: h (getdents adds . and .. to each).
        assert_eq!(
            (report.dirs_listed, report.dir_entries),
            (3, 5 + 3 * 2),
            "{report:?}"
        );
        assert_eq!(report.loaded, 3, "{report:?}");
        assert_eq!(report.skipped.len(), 1, "{report:?}");
    }
}
