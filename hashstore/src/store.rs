//! The store: its directory, its lock, its index, and the two ways an object comes to be
//! (hard-linking the file itself, or copying it when it lives on another filesystem).

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use tracing::debug;

use crate::error::{Error, IoContext, Result};
use crate::index::{Index, ObjectRow};
use crate::key::{ContentHash, FileMeta, Key, KeyPolicy, ctime_of, mtime_of};
use crate::layout::{
    FORMAT_FILE, FORMAT_LINE, INDEX_FILE, LOCK_FILE, OBJECTS_DIR, ObjectId, TMP_DIR,
};
use crate::lock::{LockMode, StoreLock, Waited};
use crate::sys::{self, Stat};
use crate::{MARK_XATTR, mark};

/// The most links we give one object inode before starting another one for the same key. ext4
/// allows 65000; staying a little below leaves room for links made outside cowfs.
pub const DEFAULT_MAX_LINKS: u64 = 65000;

/// An open store. Cheap to share between threads (`&Store`); the index behind a mutex serves
/// occasional queries, and bulk writers open their own connection with [`Store::open_index`].
pub struct Store {
    root: PathBuf,
    root_fd: OwnedFd,
    objects_fd: OwnedFd,
    /// `objects/xx`, opened (and created) on first use: an empty store stays small.
    subdir_fds: Vec<OnceLock<OwnedFd>>,
    tmp_fd: OwnedFd,
    dev: u64,
    index: Mutex<Index>,
    lock: StoreLock,
}

/// A file about to become an object: open read-only, with the `stat` it had when it was hashed.
pub struct InsertSource<'a> {
    pub fd: BorrowedFd<'a>,
    /// For messages only.
    pub path: &'a Path,
    pub stat: &'a Stat,
    pub meta: &'a FileMeta,
    pub content: ContentHash,
    pub policy: KeyPolicy,
}

/// What an insert did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// The object now exists with these properties (it was created now, or the file already was
    /// this object).
    New(ObjectRow),
    /// Another inode already is object `ObjectId`: link to that one instead.
    Exists(ObjectId),
}

/// Why linking an object into a guest directory failed in a way the caller can act on.
#[derive(Debug)]
pub enum LinkFailure {
    /// The object file is gone (a collector took it): look it up again or insert anew.
    Vanished,
    /// The object inode has as many links as the filesystem allows: use or start another one.
    TooManyLinks,
    /// The temporary name is taken: pick another.
    NameTaken,
    /// Anything else.
    Io(io::Error),
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A name no other process or thread uses at the same time (pid + counter).
pub fn unique_tmp_name(prefix: &str) -> String {
    static PID: OnceLock<u32> = OnceLock::new();
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}.{n}", PID.get_or_init(std::process::id))
}

fn check_format(root: &Path) -> Result<()> {
    let path = root.join(FORMAT_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Error::NotAStore(root.to_path_buf()));
        }
        Err(e) => return Err(e).at(&path),
    };
    let first = text.lines().next().unwrap_or("").trim();
    if first != FORMAT_LINE {
        return Err(Error::FormatVersion {
            path,
            found: first.to_string(),
            expected: FORMAT_LINE.to_string(),
        });
    }
    Ok(())
}

/// Writes `name` in directory `dir` atomically: temp file, fsync, rename, fsync of the directory.
pub(crate) fn write_atomic(dir: &Path, name: &str, content: &[u8]) -> Result<()> {
    write_atomic_then(dir, name, content, || Ok(()))
}

/// [`write_atomic`], running `published` as soon as the file is visible under its name (before
/// the directory is fsynced, which can take a while on a busy disk).
fn write_atomic_then(
    dir: &Path,
    name: &str,
    content: &[u8],
    published: impl FnOnce() -> Result<()>,
) -> Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!(".{name}.{}", unique_tmp_name("tmp.")));
    let target = dir.join(name);
    let mut f = fs::File::create(&tmp).at(&tmp)?;
    f.write_all(content).at(&tmp)?;
    f.sync_all().at(&tmp)?;
    fs::rename(&tmp, &target).at(&target)?;
    published()?;
    fs::File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

