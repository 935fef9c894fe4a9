//! Phase 3: make the objects, then replace paths by links to them.
//!
//! Objects come first: for every key without one, a member file is linked into the store (its
//! inode becomes the object; the mark is set before anything links to it), or copied when it
//! lives on another filesystem. Then every other path of the key is replaced, directory by
//! directory: the directory's times are journaled in the index (committed) before its first entry
//! is touched, each path is replaced by `link(object, dir/.cowfs.tmp.*)` + `rename` (the path
//! never disappears), and the times are restored and the journal entry dropped afterwards.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use nix::fcntl::OFlag;
use tracing::{debug, warn};

use super::scan::{FileRec, InodeState, Scan};
use super::swap::{self, Swapped};
use super::{Job, Progress, Report, SkipReason};
use crate::error::{Error, Result};
use crate::index::{DirTimes, FileHashRow, Index, ObjectRow};
use crate::key::{ContentHash, FileMeta, Key, KeyPolicy, Timestamp, ctime_of, mtime_of};
use crate::layout::ObjectId;
use crate::store::{InsertSource, Inserted, LinkFailure, Store, unique_tmp_name};
use crate::sys::{self, Stat};
use crate::walk::Root;

/// Prefix of the temporary names vhashify (and the mount) create inside guest directories.
pub const TMP_PREFIX: &str = ".cowfs.tmp.";

/// Directories journaled per transaction.
const DIR_BATCH: usize = 64;
/// Threads closing the handles of freed inodes, and how many handles may wait for them. They
/// mostly wait for the device (one discard per freed inode on a `discard` mount); measured on the
/// corpus, 32 of them keep up with two replacing threads (8: 1.6× slower, 1: 10× slower).
const REAPERS: usize = 32;
const REAPER_QUEUE: usize = 1024;

/// The object every path of a key is linked to, and what we know to switch when it fills up
/// or vanishes.
struct KeyState {
    id: ObjectId,
    ino: u64,
    content: ContentHash,
    /// Sequence numbers known to exist for this key (from the index and from this run).
    seqs: Vec<u32>,
    /// Sequence numbers found full (EMLINK).
    full: Vec<u32>,
}

/// What happened to one path.
enum PathOutcome {
    Linked,
    /// The path's inode became the object (when the previous one filled up or vanished).
    BecameObject,
    AlreadyObject,
    Skip(SkipReason, String),
}

struct Ctx<'a> {
    /// Handles of replaced inodes whose last link the rename removes: closing them frees the
    /// inode, which on a filesystem mounted with `discard` waits for the device. Reaper threads
    /// close them so that those waits overlap instead of stalling the replacement loop.
    reaper: crossbeam::channel::Sender<OwnedFd>,
    store: &'a Store,
    roots: &'a [Root],
    scan: &'a Scan,
    policy: KeyPolicy,
    keys: HashMap<Key, Mutex<KeyState>>,
    new_rows: Mutex<Vec<ObjectRow>>,
}

/// One directory's share of the work: which of its entries to replace, under which key.
struct DirWork {
    dir: u32,
    items: Vec<(u32, Key)>,
}

fn skip_from_error(e: &Error) -> (SkipReason, String) {
    let reason = match e {
        Error::Changed(_) => SkipReason::Changed,
        Error::Busy(_) => SkipReason::Busy,
        Error::Io { source, .. } if source.raw_os_error() == Some(libc::ENOENT) => {
            SkipReason::Vanished
        }
        Error::Io { source, .. }
            if matches!(source.raw_os_error(), Some(libc::EACCES) | Some(libc::EIO)) =>
        {
            SkipReason::Unreadable
        }
        _ => SkipReason::Error,
    };
    (reason, e.to_string())
}

