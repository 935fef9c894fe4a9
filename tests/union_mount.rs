//! End-to-end tests of the union mount: `cowfs mount` for real, then ordinary syscalls and tools
//! through the mountpoint, checked against the branches underneath.

mod common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::*;

#[test]
fn copy_up_whiteouts_and_clean_unmount() {
    let l = Layout::new();
    std::fs::create_dir_all(l.dir("ro/etc/ssh")).expect("mkdir");
    std::fs::write(l.dir("ro/etc/motd"), b"welcome\n").expect("write");
    std::fs::write(l.dir("ro/etc/ssh/sshd_config"), b"Port 22\n").expect("write");
    std::fs::set_permissions(l.dir("ro/etc/ssh"), std::fs::Permissions::from_mode(0o700))
        .expect("chmod");
    let m = l.mount();

    let motd_ino = inode(&m.path("etc/motd"));
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(m.path("etc/motd"))
        .expect("open");
    f.write_all(b"x\n").expect("append");
    drop(f);
    assert_eq!(
        std::fs::read(m.path("etc/motd")).expect("read"),
        b"welcome\nx\n"
    );
    assert_eq!(
        std::fs::read(l.dir("ro/etc/motd")).expect("ro"),
        b"welcome\n"
    );
    assert_eq!(
        std::fs::read(l.dir("rw/etc/motd")).expect("rw"),
        b"welcome\nx\n"
    );
    assert_eq!(
        inode(&m.path("etc/motd")),
        motd_ino,
        "inode number kept by copy-up"
    );

    std::fs::remove_dir_all(m.path("etc/ssh")).expect("rm -r");
    assert!(!m.path("etc/ssh").exists());
    assert!(
        l.dir("rw/etc/.wh.ssh").exists(),
        "whiteout in the writable branch"
    );
    assert!(
        l.dir("ro/etc/ssh/sshd_config").exists(),
        "read-only branch untouched"
    );
    let listing: Vec<String> = std::fs::read_dir(m.path("etc"))
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(listing, vec!["motd"]);
    let root: Vec<String> = std::fs::read_dir(&m.mnt)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        root,
        vec!["etc"],
        "work directory and whiteouts never listed"
    );

    let socket = cowfs_fs::control::socket_path(&m.mnt);
    assert!(socket.exists());
    m.unmount();
    wait_until("the daemon to exit", || !socket.exists());
}

