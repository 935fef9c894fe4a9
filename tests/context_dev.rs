//! What a context finds in its minimal /dev (exactly null, zero, full, random, urandom, tty, a
//! private pts, and the usual links — each working as it should), a positive `--device` grant
//! (just the access granted, nothing beyond), and the groups its command runs with (its gid
//! only: the caller's supplementary groups never leak in).

mod context_support;

use std::collections::HashMap;
use std::process::Command;

use context_support::{Contexts, guest};

/// Lists /dev (name, type, major:minor or link target), then tries the devices; prints
/// `KEY=ok` or `KEY=E<errno>` per check.
const DEV_CHECKS: &str = r#"
use strict; use warnings; use Fcntl;
sub entries { my ($dir) = @_; opendir(my $d, $dir) or die "$dir: $!"; sort grep { !/^\.\.?$/ } readdir $d }
for my $n (entries("/dev")) {
  my @s = lstat("/dev/$n") or die; my $r = $s[6];
  my $t = -l _ ? "l" : -d _ ? "d" : -c _ ? "c" : -b _ ? "b" : -f _ ? "f" : "?";
  my $x = $t eq "l" ? readlink("/dev/$n")
        : ($t eq "c" || $t eq "b") ? (($r >> 8) & 0xfff) . ":" . (($r & 0xff) | (($r >> 12) & 0xfff00)) : "-";
  print "dev/$n=$t $x\n";
}
print "pts_before=", join(",", entries("/dev/pts")), "\n";
sub try { my ($k, $ok) = @_; print "$k=", ($ok ? "ok" : "E" . ($! + 0)), "\n" }
open(my $z, "<", "/dev/zero") or die; sysread($z, my $zeros, 64);
print "zero=", ($zeros eq "\0" x 64 ? "zeros" : "other"), "\n";
open(my $nl, ">", "/dev/null") or die; try("null_write", defined syswrite($nl, "x" x 100));
open(my $nr, "<", "/dev/null") or die; print "null_read=", sysread($nr, my $nothing, 10), "\n";
open(my $f, ">", "/dev/full") or die; try("full_write", defined syswrite($f, "x"));
open(my $u, "<", "/dev/urandom") or die; try("urandom_read", sysread($u, my $b1, 32) == 32);
open(my $r, "<", "/dev/random") or die; try("random_read", sysread($r, my $b2, 32) == 32);
try("tty_open", sysopen(my $t, "/dev/tty", O_RDWR));
try("ptmx_open", sysopen(my $pt, "/dev/ptmx", O_RDWR | O_NOCTTY));
print "pts_after=", join(",", entries("/dev/pts")), "\n";
try("loop_read", sysopen(my $l1, "/tmp/loop", O_RDONLY));
try("loop_write", sysopen(my $l2, "/tmp/loop", O_RDWR));
try("mem_read", sysopen(my $m, "/tmp/mem", O_RDONLY));
"#;

