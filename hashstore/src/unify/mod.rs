//! The unification engine behind `vhashify`: walk guest roots in parallel, hash only what needs
//! it, make every eligible file an object or a link to one, and leave every path showing exactly
//! the content and metadata it had (only link count, inode number and ctime change).
//!
//! Phases: [`scan`] (walk + inode table + what is already unified), [`hash`] (read-only: content
//! hashes and keys), [`apply`] (objects first, then path replacement directory by directory with
//! the directory times journaled in the index and restored), and [`recover`] (what a killed run
//! left behind is repaired before anything else).

pub mod apply;
pub mod exclude;
pub mod hash;
pub mod recover;
pub mod scan;
pub mod swap;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use tracing::warn;

use crate::error::{Error, IoContext, Result};
use crate::key::KeyPolicy;
use crate::store::Store;
use crate::walk::Root;

pub use exclude::{DEFAULT_EXCLUDES, ExcludeList, Rule};

/// How to unify.
#[derive(Clone, Debug)]
pub struct Options {
    /// Which metadata must match (mtime unless ignored).
    pub policy: KeyPolicy,
    /// Files smaller than this are left alone (empty files always are).
    pub min_size: u64,
    /// Paths left out.
    pub excludes: ExcludeList,
    /// Compute everything, change nothing.
    pub dry_run: bool,
    /// Guests on another filesystem than the store: copy their files into the store as objects
    /// (their paths cannot be linked and stay as they are) instead of refusing.
    pub copy_foreign: bool,
    /// Hash only files that can match another file or an existing object; files unique in size
    /// and metadata are left out of the store (faster, but later guests cannot unify against
    /// them).
    pub only_duplicates: bool,
    /// Worker threads (0: one per CPU for the changes, four per CPU for walking and hashing,
    /// which wait for the disk when the cache is cold).
    pub threads: usize,
    /// The device the store is on, when it is not the store passed in: a dry run against a store
    /// that does not exist yet runs on a scratch store and says here where the real one will be.
    pub store_dev: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            policy: KeyPolicy::default(),
            min_size: 16,
            excludes: ExcludeList::defaults(),
            dry_run: false,
            copy_foreign: false,
            only_duplicates: false,
            threads: 0,
            store_dev: None,
        }
    }
}

impl Options {
    /// Threads for the phases that change things (CPU and journal bound).
    fn threads(&self) -> usize {
        if self.threads > 0 {
            self.threads
        } else {
            crate::objects::default_threads()
        }
    }

    /// Threads for walking and hashing: with a cold cache they mostly wait for reads, and more
    /// requests in flight keep the disk busy (measured on the corpus: hashing 1.05 s with 2
    /// threads, 0.67 s with 8; warm, the same within noise).
    fn io_threads(&self) -> usize {
        if self.threads > 0 {
            self.threads
        } else {
            4 * crate::objects::default_threads()
        }
    }
}

/// Why a file was left as it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SkipReason {
    /// Its content or metadata changed during the run.
    Changed,
    /// It disappeared during the run.
    Vanished,
    /// Some process has it open for writing.
    Busy,
    /// It could not be read (permissions, I/O error).
    Unreadable,
    /// A system call failed while replacing it.
    Error,
    /// An object was modified outside cowfs (run `cowfs store verify`).
    ObjectModified,
}

impl SkipReason {
    /// The name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Changed => "changed",
            SkipReason::Vanished => "vanished",
            SkipReason::Busy => "busy",
            SkipReason::Unreadable => "unreadable",
            SkipReason::Error => "error",
            SkipReason::ObjectModified => "object-modified",
        }
    }

    /// Whether this counts as a failure (exit status non-zero); races with a live guest do not.
    pub fn is_error(self) -> bool {
        matches!(
            self,
            SkipReason::Unreadable | SkipReason::Error | SkipReason::ObjectModified
        )
    }
}

/// One skipped file and why.
#[derive(Clone, Debug, Serialize)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: SkipReason,
    pub detail: String,
}