#[test]
fn several_users_get_kernel_style_permissions() {
    let l = Layout::new();
    std::fs::create_dir(l.dir("ro/private")).expect("mkdir");
    std::fs::set_permissions(l.dir("ro/private"), std::fs::Permissions::from_mode(0o700))
        .expect("chmod");
    std::fs::create_dir(l.dir("ro/shared")).expect("mkdir");
    std::fs::set_permissions(l.dir("ro/shared"), std::fs::Permissions::from_mode(0o1777))
        .expect("chmod");
    let m = l.mount();
    let mnt = m.mnt.display();

    let out = sh_as(65534, 65534, &format!("ls {mnt}/private"));
    assert!(
        !out.status.success(),
        "nobody may not list root's private dir"
    );
    let out = sh_as(
        65534,
        65534,
        &format!("echo hi > {mnt}/shared/mine && cat {mnt}/shared/mine"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta = std::fs::metadata(m.path("shared/mine")).expect("stat");
    assert_eq!(
        (meta.uid(), meta.gid()),
        (65534, 65534),
        "created with the caller's owner"
    );
    // Sticky directory: daemon (uid 1) may not remove nobody's file.
    let out = sh_as(1, 1, &format!("rm -f {mnt}/shared/mine"));
    assert!(!out.status.success(), "sticky bit honoured");
    let out = sh_as(
        65534,
        65534,
        &format!("chmod 600 {mnt}/shared/mine && rm {mnt}/shared/mine"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn branches_change_at_run_time_and_the_kernel_sees_it_at_once() {
    let l = Layout::new();
    let extra = l.dir("extra");
    std::fs::create_dir_all(extra.join("etc")).expect("mkdir");
    std::fs::write(extra.join("etc/added"), b"from extra").expect("write");
    std::fs::create_dir(l.dir("ro/etc")).expect("mkdir");
    std::fs::write(l.dir("ro/etc/base"), b"base").expect("write");
    // Long cache timeouts: only explicit invalidation can make the change visible at once.
    let m = Mounted::new(
        &format!("{},entry_timeout=3600,attr_timeout=3600", l.dirs()),
        &l.dir("mnt"),
    );
    assert!(!m.path("etc/added").exists());
    let _ = std::fs::read_dir(m.path("etc")).expect("readdir").count();

    ok(unionctl()
        .arg(&m.mnt)
        .args(["add", "--last"])
        .arg(format!("{}=ro", extra.display())));
    assert_eq!(
        std::fs::read(m.path("etc/added")).expect("visible at once"),
        b"from extra"
    );
    let out = ok(unionctl().arg(&m.mnt).args(["list", "--json"]));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let paths: Vec<&str> = list
        .as_array()
        .expect("array")
        .iter()
        .map(|b| b["path"].as_str().expect("path"))
        .collect();
    assert_eq!(paths.len(), 3);
    assert!(paths[2].ends_with("/extra"));
    assert_eq!(list[0]["mode"], "rw");

    // The same through `cowfs branch`.
    ok(cowfs()
        .args(["branch"])
        .arg(&m.mnt)
        .arg("remove")
        .arg(&extra));
    assert!(!m.path("etc/added").exists(), "gone at once");
    let err = fails(unionctl().arg(&m.mnt).arg("remove").arg(&extra));
    assert!(err.contains("not a branch"), "{err}");
    let err = fails(
        unionctl()
            .arg(&m.mnt)
            .args(["add"])
            .arg(format!("{}=rw", m.mnt.join("etc").display())),
    );
    assert!(
        err.contains("mountpoint") || err.contains("inside"),
        "{err}"
    );

    // Root only.
    let out = Command::new(cowfs::bin("unionctl"))
        .arg(&m.mnt)
        .arg("list")
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run");
    assert!(!out.status.success(), "non-root must be refused");
}

use std::os::unix::process::CommandExt;

#[test]
fn mount_errors_are_clear() {
    let l = Layout::new();
    let mnt = l.dir("mnt");
    let err = fails(
        cowfs()
            .args(["mount", "-o"])
            .arg(format!("dirs={}/missing=rw", l.tmp.path().display()))
            .arg("none")
            .arg(&mnt),
    );
    assert!(err.contains("does not exist"), "{err}");
    std::fs::write(l.dir("afile"), b"").expect("write");
    let err = fails(
        cowfs()
            .args(["mount", "-o"])
            .arg(format!("dirs={}=ro", l.dir("afile").display()))
            .arg("none")
            .arg(&mnt),
    );
    assert!(err.contains("not a directory"), "{err}");
    let err = fails(
        cowfs()
            .args(["mount", "-o", "bogus_option,dirs=/tmp", "none"])
            .arg(&mnt),
    );
    assert!(err.contains("unknown mount option 'bogus_option'"), "{err}");
    let err = fails(cowfs().args(["mount", "-o", "nodev", "none"]).arg(&mnt));
    assert!(err.contains("no branches"), "{err}");
    std::fs::create_dir(l.dir("rw/inner")).expect("mkdir");
    let err = fails(
        cowfs()
            .args(["mount", "-o"])
            .arg(l.dirs())
            .arg("none")
            .arg(l.dir("rw/inner")),
    );
    assert!(err.contains("inside branch"), "{err}");
    let _m = l.mount();
    let err = fails(
        cowfs()
            .args(["mount", "-o"])
            .arg(l.dirs())
            .arg("none")
            .arg(&mnt),
    );
    assert!(err.contains("busy"), "{err}");
    let err = fails(cowfs().args(["umount"]).arg(l.dir("ro")));
    assert!(err.contains("not a cowfs mount"), "{err}");
}

#[test]
fn busy_unmount_and_sigterm() {
    let l = Layout::new();
    let m = l.mount();
    let holder = std::fs::File::open(&m.mnt).expect("open dir");
    let mut sleeper = Command::new("sleep")
        .arg("30")
        .current_dir(&m.mnt)
        .spawn()
        .expect("spawn");
    let err = fails(cowfs().arg("umount").arg(&m.mnt));
    assert!(err.contains("busy"), "{err}");
    sleeper.kill().expect("kill");
    sleeper.wait().expect("wait");
    drop(holder);
    m.unmount();

    // A foreground daemon unmounts cleanly on SIGTERM.
    let mut child = cowfs()
        .args(["mount", "-f", "-o"])
        .arg(l.dirs())
        .arg("none")
        .arg(l.dir("mnt"))
        .spawn()
        .expect("spawn");
    wait_until("the mount", || is_mounted(&l.dir("mnt")));
    std::fs::write(l.dir("mnt/during"), b"x").expect("write");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill");
    let status = child.wait().expect("wait");
    assert!(status.success(), "daemon exit status {status}");
    assert!(!is_mounted(&l.dir("mnt")));
    assert_eq!(std::fs::read(l.dir("rw/during")).expect("kept"), b"x");
}

#[test]
fn mount_helper_fstab_and_remount() {
    ok(
        Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install-mount-helper.sh"))
            .arg(cowfs::bin("cowfs")),
    );
    let l = Layout::new();
    std::fs::write(l.dir("ro/hello"), b"hi").expect("write");
    let mnt = l.dir("mnt");

    // mount(8) with the type, as an admin types it.
    ok(Command::new("mount")
        .args(["-t", "fuse.cowfs", "none"])
        .arg(&mnt)
        .arg("-o")
        .arg(l.dirs()));
    let guard = Mounted {
        mnt: mnt.canonicalize().expect("mnt"),
    };
    assert_eq!(std::fs::read(mnt.join("hello")).expect("read"), b"hi");
    // remount read-only and back
    ok(Command::new("mount").args(["-o", "remount,ro"]).arg(&mnt));
    let err = std::fs::write(mnt.join("new"), b"x").expect_err("read-only");
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    ok(Command::new("mount").args(["-o", "remount,rw"]).arg(&mnt));
    std::fs::write(mnt.join("new"), b"x").expect("writable again");
    ok(Command::new("umount").arg(&mnt));
    wait_until("unmounted", || !is_mounted(&mnt));

    // An fstab line.
    let fstab = l.dir("fstab");
    std::fs::write(
        &fstab,
        format!(
            "none {} fuse.cowfs {},noauto,nodev 0 0\n",
            mnt.display(),
            l.dirs()
        ),
    )
    .expect("fstab");
    ok(Command::new("mount").arg("--fstab").arg(&fstab).arg(&mnt));
    assert!(is_mounted(&mnt));
    let line = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let ours = line
        .lines()
        .find(|l| l.contains(&*mnt.to_string_lossy()))
        .expect("listed");
    assert!(ours.contains("nodev"), "{ours}");
    ok(cowfs().arg("umount").arg(&mnt));

    // fuse3's generic helper runs `cowfs SOURCE MNT -o OPTS` from PATH.
    let bin_dir = cowfs::bin("cowfs").parent().expect("dir").to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    ok(Command::new("/usr/sbin/mount.fuse3")
        .arg("none")
        .arg(&mnt)
        .args(["-o", &l.dirs(), "-t", "fuse.cowfs"])
        .env("PATH", path));
    assert_eq!(std::fs::read(mnt.join("new")).expect("read"), b"x");
    drop(guard);
}

#[test]
fn overlay_syntax_and_overlay_whiteouts() {
    let l = Layout::new();
    let (upper, work, lower1, lower2) = (l.dir("rw"), l.dir("work"), l.dir("ro"), l.dir("lower2"));
    std::fs::create_dir_all(&lower2).expect("mkdir");
    std::fs::write(lower2.join("deleted"), b"x").expect("write");
    std::fs::write(lower2.join("kept"), b"x").expect("write");
    std::fs::create_dir_all(lower2.join("opaque")).expect("mkdir");
    std::fs::write(lower2.join("opaque/hidden"), b"x").expect("write");
    // An overlayfs layer: a 0/0 device whiteout and an opaque directory.
    ok(Command::new("mknod")
        .arg(lower1.join("deleted"))
        .args(["c", "0", "0"]));
    std::fs::create_dir(lower1.join("opaque")).expect("mkdir");
    std::fs::write(lower1.join("opaque/visible"), b"x").expect("write");
    ok(Command::new("setfattr")
        .args(["-n", "trusted.overlay.opaque", "-v", "y"])
        .arg(lower1.join("opaque")));
    let m = Mounted::new(
        &format!(
            "lowerdir={}:{},upperdir={},workdir={}",
            lower1.display(),
            lower2.display(),
            upper.display(),
            work.display()
        ),
        &l.dir("mnt"),
    );
    assert!(!m.path("deleted").exists());
    assert!(m.path("kept").exists());
    let names: Vec<String> = std::fs::read_dir(m.path("opaque"))
        .expect("readdir")
        .map(|e| e.expect("e").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["visible"]);
    assert!(
        !xattr_names(&m.path("opaque")).contains("overlay"),
        "overlay metadata hidden"
    );
    std::fs::write(m.path("kept"), b"changed").expect("copy-up");
    assert_eq!(
        std::fs::read(upper.join("kept")).expect("upper"),
        b"changed"
    );
    assert!(
        !upper.join(".cowfs.tmp.work").exists(),
        "workdir= used instead"
    );
    assert_eq!(std::fs::read_dir(&work).expect("work").count(), 0);
    // A guest may still make a 0/0 device in the writable branch.
    ok(Command::new("mknod")
        .arg(m.path("dev00"))
        .args(["c", "0", "0"]));
    assert!(
        std::fs::symlink_metadata(m.path("dev00"))
            .expect("stat")
            .file_type()
            .is_char_device()
    );
}

#[test]
fn symlinks_in_branches_are_never_followed_by_the_daemon() {
    let l = Layout::new();
    let secret = l.dir("secret");
    std::fs::create_dir(&secret).expect("mkdir");
    std::fs::write(secret.join("key"), b"top secret").expect("write");
    std::fs::create_dir(l.dir("rw/etc")).expect("mkdir");
    // In the read-only branch `etc` is a symlink out of the branch: it must not merge.
    std::os::unix::fs::symlink(&secret, l.dir("ro/etc")).expect("symlink");
    std::os::unix::fs::symlink("../../secret", l.dir("ro/up")).expect("symlink");
    let m = l.mount();
    assert!(
        !m.path("etc/key").exists(),
        "a branch symlink never merges as a directory"
    );
    // A symlink shows as a symlink; the kernel resolves it in the caller's view, as always.
    assert!(
        std::fs::symlink_metadata(m.path("up"))
            .expect("lstat")
            .file_type()
            .is_symlink()
    );
    // Copy-up of a symlink copies the link itself (lchown through the mount).
    ok(Command::new("chown")
        .args(["-h", "12:34"])
        .arg(m.path("up")));
    let meta = std::fs::symlink_metadata(l.dir("rw/up")).expect("copied up");
    assert!(meta.file_type().is_symlink());
    assert_eq!((meta.uid(), meta.gid()), (12, 34));
    assert_eq!(
        std::fs::read(secret.join("key")).expect("untouched"),
        b"top secret"
    );
}

#[test]
fn odd_names_sparse_files_and_concurrency() {
    let l = Layout::new();
    let m = Mounted::new(&format!("{},threads=4", l.dirs()), &l.dir("mnt"));
    let latin1 = m.mnt.join(name_bytes(b"caf\xe9"));
    std::fs::write(&latin1, b"x").expect("non-UTF-8 name");
    assert!(l.dir("rw").join(name_bytes(b"caf\xe9")).exists());
    let long = "n".repeat(255);
    std::fs::write(m.path(&long), b"x").expect("255-byte name");
    let err = std::fs::write(m.path("n".repeat(256)), b"x").expect_err("too long");
    assert_eq!(err.raw_os_error(), Some(libc::ENAMETOOLONG));

    let mut f = std::fs::File::create(m.path("sparse")).expect("create");
    f.seek(SeekFrom::Start(1 << 30)).expect("seek");
    f.write_all(b"end").expect("write");
    drop(f);
    assert!(
        std::fs::metadata(l.dir("rw/sparse"))
            .expect("stat")
            .blocks()
            < 64
    );
    let mut buf = Vec::new();
    let mut f = std::fs::File::open(m.path("sparse")).expect("open");
    f.seek(SeekFrom::Start((1 << 30) - 2)).expect("seek");
    f.read_to_end(&mut buf).expect("read");
    assert_eq!(buf, b"\0\0end");

    // Parallel writers in one directory, through 4 request threads.
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let dir = m.mnt.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    let p = dir.join(format!("f{t}-{i}"));
                    std::fs::write(&p, format!("{t}-{i}")).expect("write");
                    std::fs::rename(&p, dir.join(format!("g{t}-{i}"))).expect("rename");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    for t in 0..8 {
        for i in 0..50 {
            assert_eq!(
                std::fs::read_to_string(m.path(format!("g{t}-{i}"))).expect("read"),
                format!("{t}-{i}")
            );
        }
    }
    assert_eq!(std::fs::read_dir(&m.mnt).expect("readdir").count(), 3 + 400);
}

#[test]
fn a_killed_daemon_leaves_a_mount_that_unmounts_and_remounts_cleanly() {
    let l = Layout::new();
    std::fs::write(l.dir("ro/f"), b"lower").expect("write");
    let m = l.mount();
    std::fs::write(m.path("f"), b"upper").expect("copy-up");
    let pid = daemon_pid(&m.mnt);
    // A stale temp entry, as a daemon killed mid copy-up would leave.
    std::fs::write(l.dir("rw/.cowfs.tmp.work/.cowfs.tmp.1.1"), b"partial").expect("stale");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    wait_until("the daemon to die", || {
        !Path::new(&format!("/proc/{pid}")).exists()
    });
    let err = std::fs::read(m.path("f")).expect_err("dead mount");
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN));
    ok(cowfs().arg("umount").arg(&m.mnt));
    let m = l.mount();
    assert_eq!(std::fs::read(m.path("f")).expect("read"), b"upper");
    assert_eq!(
        std::fs::read_dir(l.dir("rw/.cowfs.tmp.work"))
            .expect("work")
            .count(),
        0,
        "leftovers cleaned"
    );
}

#[test]
fn concurrent_first_writes_make_one_copy_and_lose_nothing() {
    let l = Layout::new();
    std::fs::create_dir_all(l.dir("ro/deep/er")).expect("mkdir");
    for i in 0..20 {
        std::fs::write(l.dir(&format!("ro/deep/er/f{i}")), b"base\n").expect("write");
    }
    // Short cache timeouts: lookups keep coming while files are being copied up.
    let m = Mounted::new(
        &format!("{},threads=4,entry_timeout=0,attr_timeout=0", l.dirs()),
        &l.dir("mnt"),
    );
    let writers: Vec<_> = (0..6)
        .map(|_| {
            let dir = m.path("deep/er");
            std::thread::spawn(move || {
                for i in 0..20 {
                    let mut f = std::fs::OpenOptions::new()
                        .append(true)
                        .open(dir.join(format!("f{i}")))
                        .expect("open");
                    f.write_all(b"x").expect("append");
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let dir = m.path("deep/er");
            std::thread::spawn(move || {
                for _ in 0..10 {
                    for i in 0..20 {
                        let data = std::fs::read(dir.join(format!("f{i}"))).expect("read");
                        assert!(data.starts_with(b"base\n"), "{data:?}");
                    }
                }
            })
        })
        .collect();
    for t in writers.into_iter().chain(readers) {
        t.join().expect("thread");
    }
    for i in 0..20 {
        assert_eq!(
            std::fs::read(m.path(format!("deep/er/f{i}"))).expect("read"),
            b"base\nxxxxxx",
            "f{i}"
        );
        assert_eq!(
            std::fs::read(l.dir(&format!("ro/deep/er/f{i}"))).expect("ro"),
            b"base\n"
        );
    }
    assert_eq!(
        std::fs::read_dir(l.dir("rw/.cowfs.tmp.work"))
            .expect("work")
            .count(),
        0
    );
}

#[test]
fn a_union_without_a_writable_branch_is_read_only() {
    let l = Layout::new();
    std::fs::write(l.dir("ro/f"), b"x").expect("write");
    let m = Mounted::new(
        &format!("lowerdir={}", l.dir("ro").display()),
        &l.dir("mnt"),
    );
    assert_eq!(std::fs::read(m.path("f")).expect("read"), b"x");
    for result in [
        std::fs::write(m.path("f"), b"y"),
        std::fs::write(m.path("new"), b"y"),
        std::fs::create_dir(m.path("d")),
        std::fs::remove_file(m.path("f")),
        std::fs::set_permissions(m.path("f"), std::fs::Permissions::from_mode(0o600)),
    ] {
        assert_eq!(
            result.expect_err("read-only").raw_os_error(),
            Some(libc::EROFS)
        );
    }
    // A writable branch added at run time makes it writable.
    ok(unionctl()
        .arg(&m.mnt)
        .arg("add")
        .arg(format!("{}=rw", l.dir("rw").display())));
    std::fs::write(m.path("f"), b"y").expect("writable now");
    assert_eq!(std::fs::read(l.dir("rw/f")).expect("copied up"), b"y");
    assert_eq!(std::fs::read(l.dir("ro/f")).expect("ro"), b"x");
}

#[test]
fn unionctl_places_branches_before_and_after_others() {
    let l = Layout::new();
    std::fs::write(l.dir("ro/f"), b"ro").expect("write");
    let (e1, e2) = (l.dir("e1"), l.dir("e2"));
    for (d, content) in [(&e1, "e1"), (&e2, "e2")] {
        std::fs::create_dir(d).expect("mkdir");
        std::fs::write(d.join("f"), content).expect("write");
    }
    let m = l.mount();
    let order = |m: &Mounted| -> Vec<String> {
        let out = ok(unionctl().arg(&m.mnt).args(["list", "--json"]));
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        list.as_array()
            .expect("array")
            .iter()
            .map(|b| {
                let p = b["path"].as_str().expect("path");
                p.rsplit('/').next().expect("name").to_string()
            })
            .collect()
    };
    assert_eq!(std::fs::read(m.path("f")).expect("read"), b"ro");
    ok(unionctl()
        .arg(&m.mnt)
        .args(["add", "--after"])
        .arg(l.dir("rw"))
        .arg(format!("{}=ro", e1.display())));
    assert_eq!(order(&m), ["rw", "e1", "ro"]);
    assert_eq!(std::fs::read(m.path("f")).expect("read"), b"e1");
    ok(unionctl()
        .arg(&m.mnt)
        .args(["add", "--before"])
        .arg(&e1)
        .arg(format!("{}=ro", e2.display())));
    assert_eq!(order(&m), ["rw", "e2", "e1", "ro"]);
    assert_eq!(std::fs::read(m.path("f")).expect("read"), b"e2");
    let err = fails(
        unionctl()
            .arg(&m.mnt)
            .args(["add", "--before"])
            .arg(l.dir("nowhere"))
            .arg(format!("{}=ro", l.dir("store").display())),
    );
    assert!(err.contains("nowhere"), "{err}");
    assert_eq!(order(&m), ["rw", "e2", "e1", "ro"], "nothing changed");
}
