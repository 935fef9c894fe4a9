//! Mounting a union: checks with clear errors, the FUSE session (multi-threaded, one cloned
//! /dev/fuse per thread), the thread that forwards cache invalidations to the kernel, the
//! control socket, clean unmounting on SIGTERM/SIGINT, and `unmount` for `cowfs umount`.
//!
//! Use [`Daemon::mount`] then [`Daemon::serve`] (blocks until unmounted: what the `cowfs mount`
//! daemon does), or [`Daemon::spawn`] for a mount served by background threads of the calling
//! process (tests, embedding); the returned [`MountHandle`] unmounts when dropped.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{INodeNo, MountOption, SessionACL};
use nix::sys::signal::{SigSet, Signal};

use crate::branch::{Branch, BranchError};
use crate::control::ControlServer;
use crate::fuse::FuseAdapter;
use crate::options::MountOptions;
use crate::unionfs::{FsConfig, Invalidation, UnionFs};

/// The filesystem type cowfs mounts show in /proc/mounts (`fuse.` + subtype).
pub const FSTYPE: &str = "fuse.cowfs";

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error(transparent)]
    Branch(#[from] BranchError),
    #[error("mountpoint {0} does not exist")]
    MountpointMissing(PathBuf),
    #[error("mountpoint {0} is not a directory")]
    MountpointNotDir(PathBuf),
    #[error("mountpoint {path} is busy: {what} is already mounted there (unmount it first)")]
    MountpointBusy { path: PathBuf, what: String },
    #[error("mountpoint {mountpoint} is inside branch {branch}: the union would contain itself")]
    MountpointInsideBranch {
        mountpoint: PathBuf,
        branch: PathBuf,
    },
    #[error(
        "branch {branch} is inside the mountpoint {mountpoint}: the union would contain itself"
    )]
    BranchInsideMountpoint {
        mountpoint: PathBuf,
        branch: PathBuf,
    },
    #[error("branch {inner} is inside branch {outer}: branches must not overlap")]
    OverlappingBranches { inner: PathBuf, outer: PathBuf },
    #[error("cannot mount at {path}: {source}")]
    Fuse { path: PathBuf, source: io::Error },
    #[error("cannot create the control socket: {0}")]
    Control(io::Error),
    #[error("{path} is not a cowfs mount ({what})")]
    NotCowfs { path: PathBuf, what: String },
    #[error("{0} is busy (files open or a process inside it); close them, or unmount lazily")]
    Busy(PathBuf),
    #[error("cannot unmount {path}: {source}")]
    Unmount { path: PathBuf, source: io::Error },
    #[error("cannot read the mount table: {0}")]
    MountTable(io::Error),
    #[error("the FUSE session failed: {0}")]
    Session(io::Error),
}

/// One line of /proc/self/mountinfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    pub mountpoint: PathBuf,
    pub fstype: String,
    pub source: String,
    /// The device number (major, minor) of the mounted filesystem.
    pub dev: (u32, u32),
}

/// Undoes the octal escapes (`\040`…) of /proc mount tables.
fn unescape_mount_field(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let digit = |c: u8| u32::from(c - b'0');
            let v = digit(b[i + 1]) * 64 + digit(b[i + 2]) * 8 + digit(b[i + 3]);
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// The current mount table of this process' mount namespace.
pub fn mounts() -> io::Result<Vec<MountEntry>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(text.lines().filter_map(parse_mountinfo_line).collect())
}

fn parse_mountinfo_line(line: &str) -> Option<MountEntry> {
    let fields: Vec<&str> = line.split(' ').collect();
    let sep = fields.iter().position(|f| *f == "-")?;
    let (major, minor) = fields.get(2)?.split_once(':')?;
    Some(MountEntry {
        dev: (major.parse().ok()?, minor.parse().ok()?),
        mountpoint: PathBuf::from(OsString::from_vec(unescape_mount_field(fields.get(4)?))),
        fstype: fields.get(sep + 1)?.to_string(),
        source: String::from_utf8_lossy(&unescape_mount_field(fields.get(sep + 2)?)).into_owned(),
    })
}

