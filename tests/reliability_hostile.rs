//! Issue 7, hostile guests: the daemon never reads or writes outside its branches and never
//! changes a store object, whatever names, links and races a guest throws at it; malformed
//! control requests and mount options get clear errors and crash nothing.
//!
//! Guest threads run chrooted into the mount (each its own root: `unshare(CLONE_FS)`), so a
//! symlink like `../outside` means, to the guest, a path inside its own root, while the same
//! symlink followed from the branch by the daemon would reach the host directory `outside`
//! next to the branches. That directory, the read-only branch and the store are fingerprinted
//! before and compared after.
//!
//! Budget: `COWFS_REL_RACE_ROUNDS` [100; the race `UnionFs::locate_writable` closes, an append
//! that reached the read-only branch, passed 20-round CI runs and failed 8 of 11 200-round runs
//! before the fix]. Replay: `COWFS_REL_SEED`.

mod common;
mod reliability_support;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use reliability_support::*;

fn tree(dir: &Path) -> cowfs::listing::Listing {
    cowfs::listing::list_tree(dir, cowfs::listing::ListingOptions::default()).expect("list")
}

/// Makes the calling thread a guest: its own root at `mnt`.
fn become_guest(mnt: &Path) {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS).expect("unshare CLONE_FS");
    nix::unistd::chroot(mnt).expect("chroot");
    std::env::set_current_dir("/").expect("chdir /");
}