/// What a run did (or, with `dry_run`, would do).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub dry_run: bool,
    pub guests: usize,
    /// Eligible regular files (paths) found.
    pub files: u64,
    /// Their apparent size.
    pub bytes: u64,
    /// Distinct inodes among them.
    pub inodes: u64,
    /// Paths (files and directories) left out by the exclude list.
    pub excluded: u64,
    /// Regular files under `min_size`.
    pub too_small: u64,
    /// Symlinks, devices, fifos, sockets (never unified).
    pub not_regular: u64,
    /// Paths that already were links to their object.
    pub already_unified: u64,
    /// Files whose content was read and hashed.
    pub hashed_files: u64,
    pub hashed_bytes: u64,
    /// Files whose content hash came from the index (unchanged since the last run).
    pub hash_cache_hits: u64,
    /// Files not hashed because nothing could match them (`only_duplicates`).
    pub unique_not_hashed: u64,
    /// Objects made by linking a file into the store.
    pub objects_linked: u64,
    /// Objects made by copying a file from another filesystem.
    pub objects_copied: u64,
    /// Paths replaced by a link to an object.
    pub links_made: u64,
    /// Disk space freed by those replacements.
    pub bytes_reclaimed: u64,
    /// Paths on another filesystem than the store, left in place.
    pub foreign_left: u64,
    /// Directories restored and temporary links removed after an earlier killed run.
    pub recovered_dirs: u64,
    pub stale_temps_removed: u64,
    /// Files skipped, by reason.
    pub skipped_by_reason: BTreeMap<String, u64>,
    /// The first skipped files (at most [`MAX_LISTED_SKIPS`]).
    pub skipped: Vec<Skipped>,
    /// Wall time of each phase and in total, in milliseconds.
    pub phase_ms: BTreeMap<String, u64>,
    pub elapsed_ms: u64,
}

/// How many skipped files a report lists one by one.
pub const MAX_LISTED_SKIPS: usize = 200;

impl Report {
    pub(crate) fn skip(&mut self, path: PathBuf, reason: SkipReason, detail: String) {
        *self
            .skipped_by_reason
            .entry(reason.as_str().to_string())
            .or_default() += 1;
        if self.skipped.len() < MAX_LISTED_SKIPS {
            self.skipped.push(Skipped {
                path,
                reason,
                detail,
            });
        }
    }

    /// Whether anything was skipped for an error (the run is then reported as failed).
    pub fn has_errors(&self) -> bool {
        [
            SkipReason::Unreadable,
            SkipReason::Error,
            SkipReason::ObjectModified,
        ]
        .iter()
        .any(|r| {
            self.skipped_by_reason
                .get(r.as_str())
                .is_some_and(|&n| n > 0)
        })
    }
}

/// What every phase of a run works with.
#[derive(Clone, Copy)]
pub struct Job<'a> {
    pub store: &'a Store,
    pub roots: &'a [Root],
    pub opts: &'a Options,
    /// Threads for changes (objects, links).
    pub threads: usize,
    /// Threads for the walk and for hashing.
    pub io_threads: usize,
    pub progress: &'a dyn Progress,
}

/// Progress reporting hooks (the CLI draws a bar; the library stays free of terminal code).
pub trait Progress: Sync {
    /// A new phase with `total` units of work (0: unknown).
    fn phase(&self, _name: &str, _total: u64) {}
    /// `n` more units done.
    fn advance(&self, _n: u64) {}
}

/// Progress that goes nowhere.
pub struct NoProgress;
impl Progress for NoProgress {}

/// Where a store at `path` is or will be: the canonical form of its deepest existing ancestor
/// plus the rest, and the device of that ancestor.
pub fn store_location(path: &Path) -> Result<(PathBuf, u64)> {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().at(".")?.join(path)
    };
    let mut rest = Vec::new();
    let mut cur = abs.as_path();
    loop {
        if let Ok(c) = std::fs::canonicalize(cur) {
            let dev = std::fs::metadata(&c).at(&c)?.dev();
            let mut out = c;
            for part in rest.iter().rev() {
                out.push(part);
            }
            return Ok((out, dev));
        }
        match (cur.parent(), cur.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                cur = parent;
            }
            _ => {
                return Err(Error::InvalidInput(format!(
                    "{} has no existing ancestor",
                    path.display()
                )));
            }
        }
    }
}

/// Checks the guest list and the store location before anything is touched, and opens the
/// guests: every guest must exist and be a directory, appear once, not contain another guest,
/// and not contain the store (nor be inside it); unless `copy_foreign`, every guest must be on
/// the store's filesystem.
pub fn open_guests(guests: &[PathBuf], store: &Path, copy_foreign: bool) -> Result<Vec<Root>> {
    if guests.is_empty() {
        return Err(Error::InvalidInput("no guest roots given".into()));
    }
    let (store_canon, store_dev) = store_location(store)?;
    let roots = crate::walk::open_roots(guests)?;
    for root in &roots {
        if store_canon == root.path || crate::walk::is_inside(&store_canon, &root.path) {
            return Err(Error::InvalidInput(format!(
                "the store {} is inside guest root {}: it would be unified into itself; put it outside every guest",
                store_canon.display(),
                root.path.display()
            )));
        }
        if crate::walk::is_inside(&root.path, &store_canon) {
            return Err(Error::InvalidInput(format!(
                "guest root {} is inside the store {}",
                root.path.display(),
                store_canon.display()
            )));
        }
        if root.dev != store_dev && !copy_foreign {
            return Err(Error::CrossDevice {
                path: root.path.clone(),
                store: store_canon.clone(),
            });
        }
    }
    Ok(roots)
}