/// The canonical form of a mountpoint that may be a dead FUSE mount (`ENOTCONN` on any access).
fn canonical_mountpoint(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| {
        let abs = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir().unwrap_or_default().join(path)
        };
        match (abs.parent(), abs.file_name()) {
            (Some(parent), Some(name)) => {
                parent.canonicalize().map(|p| p.join(name)).unwrap_or(abs)
            }
            _ => abs,
        }
    })
}

/// Checks the mountpoint against the branches, returning its canonical path.
fn check_mountpoint(mountpoint: &Path, branches: &[Branch]) -> Result<PathBuf, MountError> {
    let meta = std::fs::metadata(mountpoint).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => MountError::MountpointMissing(mountpoint.to_path_buf()),
        _ => MountError::Fuse {
            path: mountpoint.to_path_buf(),
            source: e,
        },
    })?;
    if !meta.is_dir() {
        return Err(MountError::MountpointNotDir(mountpoint.to_path_buf()));
    }
    let mnt = canonical_mountpoint(mountpoint);
    if let Some(m) = mounts()
        .map_err(MountError::MountTable)?
        .into_iter()
        .find(|m| m.mountpoint == mnt)
    {
        return Err(MountError::MountpointBusy {
            path: mnt,
            what: format!("{} ({})", m.source, m.fstype),
        });
    }
    for (i, b) in branches.iter().enumerate() {
        if mnt.starts_with(b.path()) {
            return Err(MountError::MountpointInsideBranch {
                mountpoint: mnt,
                branch: b.path().to_path_buf(),
            });
        }
        if b.path().starts_with(&mnt) {
            return Err(MountError::BranchInsideMountpoint {
                mountpoint: mnt,
                branch: b.path().to_path_buf(),
            });
        }
        for other in &branches[..i] {
            let (a, c) = (b.path(), other.path());
            if a.starts_with(c) || c.starts_with(a) {
                let (inner, outer) = if a.starts_with(c) { (a, c) } else { (c, a) };
                return Err(MountError::OverlappingBranches {
                    inner: inner.to_path_buf(),
                    outer: outer.to_path_buf(),
                });
            }
        }
    }
    Ok(mnt)
}

fn fuser_config(o: &MountOptions) -> fuser::Config {
    let mut opts = vec![
        MountOption::FSName(o.fsname.clone()),
        // Passed to the kernel, which then lists the mount as `fuse.cowfs`.
        MountOption::CUSTOM("subtype=cowfs".into()),
        // The kernel checks permissions from our attributes, as for any local filesystem.
        MountOption::DefaultPermissions,
        if o.dev {
            MountOption::Dev
        } else {
            MountOption::NoDev
        },
        if o.suid {
            MountOption::Suid
        } else {
            MountOption::NoSuid
        },
    ];
    for (on, opt) in [
        (o.read_only, MountOption::RO),
        (!o.exec, MountOption::NoExec),
        (o.noatime, MountOption::NoAtime),
        (o.sync, MountOption::Sync),
        (o.dirsync, MountOption::DirSync),
    ] {
        if on {
            opts.push(opt);
        }
    }
    let mut config = fuser::Config::default();
    config.mount_options = opts;
    config.acl = if o.allow_other {
        SessionACL::All
    } else {
        SessionACL::RootAndOwner
    };
    config.n_threads = Some(o.threads);
    config.clone_fd = o.clone_fd && o.threads > 1;
    config
}

/// A mounted union, not yet serving requests (they wait in the kernel until it does).
pub struct Daemon {
    fs: Arc<UnionFs>,
    session: fuser::Session<FuseAdapter>,
    mountpoint: PathBuf,
    control: ControlServer,
    invalidator: JoinHandle<()>,
    /// Tells the helper threads (invalidations, signals) that the session is over.
    stop: Arc<AtomicBool>,
    catch_signals: bool,
}

