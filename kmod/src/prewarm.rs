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

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
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
    pub method: Method,
    pub workers: usize,
    pub elapsed_ms: u64,
}

impl Report {
    /// One line: what was loaded, how fast.
    pub fn summary(&self) -> String {
        let mut line = format!(
            "prewarm: {} of {} files, {:.1} MiB in {} ms ({}, {} workers)",
            self.loaded,
            self.files,
            self.bytes as f64 / 1048576.0,
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

/// Loads `set` into the page cache through `root` (the guest's root as the guest sees it).
pub fn prewarm(root: &Path, set: &HotSet, opts: &Options) -> Result<Report> {
    let clock = Instant::now();
    let root_fd = beneath::open_root(root)
        .map_err(|e| Error::sys(format!("opening {}", root.display()), e))?;
    let workers = opts.workers.clamp(1, 64);
    let budget = opts.max_bytes.unwrap_or(u64::MAX);
    // Files are handed out in hot-set order; the budget is taken when a file is handed out.
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
                        let Some(file) = set.files.get(i) else { return };
                        n.0 += 1;
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
    let outcomes = outcomes
        .into_inner()
        .map_err(|_| Error::io("prewarm", std::io::Error::other("a worker panicked")))?;
    let mut report = Report {
        files: set.files.len(),
        loaded: 0,
        bytes: 0,
        skipped: Vec::new(),
        over_budget: 0,
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
}
