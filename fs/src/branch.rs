//! A branch: one directory tree of the union, reached only through the fd of its root.
//!
//! Every path below a branch root is opened with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV)` and `O_NOFOLLOW`: the kernel
//! resolves guest symlinks at the mount, the daemon never follows one, never leaves the branch
//! through `..`, and never crosses into another mount (such as its own mountpoint). Entries are
//! then addressed as (directory fd, single name) with the `*at` syscalls.

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

use crate::attr::{FileKind, Stat};
use crate::sys::{self, XattrTarget};
use crate::union::BranchFs;
use crate::whiteout;

/// Whether a branch receives writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BranchMode {
    Ro,
    Rw,
}

impl fmt::Display for BranchMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BranchMode::Ro => "ro",
            BranchMode::Rw => "rw",
        })
    }
}

impl FromStr for BranchMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ro" => Ok(BranchMode::Ro),
            "rw" => Ok(BranchMode::Rw),
            other => Err(format!("unknown branch mode '{other}' (expected ro or rw)")),
        }
    }
}

/// Why a branch cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BranchError {
    #[error("branch {0} does not exist")]
    Missing(PathBuf),
    #[error("branch {0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("cannot open branch {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("work directory {path} of branch {branch}: {source}")]
    WorkDir {
        branch: PathBuf,
        path: PathBuf,
        source: io::Error,
    },
    #[error("work directory {work} is not on the same filesystem as branch {branch}")]
    WorkDirDevice { branch: PathBuf, work: PathBuf },
}

/// Name of the private work directory cowfs keeps at the root of a writable branch (unless an
/// overlayfs-style `workdir=` is given). Its prefix hides it from the mount.
pub const WORK_DIR_NAME: &str = ".cowfs.tmp.work";

/// A branch: its canonical path, its mode, and the descriptor every access goes through.
#[derive(Debug)]
pub struct Branch {
    path: PathBuf,
    mode: BranchMode,
    root: OwnedFd,
    dev: u64,
    /// Where copy-ups and creations are staged before their atomic rename (writable only).
    work: Option<OwnedFd>,
}

const RESOLVE: ResolveFlag = ResolveFlag::RESOLVE_BENEATH
    .union(ResolveFlag::RESOLVE_NO_MAGICLINKS)
    .union(ResolveFlag::RESOLVE_NO_SYMLINKS)
    .union(ResolveFlag::RESOLVE_NO_XDEV);