impl Daemon {
    /// Opens the branches, checks the mountpoint and mounts. With `catch_signals`, SIGTERM and
    /// SIGINT are blocked in this thread (and every thread started from now on) and [`serve`]
    /// turns them into a clean unmount.
    ///
    /// [`serve`]: Daemon::serve
    pub fn mount(
        options: &MountOptions,
        mountpoint: &Path,
        catch_signals: bool,
    ) -> Result<Daemon, MountError> {
        if catch_signals {
            // Before any thread exists, so that none of them dies of these signals.
            termination_signals()
                .thread_block()
                .map_err(|e| MountError::Session(e.into()))?;
        }
        raise_open_file_limit();
        if catch_signals {
            // The daemon process, not a library user's thread.
            drop_resource_override();
        }
        let mut branches = Vec::with_capacity(options.branches.len());
        for spec in &options.branches {
            let workdir = if spec.mode == crate::branch::BranchMode::Rw {
                options.workdir.as_deref()
            } else {
                None
            };
            branches.push(Branch::open(&spec.path, spec.mode, workdir)?);
        }
        let mountpoint = check_mountpoint(mountpoint, &branches)?;
        let generation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let config = FsConfig {
            entry_ttl: options.entry_timeout,
            attr_ttl: options.attr_timeout,
            negative_ttl: options.negative_timeout,
            mountpoint: Some(mountpoint.clone()),
            generation,
            read_only: !options.kernel.open,
        };
        let (fs, invalidations) = UnionFs::new(branches, config);
        let control = ControlServer::start(fs.clone(), &mountpoint).map_err(MountError::Control)?;
        let session = fuser::Session::new(
            FuseAdapter::new(fs.clone(), options.kernel),
            &mountpoint,
            &fuser_config(options),
        )
        .map_err(|source| MountError::Fuse {
            path: mountpoint.clone(),
            source,
        })?;
        let notifier = session.notifier();
        let stop = Arc::new(AtomicBool::new(false));
        let invalidator = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("cowfs-invalidate".into())
                .spawn(move || forward_invalidations(&invalidations, &notifier, &stop))
                .map_err(MountError::Session)?
        };
        tracing::info!(mountpoint = %mountpoint.display(), branches = ?fs.branches(), "mounted");
        Ok(Daemon {
            fs,
            session,
            mountpoint,
            control,
            invalidator,
            stop,
            catch_signals,
        })
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    pub fn union(&self) -> &Arc<UnionFs> {
        &self.fs
    }

    /// Serves requests until the union is unmounted (`cowfs umount`, `umount`, or SIGTERM /
    /// SIGINT when signals are caught).
    pub fn serve(self) -> Result<(), MountError> {
        let Daemon {
            fs,
            session,
            mountpoint,
            control,
            invalidator,
            stop,
            catch_signals,
        } = self;
        let signals = if catch_signals {
            let (stop, mnt) = (stop.clone(), mountpoint.clone());
            Some(
                std::thread::Builder::new()
                    .name("cowfs-signals".into())
                    .spawn(move || wait_for_termination(&mnt, &stop))
                    .map_err(MountError::Session)?,
            )
        } else {
            None
        };
        let result = session.run().map_err(MountError::Session);
        stop.store(true, Ordering::SeqCst);
        if let Some(t) = signals {
            let _ = t.join();
        }
        control.stop();
        drop(fs);
        let _ = invalidator.join();
        tracing::info!(mountpoint = %mountpoint.display(), "unmounted");
        result
    }

    /// Serves requests from background threads of this process.
    pub fn spawn(self) -> Result<MountHandle, MountError> {
        let mountpoint = self.mountpoint.clone();
        let thread = std::thread::Builder::new()
            .name("cowfs-session".into())
            .spawn(move || self.serve())
            .map_err(MountError::Session)?;
        Ok(MountHandle {
            mountpoint,
            thread: Some(thread),
        })
    }
}

/// A union served by background threads; unmounted (lazily if busy) when dropped.
pub struct MountHandle {
    mountpoint: PathBuf,
    thread: Option<JoinHandle<Result<(), MountError>>>,
}

impl MountHandle {
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Unmounts and waits for the session to end.
    pub fn unmount(mut self) -> Result<(), MountError> {
        unmount(&self.mountpoint, false)?;
        self.join()
    }

