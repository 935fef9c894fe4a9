//! Space accounting for `vdu`: per guest, what is really its own and what it shares.
//!
//! Every inode is counted once per guest however many names it has there. An inode is the
//! guest's *own* when all its links are inside that guest, or when it is a store object (marked)
//! that no other guest links; it is *shared* when another guest given on the command line, or
//! some other place (a guest not listed), links it too. The computation looks at all guests at
//! once, so the answer does not depend on the order of the arguments.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;

use crate::error::Result;
use crate::mark;
use crate::sys::Stat;
use crate::walk::{self, Entry, Root, Visitor};

/// Space of one guest.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct GuestUsage {
    pub path: PathBuf,
    /// Bytes and inodes nobody else has.
    pub own_bytes: u64,
    pub own_inodes: u64,
    /// Bytes and inodes shared with other guests (through the store or direct hard links).
    pub shared_bytes: u64,
    pub shared_inodes: u64,
    /// Everything the guest sees (own + shared), each inode once.
    pub total_bytes: u64,
    pub total_inodes: u64,
}

/// Usage of all guests given.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DuReport {
    /// In argument order.
    pub guests: Vec<GuestUsage>,
    /// All guests together, each inode once (what they occupy on disk, the store's share
    /// included).
    pub total_bytes: u64,
    pub total_inodes: u64,
    /// Sizes are apparent sizes (`st_size`) rather than disk usage (`st_blocks`).
    pub apparent_size: bool,
    /// Paths that could not be read.
    pub errors: Vec<String>,
}

struct Agg {
    bytes: u64,
    nlink: u64,
    object: bool,
    /// Links found per guest.
    links: Vec<(u16, u64)>,
}

struct Collect {
    apparent: bool,
    errors: Mutex<Vec<String>>,
}

/// (guest, dev, ino, nlink, bytes, is_object)
type Item = (u16, u64, u64, u64, u64, bool);

impl Collect {
    fn bytes(&self, st: &Stat) -> u64 {
        if self.apparent {
            st.st_size as u64
        } else {
            st.st_blocks as u64 * 512
        }
    }
}

impl Visitor for Collect {
    type Item = Item;

    fn descend(&self, _: usize, _: &Path) -> bool {
        true
    }

    fn directory(&self, root: usize, _: u32, _: &Path, st: &Stat) -> Option<Item> {
        Some((root as u16, st.st_dev, st.st_ino, 1, self.bytes(st), false))
    }

    fn entry(&self, e: &Entry<'_>) -> Option<Item> {
        let st = match e.lstat() {
            Ok(st) => st,
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => return None,
            Err(err) => {
                self.error(e.rel(), err);
                return None;
            }
        };
        let regular = st.st_mode & libc::S_IFMT == libc::S_IFREG;
        // Only a multi-link regular file can be an object; its mark is read through the
        // directory fd so no guest symlink is ever followed.
        let object = regular
            && st.st_nlink > 1
            && mark::read_mark_path(
                &Path::new("/proc/self/fd")
                    .join(e.dirfd.as_raw_fd().to_string())
                    .join(e.name),
            )
            .ok()
            .flatten()
            .is_some();
        Some((
            e.root as u16,
            st.st_dev,
            st.st_ino,
            st.st_nlink,
            self.bytes(&st),
            object,
        ))
    }

    fn error(&self, path: PathBuf, err: std::io::Error) {
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!("{}: {err}", path.display()));
    }
}

/// Measures the guests (see the module documentation for what own and shared mean).
pub fn usage(paths: &[PathBuf], apparent_size: bool, threads: usize) -> Result<DuReport> {
    let roots = walk::open_roots(paths)?;
    Ok(usage_of(&roots, apparent_size, threads))
}

/// [`usage`] for guests already opened.
pub fn usage_of(roots: &[Root], apparent_size: bool, threads: usize) -> DuReport {
    let collect = Collect {
        apparent: apparent_size,
        errors: Mutex::new(Vec::new()),
    };
    let w = walk::walk(roots, &collect, threads);
    let mut inodes: HashMap<(u64, u64), Agg> = HashMap::with_capacity(w.items.len());
    for (root, dev, ino, nlink, bytes, object) in w.items {
        let a = inodes.entry((dev, ino)).or_insert(Agg {
            bytes,
            nlink,
            object,
            links: Vec::new(),
        });
        a.object |= object;
        match a.links.iter_mut().find(|(r, _)| *r == root) {
            Some((_, n)) => *n += 1,
            None => a.links.push((root, 1)),
        }
    }
    let mut guests: Vec<GuestUsage> = roots
        .iter()
        .map(|r| GuestUsage {
            path: r.path.clone(),
            ..GuestUsage::default()
        })
        .collect();
    let mut report = DuReport {
        apparent_size,
        ..DuReport::default()
    };
    for a in inodes.values() {
        report.total_bytes += a.bytes;
        report.total_inodes += 1;
        let seen: u64 = a.links.iter().map(|(_, n)| n).sum();
        let elsewhere = a.nlink.saturating_sub(seen + a.object as u64);
        let shared = a.links.len() > 1 || elsewhere > 0;
        for &(root, _) in &a.links {
            let g = &mut guests[root as usize];
            g.total_bytes += a.bytes;
            g.total_inodes += 1;
            if shared {
                g.shared_bytes += a.bytes;
                g.shared_inodes += 1;
            } else {
                g.own_bytes += a.bytes;
                g.own_inodes += 1;
            }
        }
    }
    report.guests = guests;
    report.errors = collect
        .errors
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    report
}
