//! Phase 1: walk the guests, build the inode table (a guest-internal hard-link group is one
//! inode with several paths), and tell apart what is already unified, what must be hashed and
//! — with `only_duplicates` — what cannot match anything.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::dir::Type;

use super::{Job, Options, Progress, Report, SkipReason};
use crate::error::Result;
use crate::index::{FileHashRow, ObjectRow};
use crate::key::{ContentHash, Key, mtime_of};
use crate::layout::ObjectId;
use crate::store::{Store, matches_row};
use crate::sys::Stat;
use crate::unify::exclude::{ExcludeList, Rule};
use crate::walk::{self, DirRec, Entry, Root, Visitor};

/// One eligible path.
#[derive(Debug)]
pub struct FileRec {
    pub root: u16,
    pub dir: u32,
    pub name: OsString,
    /// Index into [`Scan::inodes`].
    pub inode: u32,
}

/// Where an inode stands.
#[derive(Clone, Debug)]
pub enum InodeState {
    /// Must be hashed.
    Pending,
    /// Nothing can match it; left alone (`only_duplicates`).
    Unique,
    /// It already is this object.
    Object(ObjectId),
    /// Hashed: its key, its content hash and its `stat` right after hashing.
    Hashed {
        key: Key,
        content: ContentHash,
        st: Box<Stat>,
        from_cache: bool,
    },
    /// Left alone; the reason is in the report.
    Skipped,
}

/// A distinct inode among the eligible paths.
#[derive(Debug)]
pub struct InodeRec {
    /// `lstat` at walk time.
    pub st: Stat,
    /// Its eligible paths (indices into [`Scan::files`]).
    pub files: Vec<u32>,
    pub state: InodeState,
}

/// The store's objects as the index knows them, for lookups without SQL in the hot path.
#[derive(Default)]
pub struct Catalog {
    pub rows: Vec<ObjectRow>,
    pub by_key: HashMap<Key, Vec<usize>>,
    pub by_inode: HashMap<(u64, u64), usize>,
    pub sizes: HashSet<u64>,
}

impl Catalog {
    fn load(store: &Store) -> Result<Catalog> {
        let rows = store.index().all_objects()?;
        let mut c = Catalog::default();
        for (i, r) in rows.iter().enumerate() {
            c.by_key.entry(r.id.key).or_default().push(i);
            c.by_inode.insert((r.dev, r.ino), i);
            c.sizes.insert(r.size);
        }
        c.rows = rows;
        Ok(c)
    }

    /// The known objects of a key.
    pub fn objects_of(&self, key: &Key) -> impl Iterator<Item = &ObjectRow> {
        self.by_key
            .get(key)
            .into_iter()
            .flatten()
            .map(|&i| &self.rows[i])
    }
}

/// Everything the later phases work on.
pub struct Scan {
    pub dirs: Vec<DirRec>,
    pub files: Vec<FileRec>,
    pub inodes: Vec<InodeRec>,
    pub catalog: Catalog,
    /// Remembered content hashes by (dev, ino).
    pub cache: HashMap<(u64, u64), FileHashRow>,
    /// Index rows of objects whose file turned out to be gone.
    pub stale_rows: Vec<ObjectId>,
}

impl Scan {
    /// A path relative to its guest root.
    pub fn rel_path(&self, f: &FileRec) -> PathBuf {
        self.dirs[f.dir as usize].rel.join(&f.name)
    }

    /// A path for messages.
    pub fn display(&self, roots: &[Root], f: &FileRec) -> PathBuf {
        roots[f.root as usize].display(&self.rel_path(f))
    }
}

struct Collect<'a> {
    roots: &'a [Root],
    excludes: &'a ExcludeList,
    min_size: u64,
    excluded: AtomicU64,
    too_small: AtomicU64,
    not_regular: AtomicU64,
    seen: AtomicU64,
    errors: Mutex<Vec<(PathBuf, std::io::Error)>>,
    progress: &'a dyn Progress,
}

type Item = (u16, u32, OsString, Stat);