#[test]
fn symlink_swaps_and_renames_racing_copy_ups_never_escape_the_branches() {
    let rounds = budget("RACE_ROUNDS", 100) as usize;
    let seed = seed("symlink_swaps_and_renames_racing_copy_ups_never_escape_the_branches");
    let l = Layout::new();
    let outside = l.dir("outside");
    std::fs::create_dir_all(outside.join("m0")).expect("mkdir");
    std::fs::write(outside.join("secret"), b"host data").expect("write");
    for k in 0..rounds {
        for i in 0..8 {
            let p = l.dir(&format!("ro/m{k}/f{i}"));
            std::fs::create_dir_all(p.parent().expect("dir")).expect("mkdir");
            std::fs::write(&p, format!("lower {k} {i}\n")).expect("write");
        }
        std::fs::create_dir_all(l.dir(&format!("ro/x{k}/y/z"))).expect("mkdir");
        std::fs::write(l.dir(&format!("ro/x{k}/y/z/f")), b"deep\n").expect("write");
    }
    let (outside_before, ro_before) = (tree(&outside), tree(&l.dir("ro")));
    let m = Mounted::new(
        &format!("{},threads=4,entry_timeout=0,attr_timeout=0", l.dirs()),
        &l.dir("mnt"),
    );
    let mut rng = fastrand::Rng::with_seed(seed);
    let (mut swaps, mut writes, mut refused) = (0, 0, 0);
    for k in 0..rounds {
        let stop = Arc::new(AtomicBool::new(false));
        // The writer appends to the files of m{k} and x{k}/y/z/f (copy-ups) through stale and
        // fresh names alike.
        let writer = {
            let (mnt, stop) = (m.mnt.clone(), stop.clone());
            std::thread::spawn(move || {
                become_guest(&mnt);
                let (mut ok, mut err) = (0, 0);
                while !stop.load(Ordering::Relaxed) {
                    for i in 0..8 {
                        let p = format!("/m{k}/f{i}");
                        match std::fs::OpenOptions::new().append(true).open(&p) {
                            Ok(mut f) => {
                                let _ = f.write_all(b"+");
                                ok += 1;
                            }
                            Err(_) => err += 1,
                        }
                    }
                    let _ = std::fs::OpenOptions::new()
                        .append(true)
                        .open(format!("/x{k}/y/z/f"))
                        .and_then(|mut f| f.write_all(b"+"));
                }
                (ok, err)
            })
        };
        // The swapper removes m{k} and puts symlinks out of the branch in its place, then a
        // directory again; and tries to rename x{k} (being copied up) and to move directories
        // into it.
        let swapper = {
            let mnt = m.mnt.clone();
            let delay = rng.u64(0..3000);
            std::thread::spawn(move || {
                become_guest(&mnt);
                std::thread::sleep(std::time::Duration::from_micros(delay));
                let mut swaps = 0;
                for _ in 0..5 {
                    let _ = std::fs::remove_dir_all(format!("/m{k}"));
                    for target in [
                        "../outside",
                        "../../outside/m0",
                        "/../outside",
                        "m0/../../outside",
                    ] {
                        if std::os::unix::fs::symlink(target, format!("/m{k}")).is_ok() {
                            swaps += 1;
                        }
                        let _ = std::fs::write(format!("/m{k}/planted"), b"x");
                        let _ = std::fs::remove_file(format!("/m{k}"));
                    }
                    let _ = std::fs::create_dir(format!("/m{k}"));
                    let _ = std::fs::write(format!("/m{k}/f0"), b"recreated");
                    assert!(
                        std::fs::rename(format!("/x{k}"), format!("/x{k}-moved")).is_err(),
                        "a merged directory moved"
                    );
                    let _ = std::fs::create_dir(format!("/n{k}"));
                    let _ = std::fs::rename(format!("/n{k}"), format!("/x{k}/y/n"));
                    let _ = std::fs::rename(format!("/x{k}/y/n"), format!("/n{k}"));
                }
                swaps
            })
        };
        swaps += swapper.join().expect("swapper");
        stop.store(true, Ordering::Relaxed);
        let (ok, err) = writer.join().expect("writer");
        writes += ok;
        refused += err;
        // The deep file took every append or none of a torn one: "deep\n" then only '+'.
        let deep = std::fs::read(m.path(format!("x{k}/y/z/f"))).expect("deep file");
        assert!(
            deep.starts_with(b"deep\n") && deep[5..].iter().all(|&b| b == b'+'),
            "seed {seed} round {k}: deep file is {deep:?}"
        );
        let n_here =
            m.path(format!("n{k}")).is_dir() as u8 + m.path(format!("x{k}/y/n")).is_dir() as u8;
        assert_eq!(
            n_here, 1,
            "seed {seed} round {k}: a moved directory is in {n_here} places"
        );
    }
    assert_eq!(
        tree(&outside),
        outside_before,
        "seed {seed}: the host directory changed"
    );
    assert_eq!(
        tree(&l.dir("ro")),
        ro_before,
        "seed {seed}: the read-only branch changed"
    );
    assert!(hidden_names(&m.mnt).is_empty());
    m.unmount();
    report(
        "hostile: symlink swaps and renames racing copy-ups",
        &[
            ("seed", seed.into()),
            ("rounds", rounds.into()),
            ("symlink_swaps", swaps.into()),
            ("writes", writes.into()),
            ("refused_opens", refused.into()),
            ("writes_outside_branches", 0.into()),
        ],
    );
}

