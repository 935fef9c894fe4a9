//! End-to-end tests of the kernel fast path (issue 5): passthrough proven by the daemon's
//! request counters, files replaced while open (copy-up, link break) keeping their readers, and
//! kernel caches invalidated when the view changes.

mod common;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::process::Command;

use common::*;

/// The daemon's counters (`unionctl MNT stats --json`).
fn stats(m: &Mounted) -> BTreeMap<String, u64> {
    let out = ok(unionctl().arg(&m.mnt).args(["stats", "--json"]));
    serde_json::from_slice(&out.stdout).expect("stats JSON")
}

/// What changed in the counters between two snapshots.
fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// Pseudo-random, incompressible content of `len` bytes.
fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn read_all(path: &Path) -> Vec<u8> {
    let mut data = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    data
}

#[test]
fn passthrough_serves_file_data_without_the_daemon() {
    let l = Layout::new();
    let big = content(3 << 20, 7);
    std::fs::write(l.dir("ro/big"), &big).expect("write");
    let m = l.mount();

    let before = stats(&m);
    assert_eq!(read_all(&m.path("big")), big, "content through the mount");
    // Random reads too, through one descriptor.
    let f = File::open(m.path("big")).expect("open");
    let mut buf = vec![0; 4096];
    for i in 0..64u64 {
        let off = (i * 48_611 * 4096) % (big.len() as u64 - 4096);
        f.read_exact_at(&mut buf, off).expect("pread");
        assert_eq!(buf[..], big[off as usize..off as usize + 4096]);
    }
    drop(f);
    // A new file, written and read back through the mount.
    let written = content(2 << 20, 11);
    let mut w = File::create(m.path("new")).expect("create");
    w.write_all(&written).expect("write");
    w.sync_all().expect("fsync");
    drop(w);
    assert_eq!(read_all(&m.path("new")), written);
    let d = delta(&before, &stats(&m));
    assert_eq!(d.get("read"), None, "no READ may reach the daemon: {d:?}");
    assert_eq!(d.get("write"), None, "no WRITE may reach the daemon: {d:?}");
    assert!(d["passthrough_opens"] >= 4, "{d:?}");
    assert_eq!(std::fs::read(l.dir("rw/new")).expect("backing"), written);
    drop(m);

    // The same reads without passthrough do reach the daemon: the counters can tell.
    let m = Mounted::new(&format!("{},nopassthrough", l.dirs()), &l.dir("mnt"));
    let before = stats(&m);
    assert_eq!(read_all(&m.path("big")), big);
    let d = delta(&before, &stats(&m));
    assert!(d.get("read").copied().unwrap_or(0) > 0, "{d:?}");
    assert_eq!(d.get("passthrough_opens"), None, "{d:?}");
}

/// One reader holds `rel` open, then a writer changes it through another descriptor: the
/// reader keeps the content it opened, new opens see the new one, the inode number stays.
fn replaced_while_open(m: &Mounted, rel: &str, old: &[u8]) {
    let path = m.path(rel);
    let ino = inode(&path);
    let reader = File::open(&path).expect("reader opens");
    let mut first = vec![0; old.len()];
    reader.read_exact_at(&mut first, 0).expect("reader reads");
    assert_eq!(first, old);

    let mut writer = OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("writer opens");
    writer.write_all(b"CHANGED!").expect("write");
    drop(writer);

    let mut again = vec![0; old.len()];
    reader
        .read_exact_at(&mut again, 0)
        .expect("reader reads again");
    assert_eq!(again, old, "{rel}: the old reader keeps the old content");
    let mut expected = old.to_vec();
    expected[..8].copy_from_slice(b"CHANGED!");
    assert_eq!(
        read_all(&path),
        expected,
        "{rel}: a new open sees the change"
    );
    assert_eq!(
        inode(&path),
        ino,
        "{rel}: same inode number after the change"
    );
    assert_eq!(
        reader.metadata().expect("fstat").ino(),
        ino,
        "{rel}: the reader's file keeps the number too"
    );
    // A second writer (the name now has its own node) changes it in place.
    let mut w = OpenOptions::new().append(true).open(&path).expect("append");
    w.write_all(b"+tail").expect("append");
    drop(w);
    assert!(read_all(&path).ends_with(b"+tail"));
    drop(reader);
}

