//! `vcontext run`: the process side of a context.
//!
//! ```text
//! vcontext run (host)                 pid 1 of the context (new pid, mount, uts, ipc ns)
//! ─────────────────────               ───────────────────────────────────────────────────
//! lock; start (mount root,
//!   cgroup + programs, accounting)
//! clone ───────────────────────────▶  wait for "go"
//! move it into the cgroup; unlock
//! "go" ────────────────────────────▶  private mounts; bind the root; /proc; minimal /dev;
//!                                     pivot_root; hostname; bounding set; no_new_privs;
//!                                     Landlock; fork ──▶ the command: groups, gid, uid,
//!                                                        capabilities; exec
//! read setup errors until exec        forward signals, reap, exit with the command's status
//! wait; lock; stop if idle
//! ```
//!
//! The status pipe is close-on-exec: it reaches end-of-file exactly when the command has been
//! executed (or everything died), and carries a line for every warning or error before that.
//! Any failure before exec is reported with its stage, and everything is taken down again.
//!
//! `run` forks: call it from a single-threaded process (the CLI).

use std::ffi::{CString, OsString};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Pid, Uid, fork};

use crate::caps::CapSet;
use crate::context::ContextSpec;
use crate::hotset::HotSet;
use crate::lifecycle::{self, RootMounter, StateDir};
use crate::{Error, Result, landlock, prewarm};

/// How to run a command in a context.
pub struct RunOptions<'a> {
    pub command: Vec<OsString>,
    /// Refuse to run if any isolation layer is unavailable, even if the context does not ask.
    pub require_isolation: bool,
    /// Told about every layer that runs degraded (the CLI prints these on stderr).
    pub warn: &'a dyn Fn(&str),
    /// Told what went well but is worth saying (the prewarm's summary).
    pub info: &'a dyn Fn(&str),
    /// A hot set to load into the page cache before the command runs. It is loaded by the
    /// context's pid 1 after pivot_root and Landlock: through the guest's own root, confined
    /// like the guest, and charged to the context's cgroup.
    pub prewarm: Option<(HotSet, prewarm::Options)>,
}

/// Signals forwarded to the command. SIGINT and SIGQUIT are not: a terminal sends them to the
/// whole foreground process group, which the command is part of.
const FORWARD: [Signal; 4] = [
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

fn supervised_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in FORWARD {
        set.add(s);
    }
    set.add(Signal::SIGCHLD);
    set.add(Signal::SIGINT);
    set.add(Signal::SIGQUIT);
    set
}

/// Everything the context's pid 1 needs, computed before cloning.
struct Plan {
    root: PathBuf,
    hostname: String,
    caps: CapSet,
    uid: u32,
    gid: u32,
    require: bool,
    /// No cgroup_sysctl program: make /proc/sys read-only instead.
    sysctl_fallback: bool,
    argv: Vec<CString>,
    env: Vec<CString>,
    old_mask: SigSet,
    prewarm: Option<(HotSet, prewarm::Options)>,
}

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn environment(uid: u32) -> Vec<CString> {
    let mut env = vec![
        format!("PATH={PATH}"),
        format!("HOME={}", if uid == 0 { "/root" } else { "/" }),
        "container=cowfs".to_string(),
    ];
    if let Ok(term) = std::env::var("TERM") {
        env.push(format!("TERM={term}"));
    }
    env.into_iter()
        .filter_map(|e| CString::new(e).ok())
        .collect()
}