/// Makes the open file `fd` object `seq` of `key`, after checking that it is still the file that
/// was hashed (inode, size, mtime, and ctime when `strict`) and that its metadata still gives
/// `key`.
#[allow(clippy::too_many_arguments)]
fn promote(
    store: &Store,
    fd: BorrowedFd<'_>,
    path: &Path,
    expected: &Stat,
    strict: bool,
    key: &Key,
    content: ContentHash,
    policy: KeyPolicy,
    seq: u32,
) -> Result<Inserted> {
    let (meta, st) = FileMeta::from_fd(fd).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let same = st.st_ino == expected.st_ino
        && st.st_dev == expected.st_dev
        && st.st_size == expected.st_size
        && mtime_of(&st) == mtime_of(expected)
        && (!strict || ctime_of(&st) == ctime_of(expected));
    if !same || meta.key(policy, &content) != *key {
        return Err(Error::Changed(path.to_path_buf()));
    }
    let src = InsertSource {
        fd,
        path,
        stat: &st,
        meta: &meta,
        content,
        policy,
    };
    if st.st_dev == store.dev() {
        store.insert_by_link(&src, seq)
    } else {
        store.insert_by_copy(&src, seq)
    }
}

/// The row of an existing object (when the index did not know it).
fn describe(store: &Store, id: ObjectId, content: ContentHash) -> Option<ObjectRow> {
    let fd = store.open_object(&id).ok()?;
    store
        .describe_object(id, fd.as_fd(), content)
        .ok()
        .map(|(row, _)| row)
}

fn open_file(roots: &[Root], scan: &Scan, f: &FileRec) -> std::io::Result<OwnedFd> {
    sys::open_beneath(
        roots[f.root as usize].fd.as_fd(),
        &scan.rel_path(f),
        OFlag::O_RDONLY | OFlag::O_NOATIME | OFlag::O_NOCTTY,
    )
}

struct Group {
    content: ContentHash,
    /// Hashed member inodes (not yet objects).
    members: Vec<u32>,
    /// A member inode that already is an object of this key.
    object: Option<(ObjectId, u64)>,
}

