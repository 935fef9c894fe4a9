//! Walks of a guest root and its branches: which path each (dev, ino) has.
//!
//! The kernel tells us `{dev, ino}`; the operator wants paths. There is no kernel API from an
//! inode to its names, so the tracer walks the guest's trees: the root as the guest sees it
//! (for a FUSE mount without passthrough, the page cache is the FUSE inode's) and each branch
//! directory (with passthrough, or overlayfs, the page cache is the backing file's). The walk
//! is descriptor-relative (`openat` + `statx` with `AT_SYMLINK_NOFOLLOW`, `O_NOFOLLOW`), so a
//! guest that swaps a directory for a symlink mid-walk cannot lead it out of its tree, and it
//! stays on the file system of the tree's top (submounts are other trees).

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::dir::Dir;
use nix::fcntl::{OFlag, open, openat};
use nix::sys::stat::Mode;

use crate::{Error, Result};

/// (dev as the kernel encodes it: major << 20 | minor, ino)
pub type InodeKey = (u32, u64);

/// What a walk saw of one regular file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Every path of the inode, relative to the tree's top, in walk order (hard links).
    pub paths: Vec<PathBuf>,
    /// Index of the tree (in the order given to [`Snapshot::walk`]) the paths are in.
    pub tree: usize,
    pub size: u64,
    pub mtime_ns: i64,
    /// Birth time, where the file system reports it: tells a reused inode number apart.
    pub btime_ns: Option<i64>,
}

/// Regular files of one or more trees by inode; the first tree that has an inode wins.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub files: HashMap<InodeKey, Seen>,
    /// Entries that could not be read (permissions, races), counted, not fatal.
    pub errors: u64,
}

pub fn kernel_dev(major: u32, minor: u32) -> u32 {
    (major << 20) | (minor & 0xfffff)
}

/// Status of one entry, as statx reports it without following a symlink.
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    pub dev: u32,
    pub ino: u64,
    pub mode: u32,
    pub size: u64,
    pub mtime_ns: i64,
    pub btime_ns: Option<i64>,
}

impl Stat {
    pub fn is_file(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }

    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }
}

fn ns(t: libc::statx_timestamp) -> i64 {
    t.tv_sec.saturating_mul(1_000_000_000) + i64::from(t.tv_nsec)
}