    fn join(&mut self) -> Result<(), MountError> {
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(MountError::Session(io::Error::other(
                "the session thread panicked",
            ))),
            None => Ok(()),
        }
    }
}

impl Drop for MountHandle {
    fn drop(&mut self) {
        if self.thread.is_some() {
            if let Err(e) = unmount(&self.mountpoint, true) {
                tracing::warn!(error = %e, "unmounting on drop failed");
            }
            let _ = self.join();
        }
    }
}

/// Tells the kernel about view changes until `stop` (notifications fail harmlessly once the
/// kernel has let the mount go).
fn forward_invalidations(
    invalidations: &crossbeam::channel::Receiver<Invalidation>,
    notifier: &fuser::Notifier,
    stop: &AtomicBool,
) {
    use crossbeam::channel::RecvTimeoutError;
    loop {
        let inval = match invalidations.recv_timeout(Duration::from_millis(100)) {
            Ok(inval) => inval,
            Err(RecvTimeoutError::Timeout) if !stop.load(Ordering::SeqCst) => continue,
            Err(_) => return,
        };
        let result = match &inval {
            Invalidation::Entry { parent, name } => notifier.inval_entry(INodeNo(*parent), name),
            Invalidation::Inode(id) => notifier.inval_inode(INodeNo(*id), 0, 0),
            Invalidation::Barrier(done) => {
                let _ = done.send(());
                continue;
            }
        };
        if let Err(e) = result {
            tracing::debug!(?inval, error = %e, "kernel cache invalidation failed");
        }
    }
}

/// The daemon writes guests' files as root: without `CAP_SYS_RESOURCE` the kernel holds those
/// writes to disk quotas (the files belong to the guests' users) instead of letting root
/// override them. Dropped from this thread before any other starts, so every thread is
/// without it.
fn drop_resource_override() {
    use caps::{CapSet, Capability};
    for set in [CapSet::Effective, CapSet::Permitted, CapSet::Inheritable] {
        if let Err(e) = caps::drop(None, set, Capability::CAP_SYS_RESOURCE) {
            tracing::warn!(error = %e, ?set, "cannot drop CAP_SYS_RESOURCE");
        }
    }
}

/// Every file open through the mount holds a descriptor in the daemon: allow as many as the
/// hard limit does (a soft limit of 1024 is common).
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(error = %e, soft, hard, "cannot raise the open-file limit");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the open-file limit"),
    }
}

fn termination_signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set
}

/// Waits for SIGTERM/SIGINT (blocked, so they stay pending for us) and unmounts: normally if
/// possible, else lazily (the kernel ends the session once the last user is gone).
fn wait_for_termination(mountpoint: &Path, stop: &AtomicBool) {
    let set = termination_signals();
    let timeout = libc::timespec {
        tv_sec: 0,
        tv_nsec: 100_000_000,
    };
    while !stop.load(Ordering::SeqCst) {
        // SAFETY: `set` is a valid sigset; a null siginfo pointer is allowed.
        let sig = unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &timeout) };
        if sig <= 0 {
            continue;
        }
        tracing::info!(signal = sig, "unmounting on signal");
        let result = unmount(mountpoint, false).or_else(|e| match e {
            MountError::Busy(_) => unmount(mountpoint, true),
            other => Err(other),
        });
        if let Err(e) = result {
            tracing::error!(error = %e, "unmount on signal failed");
        }
    }
}

/// Unmounts the cowfs union at `mountpoint` (refusing anything that is not one).
pub fn unmount(mountpoint: &Path, lazy: bool) -> Result<(), MountError> {
    let mnt = canonical_mountpoint(mountpoint);
    let table = mounts().map_err(MountError::MountTable)?;
    // The last (topmost) mount at this path is the one umount(2) would remove.
    match table.iter().rev().find(|m| m.mountpoint == mnt) {
        None => {
            return Err(MountError::NotCowfs {
                path: mnt,
                what: "nothing is mounted there".into(),
            });
        }
        Some(m) if m.fstype != FSTYPE => {
            return Err(MountError::NotCowfs {
                path: mnt,
                what: format!("it is a {} mount of {}", m.fstype, m.source),
            });
        }
        Some(_) => {}
    }
    let flags = if lazy {
        nix::mount::MntFlags::MNT_DETACH
    } else {
        nix::mount::MntFlags::empty()
    };
    match nix::mount::umount2(mnt.as_os_str(), flags) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EBUSY) => Err(MountError::Busy(mnt)),
        Err(e) => Err(MountError::Unmount {
            path: mnt,
            source: e.into(),
        }),
    }
}