fn parse(out: &[u8]) -> HashMap<String, String> {
    String::from_utf8_lossy(out)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn status_field(status: &str, field: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn mknod(path: &std::path::Path, kind: &str, major: &str, minor: &str) {
    let st = Command::new("mknod")
        .arg(path)
        .args([kind, major, minor])
        .status()
        .expect("mknod");
    assert!(st.success());
}

#[test]
fn minimal_dev_device_grants_and_groups() {
    let c = Contexts::new();
    let root = guest(c.dir.path(), "g");
    // Nodes planted in the root: a loop device (granted read-only below) and /dev/mem (never).
    mknod(&root.join("tmp/loop"), "b", "7", "0");
    mknod(&root.join("tmp/mem"), "c", "1", "1");
    let r = root.to_str().expect("utf-8");
    c.ok(&[
        "create", "--xid", "241", "--name", "granted", "--root", r, "--device", "b 7:0 r",
    ]);
    c.ok(&["create", "--xid", "242", "--name", "plain", "--root", r]);
    c.ok(&[
        "create", "--xid", "243", "--name", "user", "--root", r, "--uid", "1000", "--gid", "1001",
    ]);

    let run = |name: &str| {
        let out = c.vcontext(&["run", name, "--", "/usr/bin/perl", "-e", DEV_CHECKS]);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        parse(&out.stdout)
    };
    let granted = run("granted");
    let dev: Vec<(String, String)> = {
        let mut v: Vec<_> = granted
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("dev/").map(|n| (n.to_string(), v.clone())))
            .collect();
        v.sort();
        v
    };
    let want: Vec<(String, String)> = [
        ("fd", "l /proc/self/fd"),
        ("full", "c 1:7"),
        ("null", "c 1:3"),
        ("ptmx", "l pts/ptmx"),
        ("pts", "d -"),
        ("random", "c 1:8"),
        ("shm", "d -"),
        ("stderr", "l /proc/self/fd/2"),
        ("stdin", "l /proc/self/fd/0"),
        ("stdout", "l /proc/self/fd/1"),
        ("tty", "c 5:0"),
        ("urandom", "c 1:9"),
        ("zero", "c 1:5"),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect();
    assert_eq!(dev, want, "the minimal /dev, nothing more");
    let get = |r: &HashMap<String, String>, k: &str| {
        r.get(k)
            .cloned()
            .unwrap_or_else(|| panic!("{k} missing in {r:?}"))
    };
    let errno = |e: i32| format!("E{e}");
    // A private devpts: none of the host's terminals, a new one appears when ptmx is opened.
    assert_eq!(get(&granted, "pts_before"), "ptmx");
    assert_eq!(get(&granted, "ptmx_open"), "ok");
    assert_eq!(get(&granted, "pts_after"), "0,ptmx");
    // Every node does its job.
    assert_eq!(get(&granted, "zero"), "zeros");
    assert_eq!(get(&granted, "null_write"), "ok");
    assert_eq!(get(&granted, "null_read"), "0");
    assert_eq!(get(&granted, "full_write"), errno(libc::ENOSPC));
    assert_eq!(get(&granted, "urandom_read"), "ok");
    assert_eq!(get(&granted, "random_read"), "ok");
    // /dev/tty may be opened (allowed) but the command has no controlling terminal.
    assert_eq!(get(&granted, "tty_open"), errno(libc::ENXIO));
    // The grant: exactly read access to the loop device; /dev/mem was never granted.
    assert_eq!(get(&granted, "loop_read"), "ok");
    assert_eq!(get(&granted, "loop_write"), errno(libc::EPERM));
    assert_eq!(get(&granted, "mem_read"), errno(libc::EPERM));
    // Without the grant, the same node cannot be opened at all.
    let plain = run("plain");
    assert_eq!(get(&plain, "loop_read"), errno(libc::EPERM));
    assert_eq!(get(&plain, "zero"), "zeros");

    // Groups: run from a caller with supplementary groups; inside only the context's gid.
    let groups_of = |name: &str| {
        let out = Command::new("setpriv")
            .args(["--groups", "4,27,100"])
            .arg(cowfs::bin("vcontext"))
            .arg("--state-dir")
            .arg(c.state())
            .args(["run", name, "--", "/bin/cat", "/proc/self/status"])
            .output()
            .expect("setpriv vcontext");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let status = String::from_utf8_lossy(&out.stdout).into_owned();
        (
            status_field(&status, "Uid"),
            status_field(&status, "Gid"),
            status_field(&status, "Groups"),
        )
    };
    // The caller really has them (so the checks below can fail).
    let host = Command::new("setpriv")
        .args(["--groups", "4,27,100", "/bin/cat", "/proc/self/status"])
        .output()
        .expect("setpriv cat");
    assert_eq!(
        status_field(&String::from_utf8_lossy(&host.stdout), "Groups"),
        "4 27 100"
    );
    assert_eq!(
        groups_of("user"),
        (
            "1000 1000 1000 1000".to_string(),
            "1001 1001 1001 1001".to_string(),
            "1001".to_string()
        )
    );
    assert_eq!(
        groups_of("plain"),
        (
            "0 0 0 0".to_string(),
            "0 0 0 0".to_string(),
            "0".to_string()
        )
    );

    for name in ["granted", "plain", "user"] {
        c.ok(&["destroy", name]);
    }
}
