//! Helpers of the reliability tests (issue 7): a foreground daemon that can be killed or run
//! under an injected syscall error, small filesystems to fill, the figures every scenario
//! reports, and a seeded generator whose seed is printed so any failure can be replayed.
//!
//! Each test declares `mod common;` and `mod reliability_support;` itself.

#![allow(dead_code)] // each test binary uses its own subset

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use crate::common::{is_mounted, wait_until};

/// `COWFS_REL_<name>` as a number, else `default` (the bounded CI budget).
pub fn budget(name: &str, default: u64) -> u64 {
    std::env::var(format!("COWFS_REL_{name}"))
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The seed of a test: `COWFS_REL_SEED` if set, else the clock; printed with the replay line.
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var("COWFS_REL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!(
        "{test}: seed {seed} (replay: COWFS_REL_SEED={seed} cargo test --test <this file> {test} -- --nocapture)"
    );
    seed
}

/// The figures of one scenario: printed, and appended as one JSON line to
/// `target/<profile>/reliability/figures.jsonl`, from which docs/RELIABILITY.md quotes.
pub fn report(scenario: &str, figures: &[(&str, serde_json::Value)]) {
    let mut doc = serde_json::Map::new();
    doc.insert("scenario".into(), scenario.into());
    let when = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    doc.insert("unix_time".into(), when.into());
    for (k, v) in figures {
        doc.insert((*k).into(), v.clone());
    }
    let line = serde_json::Value::Object(doc).to_string();
    eprintln!("reliability figures: {line}");
    let dir = cowfs::bin("cowfs")
        .parent()
        .expect("profile dir")
        .join("reliability");
    std::fs::create_dir_all(&dir).expect("figures dir");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("figures.jsonl"))
        .expect("figures file");
    writeln!(f, "{line}").expect("write figures");
}

/// A syscall error to inject into the daemon: every call of `syscall` fails with `errno`.
#[derive(Clone, Copy, Debug)]
pub struct Inject {
    pub syscall: libc::c_long,
    pub errno: i32,
    /// Only calls whose third argument (a byte count) is at least this (the dynamic loader
    /// reads its ELF headers with small `pread64`s that must keep working).
    pub min_count: Option<u32>,
}

/// A `cowfs mount -f` daemon, a child of the test: killable at any moment.
pub struct ForegroundDaemon {
    pub child: Child,
    pub mnt: PathBuf,
}