/// Changes a mounted union between read-only and read-write (`mount -o remount,ro`); the
/// daemon keeps serving, the kernel refuses writes while it is read-only.
pub fn remount(mountpoint: &Path, read_only: bool) -> Result<(), MountError> {
    let mnt = canonical_mountpoint(mountpoint);
    let table = mounts().map_err(MountError::MountTable)?;
    match table.iter().rev().find(|m| m.mountpoint == mnt) {
        Some(m) if m.fstype == FSTYPE => {}
        other => {
            return Err(MountError::NotCowfs {
                path: mnt,
                what: other.map_or("nothing is mounted there".into(), |m| {
                    format!("it is a {} mount", m.fstype)
                }),
            });
        }
    }
    let mut flags = nix::mount::MsFlags::MS_REMOUNT;
    if read_only {
        flags |= nix::mount::MsFlags::MS_RDONLY;
    }
    nix::mount::mount(
        None::<&str>,
        mnt.as_os_str(),
        None::<&str>,
        flags,
        None::<&str>,
    )
    .map_err(|e| MountError::Unmount {
        path: mnt,
        source: io::Error::other(format!("remount failed: {e}")),
    })
}

/// Waits until `mountpoint` is (or is no longer) a cowfs mount, up to `timeout`.
pub fn wait_for_mount(mountpoint: &Path, mounted: bool, timeout: Duration) -> bool {
    let mnt = canonical_mountpoint(mountpoint);
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let is = mounts()
            .map(|t| t.iter().any(|m| m.mountpoint == mnt && m.fstype == FSTYPE))
            .unwrap_or(false);
        if is == mounted {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_parse_with_escapes() {
        let line = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - fuse.cowfs my\\040src rw,user_id=0";
        let m = parse_mountinfo_line(line).expect("parse");
        assert_eq!(m.mountpoint, PathBuf::from("/mnt/with space"));
        assert_eq!(m.fstype, "fuse.cowfs");
        assert_eq!(m.source, "my src");
        assert_eq!(m.dev, (98, 0));
        assert!(parse_mountinfo_line("garbage").is_none());
        assert_eq!(unescape_mount_field("a\\134b"), b"a\\b".to_vec());
    }

    #[test]
    fn mountpoint_checks_are_clear() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let b = tmp.path().join("b");
        std::fs::create_dir_all(b.join("inner")).expect("mkdir");
        let branch = Branch::open(&b, crate::branch::BranchMode::Ro, None).expect("branch");
        let err = check_mountpoint(&tmp.path().join("nope"), std::slice::from_ref(&branch))
            .expect_err("missing");
        assert!(matches!(err, MountError::MountpointMissing(_)), "{err}");
        let err =
            check_mountpoint(&b.join("inner"), std::slice::from_ref(&branch)).expect_err("inside");
        assert!(
            matches!(err, MountError::MountpointInsideBranch { .. }),
            "{err}"
        );
        let err = check_mountpoint(Path::new("/proc"), &[]).expect_err("busy");
        assert!(matches!(err, MountError::MountpointBusy { .. }), "{err}");
        let err =
            check_mountpoint(tmp.path(), std::slice::from_ref(&branch)).expect_err("branch inside");
        assert!(
            matches!(err, MountError::BranchInsideMountpoint { .. }),
            "{err}"
        );
        let f = tmp.path().join("file");
        std::fs::write(&f, b"").expect("write");
        let err = check_mountpoint(&f, &[]).expect_err("file");
        assert!(matches!(err, MountError::MountpointNotDir(_)), "{err}");
    }
}
