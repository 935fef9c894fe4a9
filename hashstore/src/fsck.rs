//! `fsck`: rebuild the index from the object tree (the truth), repair what can be repaired, and
//! report the rest. Runs with the store locked exclusively.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::Path;

use serde::Serialize;
use tracing::warn;

use crate::error::{Error, IoContext, Result};
use crate::gc;
use crate::index::{Index, ObjectRow};
use crate::key::{FileMeta, KeyPolicy, hash_fd};
use crate::layout::{
    FORMAT_FILE, FORMAT_LINE, INDEX_FILE, OBJECTS_DIR, ObjectId, QUARANTINE_DIR, TMP_DIR,
};
use crate::lock::{LockMode, StoreLock};
use crate::objects::{self, Listed};
use crate::store::{Store, write_atomic};
use crate::unify::recover;
use crate::{mark, sys};

/// How thorough to be.
#[derive(Clone, Copy, Debug, Default)]
pub struct FsckOptions {
    /// Rehash every object (otherwise content hashes the index still has for the same inode are
    /// trusted, and only objects it does not know are hashed).
    pub rehash: bool,
    pub threads: usize,
}

/// What fsck did and found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FsckReport {
    /// The format file was missing and has been written.
    pub format_restored: bool,
    /// Why the index was recreated from scratch, if it was (missing, corrupt).
    pub index_recreated: Option<String>,
    /// Where a corrupt index was moved.
    pub corrupt_index_moved_to: Option<String>,
    pub objects: u64,
    pub hashed: u64,
    /// Rows written to the rebuilt objects table.
    pub index_rows: u64,
    /// Rows the old index had for objects that no longer exist.
    pub stale_rows_dropped: u64,
    /// Objects whose mark was missing or wrong and has been set.
    pub marks_repaired: Vec<String>,
    /// Objects whose content or metadata no longer match their key, moved to `quarantine/`
    /// (guest paths linked to them keep their content; no new path will be linked to them).
    pub quarantined: Vec<String>,
    /// Leftovers in `tmp/` settled (collector leftovers put back or removed, partial copies
    /// removed).
    pub tmp_settled: u64,
    /// Directories of an interrupted vhashify whose times were restored, and the temporary
    /// links removed from them.
    pub journal_dirs_restored: u64,
    pub journal_temps_removed: u64,
    /// What fsck could not fix: names it does not understand, unreadable objects.
    pub unresolved: Vec<String>,
}

impl FsckReport {
    /// Whether something is left for a human.
    pub fn has_unresolved(&self) -> bool {
        !self.unresolved.is_empty()
    }
}

/// Opens the index for repair, recreating it if it is missing or damaged.
fn open_or_recreate(root: &Path, report: &mut FsckReport) -> Result<Index> {
    let path = root.join(INDEX_FILE);
    let damaged = match Index::open(&path) {
        Ok(idx) => match idx.integrity_check() {
            Ok(()) => return Ok(idx),
            Err(e) => e.to_string(),
        },
        Err(Error::IndexMissing(_)) => {
            report.index_recreated = Some("missing".into());
            return Index::create(&path);
        }
        Err(e @ Error::IndexTooNew { .. }) => return Err(e),
        Err(e) => e.to_string(),
    };
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let moved = root.join(format!("{INDEX_FILE}.corrupt-{stamp}"));
    std::fs::rename(&path, &moved).at(&path)?;
    for suffix in ["-wal", "-shm"] {
        let side = root.join(format!("{INDEX_FILE}{suffix}"));
        if side.exists() {
            let _ = std::fs::rename(
                &side,
                root.join(format!("{INDEX_FILE}.corrupt-{stamp}{suffix}")),
            );
        }
    }
    report.index_recreated = Some(damaged);
    report.corrupt_index_moved_to = Some(moved.display().to_string());
    Index::create(&path)
}