#[test]
fn links_odd_names_and_long_paths_stay_inside_and_leave_objects_alone() {
    let l = Layout::new();
    let (store, _) = hashstore::Store::init(&l.dir("store")).expect("store");
    let outside = l.dir("outside");
    std::fs::create_dir(&outside).expect("mkdir");
    std::fs::write(outside.join("secret"), b"host").expect("write");
    for p in ["rw/u", "rw/twin", "ro/lu", "ro/ltwin"] {
        std::fs::write(l.dir(p), b"shared object content\n").expect("write");
    }
    let object = cowfs::unify_files(&store, &[&l.dir("rw/u"), &l.dir("rw/twin")]).expect("unify");
    let print = fingerprint(&object);
    std::os::unix::fs::symlink("../outside", l.dir("ro/up")).expect("symlink");
    std::os::unix::fs::symlink("../../../outside/secret", l.dir("rw/deep-up")).expect("symlink");
    let outside_before = tree(&outside);
    let m = l.mount();
    let mnt = m.mnt.clone();
    let guest = std::thread::spawn(move || {
        become_guest(&mnt);
        let mut checked = 0;
        // Hard links to a store-linked file, made from inside: the link is broken first.
        std::fs::hard_link("/u", "/u2").expect("link a unified file");
        std::fs::OpenOptions::new()
            .append(true)
            .open("/u2")
            .and_then(|mut f| f.write_all(b"via u2\n"))
            .expect("write through the new name");
        assert_eq!(
            std::fs::read("/u").expect("u"),
            b"shared object content\nvia u2\n",
            "u and u2 are one file"
        );
        // The mark can neither be seen nor removed.
        let (path, mark) = (
            c"/twin",
            std::ffi::CString::new(hashstore::MARK_XATTR).expect("c"),
        );
        // SAFETY: valid NUL-terminated strings; a null buffer of size 0 only asks the size.
        let got = unsafe { libc::lgetxattr(path.as_ptr(), mark.as_ptr(), std::ptr::null_mut(), 0) };
        assert_eq!(got, -1, "the mark is visible");
        // SAFETY: as above.
        let removed = unsafe { libc::lremovexattr(path.as_ptr(), mark.as_ptr()) };
        assert_eq!(
            (removed, std::io::Error::last_os_error().raw_os_error()),
            (-1, Some(libc::EPERM)),
            "the mark can be removed"
        );
        // Symlinks out of the branch are the guest's own business: they resolve in its root.
        for p in ["/up/secret", "/deep-up"] {
            let _ = std::fs::write(p, b"overwritten?");
            let _ = std::fs::read(p);
        }
        // Control bytes, escapes and non-UTF-8 in names.
        let mut names: Vec<Vec<u8>> = (1u8..32).map(|b| vec![b'n', b, b'x']).collect();
        names.push(b"\x1b[31mred\x1b[0m".to_vec());
        names.push(b"line\nbreak".to_vec());
        names.push(vec![0xff, 0xfe, b'.', 0x7f]);
        names.push([b'c'; 255].to_vec());
        names.push([&b"\x01"[..], &[b'z'; 254][..]].concat());
        for n in &names {
            let p = Path::new("/").join(OsStr::from_bytes(n));
            std::fs::write(&p, n).expect("create an odd name");
            assert_eq!(std::fs::read(&p).expect("read"), *n);
            let renamed = [&n[..n.len().min(254)], b"2"].concat();
            let q = Path::new("/").join(OsStr::from_bytes(&renamed));
            std::fs::rename(&p, &q).expect("rename an odd name");
            std::fs::remove_file(&q).expect("unlink an odd name");
            checked += 1;
        }
        for reserved in [".wh.u", ".wh..wh..opq", ".cowfs.tmp.work", ".cowfs.tmp.x"] {
            let e = std::fs::write(Path::new("/").join(reserved), b"x").expect_err(reserved);
            assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{reserved}");
        }
        // Paths up to and past PATH_MAX, built one directory at a time.
        let seg = "d".repeat(250);
        let mut depth = 0;
        let mut path = PathBuf::from("/");
        loop {
            path.push(&seg);
            match std::fs::create_dir(&path) {
                Ok(()) => depth += 1,
                Err(e) => {
                    assert_eq!(
                        e.raw_os_error(),
                        Some(libc::ENAMETOOLONG),
                        "depth {depth}: {e}"
                    );
                    break;
                }
            }
        }
        // Deeper than any absolute path can say, relative to an open directory.
        let mut dir = nix::fcntl::open(
            path.parent().expect("parent"),
            nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_RDONLY,
            nix::sys::stat::Mode::empty(),
        )
        .expect("open the deepest directory");
        let mut beyond = 0;
        for _ in 0..4 {
            match nix::sys::stat::mkdirat(
                &dir,
                seg.as_str(),
                nix::sys::stat::Mode::from_bits_truncate(0o755),
            ) {
                Ok(()) => {}
                Err(e) => {
                    // The daemon addresses entries by their path in the branch: past PATH_MAX it
                    // says so instead of working anywhere else.
                    assert_eq!(e, nix::errno::Errno::ENAMETOOLONG, "beyond PATH_MAX");
                    break;
                }
            }
            match nix::fcntl::openat(
                &dir,
                seg.as_str(),
                nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_RDONLY,
                nix::sys::stat::Mode::empty(),
            ) {
                Ok(d) => {
                    dir = d;
                    beyond += 1;
                }
                Err(e) => {
                    assert_eq!(e, nix::errno::Errno::ENAMETOOLONG, "beyond PATH_MAX");
                    break;
                }
            }
        }
        (checked, depth, beyond)
    });
    let (names, depth, beyond) = guest.join().expect("guest thread");
    assert_eq!(fingerprint(&object), print, "the store object changed");
    assert_eq!(
        std::fs::read(l.dir("rw/twin")).expect("twin"),
        b"shared object content\n"
    );
    assert_eq!(inode(&l.dir("rw/twin")), inode(&object), "twin unlinked");
    assert_eq!(tree(&outside), outside_before, "the host directory changed");
    assert!(hidden_names(&m.mnt).is_empty());
    // Everything the guest made is inside the writable branch.
    assert!(l.dir("rw").join("d".repeat(250)).is_dir());
    m.unmount();
    report(
        "hostile: links, odd names, long paths",
        &[
            ("odd_names_checked", names.into()),
            ("depth_by_absolute_paths", depth.into()),
            ("levels_beyond_path_max", beyond.into()),
            ("objects_changed", 0.into()),
        ],
    );
}