/// Runs phase 3.
pub fn apply(job: Job<'_>, scan: &mut Scan, report: &mut Report) -> Result<()> {
    let Job {
        store,
        roots,
        opts,
        threads,
        progress,
        ..
    } = job;
    if !opts.dry_run {
        let index = store.index();
        for id in &scan.stale_rows {
            index.remove_object(id)?;
        }
    }
    let store_dev = opts.store_dev.unwrap_or(store.dev());
    let mut groups: HashMap<Key, Group> = HashMap::new();
    for (i, inode) in scan.inodes.iter().enumerate() {
        match &inode.state {
            InodeState::Hashed { key, content, .. } => {
                let g = groups.entry(*key).or_insert_with(|| Group {
                    content: *content,
                    members: Vec::new(),
                    object: None,
                });
                g.members.push(i as u32);
            }
            InodeState::Object(id) => {
                let content = scan
                    .catalog
                    .by_inode
                    .get(&(inode.st.st_dev, inode.st.st_ino))
                    .map(|&ri| scan.catalog.rows[ri].content_hash)
                    .unwrap_or(ContentHash([0; 32]));
                let g = groups.entry(id.key).or_insert_with(|| Group {
                    content,
                    members: Vec::new(),
                    object: None,
                });
                g.content = content;
                g.object.get_or_insert((*id, inode.st.st_ino));
            }
            _ => {}
        }
    }

    // Objects first.
    let mut targets: HashMap<Key, (ObjectId, u64)> = HashMap::new();
    let mut need_new: Vec<Key> = Vec::new();
    for (key, g) in &groups {
        if let Some(t) = g.object {
            targets.insert(*key, t);
        } else if let Some(row) = scan.catalog.objects_of(key).next() {
            targets.insert(*key, (row.id, row.ino));
        } else if !g.members.is_empty() {
            need_new.push(*key);
        }
    }
    need_new.sort();
    let t_objects = std::time::Instant::now();
    progress.phase("storing objects", need_new.len() as u64);
    let skips: Mutex<Vec<(u32, SkipReason, String)>> = Mutex::new(Vec::new());
    if opts.dry_run {
        for key in &need_new {
            let g = &groups[key];
            let same_dev = g
                .members
                .iter()
                .any(|&i| scan.inodes[i as usize].st.st_dev == store_dev);
            if same_dev {
                report.objects_linked += 1;
                let leader = leader_order(scan, store_dev, &g.members)[0];
                targets.insert(
                    *key,
                    (
                        ObjectId::first(*key),
                        scan.inodes[leader as usize].st.st_ino,
                    ),
                );
            } else {
                report.objects_copied += 1;
                targets.insert(*key, (ObjectId::first(*key), 0));
            }
        }
    } else {
        let cursor = AtomicUsize::new(0);
        let made: Mutex<Vec<Made>> = Mutex::new(Vec::new());
        let scan_ref = &*scan;
        std::thread::scope(|s| {
            for _ in 0..threads.max(1) {
                s.spawn(|| {
                    loop {
                        let n = cursor.fetch_add(1, Ordering::Relaxed);
                        let Some(key) = need_new.get(n) else { break };
                        let g = &groups[key];
                        let r = make_object(store, roots, scan_ref, key, g, opts.policy, &skips);
                        progress.advance(1);
                        if let Some(r) = r {
                            made.lock().unwrap_or_else(|p| p.into_inner()).push(r);
                        }
                    }
                });
            }
        });
        let mut rows = Vec::new();
        for m in made.into_inner().unwrap_or_else(|p| p.into_inner()) {
            targets.insert(m.key, (m.id, m.ino));
            match m.how {
                How::Linked => report.objects_linked += 1,
                How::Copied => report.objects_copied += 1,
                How::Existing => {}
            }
            rows.extend(m.row);
        }
        store.record(&rows)?;
    }
    for (i, reason, detail) in skips.into_inner().unwrap_or_else(|p| p.into_inner()) {
        let inode = &mut scan.inodes[i as usize];
        inode.state = InodeState::Skipped;
        let f = &scan.files[inode.files[0] as usize];
        report.skip(
            roots[f.root as usize].display(&scan.rel_path(f)),
            reason,
            detail,
        );
    }

    report.phase_ms.insert(
        "apply-objects".into(),
        t_objects.elapsed().as_millis() as u64,
    );
    let t_links = std::time::Instant::now();

    // Then the paths.
    let mut by_dir: HashMap<u32, Vec<(u32, Key)>> = HashMap::new();
    let mut foreign = 0u64;
    for (key, g) in &groups {
        let Some(&(_, target_ino)) = targets.get(key) else {
            continue;
        };
        for &i in &g.members {
            let inode = &scan.inodes[i as usize];
            if !matches!(inode.state, InodeState::Hashed { .. }) {
                continue;
            }
            if inode.st.st_dev != store_dev {
                foreign += inode.files.len() as u64;
                continue;
            }
            if inode.st.st_ino == target_ino {
                continue;
            }
            for &f in &inode.files {
                by_dir
                    .entry(scan.files[f as usize].dir)
                    .or_default()
                    .push((f, *key));
            }
        }
    }
    report.foreign_left = foreign;
    let mut work: Vec<DirWork> = by_dir
        .into_iter()
        .map(|(dir, items)| DirWork { dir, items })
        .collect();
    work.sort_by_key(|w| w.dir);
    let total: u64 = work.iter().map(|w| w.items.len() as u64).sum();
    progress.phase("linking", total);

    let mut outcomes: Vec<(u32, PathOutcome)> = Vec::with_capacity(total as usize);
    if opts.dry_run {
        for w in &work {
            outcomes.extend(w.items.iter().map(|&(f, _)| (f, PathOutcome::Linked)));
        }
    } else {
        let keys = targets
            .iter()
            .map(|(key, &(id, ino))| {
                let mut seqs: Vec<u32> = scan.catalog.objects_of(key).map(|r| r.id.seq).collect();
                seqs.push(id.seq);
                seqs.sort_unstable();
                seqs.dedup();
                let state = KeyState {
                    id,
                    ino,
                    content: groups.get(key).map_or(ContentHash([0; 32]), |g| g.content),
                    seqs,
                    full: Vec::new(),
                };
                (*key, Mutex::new(state))
            })
            .collect();
        let (reaper, doomed) = crossbeam::channel::bounded::<OwnedFd>(REAPER_QUEUE);
        let ctx = Ctx {
            reaper,
            store,
            roots,
            scan,
            policy: opts.policy,
            keys,
            new_rows: Mutex::new(Vec::new()),
        };
        let batches: Vec<&[DirWork]> = work.chunks(DIR_BATCH).collect();
        let cursor = AtomicUsize::new(0);
        let results: Mutex<Vec<(u32, PathOutcome)>> = Mutex::new(Vec::new());
        let first_error: Mutex<Option<Error>> = Mutex::new(None);
        let mut new_rows = Vec::new();
        std::thread::scope(|outer| {
            for _ in 0..REAPERS {
                let doomed = doomed.clone();
                outer.spawn(move || doomed.iter().for_each(drop));
            }
            drop(doomed);
            std::thread::scope(|s| {
                for _ in 0..threads.max(1) {
                    s.spawn(|| {
                        let mut index = match store.open_index() {
                            Ok(i) => i,
                            Err(e) => {
                                first_error
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .get_or_insert(e);
                                return;
                            }
                        };
                        let mut mine = Vec::new();
                        loop {
                            let n = cursor.fetch_add(1, Ordering::Relaxed);
                            let Some(batch) = batches.get(n) else { break };
                            if let Err(e) =
                                process_batch(&ctx, batch, &mut index, progress, &mut mine)
                            {
                                first_error
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .get_or_insert(e);
                                break;
                            }
                        }
                        results
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .append(&mut mine);
                    });
                }
            });
            // Dropping the context closes the reapers' channel: they finish and the scope ends.
            new_rows = ctx.new_rows.into_inner().unwrap_or_else(|p| p.into_inner());
        });
        if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
        outcomes = results.into_inner().unwrap_or_else(|p| p.into_inner());
        report.objects_linked += new_rows.len() as u64;
        store.record(&new_rows)?;
    }

    report
        .phase_ms
        .insert("apply-links".into(), t_links.elapsed().as_millis() as u64);

    // Tally, and what is freed: an inode whose every link was replaced.
    let mut replaced: HashMap<u32, u64> = HashMap::new();
    for (f, out) in outcomes {
        let file = &scan.files[f as usize];
        match out {
            PathOutcome::Linked => {
                report.links_made += 1;
                *replaced.entry(file.inode).or_default() += 1;
            }
            PathOutcome::BecameObject | PathOutcome::AlreadyObject => {}
            PathOutcome::Skip(reason, detail) => {
                report.skip(scan.display(roots, file), reason, detail);
            }
        }
    }
    for (&i, &n) in &replaced {
        let st = &scan.inodes[i as usize].st;
        if n >= st.st_nlink {
            report.bytes_reclaimed += st.st_blocks as u64 * 512;
        }
    }

    // Remember the hashes of files that did not become objects or links, for the next run.
    let cache_rows: Vec<FileHashRow> = scan
        .inodes
        .iter()
        .enumerate()
        .filter_map(|(i, inode)| match &inode.state {
            InodeState::Hashed {
                content,
                st,
                from_cache: false,
                key,
            } if opts.dry_run
                || (targets.get(key).is_none_or(|t| t.1 != st.st_ino)
                    && replaced.get(&(i as u32)).copied().unwrap_or(0) < st.st_nlink) =>
            {
                Some(FileHashRow {
                    dev: st.st_dev,
                    ino: st.st_ino,
                    size: st.st_size as u64,
                    mtime: mtime_of(st),
                    ctime: ctime_of(st),
                    content_hash: *content,
                })
            }
            _ => None,
        })
        .collect();
    if !opts.dry_run {
        store.index().put_file_hashes(&cache_rows)?;
    }
    Ok(())
}

