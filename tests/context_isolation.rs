//! Issue 6, "Tests": two real contexts (corpus guests) side by side, checked from inside with
//! the guest's own perl, from the spectator's view (vps), and from the host.

mod context_support;

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use context_support::{Contexts, guest, program_ids};

/// Run inside context A with B's root open on fd 3 (as a careless host might leave it), B's
/// sleeping process id and a host loopback port as arguments. Prints KEY=ok or KEY=E<errno>.
const CHECKS: &str = r#"
use strict; use warnings; use Socket; use POSIX ();
my ($bpid, $hostport, $abstract) = @ARGV;
sub say { my ($k, $ok) = @_; print "$k=", ($ok ? "ok" : "E" . ($! + 0)), "\n"; }
say("read_b", open(my $r, "<", "/proc/self/fd/3/secret.txt"));
say("write_b", open(my $w, ">", "/proc/self/fd/3/planted.txt"));
say("list_b", opendir(my $d, "/proc/self/fd/3"));
opendir(my $p, "/proc") or die; my @pids = grep { /^\d+$/ } readdir($p);
my @sleepers = grep { my $cmd = ""; if (open(my $c, "<", "/proc/$_/cmdline")) { $cmd = <$c> // "" } $cmd =~ /sleep/ } @pids;
print "pids=", scalar(@pids), "\n"; print "sleepers=", scalar(@sleepers), "\n";
say("kill_b", kill(0, $bpid));
say("open_block", open(my $b, "<", "/tmp/loop"));
my $node = "/tmp/newnode"; say("mknod", syscall(133, $node, 0020666, 0x103) == 0);
sub bind_to { my ($ip) = @_; socket(my $s, PF_INET, SOCK_STREAM, 0) or die;
  bind($s, sockaddr_in(0, inet_aton($ip))) or return ("E" . ($! + 0));
  my (undef, $a) = sockaddr_in(getsockname($s)); return inet_ntoa($a); }
print "bind_other=", bind_to("127.0.0.3"), "\n";
print "bind_own=", bind_to("127.0.0.2"), "\n";
print "bind_any=", bind_to("0.0.0.0"), "\n";
print "bind_localhost=", bind_to("127.0.0.1"), "\n";
socket(my $c1, PF_INET, SOCK_STREAM, 0); say("connect_b", connect($c1, sockaddr_in(9, inet_aton("127.0.0.3"))));
socket(my $c2, PF_INET, SOCK_STREAM, 0); say("connect_host_loopback", connect($c2, sockaddr_in($hostport, inet_aton("127.0.0.1"))));
socket(my $u, PF_UNIX, SOCK_STREAM, 0); say("connect_abstract", connect($u, pack_sockaddr_un("\0$abstract")));
open(my $sr, "<", "/proc/sys/vm/swappiness") or die; my $val = <$sr>;
open(my $sw, ">", "/proc/sys/vm/swappiness") or die; say("sysctl_write", defined syswrite($sw, $val));
print "hostname=", (POSIX::uname())[1], "\n";
"#;

fn parse(out: &[u8]) -> HashMap<String, String> {
    String::from_utf8_lossy(out)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn errno(e: i32) -> String {
    format!("E{e}")
}

fn status_field(status: &str, field: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn sh(cmd: &mut Command) {
    let st = cmd.status().expect("spawn");
    assert!(st.success(), "{cmd:?}: {st}");
}

#[test]
fn contexts_are_isolated_from_each_other_and_the_host_is_not() {
    let c = Contexts::new();
    let a_root = guest(c.dir.path(), "a");
    let b_root = guest(c.dir.path(), "b");
    std::fs::write(b_root.join("secret.txt"), "b's secret\n").expect("write");
    // A block device node inside A's root (a loop device: the host may open it).
    sh(Command::new("mknod")
        .arg(a_root.join("tmp/loop"))
        .args(["b", "7", "0"]));
    // A setuid-root copy of cat, and a copy with CAP_SYS_ADMIN as a file capability.
    for (copy, how) in [("tmp/suidcat", "suid"), ("tmp/capcat", "fcap")] {
        std::fs::copy(a_root.join("usr/bin/cat"), a_root.join(copy)).expect("copy cat");
        match how {
            "suid" => sh(Command::new("chmod").arg("4755").arg(a_root.join(copy))),
            _ => sh(Command::new("setcap")
                .arg("cap_sys_admin+ep")
                .arg(a_root.join(copy))),
        }
    }

    let a = a_root.to_str().expect("utf-8");
    let b = b_root.to_str().expect("utf-8");
    c.ok(&[
        "create",
        "--xid",
        "201",
        "--name",
        "a",
        "--root",
        a,
        "--ip",
        "127.0.0.2",
    ]);
    c.ok(&[
        "create",
        "--xid",
        "202",
        "--name",
        "b",
        "--root",
        b,
        "--ip",
        "127.0.0.3",
    ]);
    c.ok(&[
        "create", "--xid", "203", "--name", "u", "--root", a, "--uid", "1000", "--gid", "1000",
    ]);

    // B runs a long sleep in the background.
    let (mut b_run, b_sleep) = c.run_sleeper("b");

    // Host services A must not reach: a loopback TCP port and an abstract unix socket.
    let host_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let host_port = host_listener.local_addr().expect("addr").port();
    let abstract_name = format!("cowfs-test-{}", std::process::id());
    let abstract_addr =
        <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(
            abstract_name.as_bytes(),
        )
        .expect("abstract address");
    let _abstract =
        std::os::unix::net::UnixListener::bind_addr(&abstract_addr).expect("abstract listen");

    let b_dir = std::fs::File::open(&b_root).expect("open b's root");
    let b_fd = b_dir.as_raw_fd();
    let mut a_cmd = Command::new(cowfs::bin("vcontext"));
    a_cmd
        .arg("--state-dir")
        .arg(c.state())
        .args(["run", "a", "--", "/usr/bin/perl", "-e", CHECKS])
        .arg(b_sleep.to_string())
        .arg(host_port.to_string())
        .arg(&abstract_name);
    // SAFETY: dup2 is async-signal-safe; fd 3 becomes B's root without close-on-exec.
    unsafe {
        a_cmd.pre_exec(move || {
            if libc::dup2(b_fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = a_cmd.output().expect("run a");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = parse(&out.stdout);
    let get = |k: &str| {
        r.get(k)
            .cloned()
            .unwrap_or_else(|| panic!("{k} missing in {r:?}"))
    };

    // Cannot read or write B's root, even through a descriptor to it (Landlock).
    assert_eq!(get("read_b"), errno(libc::EACCES));
    assert_eq!(get("write_b"), errno(libc::EACCES));
    assert_eq!(get("list_b"), errno(libc::EACCES));
    assert!(!b_root.join("planted.txt").exists());
    // Does not see B's processes and cannot signal them (own pid namespace + Landlock scope).
    assert_eq!(get("sleepers"), "0");
    assert!(get("pids").parse::<u32>().expect("count") <= 3, "{r:?}");
    assert_eq!(get("kill_b"), errno(libc::ESRCH));
    // Cannot open a block device or mknod (cgroup_device program; CAP_MKNOD dropped).
    assert_eq!(get("open_block"), errno(libc::EPERM));
    assert_eq!(get("mknod"), errno(libc::EPERM));
    // Binds only to its own address; wildcard and localhost become its own (chbind, lback).
    assert_eq!(get("bind_other"), errno(libc::EPERM));
    assert_eq!(get("bind_own"), "127.0.0.2");
    assert_eq!(get("bind_any"), "127.0.0.2");
    assert_eq!(get("bind_localhost"), "127.0.0.2");
    assert_eq!(get("connect_b"), errno(libc::EPERM));
    // 127.0.0.1 is A's own loopback: the host's service there is not reachable.
    assert_eq!(get("connect_host_loopback"), errno(libc::ECONNREFUSED));
    assert_eq!(get("connect_abstract"), errno(libc::EPERM));
    // No sysctl writes (cgroup_sysctl program).
    assert_eq!(get("sysctl_write"), errno(libc::EPERM));
    assert_eq!(get("hostname"), "a");

    // Cannot regain a dropped capability through a setuid binary (no_new_privs, bounding set).
    let suid = c.ok(&["run", "u", "--", "/tmp/suidcat", "/proc/self/status"]);
    assert_eq!(status_field(&suid, "Uid"), "1000 1000 1000 1000", "{suid}");
    assert_eq!(status_field(&suid, "CapEff"), "0000000000000000");
    // The same binary does make uid 1000 root on the host: the check above can fail.
    let host = Command::new("setpriv")
        .args(["--reuid", "1000", "--regid", "1000", "--clear-groups"])
        .arg(a_root.join("tmp/suidcat"))
        .arg("/proc/self/status")
        .output()
        .expect("setpriv");
    assert_eq!(
        status_field(&String::from_utf8_lossy(&host.stdout), "Uid"),
        "1000 0 0 0"
    );
    // A binary with CAP_SYS_ADMIN as a file capability: the kernel refuses to execute it
    // rather than run it without the capability it demands (it cannot be granted).
    let fcap = c.vcontext(&["run", "a", "--", "/tmp/capcat", "/proc/self/status"]);
    assert_eq!(fcap.status.code(), Some(1));
    let err = String::from_utf8_lossy(&fcap.stderr);
    assert!(err.contains("exec: /tmp/capcat: EPERM"), "{err}");
    let bounding = c.ok(&["run", "a", "--", "/bin/cat", "/proc/self/status"]);
    let sys_admin = 1u64 << 21;
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        let v = u64::from_str_radix(&status_field(&bounding, set), 16).expect("hex");
        assert_eq!(v & sys_admin, 0, "{set} has CAP_SYS_ADMIN: {bounding}");
    }

    // The spectator (vps) sees every context and the host.
    let all = c.vps(&[]);
    let rows = all.as_array().expect("array");
    let b_row = rows
        .iter()
        .find(|r| r["pid"] == b_sleep)
        .expect("b's sleep listed");
    assert_eq!(
        (b_row["xid"].as_u64(), b_row["context"].as_str()),
        (Some(202), Some("b"))
    );
    let me = std::process::id() as i64;
    let my_row = rows
        .iter()
        .find(|r| r["pid"] == me)
        .expect("the test process listed");
    assert_eq!(my_row["xid"], 0);
    let host_only = c.vps(&["--xid", "0"]);
    assert!(
        !host_only
            .as_array()
            .expect("array")
            .iter()
            .any(|r| r["pid"] == b_sleep)
    );
    let list = c.list();
    let b_status = list
        .as_array()
        .expect("array")
        .iter()
        .find(|s| s["name"] == "b")
        .expect("b");
    assert_eq!(b_status["running"], true);
    assert!(
        b_status["execs"].as_u64().expect("execs counted") >= 1,
        "{b_status}"
    );

    // The host is unaffected.
    std::fs::File::open(a_root.join("tmp/loop")).expect("the host opens the block device");
    std::net::TcpListener::bind("127.0.0.3:0").expect("the host binds B's address");
    let swappiness = std::fs::read_to_string("/proc/sys/vm/swappiness").expect("read sysctl");
    std::fs::write("/proc/sys/vm/swappiness", &swappiness).expect("the host writes a sysctl");
    assert_eq!(
        std::fs::read_to_string(b_root.join("secret.txt")).expect("read"),
        "b's secret\n"
    );

    // destroy leaves no cgroup, mount, BPF program or process behind.
    let b_programs = program_ids(&list, "b");
    assert_eq!(b_programs.len(), 6, "{list}");
    let destroyed: serde_json::Value =
        serde_json::from_str(&c.ok(&["destroy", "b", "--json"])).expect("json");
    assert!(destroyed["killed"].as_u64().expect("killed") >= 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while b_run.try_wait().expect("wait").is_none() {
        assert!(
            Instant::now() < deadline,
            "`vcontext run b` outlived its context"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !Path::new(&format!("/proc/{b_sleep}")).exists(),
        "b's sleep survived"
    );
    for name in ["a", "u"] {
        c.ok(&["destroy", name]);
    }
    assert_eq!(c.list(), serde_json::json!([]));
    for (xid, root) in [(201, &a_root), (202, &b_root), (203, &a_root)] {
        c.assert_nothing_left(xid, root, &b_programs);
    }
}
