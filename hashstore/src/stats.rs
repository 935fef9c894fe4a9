//! `stats`: what the store holds and what it saves, counted from the objects themselves.

use serde::Serialize;

use crate::error::{IoContext, Result};
use crate::objects;
use crate::store::Store;
use crate::sys;

/// Store statistics.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    /// Object files.
    pub objects: u64,
    /// Their total apparent size, and what they occupy on disk.
    pub bytes: u64,
    pub disk_bytes: u64,
    /// Links to objects from outside the store (guest paths).
    pub links: u64,
    /// Objects nobody links (what `gc` would remove) and their size.
    pub unreferenced: u64,
    pub unreferenced_bytes: u64,
    /// Bytes that would be used without unification minus bytes used with it: for every object
    /// with `n` outside links, `(n - 1) × size` (an unreferenced object counts `-size`).
    pub bytes_saved: i64,
    /// Distinct contents among the objects (several objects may share content with different
    /// metadata), per the index.
    pub distinct_contents: u64,
    /// Rows in the index (equal to `objects` when the index is up to date).
    pub index_rows: u64,
    /// Entries in `tmp/` (copies in progress, leftovers of interrupted runs).
    pub tmp_entries: u64,
    /// Directories journaled by a vhashify run that has not finished (or was killed).
    pub journaled_dirs: u64,
    /// Names under `objects/` that are not objects.
    pub stray_files: u64,
}

/// Counts everything.
pub fn stats(store: &Store) -> Result<Stats> {
    let mut s = Stats::default();
    for item in objects::list(store)? {
        let Some(id) = item.id else {
            s.stray_files += 1;
            continue;
        };
        let st = match store
            .subdir_fd_at(item.subdir)
            .and_then(|d| sys::lstat_at(d, &item.name))
        {
            Ok(st) => st,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(e).at(store.object_path(&id)),
        };
        s.objects += 1;
        let size = st.st_size as u64;
        s.bytes += size;
        s.disk_bytes += st.st_blocks as u64 * 512;
        let outside = st.st_nlink.saturating_sub(1);
        s.links += outside;
        if outside == 0 {
            s.unreferenced += 1;
            s.unreferenced_bytes += size;
            s.bytes_saved -= size as i64;
        } else {
            s.bytes_saved += ((outside - 1) * size) as i64;
        }
    }
    let index = store.index();
    let (rows, distinct) = index.object_counts()?;
    s.index_rows = rows;
    s.distinct_contents = distinct;
    s.journaled_dirs = index.journaled_dirs(None)?.len() as u64;
    drop(index);
    s.tmp_entries = objects::tmp_names(store)?.len() as u64;
    Ok(s)
}