/// Checks and repairs the store at `root`.
pub fn fsck(root: &Path, opts: FsckOptions) -> Result<FsckReport> {
    let mut report = FsckReport::default();
    let format = root.join(FORMAT_FILE);
    if !format.exists() {
        if !root.join(OBJECTS_DIR).is_dir() {
            return Err(Error::NotAStore(root.to_path_buf()));
        }
        let lock = StoreLock::acquire(root, LockMode::Exclusive)?;
        write_atomic(root, FORMAT_FILE, format!("{FORMAT_LINE}\n").as_bytes())?;
        report.format_restored = true;
        drop(lock);
    }
    // The format must be one we understand before we touch anything.
    let text = std::fs::read_to_string(&format).at(&format)?;
    let first = text.lines().next().unwrap_or("").trim().to_string();
    if first != FORMAT_LINE {
        return Err(Error::FormatVersion {
            path: format,
            found: first,
            expected: FORMAT_LINE.into(),
        });
    }
    let lock = StoreLock::acquire(root, LockMode::Exclusive)?;
    let index = open_or_recreate(root, &mut report)?;
    let store = Store::assemble(root, lock, index)?;

    settle_tmp(&store, &mut report)?;
    let rec = recover::recover_all(&store)?;
    report.journal_dirs_restored = rec.dirs;
    report.journal_temps_removed = rec.temps_removed;

    let old: HashMap<ObjectId, ObjectRow> = store
        .index()
        .all_objects()?
        .into_iter()
        .map(|r| (r.id, r))
        .collect();
    let listed = objects::list(&store)?;
    let threads = if opts.threads == 0 {
        objects::default_threads()
    } else {
        opts.threads
    };
    let results = objects::par_map(&listed, threads, |item| {
        examine(
            &store,
            item,
            item.id.as_ref().and_then(|id| old.get(id)),
            opts.rehash,
        )
    });
    let mut rows = Vec::new();
    for (item, r) in listed.iter().zip(results) {
        match r {
            Examined::Row {
                row,
                hashed,
                mark_fixed,
            } => {
                report.objects += 1;
                report.hashed += hashed as u64;
                if mark_fixed {
                    report
                        .marks_repaired
                        .push(item.rel_path().display().to_string());
                }
                rows.push(row);
            }
            Examined::Mismatch(detail) => {
                report.objects += 1;
                report.hashed += 1;
                match quarantine(&store, item) {
                    Ok(to) => report.quarantined.push(format!(
                        "{} → {}: {detail}",
                        item.rel_path().display(),
                        to.display()
                    )),
                    Err(e) => report.unresolved.push(format!(
                        "{}: {detail}; cannot quarantine: {e}",
                        item.rel_path().display()
                    )),
                }
            }
            Examined::Unresolved(msg) => report
                .unresolved
                .push(format!("{}: {msg}", item.rel_path().display())),
        }
    }
    let present: std::collections::HashSet<ObjectId> = rows.iter().map(|r| r.id).collect();
    report.stale_rows_dropped = old.keys().filter(|id| !present.contains(id)).count() as u64;
    {
        let mut index = store.index();
        index.clear_objects()?;
        index.put_objects(&rows)?;
        // Rewriting every row leaves the old pages free and the new B-tree loosely packed; fsck
        // holds the store exclusively, so this is the moment to write the file densely.
        if let Err(e) = index.compact() {
            warn!("{}: not compacted: {e}", index.path().display());
        }
    }
    report.index_rows = rows.len() as u64;
    Ok(report)
}

enum Examined {
    Row {
        row: ObjectRow,
        hashed: bool,
        mark_fixed: bool,
    },
    Mismatch(String),
    Unresolved(String),
}

