//! Repair of what a killed run left behind, before anything else happens: every journaled
//! directory gets its stale temporary entries removed (a `.cowfs.tmp.*` entry carrying the mark
//! is an extra name of an object whose exchange never happened, so the real path is intact; an
//! unmarked one is what an exchange took out of a path, whose content the object now holds)
//! and its original atime/mtime back.

use std::os::fd::AsFd;

use nix::dir::Dir;
use nix::fcntl::OFlag;
use tracing::{debug, warn};

use super::Report;
use super::apply::is_tmp_name;
use crate::error::Result;
use crate::index::DirTimes;
use crate::mark;
use crate::store::Store;
use crate::sys;
use crate::walk::Root;

/// What recovery did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    pub dirs: u64,
    pub temps_removed: u64,
}

/// Recovers the journaled directories of `roots` (other guests' entries may belong to a run that
/// is still going on, so they are left alone).
pub fn recover(store: &Store, roots: &[Root], report: &mut Report) -> Result<()> {
    let entries = store.index().journaled_dirs(None)?;
    let mut done = Vec::new();
    let mut rec = Recovered::default();
    for e in &entries {
        let Some(root) = roots.iter().find(|r| r.path == e.root) else {
            continue;
        };
        rec.temps_removed += recover_dir(root, e);
        rec.dirs += 1;
        done.push((e.root.clone(), e.rel.clone()));
    }
    store.index().clear_journal(&done)?;
    report.recovered_dirs += rec.dirs;
    report.stale_temps_removed += rec.temps_removed;
    Ok(())
}

/// Recovers every journaled directory, whichever guest it is in (fsck, with the store held
/// exclusively so no run can be going on).
pub fn recover_all(store: &Store) -> Result<Recovered> {
    let entries = store.index().journaled_dirs(None)?;
    let mut done = Vec::new();
    let mut rec = Recovered::default();
    for e in &entries {
        match Root::open(&e.root) {
            Ok(root) => {
                rec.temps_removed += recover_dir(&root, e);
                rec.dirs += 1;
            }
            Err(err) => warn!(root = %e.root.display(), "journaled guest root is gone: {err}"),
        }
        done.push((e.root.clone(), e.rel.clone()));
    }
    store.index().clear_journal(&done)?;
    Ok(rec)
}

/// Returns the number of temporary links removed.
fn recover_dir(root: &Root, e: &DirTimes) -> u64 {
    let fd = match sys::open_beneath(
        root.fd.as_fd(),
        &e.rel,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOATIME,
    ) {
        Ok(fd) => fd,
        Err(err) => {
            debug!(dir = %root.display(&e.rel).display(), "journaled directory is gone: {err}");
            return 0;
        }
    };
    let mut dir = match Dir::from_fd(fd) {
        Ok(d) => d,
        Err(err) => {
            warn!(dir = %root.display(&e.rel).display(), "cannot read journaled directory: {err}");
            return 0;
        }
    };
    let names: Vec<std::ffi::OsString> = dir
        .iter()
        .filter_map(|ent| ent.ok())
        .map(|ent| {
            use std::os::unix::ffi::OsStrExt;
            std::ffi::OsStr::from_bytes(ent.file_name().to_bytes()).to_os_string()
        })
        .filter(|n| is_tmp_name(n))
        .collect();
    let dirfd = dir.as_fd();
    let mut removed = 0;
    for name in names {
        // A marked entry is an extra link of an object whose exchange never happened; an
        // unmarked regular file with one link is what an exchange took out of a path (the
        // object, identical in content and metadata, sits there now: see `swap.rs`).
        let stale = sys::open_read_at(dirfd, &name)
            .and_then(|f| {
                let st = sys::fstat(f.as_fd())?;
                let regular = st.st_mode & libc::S_IFMT == libc::S_IFREG;
                let marked = mark::read_mark(f.as_fd())?.is_some();
                Ok(regular && ((st.st_nlink > 1 && marked) || (st.st_nlink == 1 && !marked)))
            })
            .unwrap_or(false);
        if stale && sys::unlink_at(dirfd, &name).is_ok() {
            debug!(path = %root.display(&e.rel.join(&name)).display(), "removed stale temporary link");
            removed += 1;
        }
    }
    let times = |t: crate::key::Timestamp| (t.sec, t.nsec);
    if let Err(err) = sys::set_times(dirfd, times(e.atime), times(e.mtime)) {
        warn!(dir = %root.display(&e.rel).display(), "cannot restore directory times: {err}");
    }
    removed
}