/// Runs `opts.command` in context `name`; returns its exit status (128+N if killed by signal N).
pub fn run(
    state: &mut StateDir,
    name: &str,
    mounter: &dyn RootMounter,
    mut opts: RunOptions<'_>,
) -> Result<i32> {
    if opts.command.is_empty() {
        return Err(Error::BadValue {
            what: "command",
            value: String::new(),
            why: "nothing to run".into(),
        });
    }
    let argv = opts
        .command
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| Error::BadValue {
            what: "command",
            value: format!("{:?}", opts.command),
            why: "contains a NUL byte".into(),
        })?;
    let ctx = state.registry().get(name)?;
    let require = ctx.require_isolation || opts.require_isolation;

    let lock = state.lock()?;
    let started = lifecycle::start(state, &ctx, mounter, require)?;
    for layer in started.missing() {
        (opts.warn)(&format!(
            "context {} runs WITHOUT {} isolation: {}",
            ctx.name, layer.layer, layer.detail
        ));
    }
    if !started.accounting.enforced {
        (opts.warn)(&format!(
            "context {}: no fork/exec accounting: {}",
            ctx.name, started.accounting.detail
        ));
    }
    let sysctl_fallback = started
        .layers
        .iter()
        .any(|l| l.layer == "sysctl" && !l.enforced);
    if sysctl_fallback {
        (opts.warn)("sysctl writes are refused by a read-only /proc/sys instead");
    }

    let mut old_mask = SigSet::empty();
    sigprocmask(
        SigmaskHow::SIG_BLOCK,
        Some(&supervised_signals()),
        Some(&mut old_mask),
    )
    .map_err(|e| Error::sys("blocking signals", e))?;
    let plan = Plan {
        root: ctx.root.clone(),
        hostname: ctx.hostname.clone(),
        caps: ctx.caps.clone(),
        uid: ctx.uid,
        gid: ctx.gid,
        require,
        sysctl_fallback,
        argv,
        env: environment(ctx.uid),
        old_mask,
        prewarm: opts.prewarm.take(),
    };
    let result = launch(&ctx, &plan, &started.cgroup, lock, &opts);
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None);

    let _lock = state.lock()?;
    if let Err(e) = lifecycle::stop_if_idle(state, &ctx, mounter) {
        match &result {
            Ok(_) => return Err(e),
            Err(_) => tracing::warn!("cleaning up after a failed run of {}: {e}", ctx.name),
        }
    }
    result
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe", e))
}

fn launch(
    ctx: &ContextSpec,
    plan: &Plan,
    cgroup: &crate::cgroup::ContextCgroup,
    lock: lifecycle::StateLock,
    opts: &RunOptions<'_>,
) -> Result<i32> {
    let (go_r, go_w) = pipe()?;
    let (status_r, status_w) = pipe()?;
    // pid 1 runs ordinary Rust code (Landlock, capabilities) on this stack: be generous.
    let mut stack = vec![0u8; 2 << 20];
    let flags = CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC;
    let child = {
        let go_r = &go_r;
        let status_w = &status_w;
        let cb = Box::new(move || pid1(plan, go_r, status_w));
        // SAFETY: no CLONE_VM: the child gets a copy of this (single-threaded) process, as
        // after fork(); it runs `pid1` on `stack` and never returns into our frames.
        unsafe { nix::sched::clone(cb, &mut stack, flags, Some(libc::SIGCHLD)) }
    }
    .map_err(|e| Error::sys("creating the context's namespaces (clone)", e))?;
    drop(go_r);
    drop(status_w);

    if let Err(e) = cgroup.add(child.as_raw()) {
        let _ = kill(child, Signal::SIGKILL);
        let _ = waitpid(child, None);
        return Err(e);
    }
    drop(lock);
    let go = nix::unistd::write(&go_w, b"g").map_err(|e| Error::sys("starting the context", e));
    drop(go_w);
    if let Err(e) = go {
        let _ = kill(child, Signal::SIGKILL);
        let _ = waitpid(child, None);
        return Err(e);
    }

    let mut failure = None;
    for line in BufReader::new(std::fs::File::from(status_r)).lines() {
        let Ok(line) = line else { break };
        let mut parts = line.splitn(3, '\t');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("W"), Some(_stage), Some(msg)) => {
                (opts.warn)(&format!("context {}: {msg}", ctx.name))
            }
            (Some("I"), Some(_stage), Some(msg)) => {
                (opts.info)(&format!("context {}: {msg}", ctx.name))
            }
            (Some("E"), Some(stage), Some(msg)) => {
                failure = Some(Error::Setup {
                    name: ctx.name.clone(),
                    stage: stage.to_string(),
                    message: msg.to_string(),
                });
            }
            _ => {}
        }
    }
    let code = supervise(child, false);
    match failure {
        Some(e) => Err(e),
        None => Ok(code),
    }
}

