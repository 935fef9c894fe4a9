//! Issue 6, "Bad input" and the lifecycle guarantees: refused input changes nothing; a run that
//! fails halfway leaves nothing behind; `--require-kernel-isolation` refuses or degrades exactly
//! as configured, with a layer the kernel really refuses.

mod context_support;

use std::path::Path;

use context_support::Contexts;
use cowfs_kmod::bpf::{self, Hook};
use cowfs_kmod::cgroup::Hierarchy;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_input_is_refused_clearly_and_changes_nothing() {
    let c = Contexts::new();
    let root = c.dir.path().join("root");
    std::fs::create_dir(&root).expect("mkdir");
    let r = root.to_str().expect("utf-8");
    c.ok(&[
        "create",
        "--xid",
        "10",
        "--name",
        "web",
        "--root",
        r,
        "--ip",
        "127.0.0.9",
    ]);
    let before = c.list();
    let missing = c.dir.path().join("missing");
    let m = missing.to_str().expect("utf-8");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--xid", "10", "--name", "other"],
            "xid 10 is already used by context \"web\"",
        ),
        (
            vec!["--xid", "11", "--name", "web"],
            "a context named \"web\" already exists",
        ),
        (
            vec!["--xid", "0", "--name", "h"],
            "xid 0 is reserved for the host",
        ),
        (
            vec!["--xid", "1", "--name", "s"],
            "xid 1 is reserved for the spectator",
        ),
        (
            vec!["--xid", "12", "--name", "x", "--root", m],
            "No such file or directory",
        ),
        (
            vec!["--xid", "12", "--name", "x", "--caps", "+sys_fly"],
            "unknown capability \"sys_fly\"",
        ),
        (
            vec!["--xid", "12", "--name", "x", "--caps", "net_raw"],
            "invalid capability spec",
        ),
        (
            vec!["--xid", "12", "--name", "x", "--device", "c 1:x rw"],
            "invalid device spec",
        ),
        (
            vec!["--xid", "12", "--name", "x", "--device", "floppy"],
            "unknown device name",
        ),
        (
            vec!["--xid", "12", "--name", "x", "--ip", "127.0.0.300"],
            "invalid address \"127.0.0.300\"",
        ),
        (
            vec!["--xid", "12", "--name", "x", "--ip", "0.0.0.0"],
            "wildcard address",
        ),
        (
            vec!["--xid", "12", "--name", "x", "--ip", "127.0.0.9"],
            "already belongs to context \"web\"",
        ),
        (
            vec!["--xid", "12", "--name", "x", "--loopback", "open"],
            "invalid loopback mode",
        ),
    ];
    for (args, want) in cases {
        let mut full = vec!["create"];
        full.extend(&args);
        if !args.contains(&"--root") {
            full.extend(["--root", r]);
        }
        let out = c.vcontext(&full);
        assert_eq!(out.status.code(), Some(1), "{full:?} should fail");
        assert!(
            stderr(&out).contains(want),
            "{full:?}: {:?} lacks {want:?}",
            stderr(&out)
        );
        assert_eq!(c.list(), before, "{full:?} changed the registry");
    }
    for args in [vec!["run", "nope", "--", "true"], vec!["destroy", "nope"]] {
        let out = c.vcontext(&args);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr(&out).contains("no context named \"nope\""),
            "{}",
            stderr(&out)
        );
    }
    // Granting more than the secure profile works, and is audited.
    c.ok(&[
        "create",
        "--xid",
        "13",
        "--name",
        "priv",
        "--root",
        r,
        "--caps",
        "+net_raw,+sys_time",
    ]);
    let audit = std::fs::read_to_string(c.state().join("audit.log")).expect("audit log");
    assert!(audit.contains("create context priv (xid 13) grants capabilities beyond the secure profile: +net_raw,+sys_time"), "{audit}");
}

/// Makes the kernel refuse the sysctl layer for real: an allow-all program attached to the
/// registry's cgroup directory *exclusively* (no BPF_F_ALLOW_MULTI), as another tool might,
/// forbids any program on that hook below it.
struct ExclusiveSysctl(std::path::PathBuf);

impl ExclusiveSysctl {
    fn new(c: &Contexts) -> Self {
        let h = Hierarchy::detect().expect("cgroup2");
        let dir = h.instance_dir(&c.instance());
        std::fs::create_dir_all(&dir).expect("create the instance cgroup");
        bpf::attach_exclusive(&dir, Hook::Sysctl).expect("exclusive attach");
        ExclusiveSysctl(dir)
    }
}

impl Drop for ExclusiveSysctl {
    fn drop(&mut self) {
        let _ = bpf::detach_all_from(&self.0, Hook::Sysctl);
        let _ = std::fs::remove_dir(&self.0);
        let _ = std::fs::remove_dir(self.0.parent().unwrap_or(Path::new("/nonexistent")));
    }
}

#[test]
fn require_kernel_isolation_refuses_or_degrades_as_configured() {
    let c = Contexts::new();
    let root = context_support::guest(c.dir.path(), "g");
    let r = root.to_str().expect("utf-8");
    c.ok(&[
        "create",
        "--xid",
        "30",
        "--name",
        "strict",
        "--root",
        r,
        "--require-kernel-isolation",
    ]);
    c.ok(&["create", "--xid", "31", "--name", "lenient", "--root", r]);
    let write_sysctl =
        "v=$(cat /proc/sys/vm/swappiness); echo $v > /proc/sys/vm/swappiness && echo written";

    let guard = ExclusiveSysctl::new(&c);
    let out = c.vcontext(&["run", "strict", "--", "/bin/sh", "-c", write_sysctl]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "kernel isolation is required but unavailable here: sysctl: attaching cowfs_sysctl"
        ),
        "{}",
        stderr(&out)
    );
    assert!(!c.cgroup(30).exists(), "a refused run left its cgroup");

    // The lenient context runs, says what it lacks, and falls back to a read-only /proc/sys.
    let guard2 = ExclusiveSysctl::new(&c);
    let out = c.vcontext(&["run", "lenient", "--", "/bin/sh", "-c", write_sysctl]);
    let err = stderr(&out);
    assert!(
        err.contains("context lenient runs WITHOUT sysctl isolation"),
        "{err}"
    );
    assert!(err.contains("read-only /proc/sys"), "{err}");
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("written"));
    // The per-run flag makes even the lenient context refuse. (The lenient run removed the
    // registry's cgroup directory when it stopped, and the exclusive program with it.)
    let guard3 = ExclusiveSysctl::new(&c);
    let out = c.vcontext(&[
        "run",
        "lenient",
        "--require-kernel-isolation",
        "--",
        "/bin/true",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    drop((guard3, guard2, guard));

    // With nothing in the way, the strict context runs fully isolated and silently.
    let out = c.vcontext(&["run", "strict", "--", "/bin/sh", "-c", "echo ok"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
    assert_eq!(stderr(&out), "");
}
