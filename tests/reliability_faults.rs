//! Issue 7, faults other than a killed daemon: a full writable branch (ENOSPC), a quota
//! exceeded (EDQUOT), fsync through the mount under a simulated power cut, and damaged store
//! objects. In every case the writer gets the error, the original stays intact and readable,
//! no temp entry is left, and the daemon keeps serving.
//!
//! EDQUOT is injected: this kernel has no quota format (CONFIG_QFMT_V1/V2 unset, so no
//! filesystem here can enforce a quota), so the daemon runs under a seccomp filter that makes
//! the syscalls a quota refuses (copy_file_range, pwrite64) fail with EDQUOT.

mod common;
mod reliability_support;

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::*;
use reliability_support::*;

fn errno_of<T: std::fmt::Debug>(r: std::io::Result<T>, what: &str) -> i32 {
    r.expect_err(what)
        .raw_os_error()
        .unwrap_or_else(|| panic!("{what}: not an OS error"))
}

fn pattern(seed: &str, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    blake3::Hasher::new()
        .update(seed.as_bytes())
        .finalize_xof()
        .fill(&mut v);
    v
}

fn append(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().append(true).open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// The daemon answers: it is alive, the root lists, a file reads.
fn still_serving(d: &mut ForegroundDaemon, probe: &Path, expect: &[u8], ctx: &str) {
    assert!(d.alive(), "{ctx}: the daemon died");
    std::fs::read_dir(&d.mnt)
        .unwrap_or_else(|e| panic!("{ctx}: cannot list the mount: {e}"))
        .count();
    assert_eq!(
        std::fs::read(probe).unwrap_or_else(|e| panic!("{ctx}: cannot read: {e}")),
        expect,
        "{ctx}: {} changed",
        probe.display()
    );
}

#[test]
fn a_full_writable_branch_gives_enospc_and_keeps_originals_and_serving() {
    let l = Layout::new();
    let small = SmallFs::tmpfs(&l.dir("small"), "16m", 2000);
    let (rw, store_dir) = (small.path.join("rw"), small.path.join("store"));
    std::fs::create_dir(&rw).expect("mkdir");
    let (store, _) = hashstore::Store::init(&store_dir).expect("store");
    let big = pattern("big", 24 << 20);
    let medium = pattern("medium", 4 << 20);
    let unified = pattern("unified", 6 << 20);
    std::fs::write(l.dir("ro/big"), &big).expect("write");
    std::fs::write(l.dir("ro/medium"), &medium).expect("write");
    std::fs::create_dir_all(l.dir("ro/deep/er")).expect("mkdir");
    std::fs::write(l.dir("ro/deep/er/small"), b"small").expect("write");
    std::fs::write(rw.join("u"), &unified).expect("write");
    std::fs::write(rw.join("v"), &unified).expect("write");
    let object = cowfs::unify_files(&store, &[&rw.join("u"), &rw.join("v")]).expect("unify");
    let object_print = fingerprint(&object);
    // Leave about 2 MiB free.
    let free = nix::sys::statvfs::statvfs(&small.path).expect("statvfs");
    let avail = free.blocks_available() * free.fragment_size();
    std::fs::write(
        small.path.join("filler"),
        vec![1u8; (avail - (2 << 20)) as usize],
    )
    .expect("filler");

    let options = format!("dirs={}=rw:{}=ro", rw.display(), l.dir("ro").display());
    let mut d = ForegroundDaemon::start(&options, &l.dir("mnt"), &[]);
    let m = d.mnt.clone();
    let mut errors = 0;
    let ctx = "copy-up of a 24 MiB file";
    assert_eq!(
        errno_of(append(&m.join("big"), b"x"), ctx),
        libc::ENOSPC,
        "{ctx}"
    );
    errors += 1;
    still_serving(&mut d, &m.join("big"), &big, ctx);
    let ctx = "copy-up of a 4 MiB file (chmod)";
    let r = std::fs::set_permissions(m.join("medium"), PermissionsExt::from_mode(0o600));
    assert_eq!(errno_of(r, ctx), libc::ENOSPC, "{ctx}");
    errors += 1;
    assert_eq!(
        std::fs::metadata(m.join("medium")).expect("stat").mode() & 0o777,
        0o644,
        "{ctx}: mode unchanged"
    );
    still_serving(&mut d, &m.join("medium"), &medium, ctx);
    let ctx = "link break of a 6 MiB store-linked file";
    let r = std::fs::OpenOptions::new().write(true).open(m.join("u"));
    assert_eq!(errno_of(r, ctx), libc::ENOSPC, "{ctx}");
    errors += 1;
    still_serving(&mut d, &m.join("u"), &unified, ctx);
    assert_eq!(inode(&rw.join("u")), inode(&object), "{ctx}: still linked");
    assert_eq!(fingerprint(&object), object_print, "{ctx}: object changed");
    assert!(work_dir_entries(&rw).is_empty(), "temp entries left");

    // What fits still works: a truncating link break copies only what survives.
    nix::unistd::truncate(&m.join("u"), 1 << 20).expect("truncate to 1 MiB fits");
    assert_eq!(
        std::fs::read(m.join("u")).expect("read"),
        &unified[..1 << 20]
    );
    assert_eq!(std::fs::read(rw.join("v")).expect("twin"), unified);
    assert_eq!(
        fingerprint(&object),
        object_print,
        "object changed by the truncate"
    );

    let ctx = "a new file written past the free space";
    let mut f = std::fs::File::create(m.join("new")).expect("create");
    let r = f.write_all(&vec![7u8; 8 << 20]).and_then(|()| f.sync_all());
    assert_eq!(errno_of(r, ctx), libc::ENOSPC, "{ctx}");
    errors += 1;
    drop(f);
    still_serving(&mut d, &m.join("medium"), &medium, ctx);
    std::fs::remove_file(m.join("new")).expect("remove");

    // No inodes left: creation and directory copy-up fail cleanly too.
    let mut fillers = 0;
    while std::fs::write(small.path.join(format!("i{fillers}")), b"").is_ok() {
        fillers += 1;
    }
    let ctx = "no inodes left";
    assert_eq!(
        errno_of(std::fs::write(m.join("deep/er/small"), b"x"), ctx),
        libc::ENOSPC,
        "{ctx}: copy-up of deep/er"
    );
    assert_eq!(
        errno_of(std::fs::create_dir(m.join("newdir")), ctx),
        libc::ENOSPC,
        "{ctx}: mkdir"
    );
    errors += 2;
    still_serving(&mut d, &m.join("deep/er/small"), b"small", ctx);
    assert!(!rw.join("deep").exists(), "{ctx}: half a copy-up left");
    assert!(work_dir_entries(&rw).is_empty(), "{ctx}: temp entries left");

    // Space back: the same operations now succeed.
    std::fs::remove_file(small.path.join("filler")).expect("rm");
    for i in 0..fillers {
        std::fs::remove_file(small.path.join(format!("i{i}"))).expect("rm");
    }
    append(&m.join("medium"), b"tail").expect("append once space is back");
    let mut want = medium.clone();
    want.extend_from_slice(b"tail");
    assert_eq!(std::fs::read(m.join("medium")).expect("read"), want);
    std::fs::write(m.join("deep/er/small"), b"x").expect("copy-up once space is back");
    assert_eq!(std::fs::read(l.dir("ro/big")).expect("ro"), big);
    assert_eq!(std::fs::read(l.dir("ro/medium")).expect("ro"), medium);
    assert!(hidden_names(&m).is_empty());
    d.stop();
    report(
        "enospc",
        &[
            ("errors_injected", errors.into()),
            ("files_checked", 6.into()),
            ("bytes_lost", 0.into()),
        ],
    );
}

#[test]
fn an_exceeded_quota_gives_edquot_and_keeps_originals_and_serving() {
    let l = Layout::new();
    let (store, _) = hashstore::Store::init(&l.dir("store")).expect("store");
    let lower = pattern("lower", 2 << 20);
    let unified = pattern("unified", 1 << 20);
    std::fs::write(l.dir("ro/lower"), &lower).expect("write");
    std::fs::write(l.dir("ro/other"), &lower).expect("write");
    std::fs::write(l.dir("rw/u"), &unified).expect("write");
    std::fs::write(l.dir("rw/v"), &unified).expect("write");
    let object = cowfs::unify_files(&store, &[&l.dir("rw/u"), &l.dir("rw/v")]).expect("unify");
    let object_print = fingerprint(&object);
    let quota = [libc::SYS_copy_file_range, libc::SYS_pwrite64].map(|syscall| Inject {
        syscall,
        errno: libc::EDQUOT,
        min_count: None,
    });
    // Without passthrough: a passthrough write is the kernel's own write to the backing file,
    // which a syscall filter in the daemon cannot fail (a real quota fails it in the kernel,
    // as the tmpfs of the ENOSPC test does).
    let mut d = ForegroundDaemon::start(
        &format!("{},nopassthrough", l.dirs()),
        &l.dir("mnt"),
        &quota,
    );
    let m = d.mnt.clone();
    let ctx = "copy-up over quota";
    assert_eq!(errno_of(append(&m.join("lower"), b"x"), ctx), libc::EDQUOT);
    still_serving(&mut d, &m.join("lower"), &lower, ctx);
    let ctx = "link break over quota";
    let r = std::fs::OpenOptions::new().append(true).open(m.join("u"));
    assert_eq!(errno_of(r, ctx), libc::EDQUOT);
    still_serving(&mut d, &m.join("u"), &unified, ctx);
    assert_eq!(inode(&l.dir("rw/u")), inode(&object), "{ctx}: still linked");
    assert_eq!(fingerprint(&object), object_print, "{ctx}: object changed");
    let ctx = "chmod over quota (a copy-up with data)";
    let r = std::fs::set_permissions(m.join("other"), PermissionsExt::from_mode(0o600));
    assert_eq!(errno_of(r, ctx), libc::EDQUOT);
    still_serving(&mut d, &m.join("other"), &lower, ctx);
    let ctx = "write to a new file over quota";
    let mut f = std::fs::File::create(m.join("new")).expect("create needs no data");
    assert_eq!(errno_of(f.write_all(b"data"), ctx), libc::EDQUOT);
    drop(f);
    // A copy-up that moves no data still works.
    nix::unistd::truncate(&m.join("other"), 0).expect("truncate to 0 copies nothing");
    assert_eq!(std::fs::read(m.join("other")).expect("read"), b"");
    assert!(
        work_dir_entries(&l.dir("rw")).is_empty(),
        "temp entries left"
    );
    assert_eq!(std::fs::read(l.dir("ro/lower")).expect("ro"), lower);
    assert_eq!(std::fs::read(l.dir("rw/v")).expect("twin"), unified);
    d.stop();
    report(
        "edquot (injected)",
        &[
            ("errors_injected", 4.into()),
            ("files_checked", 4.into()),
            ("bytes_lost", 0.into()),
        ],
    );
}

/// Copies the loop image as it is right now: what a power cut at this moment would leave.
fn power_cut_snapshot(image: &Path, to: &Path) {
    std::fs::copy(image, to).expect("snapshot the image");
}

#[test]
fn fsync_through_the_mount_survives_a_power_cut() {
    let l = Layout::new();
    let disk = SmallFs::ext4(&l.dir("disk.img"), &l.dir("disk"), 64, &[]);
    let rw = disk.path.join("rw");
    std::fs::create_dir(&rw).expect("mkdir");
    let lower = pattern("lower", 1 << 20);
    std::fs::write(l.dir("ro/lower"), &lower).expect("write");
    std::fs::write(l.dir("ro/chmodded"), &lower).expect("write");
    // Settle the image: the branch directory itself is on disk before the test starts.
    nix::unistd::syncfs(std::fs::File::open(&disk.path).expect("open")).expect("syncfs");
    let options = format!("dirs={}=rw:{}=ro", rw.display(), l.dir("ro").display());
    let m = Mounted::new(&options, &l.dir("mnt"));

    let durable = pattern("durable", 1 << 20);
    let mut f = std::fs::File::create(m.path("durable")).expect("create");
    f.write_all(&durable).expect("write");
    f.sync_all().expect("fsync through the mount");
    drop(f);
    let tail = pattern("tail", 64 << 10);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(m.path("lower"))
        .expect("copy-up");
    f.write_all(&tail).expect("append");
    f.sync_data().expect("fdatasync through the mount");
    drop(f);
    // A copy-up nobody fsyncs, and a write nobody fsyncs: after the cut, the first shows its
    // old or new state, the second whatever made it (reported, not asserted).
    std::fs::set_permissions(m.path("chmodded"), PermissionsExt::from_mode(0o600)).expect("chmod");
    std::fs::write(m.path("volatile"), pattern("volatile", 1 << 20)).expect("write");
    power_cut_snapshot(&l.dir("disk.img"), &l.dir("cut.img"));
    m.unmount();
    drop(disk);

    // "Reboot": the snapshot replays its journal when mounted, then is the writable branch again.
    let after = SmallFs::ext4_existing(&l.dir("cut.img"), &l.dir("after"));
    let rw = after.path.join("rw");
    let options = format!("dirs={}=rw:{}=ro", rw.display(), l.dir("ro").display());
    let m = Mounted::new(&options, &l.dir("mnt"));
    assert_eq!(
        std::fs::read(m.path("durable")).expect("fsynced file after the cut"),
        durable,
        "fsync through the mount did not reach the disk"
    );
    let mut want = lower.clone();
    want.extend_from_slice(&tail);
    assert_eq!(
        std::fs::read(m.path("lower")).expect("copied-up file after the cut"),
        want,
        "fdatasync of a copied-up file did not reach the disk"
    );
    let meta = std::fs::metadata(m.path("chmodded")).expect("stat");
    assert!(
        meta.mode() & 0o777 == 0o644 || meta.mode() & 0o777 == 0o600,
        "copy-up after a power cut: mode {:o}",
        meta.mode()
    );
    assert_eq!(
        std::fs::read(m.path("chmodded")).expect("read"),
        lower,
        "copy-up after a power cut is partial"
    );
    assert!(hidden_names(&m.mnt).is_empty());
    let volatile_len = std::fs::metadata(m.path("volatile")).map_or(-1, |m| m.len() as i64);
    let chmod_survived = meta.mode() & 0o777 == 0o600;
    m.unmount();
    report(
        "fsync under power cut",
        &[
            ("fsynced_files_checked", 2.into()),
            ("bytes_lost", 0.into()),
            ("unsynced_copy_up_survived", chmod_survived.into()),
            ("unsynced_write_bytes_after_cut", volatile_len.into()),
        ],
    );
}

#[test]
fn damaged_store_objects_are_named_by_verify_and_never_crash_the_daemon() {
    let l = Layout::new();
    let (store, _) = hashstore::Store::init(&l.dir("store")).expect("store");
    let mut objects = Vec::new();
    for i in 0..5 {
        let data = pattern(&format!("object {i}"), 100_000 + i * 1000);
        std::fs::write(l.dir(&format!("rw/u{i}")), &data).expect("write");
        std::fs::write(l.dir(&format!("rw/v{i}")), &data).expect("write");
        let o = cowfs::unify_files(
            &store,
            &[&l.dir(&format!("rw/u{i}")), &l.dir(&format!("rw/v{i}"))],
        )
        .expect("unify");
        objects.push((o, data));
    }
    // Damage: a flipped byte, a truncation, a removed mark, a garbage mark, a changed mode.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&objects[0].0)
        .expect("open object");
    std::os::unix::fs::FileExt::write_all_at(&f, &[objects[0].1[500] ^ 0xff], 500).expect("flip");
    drop(f);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&objects[1].0)
        .expect("open")
        .set_len(10)
        .expect("truncate");
    ok(std::process::Command::new("setfattr")
        .args(["-x", hashstore::MARK_XATTR])
        .arg(&objects[2].0));
    ok(std::process::Command::new("setfattr")
        .args(["-n", hashstore::MARK_XATTR, "-v", "garbage"])
        .arg(&objects[3].0));
    std::fs::set_permissions(&objects[4].0, PermissionsExt::from_mode(0o600)).expect("chmod");

    let out = std::process::Command::new(cowfs::bin("cowfs"))
        .args(["store", "verify", "--json"])
        .arg(l.dir("store"))
        .output()
        .expect("verify");
    assert!(!out.status.success(), "verify must fail on damaged objects");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let named: Vec<String> = r["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| p["object"].as_str().expect("object").to_string())
        .collect();
    for (o, _) in &objects {
        let rel = o.strip_prefix(l.dir("store")).expect("in store");
        assert!(
            named.iter().any(|n| Path::new(n) == rel),
            "verify does not name {}: {r}",
            rel.display()
        );
    }

    let mut d = ForegroundDaemon::start(&l.dirs(), &l.dir("mnt"), &[]);
    let m = d.mnt.clone();
    for i in 0..5 {
        // Whatever the damage, a read answers (the bytes on disk, or an error) and the daemon
        // lives on.
        let _ = std::fs::read(m.join(format!("u{i}")));
        let _ = std::fs::metadata(m.join(format!("u{i}")));
        assert!(d.alive(), "reading damaged object {i} killed the daemon");
    }
    // A garbage mark is still a mark: writing breaks the link, the object stays as it was.
    let before = fingerprint(&objects[3].0);
    append(&m.join("u3"), b"more").expect("write through a garbage mark");
    assert_eq!(
        fingerprint(&objects[3].0),
        before,
        "object with a garbage mark changed"
    );
    still_serving(
        &mut d,
        &m.join("v0"),
        &std::fs::read(&objects[0].0).expect("o"),
        "after",
    );
    d.stop();

    // An unreadable disk (EIO on every read): errors reach the reader, the daemon lives on.
    let eio = [Inject {
        syscall: libc::SYS_pread64,
        errno: libc::EIO,
        min_count: Some(4096),
    }];
    let mut d = ForegroundDaemon::start(&l.dirs(), &l.dir("mnt"), &eio);
    let mut buf = Vec::new();
    let r = std::fs::File::open(d.mnt.join("v1")).and_then(|mut f| f.read_to_end(&mut buf));
    assert_eq!(errno_of(r, "read with EIO injected"), libc::EIO);
    assert!(d.alive(), "an EIO killed the daemon");
    std::fs::metadata(d.mnt.join("v1")).expect("stat still answers");
    d.stop();
    report(
        "damaged store objects",
        &[
            ("objects_damaged", 5.into()),
            ("named_by_verify", 5.into()),
            ("daemon_crashes", 0.into()),
        ],
    );
}