/// Sends raw bytes to the control socket and returns the reply line (empty if none).
fn raw_request(socket: &Path, bytes: &[u8]) -> String {
    let mut s = UnixStream::connect(socket).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .expect("timeout");
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut reply = String::new();
    let _ = BufReader::new(s).read_line(&mut reply);
    reply
}

#[test]
fn malformed_control_requests_and_mount_options_get_clear_errors() {
    let l = Layout::new();
    std::fs::write(l.dir("afile"), b"x").expect("write");
    let mut d = ForegroundDaemon::start(&l.dirs(), &l.dir("mnt"), &[]);
    let socket = cowfs_fs::control::socket_path(&d.mnt);
    let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let huge = format!(
        "{{\"version\":1,\"command\":\"add\",\"path\":\"/{}\",\"mode\":\"ro\"}}\n",
        "a".repeat(100_000)
    );
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"garbage\n".to_vec(), "malformed"),
        (b"\xff\xfe\n".to_vec(), "malformed"),
        (b"{}\n".to_vec(), "malformed"),
        (b"{\"version\":1}\n".to_vec(), "malformed"),
        (
            b"{\"version\":1,\"command\":\"format\"}\n".to_vec(),
            "malformed",
        ),
        (
            b"{\"version\":-1,\"command\":\"list\"}\n".to_vec(),
            "malformed",
        ),
        (
            b"{\"version\":2,\"command\":\"list\"}\n".to_vec(),
            "not supported",
        ),
        (
            b"{\"version\":1,\"command\":\"add\",\"path\":\"/nope\",\"mode\":\"ro\"}\n".to_vec(),
            "does not exist",
        ),
        (
            b"{\"version\":1,\"command\":\"add\",\"path\":\"/\",\"mode\":\"rw\"}\n".to_vec(),
            "overlaps",
        ),
        (
            b"{\"version\":1,\"command\":\"add\",\"path\":\"\",\"mode\":\"ro\"}\n".to_vec(),
            "",
        ),
        (
            b"{\"version\":1,\"command\":\"add\",\"path\":\"/x\",\"mode\":\"rx\"}\n".to_vec(),
            "malformed",
        ),
        (
            format!(
                "{{\"version\":1,\"command\":\"add\",\"path\":\"{}\",\"mode\":\"ro\"}}\n",
                l.dir("afile").display()
            )
            .into_bytes(),
            "not a directory",
        ),
        (
            format!(
                "{{\"version\":1,\"command\":\"add\",\"path\":\"{}\",\"mode\":\"ro\"}}\n",
                d.mnt.display()
            )
            .into_bytes(),
            "mountpoint",
        ),
        (
            format!(
                "{{\"version\":1,\"command\":\"remove\",\"path\":\"{}\"}}\n",
                l.dir("afile").display()
            )
            .into_bytes(),
            "not a branch",
        ),
        (format!("{nested}\n").into_bytes(), "malformed"),
        (huge.into_bytes(), "too long"),
        (b"{\"version\":1,\"command\":\"list\"".to_vec(), "malformed"),
    ];
    for (bytes, want) in &cases {
        let reply = raw_request(&socket, bytes);
        let v: serde_json::Value = serde_json::from_str(&reply).unwrap_or_else(|e| {
            panic!(
                "{:?}: reply {reply:?} is not JSON: {e}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(80)])
            )
        });
        assert_eq!(v["ok"], false, "{reply}");
        let err = v["error"].as_str().expect("an error message");
        assert!(
            err.contains(want),
            "{:?}: {err}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(80)])
        );
        assert!(
            d.alive(),
            "the daemon died on {:?}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(80)])
        );
    }
    // A client that connects and says nothing holds up nobody; a non-root one is refused.
    let _idle = UnixStream::connect(&socket).expect("connect");
    let branches = cowfs_fs::control::Client::connect(&d.mnt)
        .expect("connect")
        .list()
        .expect("list");
    assert_eq!(branches.len(), 2);
    let out = std::process::Command::new(cowfs::bin("unionctl"))
        .arg(&d.mnt)
        .arg("list")
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run");
    assert!(!out.status.success(), "non-root must be refused");
    let mut partial = UnixStream::connect(&socket).expect("connect");
    partial.write_all(b"{\"version\":1,").expect("write");
    drop(partial);
    assert!(d.alive());
    d.stop();

    // Malformed mount options: a clear error, no panic, nothing mounted.
    let mnt = l.dir("mnt");
    let long = format!("dirs={}", "/a".repeat(50_000));
    for opts in [
        "dirs=",
        "dirs=\\",
        "dirs=/a=rx",
        "dirs=::",
        "br=/a,br=/b",
        "threads=abc,dirs=/a",
        "threads=0,dirs=/a",
        "entry_timeout=nan,dirs=/a",
        "entry_timeout=inf,dirs=/a",
        "entry_timeout=-1,dirs=/a",
        "attr_timeout=1e308,dirs=/a",
        "lowerdir=/a,dirs=/b",
        "workdir=/w,lowerdir=/a",
        "\u{1}\u{7f},dirs=/a",
        "dirs=/a\nb",
        "upperdir=,lowerdir=/a",
        long.as_str(),
        "ro,rw,ro",
        "=,=,=",
    ] {
        let out = cowfs()
            .args(["mount", "-o", opts, "none"])
            .arg(&mnt)
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{opts:?} mounted");
        assert!(!err.contains("panicked"), "{opts:?}: {err}");
        assert!(
            err.contains("mount") || err.contains("branch"),
            "{opts:?}: unclear: {err}"
        );
        assert!(!is_mounted(&mnt), "{opts:?} left a mount");
    }
    // Non-UTF-8 options and a missing argument to the mount helper's -o.
    let out = cowfs()
        .arg("none")
        .arg(&mnt)
        .arg("-o")
        .arg(OsStr::from_bytes(b"dirs=/\xff"))
        .output()
        .expect("run");
    assert!(!out.status.success() && !String::from_utf8_lossy(&out.stderr).contains("panicked"));
    let out = cowfs()
        .arg("none")
        .arg(&mnt)
        .arg("-o")
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("-o needs an argument"));
    report(
        "hostile: control socket and mount options",
        &[
            ("malformed_requests", cases.len().into()),
            ("malformed_option_strings", 21.into()),
            ("daemon_crashes", 0.into()),
        ],
    );
}
