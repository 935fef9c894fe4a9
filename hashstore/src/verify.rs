//! `verify`: rehash every object and check that its content and metadata still give the key in
//! its name, and that it carries the right mark. Any mismatch is listed by object path.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::PathBuf;

use serde::Serialize;

use crate::error::Result;
use crate::index::ObjectRow;
use crate::key::{FileMeta, KeyPolicy, hash_fd};
use crate::layout::ObjectId;
use crate::objects::{self, Listed};
use crate::store::Store;
use crate::{mark, sys};

/// A problem found with one object.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Problem {
    /// Path relative to the store (`objects/ab/cdef…`).
    pub object: PathBuf,
    /// `content-changed`, `metadata-changed`, `key-mismatch`, `missing-mark`, `wrong-mark`,
    /// `not-a-regular-file`, `unreadable`, `stray-file`.
    pub kind: String,
    pub detail: String,
}

/// What `verify` found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    pub objects: u64,
    pub bytes: u64,
    pub ok: u64,
    pub problems: Vec<Problem>,
    /// Index rows without an object file, and object files without an index row (a stale cache,
    /// not damage: `cowfs store fsck` rewrites it).
    pub index_rows_without_object: u64,
    pub objects_without_index_row: u64,
}

impl VerifyReport {
    /// Whether every object checked out.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// How one object looks when rehashed.
pub(crate) enum Checked {
    Ok { bytes: u64 },
    Bad(Problem),
}

/// Rehashes one object and compares. `row` is what the index remembers (to tell content damage
/// from metadata damage).
pub(crate) fn check_object(store: &Store, item: &Listed, row: Option<&ObjectRow>) -> Checked {
    let object = item.rel_path();
    let bad = |kind: &str, detail: String| {
        Checked::Bad(Problem {
            object: object.clone(),
            kind: kind.into(),
            detail,
        })
    };
    let Some(id) = item.id else {
        return bad("stray-file", "not an object name".into());
    };
    let fd = match store
        .subdir_fd_at(item.subdir)
        .and_then(|d| sys::open_read_at(d, &item.name))
    {
        Ok(fd) => fd,
        Err(e) => return bad("unreadable", e.to_string()),
    };
    let (meta, st) = match FileMeta::from_fd(fd.as_fd()) {
        Ok(x) => x,
        Err(e) => return bad("unreadable", e.to_string()),
    };
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return bad("not-a-regular-file", format!("mode {:o}", st.st_mode));
    }
    let mut buf = vec![0u8; 256 * 1024];
    let content = match hash_fd(fd.as_fd(), st.st_size as u64, &mut buf) {
        Ok(Some(c)) => c,
        Ok(None) => return bad("content-changed", "size changed while reading".into()),
        Err(e) => return bad("unreadable", e.to_string()),
    };
    let matches = [false, true]
        .into_iter()
        .any(|ignore_mtime| meta.key(KeyPolicy { ignore_mtime }, &content) == id.key);
    if !matches {
        return match row {
            Some(r) if r.content_hash != content => bad(
                "content-changed",
                format!(
                    "content hash is {content}, the object was stored with {}",
                    r.content_hash
                ),
            ),
            Some(_) => bad(
                "metadata-changed",
                "content is intact but mode, owner, mtime or xattrs changed".into(),
            ),
            None => bad(
                "key-mismatch",
                "content and metadata no longer give the key in the name".into(),
            ),
        };
    }
    match mark::read_mark(fd.as_fd()) {
        Ok(Some(k)) if k == id.key => Checked::Ok {
            bytes: st.st_size as u64,
        },
        Ok(Some(k)) => bad("wrong-mark", format!("marked as {k}")),
        Ok(None) => bad("missing-mark", format!("no {} xattr", crate::MARK_XATTR)),
        Err(e) => bad("unreadable", e.to_string()),
    }
}

/// Verifies every object of the store with `threads` threads.
pub fn verify(store: &Store, threads: usize) -> Result<VerifyReport> {
    let listed = objects::list(store)?;
    let rows: HashMap<ObjectId, ObjectRow> = store
        .index()
        .all_objects()?
        .into_iter()
        .map(|r| (r.id, r))
        .collect();
    let results = objects::par_map(&listed, threads, |item| {
        check_object(store, item, item.id.as_ref().and_then(|id| rows.get(id)))
    });
    let mut report = VerifyReport::default();
    for (item, r) in listed.iter().zip(results) {
        report.objects += 1;
        match r {
            Checked::Ok { bytes } => {
                report.ok += 1;
                report.bytes += bytes;
            }
            Checked::Bad(p) => report.problems.push(p),
        }
        if item.id.is_some_and(|id| !rows.contains_key(&id)) {
            report.objects_without_index_row += 1;
        }
    }
    let present: std::collections::HashSet<ObjectId> = listed.iter().filter_map(|l| l.id).collect();
    report.index_rows_without_object =
        rows.keys().filter(|id| !present.contains(id)).count() as u64;
    Ok(report)
}