/// Holds every guest of a run exclusively (`flock` on the guest's root directory: nothing is
/// written into the guest) until the returned handles are dropped, waiting for another run that
/// holds one of them. Two runs on the same guest would step on each other: recovery takes the
/// directories the other, live run journaled for those of a killed run, and removes its
/// temporary links between their link and their rename. Guests are taken in path order, so runs
/// with overlapping guest lists cannot deadlock.
fn hold_guests(roots: &[Root]) -> Result<Vec<nix::fcntl::Flock<std::fs::File>>> {
    use nix::errno::Errno;
    use nix::fcntl::{Flock, FlockArg, OFlag};
    use std::os::fd::AsFd;

    let mut order: Vec<&Root> = roots.iter().collect();
    order.sort_by(|a, b| a.path.cmp(&b.path));
    let mut held = Vec::with_capacity(order.len());
    for root in order {
        let dir = nix::fcntl::openat(
            root.fd.as_fd(),
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .at(&root.path)?;
        let mut file = std::fs::File::from(dir);
        let mut arg = FlockArg::LockExclusiveNonblock;
        loop {
            match Flock::lock(file, arg) {
                Ok(lock) => {
                    held.push(lock);
                    break;
                }
                Err((f, Errno::EWOULDBLOCK)) => {
                    tracing::warn!(guest = %root.path.display(), "another vhashify run is working on this guest; waiting for it to finish");
                    file = f;
                    arg = FlockArg::LockExclusive;
                }
                Err((f, Errno::EINTR)) => file = f,
                // A filesystem without flock on directories: go on unprotected, as before.
                Err((_, e @ (Errno::ENOLCK | Errno::EOPNOTSUPP))) => {
                    tracing::warn!(guest = %root.path.display(), "cannot lock the guest against concurrent runs: {e}");
                    break;
                }
                Err((_, e)) => return Err(e).at(&root.path),
            }
        }
    }
    Ok(held)
}

/// Compacts the index when this run wrote at least as many object rows as it held before (the
/// first run into a new store, a store that at least doubled). Object keys are random, so
/// inserting their rows splits B-tree pages and leaves them partly empty, and the directory journal's churn leaves
/// free pages; rewriting the file then costs about what the run already spent writing rows, and
/// smaller runs into a large index never pay for it.
fn compact_after(store: &Store, rows_before: u64, report: &Report) {
    let added = report.objects_linked + report.objects_copied;
    if added == 0 || added < rows_before {
        return;
    }
    let index = store.index();
    if let Err(e) = index.compact() {
        warn!("{}: not compacted: {e}", index.path().display());
    }
}

/// Unifies the guests `roots` (from [`open_guests`]) into `store`.
pub fn unify(
    store: &Store,
    roots: &[Root],
    opts: &Options,
    progress: &dyn Progress,
) -> Result<Report> {
    let t0 = Instant::now();
    let mut report = Report {
        dry_run: opts.dry_run,
        guests: roots.len(),
        ..Report::default()
    };
    let mut lap = Instant::now();
    let mut phase_done = |report: &mut Report, name: &str| {
        report
            .phase_ms
            .insert(name.to_string(), lap.elapsed().as_millis() as u64);
        lap = Instant::now();
    };
    // Held until the run returns; a dry run changes nothing and needs no hold.
    let _guests_held = if opts.dry_run {
        Vec::new()
    } else {
        hold_guests(roots)?
    };
    if !opts.dry_run {
        crate::sys::ignore_lease_signals();
        recover::recover(store, roots, &mut report)?;
        phase_done(&mut report, "recover");
    }
    let job = Job {
        store,
        roots,
        opts,
        threads: opts.threads(),
        io_threads: opts.io_threads(),
        progress,
    };
    let mut scan = scan::scan(job, &mut report)?;
    phase_done(&mut report, "scan");
    hash::hash(job, &mut scan, &mut report)?;
    phase_done(&mut report, "hash");
    apply::apply(job, &mut scan, &mut report)?;
    phase_done(&mut report, "apply");
    if !opts.dry_run {
        compact_after(store, scan.catalog.rows.len() as u64, &report);
        phase_done(&mut report, "compact");
    }
    report.elapsed_ms = t0.elapsed().as_millis() as u64;
    Ok(report)
}
