//! Shared by the context tests: a private state directory whose contexts are destroyed when
//! the test ends (pass or fail), and helpers to run the real `vcontext` and `vps` binaries.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cowfs_kmod::cgroup::Hierarchy;
use cowfs_kmod::lifecycle::StateDir;

/// A state directory of its own; every context it knows is destroyed on drop.
pub struct Contexts {
    pub dir: tempfile::TempDir,
}

impl Contexts {
    pub fn new() -> Self {
        Contexts {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// `vcontext --state-dir STATE ARGS…`, output captured.
    pub fn vcontext(&self, args: &[&str]) -> Output {
        Command::new(cowfs::bin("vcontext"))
            .arg("--state-dir")
            .arg(self.state())
            .args(args)
            .output()
            .expect("run vcontext")
    }

    /// Like [`Contexts::vcontext`], asserting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.vcontext(args);
        assert!(
            out.status.success(),
            "vcontext {args:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `vcontext list --json`.
    pub fn list(&self) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["list", "--json"])).expect("list --json is JSON")
    }

    /// Runs `/bin/sleep 300` in context `name` in the background and waits until `vps`
    /// shows it: the running `vcontext run` (the caller waits for it) and the sleep's pid.
    #[allow(clippy::zombie_processes)] // the child is returned to the caller
    pub fn run_sleeper(&self, name: &str) -> (std::process::Child, i64) {
        use std::time::{Duration, Instant};
        let mut child = Command::new(cowfs::bin("vcontext"))
            .arg("--state-dir")
            .arg(self.state())
            .args(["run", name, "--", "/bin/sleep", "300"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("run {name}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let rows = self.vps(&["--context", name]);
            if let Some(pid) = rows
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| r["command"] == "/bin/sleep 300")
                .and_then(|r| r["pid"].as_i64())
            {
                return (child, pid);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{name}'s sleep never showed up: {rows}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn vps(&self, args: &[&str]) -> serde_json::Value {
        let out = Command::new(cowfs::bin("vps"))
            .arg("--state-dir")
            .arg(self.state())
            .arg("--json")
            .args(args)
            .output()
            .expect("run vps");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("vps --json is JSON")
    }

    /// Creates context `name` whose root is a union of a new private (writable) branch over
    /// `template` (read-only); returns the private branch and the root mountpoint.
    pub fn create_on_union(&self, xid: u32, name: &str, template: &Path) -> (PathBuf, PathBuf) {
        let private = self.dir.path().join(format!("{name}-private"));
        let root = self.dir.path().join(format!("{name}-root"));
        for d in [&private, &root] {
            std::fs::create_dir(d).expect("mkdir");
        }
        let branches = format!("{}=rw:{}=ro", private.display(), template.display());
        self.create(xid, name, &root, &["--branches", &branches]);
        (private, root)
    }

    /// `vcontext create --xid XID --name NAME --root ROOT EXTRA…`, which must succeed.
    pub fn create(&self, xid: u32, name: &str, root: &Path, extra: &[&str]) -> String {
        let xid = xid.to_string();
        let mut args = vec![
            "create",
            "--xid",
            &xid,
            "--name",
            name,
            "--root",
            root.to_str().expect("utf-8"),
        ];
        args.extend_from_slice(extra);
        self.ok(&args)
    }

    /// The registry instance (names the cgroups of this state directory).
    pub fn instance(&self) -> String {
        StateDir::open(&self.state())
            .expect("state dir")
            .registry_ref()
            .instance()
            .to_string()
    }

    /// Where context `xid`'s cgroup is (whether or not it exists).
    pub fn cgroup(&self, xid: u32) -> PathBuf {
        let h = Hierarchy::detect().expect("cgroup2");
        h.context(&self.instance(), xid).path().to_path_buf()
    }

    /// Asserts that nothing of context `xid` with root `root` is left in the kernel.
    pub fn assert_nothing_left(&self, xid: u32, root: &Path, program_ids: &[u32]) {
        let cgroup = self.cgroup(xid);
        assert!(!cgroup.exists(), "cgroup {} left behind", cgroup.display());
        let instance_dir = cgroup.parent().expect("parent").to_path_buf();
        assert!(
            !instance_dir.exists(),
            "cgroup {} left behind",
            instance_dir.display()
        );
        let mounts = cowfs_kmod::mounts::under(root).expect("mountinfo");
        assert!(mounts.is_empty(), "mounts left behind: {mounts:?}");
        // Links are released by a kernel work item: give it a moment.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        loop {
            let loaded = cowfs_kmod::bpf::loaded_program_ids();
            let leaked: Vec<_> = program_ids
                .iter()
                .filter(|id| loaded.contains(id))
                .collect();
            if leaked.is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "BPF programs left behind: {leaked:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let pins = Path::new("/sys/fs/bpf/cowfs").join(self.instance());
        assert!(
            !pins.exists(),
            "accounting pins left behind in {}",
            pins.display()
        );
    }
}

impl Drop for Contexts {
    fn drop(&mut self) {
        if !self.state().exists() {
            return;
        }
        let out = self.vcontext(&["list", "--json"]);
        let Ok(list) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
            return;
        };
        for c in list.as_array().into_iter().flatten() {
            if let Some(name) = c["name"].as_str() {
                let _ = self.vcontext(&["destroy", name]);
            }
        }
    }
}

/// A corpus guest restored privately under `dir` (never the shared corpus itself).
pub fn guest(dir: &Path, name: &str) -> PathBuf {
    let root = dir.join(name);
    cowfs::restore_guest("g1", &root).expect("restore corpus guest g1 (scripts/install-deps.sh)");
    root
}

/// The ids of the BPF programs attached to the context `name` (from `list --json`).
pub fn program_ids(list: &serde_json::Value, name: &str) -> Vec<u32> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["name"] == name)
        .flat_map(|c| c["programs"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p["id"].as_u64().map(|id| id as u32))
        .collect()
}
