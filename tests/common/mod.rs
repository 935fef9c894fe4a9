//! Helpers of the end-to-end tests that mount cowfs for real (root, /dev/fuse).

#![allow(dead_code)] // each test binary uses its own subset

use std::ffi::OsStr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// `cowfs` as built from this workspace.
pub fn cowfs() -> Command {
    Command::new(cowfs::bin("cowfs"))
}

pub fn unionctl() -> Command {
    Command::new(cowfs::bin("unionctl"))
}

/// Runs a command, panicking with its output unless it succeeds.
pub fn ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs a command that must fail; returns its stderr.
pub fn fails(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        !out.status.success(),
        "{cmd:?} should have failed:\nstdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `sh -c script` as another user (std drops supplementary groups when root sets a uid).
pub fn sh_as(uid: u32, gid: u32, script: &str) -> Output {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script).uid(uid).gid(gid);
    cmd.output().expect("run sh")
}

pub fn sh(script: &str) -> Output {
    ok(Command::new("sh").arg("-c").arg(script))
}

/// Whether `path` is a cowfs mountpoint right now.
pub fn is_mounted(path: &Path) -> bool {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            f.get(4).map(|m| Path::new(m) == path).unwrap_or(false) && l.contains(" - fuse.cowfs ")
        })
}

pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A union mounted by `cowfs mount` (detached daemon); unmounted on drop, lazily as a last
/// resort so that a failing test never leaves a mount behind.
pub struct Mounted {
    pub mnt: PathBuf,
}

impl Mounted {
    pub fn new(options: &str, mnt: &Path) -> Mounted {
        std::fs::create_dir_all(mnt).expect("mountpoint");
        ok(cowfs().args(["mount", "-o", options, "none"]).arg(mnt));
        assert!(is_mounted(mnt), "{} should be mounted", mnt.display());
        Mounted {
            mnt: mnt.canonicalize().expect("mountpoint"),
        }
    }

    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.mnt.join(rel)
    }

    pub fn unmount(&self) {
        ok(cowfs().arg("umount").arg(&self.mnt));
        assert!(!is_mounted(&self.mnt));
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if is_mounted(&self.mnt) {
            let clean = cowfs().arg("umount").arg(&self.mnt).status();
            if !matches!(clean, Ok(s) if s.success()) {
                let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
            }
        }
    }
}

/// A temp directory with `rw/`, `ro/`, `store/` and `mnt/`, all on one filesystem.
pub struct Layout {
    pub tmp: tempfile::TempDir,
}

impl Layout {
    pub fn new() -> Layout {
        let tmp = tempfile::Builder::new()
            .prefix("cowfs-e2e-")
            .tempdir_in("/var/tmp")
            .expect("tempdir");
        for d in ["rw", "ro", "store", "mnt"] {
            std::fs::create_dir(tmp.path().join(d)).expect("mkdir");
        }
        Layout { tmp }
    }

    pub fn dir(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// `dirs=rw=rw:ro=ro`
    pub fn dirs(&self) -> String {
        format!(
            "dirs={}=rw:{}=ro",
            self.dir("rw").display(),
            self.dir("ro").display()
        )
    }

    pub fn mount(&self) -> Mounted {
        Mounted::new(&self.dirs(), &self.dir("mnt"))
    }
}

/// The (device, inode) and content hash of a file: what must not change for a store object.
pub fn fingerprint(path: &Path) -> (u64, u64, u32, String) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path).expect("stat");
    let data = std::fs::read(path).expect("read");
    (
        m.dev(),
        m.ino(),
        m.mode(),
        blake3::hash(&data).to_hex().to_string(),
    )
}

/// `getfattr -d -m -` of a path: every xattr name it shows.
pub fn xattr_names(path: &Path) -> String {
    let out = Command::new("getfattr")
        .args(["-d", "-m", "-", "--absolute-names"])
        .arg(path)
        .output()
        .expect("getfattr");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn inode(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).expect("stat").ino()
}

pub fn name_bytes(name: &[u8]) -> &OsStr {
    use std::os::unix::ffi::OsStrExt;
    OsStr::from_bytes(name)
}

/// The pid of the daemon serving the cowfs mount at `mnt` (not its watchdog, which shares the
/// command line).
pub fn daemon_pid(mnt: &Path) -> i32 {
    let want = mnt.as_os_str().as_encoded_bytes();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            let args = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = args.split(|&b| b == 0).collect();
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            args.first().is_some_and(|a| a.ends_with(b"cowfs"))
                && args.contains(&b"mount".as_slice())
                && args.contains(&want)
                && comm.trim() != "cowfs-watchdog"
        })
        .unwrap_or_else(|| panic!("no daemon serves {}", mnt.display()))
}
