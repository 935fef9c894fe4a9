//! Helpers shared by the hash store / vhashify / vdu end-to-end tests: run the real binaries,
//! parse their JSON, build small guest trees with precise metadata.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `cowfs ARGS…` and returns its output.
pub fn cowfs<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(cowfs::bin("cowfs"))
        .args(args)
        .output()
        .expect("cowfs runs")
}

/// Runs `vhashify ARGS…`.
pub fn vhashify<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(cowfs::bin("vhashify"))
        .args(args)
        .output()
        .expect("vhashify runs")
}

/// Runs `vdu ARGS…`.
pub fn vdu<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(cowfs::bin("vdu"))
        .args(args)
        .output()
        .expect("vdu runs")
}

/// Asserts success and returns stdout.
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "command failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts success and parses stdout as JSON.
pub fn json(out: Output) -> serde_json::Value {
    let text = ok(out);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Asserts failure (exit code 1) and returns stderr.
pub fn fails(out: Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected exit code 1:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A number from a JSON document.
pub fn num(v: &serde_json::Value, path: &[&str]) -> u64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_u64()
        .unwrap_or_else(|| panic!("{path:?} is not a number in {v}"))
}

/// Metadata for [`put`].
#[derive(Clone, Debug)]
pub struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub xattrs: Vec<(&'static str, Vec<u8>)>,
}

impl Default for Meta {
    fn default() -> Self {
        Meta {
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1_700_000_000,
            xattrs: Vec::new(),
        }
    }
}

/// Writes `content` at `path` (parents created) with exactly `meta`.
pub fn put(path: &Path, content: &[u8], meta: &Meta) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(path, content).expect("write");
    std::os::unix::fs::chown(path, Some(meta.uid), Some(meta.gid)).expect("chown");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(meta.mode)).expect("chmod");
    for (name, value) in &meta.xattrs {
        set_xattr(path, name, value);
    }
    set_mtime(path, meta.mtime);
}

/// Sets an xattr with setfattr-equivalent libc call.
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path");
    let n = std::ffi::CString::new(name).expect("name");
    // SAFETY: valid NUL-terminated strings and a valid buffer.
    let r = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        r,
        0,
        "setxattr {name} on {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// Sets atime and mtime to `sec`.
pub fn set_mtime(path: &Path, sec: i64) {
    let f = std::fs::File::open(path).expect("open");
    hashstore::sys::set_times(std::os::fd::AsFd::as_fd(&f), (sec, 0), (sec, 0)).expect("times");
}

/// Gives `path` back the atime and mtime recorded in `meta` (nanoseconds included).
pub fn set_times_from(path: &Path, meta: &std::fs::Metadata) {
    use std::os::unix::fs::MetadataExt;
    let a = nix::sys::time::TimeSpec::new(meta.atime(), meta.atime_nsec());
    let m = nix::sys::time::TimeSpec::new(meta.mtime(), meta.mtime_nsec());
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &a,
        &m,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .expect("utimensat");
}

