//! Listing what is under `objects/`: the tree is the truth, so gc, verify, fsck and stats all
//! start here rather than from the index.

use std::ffi::OsString;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use nix::dir::Dir;
use nix::fcntl::OFlag;

use crate::error::{IoContext, Result};
use crate::layout::{OBJECTS_DIR, ObjectId, subdirs};
use crate::store::Store;
use crate::sys;

/// An entry of a fan-out directory.
#[derive(Clone, Debug)]
pub struct Listed {
    /// Fan-out directory index (0..=255).
    pub subdir: usize,
    pub name: OsString,
    /// `None` when the name is not an object name (or sits in the wrong fan-out directory).
    pub id: Option<ObjectId>,
}

impl Listed {
    /// Path relative to the store, for messages.
    pub fn rel_path(&self) -> PathBuf {
        PathBuf::from(OBJECTS_DIR)
            .join(format!("{:02x}", self.subdir))
            .join(&self.name)
    }
}

/// Every entry of every fan-out directory, sorted by name.
pub fn list(store: &Store) -> Result<Vec<Listed>> {
    let mut out = Vec::new();
    for (i, sub) in subdirs().enumerate() {
        let path = store.root().join(OBJECTS_DIR).join(&sub);
        let fd = match sys::open_beneath(
            store.root_fd(),
            &PathBuf::from(OBJECTS_DIR).join(&sub),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        ) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(e).at(&path),
        };
        let mut dir = Dir::from_fd(fd).at(&path)?;
        for ent in dir.iter() {
            let ent = ent.at(&path)?;
            let name = ent.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let name = std::ffi::OsStr::from_bytes(name).to_os_string();
            let id = ObjectId::parse(std::ffi::OsStr::new(&sub), &name);
            out.push(Listed {
                subdir: i,
                name,
                id,
            });
        }
        let _ = dir.as_fd();
    }
    out.sort_by(|a, b| (a.subdir, &a.name).cmp(&(b.subdir, &b.name)));
    Ok(out)
}

/// The names in `STORE/tmp`.
pub fn tmp_names(store: &Store) -> Result<Vec<OsString>> {
    let tmp = store.root().join(crate::layout::TMP_DIR);
    Ok(std::fs::read_dir(&tmp)
        .at(&tmp)?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect())
}

/// Runs `f` on every item with `threads` threads; results in input order.
pub fn par_map<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let cursor = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, R)>> = Mutex::new(Vec::with_capacity(items.len()));
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                let mut mine = Vec::new();
                loop {
                    let n = cursor.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(n) else { break };
                    mine.push((n, f(item)));
                }
                results
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .append(&mut mine);
            });
        }
    });
    let mut v = results.into_inner().unwrap_or_else(|p| p.into_inner());
    v.sort_by_key(|(n, _)| *n);
    v.into_iter().map(|(_, r)| r).collect()
}

/// The number of worker threads to use by default.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}