/// Opens `rel` below `dir` without following any symlink or leaving `dir`'s tree.
pub fn open_beneath(
    dir: BorrowedFd<'_>,
    rel: &Path,
    flags: OFlag,
    mode: Mode,
) -> io::Result<OwnedFd> {
    let rel: &Path = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let how = OpenHow::new()
        .flags(flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .mode(mode)
        .resolve(RESOLVE);
    let mut attempts = 0;
    loop {
        match nix::fcntl::openat2(dir, rel, how) {
            Ok(fd) => return Ok(fd),
            // A concurrent rename or mount made the kernel give up on a safe walk: retry.
            Err(nix::errno::Errno::EAGAIN) if attempts < 16 => attempts += 1,
            Err(e) => return Err(e.into()),
        }
    }
}

impl Branch {
    /// Opens branch `path`. A writable branch gets a work directory: `workdir` if given (it
    /// must be on the branch's filesystem), otherwise `WORK_DIR_NAME` at the branch root. Any
    /// leftover from a killed daemon in the work directory is removed.
    pub fn open(
        path: &Path,
        mode: BranchMode,
        workdir: Option<&Path>,
    ) -> Result<Branch, BranchError> {
        let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => BranchError::Missing(path.to_path_buf()),
            _ => BranchError::Open {
                path: path.to_path_buf(),
                source: e,
            },
        })?;
        if !meta.is_dir() {
            return Err(BranchError::NotADirectory(path.to_path_buf()));
        }
        let canonical = path.canonicalize().map_err(|source| BranchError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let root = nix::fcntl::open(
            &canonical,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| BranchError::Open {
            path: canonical.clone(),
            source: e.into(),
        })?;
        let dev = sys::fstat(root.as_fd())
            .map_err(|source| BranchError::Open {
                path: canonical.clone(),
                source,
            })?
            .dev;
        let work = match mode {
            BranchMode::Ro => None,
            BranchMode::Rw => Some(open_work_dir(&canonical, root.as_fd(), dev, workdir)?),
        };
        Ok(Branch {
            path: canonical,
            mode,
            root,
            dev,
            work,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn mode(&self) -> BranchMode {
        self.mode
    }

    pub fn is_writable(&self) -> bool {
        self.mode == BranchMode::Rw
    }

    /// Device of the branch root (all of a branch must live on it: walks never cross mounts).
    pub fn dev(&self) -> u64 {
        self.dev
    }

    pub fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// The work directory of a writable branch.
    pub fn work_dir(&self) -> Option<BorrowedFd<'_>> {
        self.work.as_ref().map(|w| w.as_fd())
    }

    /// Opens `rel` (relative to the branch root; empty for the root) with `flags`.
    pub fn open_at(&self, rel: &Path, flags: OFlag) -> io::Result<OwnedFd> {
        open_beneath(self.root(), rel, flags, Mode::empty())
    }

    /// Opens directory `rel` as an `O_PATH` handle for `*at` calls.
    pub fn open_dir(&self, rel: &Path) -> io::Result<OwnedFd> {
        self.open_at(rel, OFlag::O_PATH | OFlag::O_DIRECTORY)
    }

    /// Like [`Branch::open_dir`], with "absent or not a directory" as `None`.
    pub fn try_open_dir(&self, rel: &Path) -> io::Result<Option<OwnedFd>> {
        match self.open_dir(rel) {
            Ok(fd) => Ok(Some(fd)),
            Err(e) if sys::is_absent(&e) || e.raw_os_error() == Some(libc::EXDEV) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn open_work_dir(
    branch: &Path,
    root: BorrowedFd<'_>,
    dev: u64,
    workdir: Option<&Path>,
) -> Result<OwnedFd, BranchError> {
    let werr = |path: &Path, source: io::Error| BranchError::WorkDir {
        branch: branch.to_path_buf(),
        path: path.to_path_buf(),
        source,
    };
    let (fd, path) = match workdir {
        Some(w) => {
            std::fs::create_dir_all(w).map_err(|e| werr(w, e))?;
            let fd = nix::fcntl::open(
                w,
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| werr(w, e.into()))?;
            (fd, w.to_path_buf())
        }
        None => {
            let name = Path::new(WORK_DIR_NAME);
            match nix::sys::stat::mkdirat(root, name, Mode::from_bits_truncate(0o700)) {
                Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                Err(e) => return Err(werr(&branch.join(name), e.into())),
            }
            let fd = open_beneath(
                root,
                name,
                OFlag::O_PATH | OFlag::O_DIRECTORY,
                Mode::empty(),
            )
            .map_err(|e| werr(&branch.join(name), e))?;
            (fd, branch.join(name))
        }
    };
    let st = sys::fstat(fd.as_fd()).map_err(|e| werr(&path, e))?;
    if st.dev != dev {
        return Err(BranchError::WorkDirDevice {
            branch: branch.to_path_buf(),
            work: path,
        });
    }
    clean_work_dir(fd.as_fd()).map_err(|e| werr(&path, e))?;
    Ok(fd)
}

/// Removes everything cowfs left in a work directory (a daemon killed mid copy-up). Only
/// `.cowfs.tmp.` entries are touched: a user-supplied `workdir=` may hold other things.
fn clean_work_dir(work: BorrowedFd<'_>) -> io::Result<()> {
    for (name, _) in sys::read_dir(work)? {
        if whiteout::is_hidden(&name)
            && !name
                .as_encoded_bytes()
                .starts_with(whiteout::WHITEOUT_PREFIX)
        {
            remove_tree_at(work, &name)?;
        }
    }
    Ok(())
}

/// Removes `name` in `dir`, recursively if it is a directory, never following a symlink.
pub fn remove_tree_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    use nix::unistd::{UnlinkatFlags, unlinkat};
    let st = match sys::try_stat_at(dir, name)? {
        Some(st) => st,
        None => return Ok(()),
    };
    if st.is_dir() {
        let sub = open_beneath(
            dir,
            Path::new(name),
            OFlag::O_PATH | OFlag::O_DIRECTORY,
            Mode::empty(),
        )?;
        for (child, _) in sys::read_dir(sub.as_fd())? {
            remove_tree_at(sub.as_fd(), &child)?;
        }
        unlinkat(dir, name, UnlinkatFlags::RemoveDir)?;
    } else {
        unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)?;
    }
    Ok(())
}

/// The branches of a mount at one moment, numbered left (0, highest priority) to right.
///
/// A new set (with a new `epoch`) replaces the old one when branches are added or removed;
/// everything cached from a set remembers its epoch and is recomputed when it differs.
#[derive(Debug)]
pub struct BranchSet {
    branches: Vec<Arc<Branch>>,
    epoch: u64,
}

impl BranchSet {
    pub fn new(branches: Vec<Arc<Branch>>, epoch: u64) -> BranchSet {
        BranchSet { branches, epoch }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn len(&self) -> usize {
        self.branches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.branches.is_empty()
    }

    pub fn get(&self, index: usize) -> io::Result<&Branch> {
        self.branches
            .get(index)
            .map(|b| b.as_ref())
            .ok_or_else(|| sys::err(libc::ESTALE))
    }

    pub fn branches(&self) -> &[Arc<Branch>] {
        &self.branches
    }

    /// The branch that receives every write: the leftmost writable one.
    pub fn write_branch(&self) -> Option<usize> {
        self.branches.iter().position(|b| b.is_writable())
    }
}

/// The real branches, seen through the [`BranchFs`] interface of the union rules.
pub struct RealBranches<'a>(pub &'a BranchSet);

/// [`RealBranches`] with the layers of one directory opened once: the lookups of a listing's
/// entries are many lookups in the same directory, and each would otherwise walk the path from
/// every branch root again.
pub struct PinnedDir {
    set: Arc<BranchSet>,
    path: PathBuf,
    layers: Vec<(usize, Option<Arc<OwnedFd>>)>,
}

impl PinnedDir {
    pub fn open(set: Arc<BranchSet>, path: &Path, layers: &[usize]) -> io::Result<PinnedDir> {
        let real = RealBranches(&set);
        let layers = layers
            .iter()
            .map(|&b| Ok((b, real.open_dir(b, path)?.map(|d| d.fd))))
            .collect::<io::Result<_>>()?;
        Ok(PinnedDir {
            set,
            path: path.to_path_buf(),
            layers,
        })
    }

    pub fn set(&self) -> &BranchSet {
        &self.set
    }
}

impl BranchFs for PinnedDir {
    type Dir = BranchDir;

    fn open_dir(&self, branch: usize, path: &Path) -> io::Result<Option<BranchDir>> {
        if path == self.path
            && let Some((_, fd)) = self.layers.iter().find(|(b, _)| *b == branch)
        {
            return Ok(fd.as_ref().map(|fd| BranchDir {
                branch,
                fd: fd.clone(),
            }));
        }
        RealBranches(&self.set).open_dir(branch, path)
    }

    fn stat_at(&self, dir: &BranchDir, name: &OsStr) -> io::Result<Option<Stat>> {
        RealBranches(&self.set).stat_at(dir, name)
    }

    fn is_opaque(&self, dir: &BranchDir) -> io::Result<bool> {
        RealBranches(&self.set).is_opaque(dir)
    }

    fn is_device_whiteout(&self, dir: &BranchDir, name: &OsStr, st: &Stat) -> io::Result<bool> {
        RealBranches(&self.set).is_device_whiteout(dir, name, st)
    }

    fn read_dir(&self, dir: &BranchDir) -> io::Result<Vec<(std::ffi::OsString, Option<FileKind>)>> {
        RealBranches(&self.set).read_dir(dir)
    }
}

/// A directory of one branch, opened for `*at` calls.
pub struct BranchDir {
    pub branch: usize,
    /// Shared: a listing's lookups all use the directory opened once (a `dup` per lookup
    /// was two system calls per entry on a cold walk).
    pub fd: Arc<OwnedFd>,
}

impl BranchFs for RealBranches<'_> {
    type Dir = BranchDir;

    fn open_dir(&self, branch: usize, path: &Path) -> io::Result<Option<BranchDir>> {
        Ok(self.0.get(branch)?.try_open_dir(path)?.map(|fd| BranchDir {
            branch,
            fd: Arc::new(fd),
        }))
    }

    fn stat_at(&self, dir: &BranchDir, name: &OsStr) -> io::Result<Option<Stat>> {
        sys::try_stat_at(dir.fd.as_fd(), name)
    }

    /// In a read-only branch (an overlayfs layer) every 0/0 device is a whiteout; in a
    /// writable one only those cowfs made, so that guests can still create 0/0 devices.
    fn is_device_whiteout(&self, dir: &BranchDir, name: &OsStr, _st: &Stat) -> io::Result<bool> {
        if !self.0.get(dir.branch)?.is_writable() {
            return Ok(true);
        }
        whiteout::is_marked_device_whiteout(dir.fd.as_fd(), name)
    }

    fn is_opaque(&self, dir: &BranchDir) -> io::Result<bool> {
        if sys::try_stat_at(dir.fd.as_fd(), OsStr::new(whiteout::OPAQUE_MARKER))?.is_some() {
            return Ok(true);
        }
        let value = sys::get_xattr(
            XattrTarget::Fd(dir.fd.as_fd()),
            OsStr::new(whiteout::OVERLAY_OPAQUE_XATTR),
        );
        match value {
            Ok(v) => Ok(v.as_deref() == Some(b"y")),
            // Filesystems without xattr support have no opaque directories of this kind.
            Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn read_dir(&self, dir: &BranchDir) -> io::Result<Vec<(std::ffi::OsString, Option<FileKind>)>> {
        sys::read_dir(dir.fd.as_fd())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn branch_errors_are_clear() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let missing = tmp.path().join("nope");
        let e = Branch::open(&missing, BranchMode::Ro, None).expect_err("missing");
        assert!(matches!(e, BranchError::Missing(_)), "{e}");
        let file = tmp.path().join("file");
        std::fs::write(&file, b"x").expect("write");
        let e = Branch::open(&file, BranchMode::Ro, None).expect_err("file");
        assert!(matches!(e, BranchError::NotADirectory(_)), "{e}");
    }

    #[test]
    fn walks_never_follow_symlinks_or_leave_the_branch() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let outside = tmp.path().join("outside");
        let root = tmp.path().join("branch");
        std::fs::create_dir_all(&outside).expect("mkdir");
        std::fs::create_dir_all(root.join("d")).expect("mkdir");
        std::fs::write(outside.join("secret"), b"s").expect("write");
        symlink(&outside, root.join("escape")).expect("symlink");
        symlink("../outside", root.join("d/up")).expect("symlink");
        let b = Branch::open(&root, BranchMode::Ro, None).expect("branch");
        for rel in [
            "escape/secret",
            "d/up/secret",
            "../outside/secret",
            "escape",
        ] {
            let r = b.open_at(Path::new(rel), OFlag::O_RDONLY);
            assert!(r.is_err(), "{rel} must not resolve");
        }
        // The symlink itself can be opened as a path handle (to read it, never through it).
        assert!(b.open_at(Path::new("escape"), OFlag::O_PATH).is_ok());
        assert!(
            b.try_open_dir(Path::new("escape"))
                .expect("no error")
                .is_none()
        );
    }

    #[test]
    fn writable_branch_gets_a_clean_work_dir() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let work = tmp.path().join(WORK_DIR_NAME);
        std::fs::create_dir_all(work.join(".cowfs.tmp.stale-dir")).expect("mkdir");
        std::fs::write(work.join(".cowfs.tmp.stale"), b"x").expect("write");
        let b = Branch::open(tmp.path(), BranchMode::Rw, None).expect("branch");
        assert!(b.work_dir().is_some());
        assert_eq!(std::fs::read_dir(&work).expect("list").count(), 0);
    }
}