/// Deterministic pseudo-random bytes.
pub fn bytes(seed: &str, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(seed.as_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

/// Disk usage in bytes of `paths` together (each inode once), as `du -s -B1 --total` says.
pub fn du_bytes(paths: &[&Path]) -> u64 {
    let out = Command::new("du")
        .args(["-s", "-B1", "--total"])
        .args(paths)
        .output()
        .expect("du runs");
    let text = ok(out);
    text.lines()
        .last()
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot parse du output: {text}"))
}

/// Restores corpus guests g1, g2, g3 under `dir` (fails, not skips, if the corpus is missing).
pub fn restore_corpus(dir: &Path) -> Vec<PathBuf> {
    ["g1", "g2", "g3"]
        .iter()
        .map(|g| {
            let dest = dir.join(g);
            cowfs::restore_guest(g, &dest).unwrap_or_else(|e| panic!("restore {g}: {e}"));
            dest
        })
        .collect()
}

/// A small xorshift generator: the tests' random choices are reproducible from a printed seed.
pub struct Rng(u64);

impl Rng {
    /// Seeded from `COWFS_TEST_SEED` if set, else from the clock; prints the seed.
    pub fn from_env(test: &str) -> Rng {
        let seed = std::env::var("COWFS_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        eprintln!("{test}: random seed {seed} (set COWFS_TEST_SEED={seed} to repeat)");
        Rng(seed.max(1))
    }

    /// A generator for a helper thread, seeded from the main one.
    pub fn from_seed(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

/// Every object file under `store/objects`.
pub fn object_files(store: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(subs) = std::fs::read_dir(store.join("objects")) else {
        return out;
    };
    for sub in subs.flatten() {
        for f in std::fs::read_dir(sub.path())
            .expect("read fan-out dir")
            .flatten()
        {
            out.push(f.path());
        }
    }
    out.sort();
    out
}

/// How many log lines a child of [`kill_after_lines`] can be ahead of the line that triggers
/// the kill: its stderr pipe is shrunk to one page (4 KiB) and read through a 1 KiB buffer, and
/// every line the store logs is longer than 100 bytes, so at most ~51 lines are written and not
/// yet read. A kill point at least this many lines before the end of a run's log therefore
/// lands while the run still has work to do.
pub const KILL_LAG_LINES: u64 = 64;

/// Starts `cmd` with debug logging of the store on stderr, and SIGKILLs it right after it has
/// logged `k` lines (each is one step that changed something on disk). Returns whether it died
/// of that SIGKILL (false: it finished first) and how many lines were read.
///
/// The child blocks on its full stderr pipe while the test has not read its lines, so it cannot
/// run more than [`KILL_LAG_LINES`] ahead of the kill point.
pub fn kill_after_lines(mut cmd: std::process::Command, k: u64) -> (bool, u64) {
    use std::io::BufRead;
    use std::os::unix::process::ExitStatusExt;
    let mut child = cmd
        .env("RUST_LOG", "hashstore=debug")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let size = nix::fcntl::fcntl(&stderr, nix::fcntl::FcntlArg::F_SETPIPE_SZ(4096))
        .expect("shrink the stderr pipe");
    assert!(size <= 4096, "pipe size {size}");
    let mut lines = 0;
    for line in std::io::BufReader::with_capacity(1024, stderr).lines() {
        if line.is_err() {
            break;
        }
        lines += 1;
        if lines >= k {
            child.kill().expect("SIGKILL");
            break;
        }
    }
    let status = child.wait().expect("wait");
    let killed = status.signal() == Some(libc::SIGKILL);
    if !killed {
        assert!(status.success(), "the run failed on its own: {status}");
    }
    (killed, lines)
}

/// Runs `cmd` with debug logging of the store on stderr, calling `each(n, line, pid)` after its
/// `n`-th log line has been read; returns its stdout, exit status and the number of lines.
/// While `each` runs the command soon stalls (its stderr pipe is one page, as in
/// [`kill_after_lines`]; [`wait_until_stalled`] waits for that), so `each` can do something at
/// a known point in the middle of the run.
pub fn with_log_lines(
    mut cmd: std::process::Command,
    mut each: impl FnMut(u64, &str, u32),
) -> (std::process::Output, u64) {
    use std::io::BufRead;
    let mut child = cmd
        .env("RUST_LOG", "hashstore=debug")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let size = nix::fcntl::fcntl(&stderr, nix::fcntl::FcntlArg::F_SETPIPE_SZ(4096))
        .expect("shrink the stderr pipe");
    assert!(size <= 4096, "pipe size {size}");
    let mut lines = 0;
    for line in std::io::BufReader::with_capacity(1024, stderr).lines() {
        let Ok(line) = line else { break };
        lines += 1;
        each(lines, &line, child.id());
    }
    (child.wait_with_output().expect("wait"), lines)
}

/// Waits until process `pid` is held up by its full log pipe: every thread is blocked writing
/// to stderr or waiting (futex, yield), at least one of them writing, in two looks in a row.
/// Then no thread is in the middle of a change on disk: a thread that was finishes it and
/// blocks on the log line that follows.
pub fn wait_until_stalled(pid: u32) {
    let quiet = |line: &str| {
        let mut it = line.split_whitespace();
        match (it.next().and_then(|n| n.parse::<i64>().ok()), it.next()) {
            (Some(n), Some(fd)) if n == libc::SYS_write => fd == "0x2",
            (Some(n), _) => n == libc::SYS_futex || n == libc::SYS_sched_yield,
            _ => false,
        }
    };
    let look = || -> (bool, Vec<String>) {
        let mut states = Vec::new();
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return (false, states);
        };
        for t in tasks.flatten() {
            let line = std::fs::read_to_string(t.path().join("syscall")).unwrap_or_default();
            states.push(line.trim().to_string());
        }
        let writing = states
            .iter()
            .any(|l| l.split_whitespace().next() == Some(&libc::SYS_write.to_string()));
        (writing && states.iter().all(|l| quiet(l)), states)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut stalled_before = false;
    loop {
        let (stalled, states) = look();
        if stalled && stalled_before {
            return;
        }
        stalled_before = stalled;
        assert!(
            std::time::Instant::now() < deadline,
            "process {pid} never stalled on its log pipe: {states:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The command line of a binary of this workspace.
pub fn command(bin: &str, args: &[String]) -> std::process::Command {
    let mut c = std::process::Command::new(cowfs::bin(bin));
    c.args(args);
    c
}

/// A tmpfs mounted for a test (another filesystem than the store's), unmounted on drop even if
/// the test fails.
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    pub fn mount(path: &Path) -> Tmpfs {
        std::fs::create_dir_all(path).expect("mkdir");
        nix::mount::mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=512m,mode=0755"),
        )
        .expect("mount tmpfs (the tests run as root)");
        Tmpfs {
            path: path.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
    }
}