/// Waits for `target`, forwarding [`FORWARD`] signals to it; returns its exit status.
/// `reap_all`: also reap every other child (pid 1 inherits the orphans of its namespace).
/// The caller has blocked [`supervised_signals`].
fn supervise(target: Pid, reap_all: bool) -> i32 {
    let set = supervised_signals();
    loop {
        let Ok(sig) = set.wait() else { continue };
        if FORWARD.contains(&sig) {
            let _ = kill(target, sig);
            continue;
        }
        if sig != Signal::SIGCHLD {
            continue;
        }
        loop {
            let who = if reap_all { Pid::from_raw(-1) } else { target };
            match waitpid(who, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == target => return code,
                Ok(WaitStatus::Signaled(pid, s, _)) if pid == target => return 128 + s as i32,
                Ok(WaitStatus::StillAlive) => break,
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return 255,
            }
        }
    }
}

/// Reports a line to the parent on the status pipe.
fn report(status: &OwnedFd, kind: &str, stage: &str, msg: &str) {
    let line = format!("{kind}\t{stage}\t{}\n", msg.replace(['\n', '\t'], " "));
    if let Ok(fd) = status.try_clone() {
        let _ = std::fs::File::from(fd).write_all(line.as_bytes());
    }
}

/// pid 1 of the context. Never returns on success of the command's exec in its child.
fn pid1(plan: &Plan, go: &OwnedFd, status: &OwnedFd) -> isize {
    // If `vcontext run` dies, the context's pid 1 dies with it, and with it the namespace.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    let mut byte = [0u8; 1];
    if !matches!(nix::unistd::read(go, &mut byte), Ok(1)) {
        return 1;
    }
    match setup(plan, status) {
        Ok(()) => {}
        Err((stage, msg)) => {
            report(status, "E", stage, &msg);
            return 1;
        }
    }
    if let Some((set, opts)) = &plan.prewarm {
        // Threads end here, before the fork: the command's process starts single-threaded.
        match prewarm::prewarm(Path::new("/"), set, opts) {
            Ok(r) => {
                report(status, "I", "prewarm", &r.summary());
                if !r.skipped.is_empty() {
                    report(status, "W", "prewarm", &r.skipped_summary(5));
                }
            }
            Err(e) => report(status, "W", "prewarm", &format!("prewarm failed: {e}")),
        }
    }
    // SAFETY: this process is single-threaded (a clone of a single-threaded one).
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let (stage, msg) = exec_command(plan);
            report(status, "E", stage, &msg);
            // SAFETY: leave without running any destructor of the copied parent state.
            unsafe { libc::_exit(127) }
        }
        Ok(ForkResult::Parent { child }) => {
            // Only the command keeps the status pipe open, until its exec closes it.
            // SAFETY: closing our own copy of a descriptor nobody else in this process uses.
            unsafe { libc::close(std::os::fd::AsRawFd::as_raw_fd(status)) };
            let none = caps::CapsHashSet::new();
            let _ = caps::set(None, caps::CapSet::Effective, &none);
            let _ = caps::set(None, caps::CapSet::Permitted, &none);
            let code = supervise(child, true);
            code as isize
        }
        Err(e) => {
            report(status, "E", "fork", &e.to_string());
            1
        }
    }
}

