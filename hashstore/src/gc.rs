//! Garbage collection without stopping inserters.
//!
//! An object whose link count is 1 is referenced by nobody but the store. The collector renames
//! it aside into `tmp/` (atomic: from then on nobody can find it by name), looks at the link
//! count again, and unlinks it only if it is still 1. If an inserter linked it in the meantime,
//! it goes back under its name (`RENAME_NOREPLACE`; if a new object took the name meanwhile, it
//! moves to a free sequence number of the same key, so both stay valid). An inserter whose link
//! fails because the object is gone (ENOENT) or not where it looked makes a new object instead.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use serde::Serialize;
use tracing::{debug, info};

use crate::error::{IoContext, Result};
use crate::layout::{ObjectId, TMP_DIR};
use crate::objects;
use crate::store::{Store, unique_tmp_name};
use crate::sys;

/// What a collection did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    /// Objects looked at.
    pub objects: u64,
    /// Unreferenced objects removed (or, dry run, that would be).
    pub removed: u64,
    pub bytes_freed: u64,
    /// Objects that were unreferenced when looked at but got linked while being collected.
    pub raced: u64,
    /// Of those, ones whose name a new object took meanwhile: kept under another sequence number.
    pub renumbered: Vec<String>,
    /// Leftovers of an interrupted collection found in `tmp/` and settled.
    pub leftovers: u64,
    /// The removed objects (relative paths), at most 1000.
    pub removed_objects: Vec<String>,
}

const GC_PREFIX: &str = "gc.";

fn aside_name(id: &ObjectId) -> String {
    unique_tmp_name(&format!("{GC_PREFIX}{}~{}~", id.key.to_hex(), id.seq))
}

fn parse_aside(name: &OsStr) -> Option<ObjectId> {
    let s = std::str::from_utf8(name.as_bytes()).ok()?;
    let rest = s.strip_prefix(GC_PREFIX)?;
    let mut parts = rest.splitn(3, '~');
    let key = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    parts.next()?;
    Some(ObjectId { key, seq })
}

/// Puts an object that turned out to be referenced back under its name, or under the next free
/// sequence number of its key if its name was taken meanwhile. Returns the id it ended up with.
fn put_back(store: &Store, aside: &OsStr, id: ObjectId) -> Result<ObjectId> {
    let tmp_path = store.root().join(TMP_DIR).join(aside);
    let mut target = id;
    loop {
        let moved = store
            .subdir_fd(&target.key)
            .and_then(|d| sys::rename_noreplace(store.tmp_fd(), aside, d, &target.file_name()));
        match moved {
            Ok(()) => return Ok(target),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => target.seq += 1,
            Err(e) => return Err(e).at(&tmp_path),
        }
    }
}

/// Settles one object renamed aside: unlink if still unreferenced, else put back.
/// Returns `Some(bytes)` when removed, `None` when it was put back (as `Err(id)` in `back`).
fn settle(
    store: &Store,
    aside: &OsStr,
    id: ObjectId,
    report: &mut GcReport,
) -> Result<Option<u64>> {
    let tmp_path = store.root().join(TMP_DIR).join(aside);
    let st = match sys::lstat_at(store.tmp_fd(), aside) {
        Ok(st) => st,
        // Another collector settled it.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(e) => return Err(e).at(&tmp_path),
    };
    if st.st_nlink == 1 {
        match sys::unlink_at(store.tmp_fd(), aside) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            Err(e) => return Err(e).at(&tmp_path),
        }
        store.index().remove_object(&id)?;
        debug!(object = %id, "collected");
        return Ok(Some(st.st_blocks as u64 * 512));
    }
    report.raced += 1;
    let back = put_back(store, aside, id)?;
    if back != id {
        info!(object = %id, now = %back, "a new object took the name while this one was being collected; kept both");
        report.renumbered.push(back.to_string());
        if let Ok(fd) = store.open_object(&back) {
            let content = store
                .index()
                .objects_by_key(&id.key)?
                .first()
                .map(|r| r.content_hash);
            if let Some(content) = content
                && let Ok((row, _)) =
                    store.describe_object(back, std::os::fd::AsFd::as_fd(&fd), content)
            {
                store.record(&[row])?;
            }
        }
    }
    Ok(None)
}

/// Removes every unreferenced object. Safe while inserters run (they hold the store lock shared,
/// as does the collector).
pub fn gc(store: &Store, dry_run: bool) -> Result<GcReport> {
    let mut report = GcReport {
        dry_run,
        ..GcReport::default()
    };
    if !dry_run {
        settle_leftovers(store, &mut report)?;
    }
    for item in objects::list(store)? {
        let Some(id) = item.id else { continue };
        report.objects += 1;
        let subdir = store.subdir_fd_at(item.subdir).at(store.object_path(&id))?;
        let st = match sys::lstat_at(subdir, &item.name) {
            Ok(st) => st,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(e).at(store.object_path(&id)),
        };
        if st.st_nlink != 1 || st.st_mode & libc::S_IFMT != libc::S_IFREG {
            continue;
        }
        if dry_run {
            report.removed += 1;
            report.bytes_freed += st.st_blocks as u64 * 512;
            continue;
        }
        let aside = OsString::from(aside_name(&id));
        match sys::rename_noreplace(subdir, &item.name, store.tmp_fd(), &aside) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(e).at(store.object_path(&id)),
        }
        if let Some(bytes) = settle(store, &aside, id, &mut report)? {
            report.removed += 1;
            report.bytes_freed += bytes;
            if report.removed_objects.len() < 1000 {
                report.removed_objects.push(id.to_string());
            }
        }
    }
    Ok(report)
}

/// Objects a killed collector left in `tmp/`: settled like fresh ones.
fn settle_leftovers(store: &Store, report: &mut GcReport) -> Result<()> {
    for name in objects::tmp_names(store)? {
        let Some(id) = parse_aside(&name) else {
            continue;
        };
        report.leftovers += 1;
        if let Some(bytes) = settle(store, &name, id, report)? {
            report.removed += 1;
            report.bytes_freed += bytes;
        }
    }
    Ok(())
}

/// Whether `name` in `tmp/` is a collector's leftover; its object id if so (fsck).
pub fn leftover_id(name: &OsStr) -> Option<ObjectId> {
    parse_aside(name)
}

/// Settles one leftover (fsck).
pub(crate) fn settle_leftover(store: &Store, name: &OsStr, id: ObjectId) -> Result<bool> {
    let mut r = GcReport::default();
    Ok(settle(store, name, id, &mut r)?.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Key;

    #[test]
    fn aside_names_round_trip() {
        let id = ObjectId {
            key: Key([0x5a; 32]),
            seq: 3,
        };
        assert_eq!(parse_aside(OsStr::new(&aside_name(&id))), Some(id));
        assert_eq!(parse_aside(OsStr::new("ins.1.2")), None);
    }
}