fn examine(store: &Store, item: &Listed, old: Option<&ObjectRow>, rehash: bool) -> Examined {
    let Some(id) = item.id else {
        return Examined::Unresolved("not an object name; left in place".into());
    };
    let fd = match store
        .subdir_fd_at(item.subdir)
        .and_then(|d| sys::open_read_at(d, &item.name))
    {
        Ok(fd) => fd,
        Err(e) => return Examined::Unresolved(format!("unreadable: {e}")),
    };
    let (meta, st) = match FileMeta::from_fd(fd.as_fd()) {
        Ok(x) => x,
        Err(e) => return Examined::Unresolved(format!("unreadable: {e}")),
    };
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Examined::Unresolved("not a regular file".into());
    }
    let trusted = old
        .filter(|r| {
            !rehash && r.ino == st.st_ino && r.dev == st.st_dev && r.size == st.st_size as u64
        })
        .map(|r| r.content_hash);
    let (content, hashed) = match trusted {
        Some(c) => (c, false),
        None => {
            let mut buf = vec![0u8; 256 * 1024];
            match hash_fd(fd.as_fd(), st.st_size as u64, &mut buf) {
                Ok(Some(c)) => (c, true),
                Ok(None) => return Examined::Unresolved("size changed while reading".into()),
                Err(e) => return Examined::Unresolved(format!("unreadable: {e}")),
            }
        }
    };
    let policy = [false, true]
        .into_iter()
        .map(|ignore_mtime| KeyPolicy { ignore_mtime })
        .find(|p| meta.key(*p, &content) == id.key);
    let Some(policy) = policy else {
        if !hashed {
            // Trusted content hash, but the metadata no longer fits: look at the content too.
            return examine(store, item, None, true);
        }
        return Examined::Mismatch("content or metadata no longer match the key".into());
    };
    let mark_fixed = match mark::read_mark(fd.as_fd()) {
        Ok(Some(k)) if k == id.key => false,
        _ => match mark::set_mark(fd.as_fd(), &id.key) {
            Ok(()) => true,
            Err(e) => return Examined::Unresolved(format!("cannot set the mark: {e}")),
        },
    };
    let row = ObjectRow::new(id, &meta, &st, content, policy.ignore_mtime);
    Examined::Row {
        row,
        hashed,
        mark_fixed,
    }
}

fn quarantine(store: &Store, item: &Listed) -> Result<std::path::PathBuf> {
    let qdir = store.root().join(QUARANTINE_DIR);
    std::fs::create_dir_all(&qdir).at(&qdir)?;
    let qfd = sys::open_dir_path(&qdir).at(&qdir)?;
    let mut name: OsString = item.name.clone();
    let mut n = 0;
    loop {
        let moved = store
            .subdir_fd_at(item.subdir)
            .and_then(|d| sys::rename_noreplace(d, &item.name, qfd.as_fd(), &name));
        match moved {
            Ok(()) => return Ok(qdir.join(&name)),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                n += 1;
                name = item.name.clone();
                name.push(format!(".{n}"));
            }
            Err(e) => return Err(e).at(store.root().join(item.rel_path())),
        }
    }
}

/// Settles `tmp/`: a collector's leftover goes back or away, a named partial copy is removed.
fn settle_tmp(store: &Store, report: &mut FsckReport) -> Result<()> {
    let tmp = store.root().join(TMP_DIR);
    for name in objects::tmp_names(store)? {
        if let Some(id) = gc::leftover_id(&name) {
            gc::settle_leftover(store, &name, id)?;
            report.tmp_settled += 1;
        } else if name.to_string_lossy().starts_with("ins.") {
            // A named copy that never made it into objects/ (only on filesystems without
            // O_TMPFILE): never visible as an object, safe to drop.
            match sys::unlink_at(store.tmp_fd(), &name) {
                Ok(()) => report.tmp_settled += 1,
                Err(e) => warn!("cannot remove {}: {e}", tmp.join(&name).display()),
            }
        } else {
            report.unresolved.push(format!(
                "{}: unknown entry in tmp/, left in place",
                tmp.join(&name).display()
            ));
        }
    }
    Ok(())
}