type StageResult = std::result::Result<(), (&'static str, String)>;

fn at<T, E: std::fmt::Display>(
    stage: &'static str,
    r: std::result::Result<T, E>,
) -> std::result::Result<T, (&'static str, String)> {
    r.map_err(|e| (stage, e.to_string()))
}

fn mkdir(path: &Path, mode: u32) -> std::io::Result<()> {
    match std::fs::DirBuilder::new().mode(mode).create(path) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

/// The devices of the minimal /dev, bound from the host's nodes (no mknod needed).
const DEV_NODES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

fn setup(plan: &Plan, status: &OwnedFd) -> StageResult {
    let none = None::<&str>;
    // Nothing we mount may propagate back to the host.
    at(
        "mount namespace",
        mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none),
    )?;
    let root = &plan.root;
    at(
        "root",
        mount(
            Some(root.as_path()),
            root.as_path(),
            none,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            none,
        )
        .map_err(|e| format!("bind-mounting {}: {e}", root.display())),
    )?;

    let proc = root.join("proc");
    at("/proc", mkdir(&proc, 0o555))?;
    at(
        "/proc",
        mount(
            Some("proc"),
            &proc,
            Some("proc"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            none,
        ),
    )?;
    if plan.sysctl_fallback {
        let sys = proc.join("sys");
        at(
            "/proc/sys",
            mount(Some(&sys), &sys, none, MsFlags::MS_BIND, none),
        )?;
        at(
            "/proc/sys",
            mount(
                none,
                &sys,
                none,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                none,
            ),
        )?;
    }

    let dev = root.join("dev");
    at("/dev", mkdir(&dev, 0o755))?;
    at(
        "/dev",
        mount(
            Some("tmpfs"),
            &dev,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("mode=755,size=64k"),
        ),
    )?;
    for node in DEV_NODES {
        let target = dev.join(node);
        at("/dev", std::fs::File::create(&target))?;
        let source = Path::new("/dev").join(node);
        at(
            "/dev",
            mount(Some(&source), &target, none, MsFlags::MS_BIND, none)
                .map_err(|e| format!("binding {}: {e}", source.display())),
        )?;
    }
    let pts = dev.join("pts");
    at("/dev/pts", mkdir(&pts, 0o755))?;
    at(
        "/dev/pts",
        mount(
            Some("devpts"),
            &pts,
            Some("devpts"),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
        ),
    )?;
    let shm = dev.join("shm");
    at("/dev/shm", mkdir(&shm, 0o1777))?;
    at(
        "/dev/shm",
        mount(
            Some("tmpfs"),
            &shm,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=1777"),
        ),
    )?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        at("/dev", std::os::unix::fs::symlink(target, dev.join(link)))?;
    }
    at(
        "/dev",
        std::fs::set_permissions(&shm, std::fs::Permissions::from_mode(0o1777)),
    )?;

    // pivot_root(".", "."): the old root ends up stacked under the new one, and is detached.
    at("pivot_root", nix::unistd::chdir(root.as_path()))?;
    at("pivot_root", nix::unistd::pivot_root(".", "."))?;
    at("pivot_root", umount2(".", MntFlags::MNT_DETACH))?;
    at("pivot_root", nix::unistd::chdir("/"))?;

    at("hostname", nix::unistd::sethostname(&plan.hostname))?;
    at("capabilities", plan.caps.restrict_bounding())?;
    // SAFETY: prctl with integer arguments.
    let nnp = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    at(
        "no_new_privs",
        if nnp == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        },
    )?;
    let outcome = at(
        "landlock",
        landlock::confine_beneath(Path::new("/"), plan.require),
    )?;
    if !(outcome.filesystem_full && outcome.scoped) {
        report(
            status,
            "W",
            "landlock",
            &format!("Landlock degraded: {}", outcome.detail),
        );
    }
    Ok(())
}

/// In the command's process: become the context's user, then exec. Returns only on failure.
fn exec_command(plan: &Plan) -> (&'static str, String) {
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&plan.old_mask), None);
    let gid = Gid::from_raw(plan.gid);
    if let Err(e) = nix::unistd::setgroups(&[gid]) {
        return ("groups", e.to_string());
    }
    if let Err(e) = nix::unistd::setresgid(gid, gid, gid) {
        return ("gid", e.to_string());
    }
    let uid = Uid::from_raw(plan.uid);
    if let Err(e) = nix::unistd::setresuid(uid, uid, uid) {
        return ("uid", e.to_string());
    }
    if plan.uid == 0
        && let Err(e) = plan.caps.restrict_current()
    {
        return ("capabilities", e.to_string());
    }
    let Some(program) = resolve(&plan.argv[0]) else {
        return (
            "exec",
            format!(
                "{}: command not found in the guest",
                plan.argv[0].to_string_lossy()
            ),
        );
    };
    match nix::unistd::execve(&program, &plan.argv, &plan.env) {
        Err(e) => ("exec", format!("{}: {e}", program.to_string_lossy())),
    }
}

/// Finds a command as a shell would, in [`PATH`] of the guest.
fn resolve(cmd: &CString) -> Option<CString> {
    let bytes = cmd.as_bytes();
    if bytes.contains(&b'/') {
        return Some(cmd.clone());
    }
    PATH.split(':').find_map(|dir| {
        let candidate = Path::new(dir).join(std::ffi::OsStr::from_bytes(bytes));
        let meta = std::fs::metadata(&candidate).ok()?;
        (meta.is_file() && meta.permissions().mode() & 0o111 != 0)
            .then(|| CString::new(candidate.as_os_str().as_bytes()).ok())
            .flatten()
    })
}
