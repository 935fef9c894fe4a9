//! A parallel walk of guest roots. Directories are work items on crossbeam deques (work
//! stealing); every directory is opened beneath its guest's root fd without following symlinks,
//! and never across a mount point. What is collected is up to the [`Visitor`].

use std::ffi::OsString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam::deque::{Injector, Stealer, Worker};
use crossbeam::utils::Backoff;
use nix::dir::{Dir, Type};
use nix::fcntl::OFlag;

use crate::sys::{self, Stat};

/// A guest root opened for walking.
#[derive(Debug)]
pub struct Root {
    /// Canonical absolute path.
    pub path: PathBuf,
    /// `O_PATH` handle every path of this guest is resolved beneath.
    pub fd: OwnedFd,
    /// Device of the root directory; the walk does not leave it.
    pub dev: u64,
}

impl Root {
    /// Opens `path` (must be a directory).
    pub fn open(path: &Path) -> std::io::Result<Root> {
        let path = std::fs::canonicalize(path)?;
        let fd = sys::open_dir_path(&path)?;
        let dev = sys::fstat(fd.as_fd())?.st_dev;
        Ok(Root { path, fd, dev })
    }

    /// Absolute path of `rel` inside this root (for messages).
    pub fn display(&self, rel: &Path) -> PathBuf {
        if rel.as_os_str().is_empty() {
            self.path.clone()
        } else {
            self.path.join(rel)
        }
    }
}

/// Whether `inner` is strictly below `outer` (component-wise).
pub fn is_inside(inner: &Path, outer: &Path) -> bool {
    inner != outer && inner.starts_with(outer)
}

/// Opens the guest roots given on a command line, refusing what would make the answer wrong or
/// the work dangerous: a path that does not exist or is not a directory, the same guest twice
/// (also under another spelling), or one guest inside another.
pub fn open_roots(paths: &[PathBuf]) -> crate::Result<Vec<Root>> {
    use crate::Error;
    if paths.is_empty() {
        return Err(Error::InvalidInput("no guest roots given".into()));
    }
    let mut roots: Vec<Root> = Vec::with_capacity(paths.len());
    for g in paths {
        let meta = std::fs::metadata(g).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::InvalidInput(format!("guest root {} does not exist", g.display()))
            } else {
                Error::Io {
                    path: g.clone(),
                    source: e,
                }
            }
        })?;
        if !meta.is_dir() {
            return Err(Error::InvalidInput(format!(
                "guest root {} is not a directory",
                g.display()
            )));
        }
        let root = Root::open(g).map_err(|source| Error::Io {
            path: g.clone(),
            source,
        })?;
        for other in &roots {
            if other.path == root.path {
                return Err(Error::InvalidInput(format!(
                    "guest root {} is given twice",
                    root.path.display()
                )));
            }
            for (a, b) in [(&root.path, &other.path), (&other.path, &root.path)] {
                if is_inside(a, b) {
                    return Err(Error::InvalidInput(format!(
                        "guest root {} is inside guest root {}: give each guest once, not nested",
                        a.display(),
                        b.display()
                    )));
                }
            }
        }
        roots.push(root);
    }
    Ok(roots)
}

/// A directory met by the walk: which guest, and where relative to its root.
#[derive(Clone, Debug)]
pub struct DirRec {
    pub root: usize,
    pub rel: PathBuf,
}

/// One entry of a directory as `getdents` reports it.
pub struct Entry<'a> {
    pub root: usize,
    /// Id of the containing directory in [`Walk::dirs`].
    pub dir: u32,
    pub dir_rel: &'a Path,
    pub dirfd: BorrowedFd<'a>,
    pub name: &'a std::ffi::OsStr,
    /// `None` when the filesystem does not fill in `d_type`.
    pub kind: Option<Type>,
}

impl Entry<'_> {
    /// The entry's path relative to the guest root.
    pub fn rel(&self) -> PathBuf {
        self.dir_rel.join(self.name)
    }
    /// `lstat` of the entry.
    pub fn lstat(&self) -> std::io::Result<Stat> {
        sys::lstat_at(self.dirfd, self.name)
    }
}