/// Member inodes in the order they are tried as the object: on the store's filesystem first,
/// then the ones with most paths (fewest replacements), then walk order.
fn leader_order(scan: &Scan, store_dev: u64, members: &[u32]) -> Vec<u32> {
    let mut order = members.to_vec();
    order.sort_by_key(|&i| {
        let inode = &scan.inodes[i as usize];
        (
            inode.st.st_dev != store_dev,
            std::cmp::Reverse(inode.files.len()),
            i,
        )
    });
    order
}

/// How the object of a key came to be.
enum How {
    Linked,
    Copied,
    Existing,
}

/// The object a key's paths will link to.
struct Made {
    key: Key,
    id: ObjectId,
    ino: u64,
    /// The row to record (absent when the existing object could not be described).
    row: Option<ObjectRow>,
    how: How,
}

/// Creates the object of `key` from one of its members (trying the next when one is busy or
/// changed). Returns the target and the row to record.
#[allow(clippy::too_many_arguments)]
fn make_object(
    store: &Store,
    roots: &[Root],
    scan: &Scan,
    key: &Key,
    g: &Group,
    policy: KeyPolicy,
    skips: &Mutex<Vec<(u32, SkipReason, String)>>,
) -> Option<Made> {
    for i in leader_order(scan, store.dev(), &g.members) {
        let inode = &scan.inodes[i as usize];
        let InodeState::Hashed { st, .. } = &inode.state else {
            continue;
        };
        let f = &scan.files[inode.files[0] as usize];
        let path = scan.display(roots, f);
        let push_skip = |reason, detail| {
            skips
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((i, reason, detail));
        };
        let fd = match open_file(roots, scan, f) {
            Ok(fd) => fd,
            Err(e) => {
                let (reason, detail) = skip_from_error(&Error::Io {
                    path: path.clone(),
                    source: e,
                });
                push_skip(reason, detail);
                continue;
            }
        };
        let how = if st.st_dev != store.dev() {
            How::Copied
        } else {
            How::Linked
        };
        match promote(
            store,
            fd.as_fd(),
            &path,
            st,
            true,
            key,
            g.content,
            policy,
            0,
        ) {
            Ok(Inserted::New(row)) => {
                return Some(Made {
                    key: *key,
                    id: row.id,
                    ino: row.ino,
                    row: Some(row),
                    how,
                });
            }
            Ok(Inserted::Exists(id)) => {
                // Another process (or an earlier, interrupted run) made it first.
                let row = describe(store, id, g.content);
                return Some(Made {
                    key: *key,
                    id,
                    ino: row.as_ref().map_or(0, |r| r.ino),
                    row,
                    how: How::Existing,
                });
            }
            Err(Error::TooManyLinks(_)) => {
                // This inode cannot take one more link; another member may.
                continue;
            }
            Err(e) => {
                let (reason, detail) = skip_from_error(&e);
                push_skip(reason, detail);
            }
        }
    }
    None
}