impl ForegroundDaemon {
    /// Mounts `options` at `mnt` and waits until the mount is there. With `inject`, the daemon
    /// runs under a seccomp filter making those syscalls fail (installed before exec, so every
    /// thread of the daemon has it).
    pub fn start(options: &str, mnt: &Path, inject: &[Inject]) -> ForegroundDaemon {
        std::fs::create_dir_all(mnt).expect("mountpoint");
        let mut cmd = Command::new(cowfs::bin("cowfs"));
        cmd.args(["mount", "-f", "-o", options, "none"])
            .arg(mnt)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if !inject.is_empty() {
            let filter = seccomp_filter(inject);
            // SAFETY: between fork and exec the closure only calls prctl with a filter built
            // before the fork; it allocates nothing.
            unsafe {
                cmd.pre_exec(move || install_filter(&filter));
            }
        }
        let child = cmd.spawn().expect("spawn cowfs mount -f");
        let mut d = ForegroundDaemon {
            child,
            mnt: mnt.to_path_buf(),
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !is_mounted(mnt) {
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!("cowfs mount -f -o {options} exited before mounting: {status}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for the mount at {}",
                mnt.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        d.mnt = mnt.canonicalize().expect("mountpoint");
        d
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Whether the daemon still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL; the daemon must finish dying by itself (a daemon killed while its invalidation
    /// thread waits for a directory lock only can once its connection is aborted: its watchdog
    /// does that, see `cowfs_fs::watchdog`). Then unmount the dead mount.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while matches!(self.child.try_wait(), Ok(None)) {
            assert!(
                std::time::Instant::now() < deadline,
                "a killed daemon did not finish dying: its watchdog should have aborted the \
                 connection"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        unmount_dead(&self.mnt);
    }

    /// A clean unmount; the daemon must exit successfully.
    pub fn stop(mut self) {
        crate::common::ok(
            Command::new(cowfs::bin("cowfs"))
                .arg("umount")
                .arg(&self.mnt),
        );
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "daemon exit status {status}");
    }
}

impl Drop for ForegroundDaemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            unmount_dead(&self.mnt);
            let _ = self.child.wait();
        }
        unmount_dead(&self.mnt);
    }
}

/// Unmounts whatever cowfs mount is left at `mnt`, aborting its connection first.
pub fn unmount_dead(mnt: &Path) {
    if mounted_at(mnt) {
        let clean = Command::new(cowfs::bin("cowfs"))
            .args(["umount", "--force"])
            .arg(mnt)
            .status();
        if !matches!(clean, Ok(s) if s.success()) {
            let _ = Command::new("umount").arg("-l").arg(mnt).status();
        }
        wait_until("the dead mount to go", || !mounted_at(mnt));
    }
}

/// Whether a cowfs mount sits at `mnt` (an absolute, canonical path): the mount table only,
/// never a stat of the path, which would hang on a connection nobody serves.
pub fn mounted_at(mnt: &Path) -> bool {
    cowfs_fs::mount::mounts()
        .unwrap_or_default()
        .iter()
        .any(|m| m.mountpoint == mnt && m.fstype == cowfs_fs::mount::FSTYPE)
}

/// A classic BPF program: on x86-64, the listed syscalls return their errno, all else runs.
fn seccomp_filter(inject: &[Inject]) -> Vec<libc::sock_filter> {
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jeq = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let ld = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let ret = libc::BPF_RET | libc::BPF_K;
    let mut prog = vec![
        stmt(ld, 4), // seccomp_data.arch
        jeq(AUDIT_ARCH_X86_64, 1, 0),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
    ];
    let errno = |e: i32| {
        stmt(
            ret,
            libc::SECCOMP_RET_ERRNO | (e as u32 & libc::SECCOMP_RET_DATA),
        )
    };
    for i in inject {
        prog.push(stmt(ld, 0)); // seccomp_data.nr
        match i.min_count {
            None => {
                prog.push(jeq(i.syscall as u32, 0, 1));
                prog.push(errno(i.errno));
            }
            Some(min) => {
                prog.push(jeq(i.syscall as u32, 0, 3));
                prog.push(stmt(ld, 32)); // low word of seccomp_data.args[2]
                prog.push(libc::sock_filter {
                    code: (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16,
                    jt: 0,
                    jf: 1,
                    k: min,
                });
                prog.push(errno(i.errno));
            }
        }
    }
    prog.push(stmt(ret, libc::SECCOMP_RET_ALLOW));
    prog
}

fn install_filter(filter: &[libc::sock_filter]) -> std::io::Result<()> {
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at a valid filter that outlives the call (the kernel copies it).
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const libc::sock_fprog,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A small filesystem mounted for a test, unmounted (lazily) on drop even if the test fails.
pub struct SmallFs {
    pub path: PathBuf,
}

impl SmallFs {
    /// A tmpfs of `size` (e.g. "8m") with at most `inodes` inodes.
    pub fn tmpfs(path: &Path, size: &str, inodes: u64) -> SmallFs {
        std::fs::create_dir_all(path).expect("mkdir");
        nix::mount::mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={size},nr_inodes={inodes},mode=0755").as_str()),
        )
        .expect("mount tmpfs (the tests run as root)");
        SmallFs {
            path: path.to_path_buf(),
        }
    }

    /// An ext4 filesystem of `mib` MiB in an image file `image`, mounted through a loop device;
    /// `mkfs_args` go to mkfs.ext4 (e.g. `-m 50` for 50 % blocks reserved for root).
    pub fn ext4(image: &Path, path: &Path, mib: u64, mkfs_args: &[&str]) -> SmallFs {
        let f = std::fs::File::create(image).expect("image");
        f.set_len(mib << 20).expect("size image");
        drop(f);
        crate::common::ok(
            Command::new("mkfs.ext4")
                .args(["-q", "-F"])
                .args(mkfs_args)
                .arg(image),
        );
        std::fs::create_dir_all(path).expect("mkdir");
        crate::common::ok(
            Command::new("mount")
                .arg("-o")
                .arg("loop")
                .arg(image)
                .arg(path),
        );
        SmallFs {
            path: path.to_path_buf(),
        }
    }
}

impl SmallFs {
    /// Mounts an existing ext4 image through a loop device (replaying its journal).
    pub fn ext4_existing(image: &Path, path: &Path) -> SmallFs {
        std::fs::create_dir_all(path).expect("mkdir");
        crate::common::ok(
            Command::new("mount")
                .arg("-o")
                .arg("loop")
                .arg(image)
                .arg(path),
        );
        SmallFs {
            path: path.to_path_buf(),
        }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        // A plain umount also releases the loop device (mount -o loop set autoclear).
        if Command::new("umount")
            .arg(&self.path)
            .status()
            .map_or(true, |s| !s.success())
        {
            let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Every name under `root` (recursively, not following symlinks) that cowfs keeps to itself:
/// whiteouts, opaque markers and temp entries. Through a mount this must always be empty.
pub fn hidden_names(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let b = name.as_encoded_bytes();
            if b.starts_with(b".wh.") || b.starts_with(b".cowfs.tmp.") {
                out.push(e.path());
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
    out
}

/// Entries left in a writable branch's work directory (a daemon killed mid-staging).
pub fn work_dir_entries(branch: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(branch.join(".cowfs.tmp.work"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Peak resident set size of a finished child, from `/usr/bin/time -v`-free means: the
/// `ru_maxrss` of all waited-for children of this process (KiB).
pub fn children_max_rss_kib() -> i64 {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given.
    let r = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, ru.as_mut_ptr()) };
    if r != 0 {
        return -1;
    }
    // SAFETY: initialised by the successful call above.
    unsafe { ru.assume_init() }.ru_maxrss
}

/// Resident set size of a running process (KiB), from /proc.
pub fn rss_kib(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Peak resident set size of a running process (KiB), from /proc.
pub fn peak_rss_kib(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}