/// How long `init` waits for another process that is creating the same store, and how long a
/// shared open waits when it finds a store being created (a lock file but no format file yet).
/// Creating a store takes milliseconds; the margin is for a loaded machine with slow fsyncs.
const CREATION_PATIENCE: Duration = Duration::from_secs(30);

/// How long a shared open of a complete store waits for an exclusive holder before reporting
/// `Locked`: ample for an `init` that has just published the format file to turn its exclusive
/// hold into a shared one, short enough that a running fsck is reported promptly.
const OPEN_PATIENCE: Duration = Duration::from_secs(2);

/// Refuses to make a store of a directory that holds anything but a lock file (which a
/// concurrent or failed `init` leaves).
fn ensure_empty_but_lock(root: &Path) -> Result<()> {
    for entry in fs::read_dir(root).at(root)? {
        let entry = entry.at(root)?;
        if entry.file_name() != LOCK_FILE {
            return Err(Error::InvalidInput(format!(
                "{} exists, is not empty and is not a cowfs store; refusing to initialise it",
                root.display()
            )));
        }
    }
    Ok(())
}

impl Store {
    /// Creates a store at `root` (the directory may exist if it is empty), or opens it if it
    /// already is one. Returns the store and whether it was created now.
    ///
    /// Safe to run concurrently for the same `root` (parallel `vhashify` runs on a new store):
    /// the creator holds the lock exclusively from before it checks the directory until the
    /// format file is in place, and everyone else waits for it and then opens the complete
    /// store.
    pub fn init(root: &Path) -> Result<(Store, bool)> {
        let format = root.join(FORMAT_FILE);
        if format.exists() {
            return Ok((Store::open(root)?, false));
        }
        fs::create_dir_all(root).at(root)?;
        let waited =
            StoreLock::wait_for(root, LockMode::Exclusive, true, CREATION_PATIENCE, || {
                format.exists()
            })?;
        let mut lock = match waited {
            Waited::Held(lock) => lock,
            // Completed by another process while we waited, which may now use it (holding the
            // lock shared, so we would never get it exclusively): open it like anybody else.
            Waited::Stopped | Waited::NoLockFile => return Ok((Store::open(root)?, false)),
        };
        // Looked at again with the lock held: the other creator may have finished between our
        // first look and our taking the lock.
        if format.exists() {
            lock.downgrade(root, CREATION_PATIENCE)?;
            return Ok((Store::open_locked(root, lock)?, false));
        }
        ensure_empty_but_lock(root)?;
        let objects = root.join(OBJECTS_DIR);
        fs::create_dir_all(&objects).at(&objects)?;
        let tmp = root.join(TMP_DIR);
        fs::create_dir_all(&tmp).at(&tmp)?;
        drop(Index::create(&root.join(INDEX_FILE))?);
        // The format file comes last: its presence means "a complete store". Once it is visible,
        // waiting openers may go ahead, so the exclusive hold ends right then.
        write_atomic_then(
            root,
            FORMAT_FILE,
            format!("{FORMAT_LINE}\n").as_bytes(),
            || lock.downgrade(root, CREATION_PATIENCE),
        )?;
        debug!(store = %root.display(), "initialised store");
        Ok((Store::open_locked(root, lock)?, true))
    }

    /// Opens an existing store with a shared lock (inserting, collecting and reading).
    pub fn open(root: &Path) -> Result<Store> {
        Store::open_with(root, LockMode::Shared)
    }

    /// Opens an existing store holding its lock in `mode`.
    ///
    /// A shared open waits briefly for an exclusive holder, and for as long as a store is being
    /// created (its creator holds the lock exclusively until the format file exists); an
    /// exclusive open never waits.
    pub fn open_with(root: &Path, mode: LockMode) -> Result<Store> {
        let (patience, creation_patience) = match mode {
            LockMode::Shared => (OPEN_PATIENCE, CREATION_PATIENCE),
            LockMode::Exclusive => (Duration::ZERO, Duration::ZERO),
        };
        let lock = match check_format(root) {
            Ok(()) => StoreLock::wait_for(root, mode, true, patience, || false)?,
            // No format file but a lock file: perhaps an init at work. Its lock is exclusive
            // until the store is complete; the lock file is not created here, so opening a
            // directory that is not a store leaves it as it was.
            Err(Error::NotAStore(_)) => {
                StoreLock::wait_for(root, mode, false, creation_patience, || false)?
            }
            Err(e) => return Err(e),
        };
        match lock {
            Waited::Held(lock) => Store::open_locked(root, lock),
            Waited::NoLockFile => Err(Error::NotAStore(root.to_path_buf())),
            Waited::Stopped => Err(Error::Locked(root.to_path_buf())),
        }
    }