fn process_batch(
    ctx: &Ctx<'_>,
    batch: &[DirWork],
    index: &mut Index,
    progress: &dyn Progress,
    out: &mut Vec<(u32, PathOutcome)>,
) -> Result<()> {
    let mut opened: Vec<(&DirWork, OwnedFd, Stat)> = Vec::with_capacity(batch.len());
    let mut journal = Vec::with_capacity(batch.len());
    for w in batch {
        let dir = &ctx.scan.dirs[w.dir as usize];
        let root = &ctx.roots[dir.root];
        let opened_dir = sys::open_beneath(
            root.fd.as_fd(),
            &dir.rel,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOATIME,
        )
        .and_then(|fd| sys::fstat(fd.as_fd()).map(|st| (fd, st)));
        match opened_dir {
            Ok((fd, st)) => {
                journal.push(DirTimes {
                    root: root.path.clone(),
                    rel: dir.rel.clone(),
                    atime: Timestamp {
                        sec: st.st_atime,
                        nsec: st.st_atime_nsec,
                    },
                    mtime: mtime_of(&st),
                });
                opened.push((w, fd, st));
            }
            Err(e) => {
                let reason = if e.raw_os_error() == Some(libc::ENOENT) {
                    SkipReason::Vanished
                } else {
                    SkipReason::Changed
                };
                for &(f, _) in &w.items {
                    out.push((f, PathOutcome::Skip(reason, format!("directory: {e}"))));
                }
            }
        }
    }
    // Durable (in the WAL) before the first entry of these directories is touched.
    index.journal_dirs(&journal)?;
    for (w, fd, _) in &opened {
        for &(f, key) in &w.items {
            let outcome = replace(ctx, fd.as_fd(), f, &key);
            progress.advance(1);
            out.push((f, outcome));
        }
    }
    let mut done = Vec::with_capacity(opened.len());
    for ((w, fd, st), times) in opened.iter().zip(&journal) {
        let atime = (st.st_atime, st.st_atime_nsec);
        let mtime = (st.st_mtime, st.st_mtime_nsec);
        if let Err(e) = sys::set_times(fd.as_fd(), atime, mtime) {
            let dir = &ctx.scan.dirs[w.dir as usize];
            warn!(dir = %ctx.roots[dir.root].display(&dir.rel).display(), "cannot restore directory times: {e}");
            continue;
        }
        done.push((times.root.clone(), times.rel.clone()));
    }
    index.clear_journal(&done)
}