/// statx of `name` in `dir` (or of `dir` itself when `name` is empty), never following a
/// symlink.
pub fn statx(dir: BorrowedFd<'_>, name: &CStr) -> std::io::Result<Stat> {
    let mut buf = std::mem::MaybeUninit::<libc::statx>::zeroed();
    let flags = libc::AT_SYMLINK_NOFOLLOW
        | libc::AT_NO_AUTOMOUNT
        | if name.is_empty() {
            libc::AT_EMPTY_PATH
        } else {
            0
        };
    // SAFETY: valid fd, NUL-terminated name, a buffer of the right type.
    let rc = unsafe {
        libc::statx(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags,
            libc::STATX_BASIC_STATS | libc::STATX_BTIME,
            buf.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statx filled it.
    let s = unsafe { buf.assume_init() };
    Ok(Stat {
        dev: kernel_dev(s.stx_dev_major, s.stx_dev_minor),
        ino: s.stx_ino,
        mode: u32::from(s.stx_mode),
        size: s.stx_size,
        mtime_ns: ns(s.stx_mtime),
        btime_ns: (s.stx_mask & libc::STATX_BTIME != 0).then(|| ns(s.stx_btime)),
    })
}

/// Names the walk skips: cowfs temp files and union whiteouts are never guest files.
fn skipped(name: &[u8]) -> bool {
    name.starts_with(b".cowfs.tmp.") || name.starts_with(b".wh.")
}

impl Snapshot {
    /// Walks every tree in `tops` (in order: the guest root first, then branches).
    pub fn walk(tops: &[PathBuf]) -> Result<Self> {
        let mut snap = Snapshot::default();
        for (tree, top) in tops.iter().enumerate() {
            snap.add_tree(tree, top, |_| true)?;
        }
        Ok(snap)
    }

    /// Walks `top` again, adding only inodes for which `wanted` is true and that are not
    /// already known (their first-known path is kept).
    pub fn add_tree(
        &mut self,
        tree: usize,
        top: &Path,
        wanted: impl Fn(&InodeKey) -> bool,
    ) -> Result<()> {
        let fd = open(
            top,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::sys(format!("opening {}", top.display()), e))?;
        let root =
            statx(fd.as_fd(), c"").map_err(|e| Error::io(format!("stat {}", top.display()), e))?;
        let mut found: HashMap<InodeKey, Seen> = HashMap::new();
        let mut stack: Vec<(OwnedFd, PathBuf)> = vec![(fd, PathBuf::new())];
        while let Some((dirfd, rel)) = stack.pop() {
            let names = match list(&dirfd) {
                Ok(names) => names,
                Err(_) => {
                    self.errors += 1;
                    continue;
                }
            };
            for name in names {
                if skipped(name.as_bytes()) {
                    continue;
                }
                let Ok(st) = statx(dirfd.as_fd(), &name) else {
                    self.errors += 1;
                    continue;
                };
                let path = rel.join(OsStr::from_bytes(name.as_bytes()));
                if st.is_dir() && st.dev == root.dev {
                    match openat(
                        dirfd.as_fd(),
                        name.as_c_str(),
                        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    ) {
                        Ok(sub) => stack.push((sub, path)),
                        Err(_) => self.errors += 1,
                    }
                } else if st.is_file() {
                    let key = (st.dev, st.ino);
                    if self.files.contains_key(&key) || !wanted(&key) {
                        continue;
                    }
                    found
                        .entry(key)
                        .and_modify(|s| s.paths.push(path.clone()))
                        .or_insert_with(|| Seen {
                            paths: vec![path],
                            tree,
                            size: st.size,
                            mtime_ns: st.mtime_ns,
                            btime_ns: st.btime_ns,
                        });
                }
            }
        }
        for (key, mut seen) in found {
            seen.paths.sort();
            self.files.insert(key, seen);
        }
        Ok(())
    }
}

fn list(dir: &OwnedFd) -> nix::Result<Vec<CString>> {
    // Dir takes ownership of its fd: give it a duplicate so `dir` stays usable for *at calls.
    let mut d = Dir::from_fd(dir.try_clone().map_err(|_| nix::errno::Errno::EMFILE)?)?;
    let mut names = Vec::new();
    for entry in d.iter() {
        let entry = entry?;
        let name = entry.file_name();
        if name != c"." && name != c".." {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_files_by_inode_with_all_their_links_and_skips_symlinks_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("a/b")).expect("mkdir");
        std::fs::write(root.join("a/b/f"), b"hello").expect("write");
        std::fs::hard_link(root.join("a/b/f"), root.join("a/g")).expect("link");
        std::fs::write(root.join(".wh.gone"), b"").expect("whiteout");
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).expect("mkdir");
        std::fs::write(outside.join("secret"), b"x").expect("write");
        std::os::unix::fs::symlink(&outside, root.join("escape")).expect("symlink");

        let snap = Snapshot::walk(std::slice::from_ref(&root)).expect("walk");
        assert_eq!(snap.files.len(), 1, "{snap:?}");
        let seen = snap.files.values().next().expect("one file");
        assert_eq!(seen.paths, [PathBuf::from("a/b/f"), PathBuf::from("a/g")]);
        assert_eq!(seen.size, 5);
        let meta = std::fs::metadata(root.join("a/g")).expect("stat");
        let key = snap.files.keys().next().expect("key");
        assert_eq!(key.1, std::os::unix::fs::MetadataExt::ino(&meta));
    }
}