    /// Opens the store once its lock is held: the format is checked (again: it may have been
    /// written, or replaced, while we waited for the lock) and the index opened.
    fn open_locked(root: &Path, lock: StoreLock) -> Result<Store> {
        check_format(root)?;
        let index = Index::open(&root.join(INDEX_FILE))?;
        Store::assemble(root, lock, index)
    }

    /// Builds a store from its parts once the lock is held and the index is open (fsck creates
    /// the index itself).
    pub(crate) fn assemble(root: &Path, lock: StoreLock, index: Index) -> Result<Store> {
        let root = fs::canonicalize(root).at(root)?;
        let root_fd = sys::open_dir_path(&root).at(&root)?;
        let dev = fs::metadata(&root).at(&root)?.dev();
        let objects = root.join(OBJECTS_DIR);
        fs::create_dir_all(&objects).at(&objects)?;
        let objects_fd = sys::open_dir_path(&objects).at(&objects)?;
        let subdir_fds = (0..256).map(|_| OnceLock::new()).collect();
        let tmp = root.join(TMP_DIR);
        fs::create_dir_all(&tmp).at(&tmp)?;
        let tmp_fd = sys::open_dir_path(&tmp).at(&tmp)?;
        Ok(Store {
            root,
            root_fd,
            objects_fd,
            subdir_fds,
            tmp_fd,
            dev,
            index: Mutex::new(index),
            lock,
        })
    }

    /// The store directory (canonical).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The device the store lives on: only files on it can be linked.
    pub fn dev(&self) -> u64 {
        self.dev
    }

    /// The lock mode this handle holds.
    pub fn lock_mode(&self) -> LockMode {
        self.lock.mode()
    }