fn replace(ctx: &Ctx<'_>, dirfd: BorrowedFd<'_>, f: u32, key: &Key) -> PathOutcome {
    let file = &ctx.scan.files[f as usize];
    let inode = &ctx.scan.inodes[file.inode as usize];
    let name = file.name.as_os_str();
    let now = match sys::lstat_at(dirfd, name) {
        Ok(st) => st,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            return PathOutcome::Skip(SkipReason::Vanished, "disappeared".into());
        }
        Err(e) => return PathOutcome::Skip(SkipReason::Error, e.to_string()),
    };
    let w = &inode.st;
    if now.st_ino != w.st_ino
        || now.st_dev != w.st_dev
        || now.st_size != w.st_size
        || now.st_mode != w.st_mode
        || now.st_uid != w.st_uid
        || now.st_gid != w.st_gid
        || mtime_of(&now) != mtime_of(w)
    {
        return PathOutcome::Skip(SkipReason::Changed, "changed during the run".into());
    }
    let Some(state) = ctx.keys.get(key) else {
        return PathOutcome::Skip(SkipReason::Error, "no object for its key".into());
    };
    // Held until the path is settled: an inode number identifies the checked file only while
    // it lives (see `swap.rs`); its last link goes with the swap, and a reaper frees it.
    let held = match swap::hold(dirfd, name) {
        Ok((fd, ino)) if ino == (w.st_dev, w.st_ino) => fd,
        Ok(_) => return PathOutcome::Skip(SkipReason::Changed, "changed during the run".into()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            return PathOutcome::Skip(SkipReason::Vanished, "disappeared".into());
        }
        Err(e) => return PathOutcome::Skip(SkipReason::Error, e.to_string()),
    };
    let mut held = Some(held);
    for _attempt in 0..16 {
        let (target, target_ino) = {
            let s = state.lock().unwrap_or_else(|p| p.into_inner());
            (s.id, s.ino)
        };
        if target_ino == now.st_ino {
            return PathOutcome::AlreadyObject;
        }
        let tmp = unique_tmp_name(TMP_PREFIX);
        match ctx
            .store
            .link_object(&target, target_ino, dirfd, OsStr::new(&tmp))
        {
            Ok(()) => {
                let tmp = OsStr::new(&tmp);
                let swapped = swap::swap_in(
                    dirfd,
                    tmp,
                    name,
                    (w.st_dev, w.st_ino),
                    (now.st_dev, target_ino),
                    |_| {},
                );
                return match swapped {
                    Ok(how) => {
                        // What came out: the checked inode, or a stale link or file.
                        if how != Swapped::Renamed
                            && let Err(e) = sys::unlink_at(dirfd, tmp)
                        {
                            warn!(path = %ctx.scan.display(ctx.roots, file).display(), "cannot remove the temporary name: {e}");
                        }
                        match how {
                            Swapped::Linked | Swapped::Renamed => {
                                // The checked inode's last link is gone: a reaper frees it.
                                if now.st_nlink == 1
                                    && let Some(fd) = held.take()
                                {
                                    let _ = ctx.reaper.send(fd);
                                }
                                debug!(path = %ctx.scan.display(ctx.roots, file).display(), object = %target, "linked");
                                PathOutcome::Linked
                            }
                            Swapped::Replaced => PathOutcome::Skip(
                                SkipReason::Changed,
                                "replaced during the run (the new file is kept)".into(),
                            ),
                        }
                    }
                    Err(e) => {
                        // Only our own link may go: anything else is a guest's file.
                        if sys::lstat_at(dirfd, tmp).is_ok_and(|st| st.st_ino == target_ino) {
                            let _ = sys::unlink_at(dirfd, tmp);
                        }
                        PathOutcome::Skip(SkipReason::Error, format!("exchange: {e}"))
                    }
                };
            }
            Err(LinkFailure::NameTaken) => continue,
            Err(LinkFailure::Io(e)) => return PathOutcome::Skip(SkipReason::Error, e.to_string()),
            Err(failure) => {
                if let Some(done) = switch_target(ctx, state, target, failure, dirfd, file) {
                    return done;
                }
            }
        }
    }
    PathOutcome::Skip(
        SkipReason::Error,
        "gave up after repeated races with other processes".into(),
    )
}