#[test]
fn files_replaced_while_open_keep_their_readers() {
    let l = Layout::new();
    let large = content(1 << 20, 3); // passed through
    let small = content(4000, 5); // served through the daemon and the page cache
    std::fs::create_dir(l.dir("ro/usr")).expect("mkdir");
    for (name, data) in [("large", &large), ("small", &small)] {
        std::fs::write(l.dir("ro").join(name), data).expect("write");
        std::fs::write(l.dir("ro/usr").join(name), data).expect("write");
    }
    // The files under usr/ become store objects (links carrying the store's mark).
    ok(Command::new(cowfs::bin("vhashify"))
        .args(["--no-default-excludes", "--store"])
        .arg(l.dir("store"))
        .arg(l.dir("ro")));
    let object_of = |name: &str| {
        let ino = inode(&l.dir("ro/usr").join(name));
        walk_files(&l.dir("store/objects"))
            .into_iter()
            .find(|p| inode(p) == ino)
            .unwrap_or_else(|| panic!("usr/{name} is not a store object"))
    };
    let objects: Vec<_> = ["large", "small"].iter().map(|n| object_of(n)).collect();
    let prints: Vec<_> = objects.iter().map(|o| fingerprint(o)).collect();

    let m = l.mount();
    replaced_while_open(&m, "large", &large); // copy-up, passthrough reader
    replaced_while_open(&m, "small", &small); // copy-up, cached reader
    replaced_while_open(&m, "usr/large", &large); // link break, passthrough reader
    replaced_while_open(&m, "usr/small", &small); // link break, cached reader
    for (o, p) in objects.iter().zip(&prints) {
        assert_eq!(&fingerprint(o), p, "store object {} changed", o.display());
    }
    assert_eq!(std::fs::read(l.dir("ro/large")).expect("lower"), large);
    let d = stats(&m);
    assert_eq!(d.get("write").copied().unwrap_or(0), 0, "{d:?}");
}

fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("readdir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn branch_changes_reach_cached_data_listings_and_names_at_once() {
    let l = Layout::new();
    let top = l.dir("top");
    std::fs::create_dir_all(top.join("d")).expect("mkdir");
    std::fs::create_dir(l.dir("ro/d")).expect("mkdir");
    std::fs::write(l.dir("ro/d/f"), b"below").expect("write");
    std::fs::write(top.join("d/f"), b"above").expect("write");
    std::fs::write(top.join("d/g"), b"new").expect("write");
    std::fs::write(top.join("h"), b"in the root").expect("write");
    let m = l.mount();
    // Misses the kernel may cache, in the root and below.
    assert!(!m.path("h").exists() && !m.path("d/g").exists());
    let names = |m: &Mounted| {
        let mut n: Vec<String> = std::fs::read_dir(m.path("d"))
            .expect("readdir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    };
    // Everything the kernel may cache: data (page cache), attributes, names, the listing. (The
    // first reads through the daemon leave the access time to be fetched once more.)
    for _ in 0..2 {
        assert_eq!(read_all(&m.path("d/f")), b"below");
        assert_eq!(names(&m), ["f"]);
        assert_eq!(std::fs::metadata(m.path("d/f")).expect("stat").len(), 5);
    }
    let before = stats(&m);
    assert_eq!(read_all(&m.path("d/f")), b"below");
    assert_eq!(names(&m), ["f"]);
    assert_eq!(std::fs::metadata(m.path("d/f")).expect("stat").len(), 5);
    let cached = delta(&before, &stats(&m));
    assert!(!m.path("h").exists() && !m.path("d/g").exists());
    for op in ["lookup", "getattr", "readdir", "readdirplus", "read"] {
        assert_eq!(
            cached.get(op),
            None,
            "{op} should be answered by the kernel: {cached:?}"
        );
    }

    ok(unionctl()
        .arg(&m.mnt)
        .arg("add")
        .arg(format!("{}=ro", top.display())));
    assert_eq!(read_all(&m.path("d/f")), b"above", "data at once");
    assert_eq!(names(&m), ["f", "g"], "listing at once");
    assert_eq!(read_all(&m.path("d/g")), b"new", "new name at once");
    assert_eq!(
        read_all(&m.path("h")),
        b"in the root",
        "new name in the root at once"
    );

    ok(unionctl().arg(&m.mnt).arg("remove").arg(&top));
    assert_eq!(read_all(&m.path("d/f")), b"below");
    assert_eq!(names(&m), ["f"]);
    assert!(!m.path("d/g").exists() && !m.path("h").exists());
}

#[test]
fn a_warm_walk_costs_no_requests_and_directories_are_not_opened() {
    let l = Layout::new();
    for d in 0..20 {
        let dir = l.dir("ro").join(format!("d{d}"));
        std::fs::create_dir(&dir).expect("mkdir");
        for f in 0..20 {
            std::fs::write(dir.join(format!("f{f}")), b"x").expect("write");
        }
    }
    let m = l.mount();
    let walk = |m: &Mounted| {
        let out = ok(Command::new("find").arg(&m.mnt).arg("-ls"));
        out.stdout.iter().filter(|&&b| b == b'\n').count()
    };
    // The first walk reads the listings through the daemon, after which the kernel fetches
    // the directories' access times once more: the walks after that cost nothing.
    assert_eq!(walk(&m), 1 + 20 + 400);
    assert_eq!(walk(&m), 421);
    let before = stats(&m);
    assert_eq!(walk(&m), 421);
    let d = delta(&before, &stats(&m));
    let requests: Vec<_> = d
        .keys()
        // find asks statfs once per run (for -fstype and friends); nothing caches that.
        .filter(|k| cowfs_fs::stats::is_request_name(k) && *k != "statfs")
        .collect();
    assert!(
        requests.is_empty(),
        "a warm walk is served by the kernel: {d:?}"
    );
    // The kernel stopped opening directories after the first refusal.
    assert!(stats(&m).get("opendir").copied().unwrap_or(0) <= 1);
}

#[test]
fn inode_numbers_survive_the_kernel_forgetting_them() {
    let l = Layout::new();
    std::fs::create_dir_all(l.dir("ro/d/e")).expect("mkdir");
    std::fs::write(l.dir("ro/d/e/f"), b"lower").expect("write");
    std::fs::write(l.dir("ro/d/g"), b"lower").expect("write");
    let m = l.mount();
    std::fs::write(m.path("d/e/f"), b"copied up").expect("copy-up");
    let names = ["d", "d/e", "d/e/f", "d/g"];
    let before: Vec<u64> = names.iter().map(|n| inode(&m.path(n))).collect();
    let forgets = stats(&m).get("forget").copied().unwrap_or(0);
    // Evict the kernel's dentries and inodes: it forgets every node it can.
    nix::unistd::sync();
    std::fs::write("/proc/sys/vm/drop_caches", "2").expect("drop caches (root)");
    wait_until("the kernel forgets the nodes", || {
        stats(&m).get("forget").copied().unwrap_or(0) > forgets
    });
    let after: Vec<u64> = names.iter().map(|n| inode(&m.path(n))).collect();
    assert_eq!(before, after, "inode numbers of {names:?}");

    // Files replaced while open (their names move to successor nodes) while the kernel keeps
    // forgetting: a forget racing the lookup that revalidates the name must not lose the number.
    for i in 0..30 {
        std::fs::write(l.dir("ro").join(format!("r{i}")), vec![b'x'; 100_000]).expect("write");
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let dropper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = std::fs::write("/proc/sys/vm/drop_caches", "2");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        })
    };
    for i in 0..30 {
        let path = m.path(format!("r{i}"));
        let ino = inode(&path);
        let reader = File::open(&path).expect("reader");
        let mut w = OpenOptions::new().write(true).open(&path).expect("writer");
        w.write_all(b"CHANGED!").expect("write");
        drop(w);
        let _ = read_all(&path);
        assert_eq!(inode(&path), ino, "r{i}: number lost to a racing forget");
        drop(reader);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    dropper.join().expect("dropper");
}

#[test]
fn the_daemon_cannot_override_disk_quotas() {
    let l = Layout::new();
    let m = l.mount();
    let pid = daemon_pid(&m.mnt);
    // Bit numbers from linux/capability.h.
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_SYS_RESOURCE: u32 = 24;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    for field in ["CapEff:", "CapPrm:"] {
        let caps = status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .map(|v| u64::from_str_radix(v.trim(), 16).expect("hex"))
            .expect("capability line");
        assert_eq!(caps & (1 << CAP_SYS_RESOURCE), 0, "{field} {caps:x}");
        assert_ne!(caps & (1 << CAP_SYS_ADMIN), 0, "{field} {caps:x}");
    }
}

/// The kernel leaves dropping set-ID bits and file capabilities to the daemon (which spares a
/// GETXATTR round trip per write: only the first write of an open file asks): writes and
/// truncates by an unprivileged user must still drop them, with and without passthrough.
#[test]
fn writes_drop_set_id_bits_and_capabilities_without_a_request_per_write() {
    let l = Layout::new();
    for name in ["w", "t", "cap"] {
        let p = l.dir("rw").join(name);
        std::fs::write(&p, b"#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o6777))
            .expect("chmod");
    }
    ok(Command::new("setcap")
        .arg("cap_net_raw+ep")
        .arg(l.dir("rw/cap")));
    for options in ["", ",nopassthrough"] {
        let m = Mounted::new(&format!("{}{options}", l.dirs()), &l.dir("mnt"));
        let before = stats(&m);
        let out = sh_as(
            1000,
            1000,
            &format!(
                "exec 3>>{w}; for i in $(seq 20); do echo x >&3; done; exec 3>&- \
                 && truncate -s 1 {t} && echo x >> {cap}",
                w = m.path("w").display(),
                t = m.path("t").display(),
                cap = m.path("cap").display()
            ),
        );
        assert!(out.status.success(), "{options}: {out:?}");
        for name in ["w", "t", "cap"] {
            let mode = std::fs::metadata(l.dir("rw").join(name)).expect("m").mode();
            assert_eq!(
                mode & 0o6000,
                0,
                "{options}: {name} kept set-ID bits: {mode:o}"
            );
            assert_eq!(
                std::fs::metadata(m.path(name)).expect("m").mode() & 0o6000,
                0,
                "{options}: {name} through the mount"
            );
        }
        let caps = ok(Command::new("getcap").arg(l.dir("rw/cap")));
        assert!(
            caps.stdout.is_empty(),
            "{options}: capabilities kept: {caps:?}"
        );
        let d = delta(&before, &stats(&m));
        // 22 writes and a truncate: the kernel asks until it has seen the bits dropped, a
        // few times, not once per write.
        assert!(
            d.get("getxattr").copied().unwrap_or(0) < 10,
            "{options}: a GETXATTR per write: {d:?}"
        );
        drop(m);
        for name in ["w", "t", "cap"] {
            std::fs::set_permissions(
                l.dir("rw").join(name),
                std::os::unix::fs::PermissionsExt::from_mode(0o6777),
            )
            .expect("chmod");
        }
        ok(Command::new("setcap")
            .arg("cap_net_raw+ep")
            .arg(l.dir("rw/cap")));
    }
}

/// `noopen` on a union without a writable branch: after the first OPEN (answered ENOSYS) the
/// kernel opens nothing; a warm open+read+close of a small file costs no request, large files
/// are read through the daemon, writes fail with EROFS, and no writable branch can join.
#[test]
fn a_read_only_union_without_opens_reads_everything_and_writes_nothing() {
    let l = Layout::new();
    let (small, big) = (content(5000, 3), content(1 << 20, 4));
    std::fs::create_dir(l.dir("ro/d")).expect("mkdir");
    std::fs::write(l.dir("ro/d/small"), &small).expect("write");
    std::fs::write(l.dir("ro/big"), &big).expect("write");
    let refused = cowfs()
        .args(["mount", "-o", &format!("{},noopen", l.dirs()), "none"])
        .arg(l.dir("mnt"))
        .output()
        .expect("cowfs mount");
    assert!(!refused.status.success(), "noopen over a writable branch");
    let msg = String::from_utf8_lossy(&refused.stderr);
    assert!(
        msg.contains("noopen needs a union without a writable branch"),
        "{msg}"
    );

    let m = Mounted::new(
        &format!("dirs={}=ro,noopen", l.dir("ro").display()),
        &l.dir("mnt"),
    );
    // Twice: reads through the daemon leave the attributes' atime to be fetched once more.
    for _ in 0..2 {
        assert_eq!(read_all(&m.path("d/small")), small);
        assert_eq!(read_all(&m.path("big")), big);
    }
    let before = stats(&m);
    for _ in 0..3 {
        assert_eq!(read_all(&m.path("d/small")), small);
        assert_eq!(read_all(&m.path("big")), big);
    }
    let warm = delta(&before, &stats(&m));
    assert_eq!(
        warm,
        BTreeMap::new(),
        "warm reads asked the daemon: {warm:?}"
    );
    // A cold read goes to the daemon, which opens the backing file for each READ only.
    let out = Command::new("sh")
        .args(["-c", "echo 3 > /proc/sys/vm/drop_caches"])
        .status()
        .expect("drop caches");
    assert!(out.success());
    let before = stats(&m);
    assert_eq!(read_all(&m.path("big")), big);
    let cold = delta(&before, &stats(&m));
    assert!(cold.get("read").is_some_and(|&n| n > 0), "{cold:?}");
    assert_eq!(cold.get("open"), None, "{cold:?}");

    let write = OpenOptions::new()
        .append(true)
        .open(m.path("d/small"))
        .and_then(|mut f| f.write_all(b"x"));
    let err = write.expect_err("a write through a noopen union");
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    assert_eq!(std::fs::read(l.dir("ro/d/small")).expect("branch"), small);

    let add = unionctl()
        .arg(&m.mnt)
        .args(["add"])
        .arg(format!("{}=rw", l.dir("rw").display()))
        .output()
        .expect("unionctl");
    assert!(
        !add.status.success(),
        "a writable branch joined a noopen union"
    );
    let msg = String::from_utf8_lossy(&add.stderr);
    assert!(msg.contains("read-only branches only"), "{msg}");
}