/// What the walk does at each step. Called from several threads at once.
pub trait Visitor: Sync {
    /// What the visitor collects.
    type Item: Send;
    /// Whether to descend into the subdirectory `rel` of guest `root`.
    fn descend(&self, root: usize, rel: &Path) -> bool;
    /// A directory was opened (its own `stat`); may collect something about it.
    fn directory(&self, root: usize, dir: u32, rel: &Path, st: &Stat) -> Option<Self::Item>;
    /// A non-directory entry; may collect something about it.
    fn entry(&self, entry: &Entry<'_>) -> Option<Self::Item>;
    /// A directory could not be opened or read.
    fn error(&self, path: PathBuf, err: std::io::Error);
}

/// What a walk found.
pub struct Walk<T> {
    /// Every directory opened, indexed by id.
    pub dirs: Vec<DirRec>,
    /// What the visitor collected, in no particular order.
    pub items: Vec<T>,
}

struct Shared<'a, V: Visitor> {
    roots: &'a [Root],
    visitor: &'a V,
    injector: Injector<(usize, PathBuf)>,
    pending: AtomicUsize,
    next_dir: AtomicUsize,
    dirs: Mutex<Vec<(u32, DirRec)>>,
}

/// Walks every root with `threads` threads.
pub fn walk<V: Visitor>(roots: &[Root], visitor: &V, threads: usize) -> Walk<V::Item> {
    let shared = Shared {
        roots,
        visitor,
        injector: Injector::new(),
        pending: AtomicUsize::new(roots.len()),
        next_dir: AtomicUsize::new(0),
        dirs: Mutex::new(Vec::new()),
    };
    for i in 0..roots.len() {
        shared.injector.push((i, PathBuf::new()));
    }
    let threads = threads.max(1);
    let workers: Vec<Worker<(usize, PathBuf)>> = (0..threads).map(|_| Worker::new_lifo()).collect();
    let stealers: Vec<Stealer<(usize, PathBuf)>> = workers.iter().map(Worker::stealer).collect();
    let mut items = Vec::new();
    std::thread::scope(|s| {
        let handles: Vec<_> = workers
            .into_iter()
            .map(|w| {
                let shared = &shared;
                let stealers = &stealers;
                s.spawn(move || run_worker(shared, w, stealers))
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(mut v) => items.append(&mut v),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });
    let mut dirs = shared.dirs.into_inner().unwrap_or_else(|p| p.into_inner());
    dirs.sort_by_key(|(id, _)| *id);
    Walk {
        dirs: dirs.into_iter().map(|(_, d)| d).collect(),
        items,
    }
}

fn find_task<T>(local: &Worker<T>, global: &Injector<T>, stealers: &[Stealer<T>]) -> Option<T> {
    local.pop().or_else(|| {
        std::iter::repeat_with(|| {
            global
                .steal_batch_and_pop(local)
                .or_else(|| stealers.iter().map(Stealer::steal).collect())
        })
        .find(|s| !s.is_retry())
        .and_then(|s| s.success())
    })
}

fn run_worker<V: Visitor>(
    shared: &Shared<'_, V>,
    local: Worker<(usize, PathBuf)>,
    stealers: &[Stealer<(usize, PathBuf)>],
) -> Vec<V::Item> {
    let mut items = Vec::new();
    let mut my_dirs = Vec::new();
    let backoff = Backoff::new();
    loop {
        match find_task(&local, &shared.injector, stealers) {
            Some((root, rel)) => {
                backoff.reset();
                let id = shared.next_dir.fetch_add(1, Ordering::Relaxed) as u32;
                let subdirs = visit_dir(shared, root, id, &rel, &mut items);
                my_dirs.push((id, DirRec { root, rel }));
                shared.pending.fetch_add(subdirs.len(), Ordering::SeqCst);
                for d in subdirs {
                    local.push((root, d));
                }
                shared.pending.fetch_sub(1, Ordering::SeqCst);
            }
            None => {
                if shared.pending.load(Ordering::SeqCst) == 0 {
                    break;
                }
                backoff.snooze();
            }
        }
    }
    shared
        .dirs
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .append(&mut my_dirs);
    items
}

fn visit_dir<V: Visitor>(
    shared: &Shared<'_, V>,
    root_idx: usize,
    id: u32,
    rel: &Path,
    items: &mut Vec<V::Item>,
) -> Vec<PathBuf> {
    let root = &shared.roots[root_idx];
    let v = shared.visitor;
    let fd = match sys::open_beneath(
        root.fd.as_fd(),
        rel,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOATIME,
    ) {
        Ok(fd) => fd,
        Err(e) => {
            v.error(root.display(rel), e);
            return Vec::new();
        }
    };
    let st = match sys::fstat(fd.as_fd()) {
        Ok(st) => st,
        Err(e) => {
            v.error(root.display(rel), e);
            return Vec::new();
        }
    };
    if st.st_dev != root.dev {
        // A mount point inside the guest: another filesystem, not ours to walk.
        return Vec::new();
    }
    if let Some(item) = v.directory(root_idx, id, rel, &st) {
        items.push(item);
    }
    let mut dir = match Dir::from_fd(fd) {
        Ok(d) => d,
        Err(e) => {
            v.error(root.display(rel), e.into());
            return Vec::new();
        }
    };
    // Names first, then the per-entry work: the directory fd stays borrowed only once.
    let mut entries: Vec<(OsString, Option<Type>)> = Vec::new();
    for ent in dir.iter() {
        match ent {
            Ok(ent) => {
                let name = ent.file_name().to_bytes();
                if name == b"." || name == b".." {
                    continue;
                }
                entries.push((
                    std::ffi::OsStr::from_bytes(name).to_os_string(),
                    ent.file_type(),
                ));
            }
            Err(e) => {
                v.error(root.display(rel), e.into());
                break;
            }
        }
    }
    let dirfd = dir.as_fd();
    let mut subdirs = Vec::new();
    for (name, kind) in &entries {
        let kind = match kind {
            Some(k) => Some(*k),
            None => sys::lstat_at(dirfd, name)
                .ok()
                .map(|st| type_of(st.st_mode)),
        };
        if kind == Some(Type::Directory) {
            let child = rel.join(name);
            if v.descend(root_idx, &child) {
                subdirs.push(child);
            }
            continue;
        }
        let entry = Entry {
            root: root_idx,
            dir: id,
            dir_rel: rel,
            dirfd,
            name,
            kind,
        };
        if let Some(item) = v.entry(&entry) {
            items.push(item);
        }
    }
    subdirs
}

/// The `d_type` equivalent of a mode.
pub fn type_of(mode: u32) -> Type {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => Type::Directory,
        libc::S_IFREG => Type::File,
        libc::S_IFLNK => Type::Symlink,
        libc::S_IFCHR => Type::CharacterDevice,
        libc::S_IFBLK => Type::BlockDevice,
        libc::S_IFIFO => Type::Fifo,
        _ => Type::Socket,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    struct Count {
        files: AtomicU64,
    }
    impl Visitor for Count {
        type Item = PathBuf;
        fn descend(&self, _: usize, rel: &Path) -> bool {
            rel != Path::new("skip")
        }
        fn directory(&self, _: usize, _: u32, _: &Path, _: &Stat) -> Option<PathBuf> {
            None
        }
        fn entry(&self, e: &Entry<'_>) -> Option<PathBuf> {
            self.files.fetch_add(1, Ordering::Relaxed);
            Some(e.rel())
        }
        fn error(&self, path: PathBuf, err: std::io::Error) {
            panic!("{}: {err}", path.display());
        }
    }

    #[test]
    fn walks_everything_once_and_honours_descend() {
        let t = tempfile::tempdir().expect("tempdir");
        for d in ["a/b/c", "skip/x", "d"] {
            std::fs::create_dir_all(t.path().join(d)).expect("mkdir");
        }
        for f in ["a/1", "a/b/2", "a/b/c/3", "skip/x/4", "d/5", "6"] {
            std::fs::write(t.path().join(f), f).expect("write");
        }
        std::os::unix::fs::symlink("/etc", t.path().join("a/link")).expect("symlink");
        let roots = [Root::open(t.path()).expect("open")];
        let v = Count {
            files: AtomicU64::new(0),
        };
        let w = walk(&roots, &v, 3);
        let mut got: Vec<_> = w.items.iter().map(|p| p.display().to_string()).collect();
        got.sort();
        assert_eq!(got, ["6", "a/1", "a/b/2", "a/b/c/3", "a/link", "d/5"]);
        // root, a, a/b, a/b/c, d (skip not opened)
        assert_eq!(w.dirs.len(), 5);
        assert!(w.dirs.iter().all(|d| d.rel != Path::new("skip")));
    }
}