/// The object we tried to link vanished (a collector took it) or is full (EMLINK): switch the
/// key to another existing object, or make this path's own inode the new object. Returns the
/// path's outcome when it is decided, `None` to try linking again.
fn switch_target(
    ctx: &Ctx<'_>,
    state: &Mutex<KeyState>,
    tried: ObjectId,
    failure: LinkFailure,
    dirfd: BorrowedFd<'_>,
    file: &FileRec,
) -> Option<PathOutcome> {
    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
    if s.id != tried {
        return None; // another thread already switched
    }
    let mut seq = tried.seq;
    if matches!(failure, LinkFailure::TooManyLinks) {
        s.full.push(tried.seq);
        // Another existing object of this key with room?
        let other = s.seqs.iter().copied().find(|q| !s.full.contains(q));
        if let Some(q) = other {
            let id = ObjectId {
                key: tried.key,
                seq: q,
            };
            if let Ok(Some(st)) = ctx.store.stat_object(&id) {
                s.id = id;
                s.ino = st.st_ino;
                return None;
            }
        }
        seq = s.seqs.iter().chain(&s.full).copied().max().unwrap_or(0) + 1;
    }
    let path = ctx.scan.display(ctx.roots, file);
    let inode = &ctx.scan.inodes[file.inode as usize];
    let fd = match sys::open_read_at(dirfd, &file.name) {
        Ok(fd) => fd,
        Err(e) => return Some(PathOutcome::Skip(SkipReason::Vanished, e.to_string())),
    };
    for _ in 0..64 {
        match promote(
            ctx.store,
            fd.as_fd(),
            &path,
            &inode.st,
            false,
            &tried.key,
            s.content,
            ctx.policy,
            seq,
        ) {
            Ok(Inserted::New(row)) => {
                debug!(path = %path.display(), object = %row.id, "path became a new object ({failure:?})");
                s.id = row.id;
                s.ino = row.ino;
                s.seqs.push(row.id.seq);
                ctx.new_rows
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(row);
                return Some(PathOutcome::BecameObject);
            }
            Ok(Inserted::Exists(id)) => {
                if s.full.contains(&id.seq) {
                    seq += 1;
                    continue;
                }
                match ctx.store.stat_object(&id) {
                    Ok(Some(st)) => {
                        s.id = id;
                        s.ino = st.st_ino;
                        if !s.seqs.contains(&id.seq) {
                            s.seqs.push(id.seq);
                        }
                        return None;
                    }
                    // Gone again already: try to take its place.
                    _ => continue,
                }
            }
            Err(e) => {
                let (reason, detail) = skip_from_error(&e);
                return Some(PathOutcome::Skip(reason, detail));
            }
        }
    }
    Some(PathOutcome::Skip(
        SkipReason::Error,
        "could not find or make an object with room".into(),
    ))
}

/// Whether `name` is one of vhashify's temporary names.
pub fn is_tmp_name(name: &OsStr) -> bool {
    use std::os::unix::ffi::OsStrExt;
    name.as_bytes().starts_with(TMP_PREFIX.as_bytes())
}