    /// The store directory as an fd.
    pub fn root_fd(&self) -> BorrowedFd<'_> {
        self.root_fd.as_fd()
    }

    /// `STORE/tmp` as an fd.
    pub(crate) fn tmp_fd(&self) -> BorrowedFd<'_> {
        self.tmp_fd.as_fd()
    }

    /// The fan-out directory `objects/xx` that holds objects of `key` (created if needed).
    pub fn subdir_fd(&self, key: &Key) -> io::Result<BorrowedFd<'_>> {
        self.subdir_fd_at(key.0[0] as usize)
    }

    /// The fan-out directory with index `byte` (0..=255), created on first use.
    pub fn subdir_fd_at(&self, byte: usize) -> io::Result<BorrowedFd<'_>> {
        let cell = &self.subdir_fds[byte];
        if let Some(fd) = cell.get() {
            return Ok(fd.as_fd());
        }
        let name = format!("{byte:02x}");
        match nix::sys::stat::mkdirat(
            self.objects_fd.as_fd(),
            name.as_str(),
            Mode::from_bits_truncate(0o755),
        ) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(e.into()),
        }
        let fd = sys::open_beneath(
            self.objects_fd.as_fd(),
            Path::new(&name),
            OFlag::O_PATH | OFlag::O_DIRECTORY,
        )?;
        // Another thread may have won the race; its fd is as good as ours.
        let _ = cell.set(fd);
        cell.get()
            .map(AsFd::as_fd)
            .ok_or_else(|| io::Error::other("fan-out directory handle vanished"))
    }

    /// Absolute path of an object file.
    pub fn object_path(&self, id: &ObjectId) -> PathBuf {
        self.root.join(OBJECTS_DIR).join(id.rel_path())
    }

    /// The shared index connection.
    pub fn index(&self) -> MutexGuard<'_, Index> {
        // A poisoned mutex only means another thread panicked mid-query; SQLite kept its own
        // consistency, so go on with the connection.
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new connection to the index, for a thread that writes in bulk.
    pub fn open_index(&self) -> Result<Index> {
        Index::open(&self.root.join(INDEX_FILE))
    }

    /// The objects with this key, as the index knows them.
    pub fn lookup(&self, key: &Key) -> Result<Vec<ObjectRow>> {
        self.index().objects_by_key(key)
    }

    /// The objects a file of `size` bytes could be unified with (a scan of the index: for
    /// occasional queries; vhashify reads every row once instead).
    pub fn candidates_by_size(&self, size: u64) -> Result<Vec<ObjectRow>> {
        self.index().objects_by_size(size)
    }

    /// `lstat` of an object file; `None` if it does not exist.
    pub fn stat_object(&self, id: &ObjectId) -> io::Result<Option<Stat>> {
        match sys::lstat_at(self.subdir_fd(&id.key)?, &id.file_name()) {
            Ok(st) => Ok(Some(st)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Opens an object for reading.
    pub fn open_object(&self, id: &ObjectId) -> Result<OwnedFd> {
        self.subdir_fd(&id.key)
            .and_then(|d| sys::open_read_at(d, &id.file_name()))
            .at(self.object_path(id))
    }

    /// Makes `src` object `id` without copying: sets the mark on the inode, hard-links it into
    /// `objects/`, then checks that the file did not change since it was hashed. While this runs
    /// the file holds a read lease, so nobody can open it for writing; if somebody already has
    /// it open for writing it cannot become an immutable object and `Error::Busy` is returned.
    pub fn insert_by_link(&self, src: &InsertSource<'_>, seq: u32) -> Result<Inserted> {
        if src.stat.st_dev != self.dev {
            return Err(Error::CrossDevice {
                path: src.path.to_path_buf(),
                store: self.root.clone(),
            });
        }
        let key = src.meta.key(src.policy, &src.content);
        let id = ObjectId { key, seq };
        if !sys::take_read_lease(src.fd).at(src.path)? {
            return Err(Error::Busy(src.path.to_path_buf()));
        }
        let result = self.link_leased(src, id);
        sys::release_lease(src.fd);
        result
    }

    fn link_leased(&self, src: &InsertSource<'_>, id: ObjectId) -> Result<Inserted> {
        let had_mark = mark::read_mark(src.fd).at(src.path)? == Some(id.key);
        if !had_mark {
            mark::set_mark(src.fd, &id.key).at(src.path)?;
        }
        let undo_mark = || {
            if !had_mark {
                let _ = mark::remove_mark(src.fd);
            }
        };
        let subdir = self.subdir_fd(&id.key).at(self.object_path(&id))?;
        let name = id.file_name();
        match sys::link_fd(src.fd, subdir, &name) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                let existing = sys::lstat_at(subdir, &name).ok();
                if existing
                    .is_some_and(|st| st.st_ino == src.stat.st_ino && st.st_dev == src.stat.st_dev)
                {
                    return Ok(Inserted::New(self.row_for(id, src, src.stat)));
                }
                undo_mark();
                return Ok(Inserted::Exists(id));
            }
            Err(e) if e.raw_os_error() == Some(libc::EMLINK) => {
                undo_mark();
                return Err(Error::TooManyLinks(src.path.to_path_buf()));
            }
            Err(e) => {
                undo_mark();
                return Err(e).at(self.object_path(&id));
            }
        }
        let after = sys::fstat(src.fd).at(src.path)?;
        if after.st_size != src.stat.st_size
            || mtime_of(&after) != mtime_of(src.stat)
            || after.st_mode != src.stat.st_mode
            || after.st_uid != src.stat.st_uid
            || after.st_gid != src.stat.st_gid
        {
            // Written to between the hash and the link: it must not stay an object.
            if sys::lstat_at(subdir, &name).is_ok_and(|st| st.st_ino == src.stat.st_ino) {
                let _ = sys::unlink_at(subdir, &name);
            }
            undo_mark();
            return Err(Error::Changed(src.path.to_path_buf()));
        }
        debug!(object = %id, path = %src.path.display(), "linked file as object");
        Ok(Inserted::New(self.row_for(id, src, &after)))
    }

    fn row_for(&self, id: ObjectId, src: &InsertSource<'_>, st: &Stat) -> ObjectRow {
        ObjectRow::new(id, src.meta, st, src.content, src.policy.ignore_mtime)
    }

    /// Makes a copy of `src` object `id`: content (hashed while copying and compared with
    /// `src.content`), owner, xattrs, mode, mtime and the mark are set on an unnamed temporary
    /// file in `STORE/tmp`, which is fsynced and only then linked into `objects/` — so an object
    /// is either complete or absent, even if the process is killed.
    pub fn insert_by_copy(&self, src: &InsertSource<'_>, seq: u32) -> Result<Inserted> {
        let key = src.meta.key(src.policy, &src.content);
        let id = ObjectId { key, seq };
        if self.stat_object(&id).at(self.object_path(&id))?.is_some() {
            return Ok(Inserted::Exists(id));
        }
        let tmp_dir = self.root.join(TMP_DIR);
        let (tmp, tmp_name) = match sys::open_tmpfile(self.tmp_fd()) {
            Ok(fd) => (fd, None),
            // Filesystems without O_TMPFILE: a named temporary file, renamed without replacing.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP) | Some(libc::EISDIR)
                ) =>
            {
                let name = unique_tmp_name("ins.");
                let fd = nix::fcntl::openat(
                    self.tmp_fd(),
                    name.as_str(),
                    OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .at(tmp_dir.join(&name))?;
                (fd, Some(name))
            }
            Err(e) => return Err(e).at(&tmp_dir),
        };
        let cleanup = |name: &Option<String>| {
            if let Some(n) = name {
                let _ = sys::unlink_at(self.tmp_fd(), OsStr::new(n));
            }
        };
        let result = self.fill_copy(src, tmp.as_fd(), &id);
        let linked = result.and_then(|()| match &tmp_name {
            None => match self
                .subdir_fd(&key)
                .and_then(|d| sys::link_fd(tmp.as_fd(), d, &id.file_name()))
            {
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
                r => r.map(|()| true).at(self.object_path(&id)),
            },
            Some(name) => match self.subdir_fd(&key).and_then(|d| {
                sys::rename_noreplace(self.tmp_fd(), OsStr::new(name), d, &id.file_name())
            }) {
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
                r => r.map(|()| true).at(self.object_path(&id)),
            },
        });
        match linked {
            Ok(true) => {}
            Ok(false) => {
                cleanup(&tmp_name);
                return Ok(Inserted::Exists(id));
            }
            Err(e) => {
                cleanup(&tmp_name);
                return Err(e);
            }
        }
        let subdir_path = self.root.join(OBJECTS_DIR).join(id.subdir());
        fs::File::open(&subdir_path)
            .and_then(|d| d.sync_all())
            .at(&subdir_path)?;
        let st = sys::fstat(tmp.as_fd()).at(self.object_path(&id))?;
        debug!(object = %id, path = %src.path.display(), "copied file as object");
        Ok(Inserted::New(self.row_for(id, src, &st)))
    }

    fn fill_copy(&self, src: &InsertSource<'_>, tmp: BorrowedFd<'_>, id: &ObjectId) -> Result<()> {
        let tmp_path = self.root.join(TMP_DIR);
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut offset: i64 = 0;
        loop {
            let n = nix::sys::uio::pread(src.fd, &mut buf, offset).at(src.path)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            sys::write_all(tmp, &buf[..n]).at(&tmp_path)?;
            offset += n as i64;
        }
        if offset as u64 != src.meta.size
            || ContentHash(*hasher.finalize().as_bytes()) != src.content
        {
            return Err(Error::Changed(src.path.to_path_buf()));
        }
        let meta = src.meta;
        // Order matters: chown clears set-id bits and capabilities, chmod may rewrite the ACL
        // mask, and a write would clear the capability again; the mtime goes last.
        nix::unistd::fchown(
            tmp,
            Some(nix::unistd::Uid::from_raw(meta.uid)),
            Some(nix::unistd::Gid::from_raw(meta.gid)),
        )
        .at(&tmp_path)?;
        let is_cap = |n: &[u8]| n == b"security.capability";
        for (name, value) in meta.xattrs.iter().filter(|(n, _)| !is_cap(n)) {
            sys::fsetxattr(tmp, name, value).at(&tmp_path)?;
        }
        nix::sys::stat::fchmod(tmp, Mode::from_bits_truncate(meta.mode & 0o7777)).at(&tmp_path)?;
        for (name, value) in meta.xattrs.iter().filter(|(n, _)| is_cap(n)) {
            sys::fsetxattr(tmp, name, value).at(&tmp_path)?;
        }
        sys::fsetxattr(tmp, MARK_XATTR.as_bytes(), &id.key.0).at(&tmp_path)?;
        let m = (meta.mtime.sec, meta.mtime.nsec);
        sys::set_times(tmp, m, m).at(&tmp_path)?;
        sys::fsync(tmp).at(&tmp_path)
    }

    /// Inserts `src` as object `seq` of its key by link when it is on the store's filesystem,
    /// by copy otherwise.
    pub fn insert(&self, src: &InsertSource<'_>, seq: u32) -> Result<Inserted> {
        if src.stat.st_dev == self.dev {
            self.insert_by_link(src, seq)
        } else {
            self.insert_by_copy(src, seq)
        }
    }

    /// Hard-links object `id` as `dir/name` and checks that the new link really is the object
    /// still in the store (a collector may have moved it aside between our lookup and the link;
    /// then the new link is removed and `Vanished` returned). `expected_ino` is the object's
    /// inode if the caller knows it (one `stat` instead of two); 0 if not.
    pub fn link_object(
        &self,
        id: &ObjectId,
        expected_ino: u64,
        dir: BorrowedFd<'_>,
        name: &OsStr,
    ) -> std::result::Result<(), LinkFailure> {
        let subdir = self.subdir_fd(&id.key).map_err(LinkFailure::Io)?;
        let obj_name = id.file_name();
        if let Err(e) = sys::link_at(subdir, &obj_name, dir, name) {
            return Err(match e.raw_os_error() {
                Some(libc::ENOENT) => LinkFailure::Vanished,
                Some(libc::EMLINK) => LinkFailure::TooManyLinks,
                Some(libc::EEXIST) => LinkFailure::NameTaken,
                _ => LinkFailure::Io(e),
            });
        }
        let expected = if expected_ino != 0 {
            Some(expected_ino)
        } else {
            sys::lstat_at(dir, name).ok().map(|st| st.st_ino)
        };
        match sys::lstat_at(subdir, &obj_name) {
            Ok(st) if Some(st.st_ino) == expected => Ok(()),
            _ => {
                let _ = sys::unlink_at(dir, name);
                Err(LinkFailure::Vanished)
            }
        }
    }

    /// Adds rows to the index (one transaction).
    pub fn record(&self, rows: &[ObjectRow]) -> Result<()> {
        self.index().put_objects(rows)
    }

    /// The object row of an inode found in the tree (fsck and stats use this when the index has
    /// no row): metadata from the inode, content hashed now.
    pub(crate) fn describe_object(
        &self,
        id: ObjectId,
        fd: BorrowedFd<'_>,
        content: ContentHash,
    ) -> Result<(ObjectRow, FileMeta)> {
        let (meta, st) = FileMeta::from_fd(fd).at(self.object_path(&id))?;
        let ignore_mtime = meta.key(
            KeyPolicy {
                ignore_mtime: false,
            },
            &content,
        ) != id.key
            && meta.key(KeyPolicy { ignore_mtime: true }, &content) == id.key;
        let row = ObjectRow::new(id, &meta, &st, content, ignore_mtime);
        Ok((row, meta))
    }
}

/// Whether two `stat`s describe the same, unchanged file content: same inode, size, mtime and
/// ctime. (A link or an xattr change also moves the ctime; callers that caused one compare
/// without it.)
pub fn unchanged(a: &Stat, b: &Stat) -> bool {
    a.st_ino == b.st_ino
        && a.st_dev == b.st_dev
        && a.st_size == b.st_size
        && mtime_of(a) == mtime_of(b)
        && ctime_of(a) == ctime_of(b)
}

/// Whether `st` still matches the metadata recorded for an object (what vhashify trusts on a
/// re-run instead of hashing again).
pub fn matches_row(st: &Stat, row: &ObjectRow) -> bool {
    st.st_ino == row.ino
        && st.st_dev == row.dev
        && st.st_size as u64 == row.size
        && st.st_mode == row.mode
        && st.st_uid == row.uid
        && st.st_gid == row.gid
        && (row.ignore_mtime || mtime_of(st) == row.mtime)
}