impl Visitor for Collect<'_> {
    type Item = Item;

    fn descend(&self, _root: usize, rel: &Path) -> bool {
        match self.excludes.rule_for(rel) {
            Rule::Include => true,
            Rule::Exclude => {
                self.excluded.fetch_add(1, Ordering::Relaxed);
                false
            }
            Rule::Skip => false,
        }
    }

    fn directory(&self, _: usize, _: u32, _: &Path, _: &Stat) -> Option<Item> {
        None
    }

    fn entry(&self, e: &Entry<'_>) -> Option<Item> {
        if !matches!(e.kind, None | Some(Type::File)) {
            self.not_regular.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if !self.excludes.is_empty() {
            match self.excludes.rule_for(&e.rel()) {
                Rule::Include => {}
                Rule::Exclude => {
                    self.excluded.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                Rule::Skip => return None,
            }
        }
        let st = match e.lstat() {
            Ok(st) => st,
            // Gone between readdir and stat: nothing to unify.
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => return None,
            Err(err) => {
                self.error(self.roots[e.root].display(&e.rel()), err);
                return None;
            }
        };
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            self.not_regular.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if (st.st_size as u64) < self.min_size {
            self.too_small.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if self.seen.fetch_add(1, Ordering::Relaxed) % 1024 == 1023 {
            self.progress.advance(1024);
        }
        Some((e.root as u16, e.dir, e.name.to_os_string(), st))
    }

    fn error(&self, path: PathBuf, err: std::io::Error) {
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((path, err));
    }
}

/// Walks the guests and classifies their inodes.
pub fn scan(job: Job<'_>, report: &mut Report) -> Result<Scan> {
    let Job {
        store,
        roots,
        opts,
        io_threads,
        progress,
        ..
    } = job;
    progress.phase("scanning", 0);
    let collect = Collect {
        roots,
        excludes: &opts.excludes,
        // Empty files are never linked: there is nothing to share.
        min_size: opts.min_size.max(1),
        excluded: AtomicU64::new(0),
        too_small: AtomicU64::new(0),
        not_regular: AtomicU64::new(0),
        seen: AtomicU64::new(0),
        errors: Mutex::new(Vec::new()),
        progress,
    };
    let w = walk::walk(roots, &collect, io_threads);
    report.excluded = collect.excluded.load(Ordering::Relaxed);
    report.too_small = collect.too_small.load(Ordering::Relaxed);
    report.not_regular = collect.not_regular.load(Ordering::Relaxed);
    for (path, err) in collect
        .errors
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
    {
        report.skip(path, SkipReason::Unreadable, err.to_string());
    }

    let mut items = w.items;
    // A stable order (guest, directory, name) makes leader choice and reports reproducible.
    items.sort_by(|a, b| (a.0, a.1, &a.2).cmp(&(b.0, b.1, &b.2)));
    let mut inodes: Vec<InodeRec> = Vec::new();
    let mut by_ino: HashMap<(u64, u64), u32> = HashMap::with_capacity(items.len());
    let mut files = Vec::with_capacity(items.len());
    for (root, dir, name, st) in items {
        report.files += 1;
        report.bytes += st.st_size as u64;
        let idx = *by_ino.entry((st.st_dev, st.st_ino)).or_insert_with(|| {
            inodes.push(InodeRec {
                st,
                files: Vec::new(),
                state: InodeState::Pending,
            });
            (inodes.len() - 1) as u32
        });
        inodes[idx as usize].files.push(files.len() as u32);
        files.push(FileRec {
            root,
            dir,
            name,
            inode: idx,
        });
    }
    report.inodes = inodes.len() as u64;

    let mut catalog = Catalog::load(store)?;
    let devs: HashSet<u64> = roots.iter().map(|r| r.dev).collect();
    let cache = store
        .index()
        .file_hashes(&devs.into_iter().collect::<Vec<_>>())?
        .into_iter()
        .map(|r| ((r.dev, r.ino), r))
        .collect();
    let mut scan = Scan {
        dirs: w.dirs,
        files,
        inodes,
        catalog: Catalog::default(),
        cache,
        stale_rows: Vec::new(),
    };
    classify(store, roots, &mut scan, &mut catalog, opts, report);
    scan.catalog = catalog;
    Ok(scan)
}

fn classify(
    store: &Store,
    roots: &[Root],
    scan: &mut Scan,
    catalog: &mut Catalog,
    opts: &Options,
    report: &mut Report,
) {
    // Whether each known object file still exists, checked once per object.
    let mut present: HashMap<usize, bool> = HashMap::new();
    let mut stale = Vec::new();
    for i in 0..scan.inodes.len() {
        let st = scan.inodes[i].st;
        let Some(&ri) = catalog.by_inode.get(&(st.st_dev, st.st_ino)) else {
            continue;
        };
        let row = &catalog.rows[ri];
        let exists = *present.entry(ri).or_insert_with(|| {
            store
                .stat_object(&row.id)
                .ok()
                .flatten()
                .is_some_and(|o| o.st_ino == row.ino && o.st_dev == row.dev)
        });
        if !exists {
            // The index remembered an object that is gone: a plain file again.
            stale.push(ri);
            continue;
        }
        let inode = &mut scan.inodes[i];
        if matches_row(&st, row) {
            report.already_unified += inode.files.len() as u64;
            inode.state = InodeState::Object(row.id);
        } else {
            let first = &scan.files[inode.files[0] as usize];
            let path = roots[first.root as usize]
                .display(&scan.dirs[first.dir as usize].rel.join(&first.name));
            report.skip(
                path,
                SkipReason::ObjectModified,
                format!(
                    "object {} was modified outside cowfs; run `cowfs store verify`",
                    row.id
                ),
            );
            inode.state = InodeState::Skipped;
        }
    }
    for ri in stale {
        let row = &catalog.rows[ri];
        catalog.by_inode.remove(&(row.dev, row.ino));
        if let Some(v) = catalog.by_key.get_mut(&row.id.key) {
            v.retain(|&x| x != ri);
        }
        scan.stale_rows.push(row.id);
    }

    if opts.only_duplicates {
        // Group by what stat already tells (size, type+mode, owner, mtime unless ignored): a
        // file alone in its group, with no object of its size, cannot be unified with anything.
        let group_of = |st: &Stat| {
            let mtime = if opts.policy.ignore_mtime {
                Default::default()
            } else {
                mtime_of(st)
            };
            (st.st_size, st.st_mode, st.st_uid, st.st_gid, mtime)
        };
        let mut counts: HashMap<_, u32> = HashMap::new();
        for inode in &scan.inodes {
            if matches!(inode.state, InodeState::Pending) {
                *counts.entry(group_of(&inode.st)).or_default() += 1;
            }
        }
        for inode in &mut scan.inodes {
            if matches!(inode.state, InodeState::Pending)
                && counts.get(&group_of(&inode.st)) == Some(&1)
                && !catalog.sizes.contains(&(inode.st.st_size as u64))
            {
                inode.state = InodeState::Unique;
                report.unique_not_hashed += inode.files.len() as u64;
            }
        }
    }
}
