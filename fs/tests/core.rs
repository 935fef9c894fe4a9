//! The union filesystem core over real branches in temp directories, without FUSE: copy-up,
//! whiteouts, renames and copy-on-write link breaking, checked on the branches themselves.
//! (Creating `trusted.*` xattrs needs root; CI runs as root.)

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cowfs_fs::branch::{Branch, BranchMode};
use cowfs_fs::fileops::SetAttr;
use cowfs_fs::inode::{NodeId, ROOT};
use cowfs_fs::unionfs::{Caller, FsConfig, Position, UnionFs};

struct Fixture {
    _tmp: tempfile::TempDir,
    rw: PathBuf,
    ro: PathBuf,
    store: PathBuf,
    fs: Arc<UnionFs>,
}

const USER: Caller = Caller {
    uid: 1000,
    gid: 1000,
    pid: 1,
};

fn fixture(populate: impl FnOnce(&Path, &Path, &Path)) -> Fixture {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (rw, ro, store) = (
        tmp.path().join("rw"),
        tmp.path().join("ro"),
        tmp.path().join("store"),
    );
    for d in [&rw, &ro, &store] {
        std::fs::create_dir(d).expect("mkdir");
    }
    populate(&rw, &ro, &store);
    let branches = vec![
        Branch::open(&rw, BranchMode::Rw, None).expect("rw"),
        Branch::open(&ro, BranchMode::Ro, None).expect("ro"),
    ];
    let (fs, _rx) = UnionFs::new(branches, FsConfig::default());
    Fixture {
        _tmp: tmp,
        rw,
        ro,
        store,
        fs,
    }
}

impl Fixture {
    fn node(&self, path: &str) -> std::io::Result<NodeId> {
        let mut id = ROOT;
        for comp in Path::new(path).iter() {
            id = self.fs.lookup(id, comp)?.0.id;
        }
        Ok(id)
    }

    fn parent_and_name<'a>(&self, path: &'a str) -> (NodeId, &'a OsStr) {
        let p = Path::new(path);
        let parent = p.parent().and_then(|p| p.to_str()).unwrap_or("");
        let id = if parent.is_empty() {
            ROOT
        } else {
            self.node(parent).expect("parent")
        };
        (id, p.file_name().expect("name"))
    }

    fn read(&self, path: &str) -> Vec<u8> {
        let id = self.node(path).expect("lookup");
        let fh = self.fs.open(id, libc::O_RDONLY, false).expect("open");
        let data = self.fs.read(fh, 0, 1 << 20).expect("read");
        self.fs.release(fh);
        data
    }

    fn write(&self, path: &str, offset: u64, data: &[u8]) {
        let id = self.node(path).expect("lookup");
        let fh = self.fs.open(id, libc::O_WRONLY, false).expect("open");
        self.fs.write(fh, offset, data, false).expect("write");
        self.fs.release(fh);
    }

    fn list(&self, path: &str) -> Vec<String> {
        let id = if path.is_empty() {
            ROOT
        } else {
            self.node(path).expect("dir")
        };
        let fh = self.fs.opendir(id).expect("opendir");
        let (mut names, mut offset) = (Vec::new(), 0);
        loop {
            let batch = self.fs.readdir(id, fh, offset).expect("readdir");
            let Some(last) = batch.last() else { break };
            offset = last.next_offset;
            names.extend(
                batch
                    .into_iter()
                    .map(|l| l.item.name.to_string_lossy().into_owned())
                    .filter(|n| n != "." && n != ".."),
            );
        }
        self.fs.releasedir(fh);
        names.sort();
        names
    }

    fn errno<T>(r: std::io::Result<T>) -> Option<i32> {
        r.err().and_then(|e| e.raw_os_error())
    }
}

fn write_file(path: &Path, data: &[u8], mode: u32) {
    std::fs::write(path, data).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A store object with the mark, hard-linked at `link` (what vhashify produces).
fn unified(store: &Path, key: u8, data: &[u8], link: &Path) -> PathBuf {
    let obj = store.join(format!("obj{key}"));
    if !obj.exists() {
        write_file(&obj, data, 0o644);
        let c = std::ffi::CString::new(obj.as_os_str().as_bytes()).expect("path");
        let name = std::ffi::CString::new(hashstore::MARK_XATTR).expect("name");
        let value = [key; 32];
        // SAFETY: valid NUL-terminated strings and a 32-byte buffer.
        let r = unsafe { libc::setxattr(c.as_ptr(), name.as_ptr(), value.as_ptr().cast(), 32, 0) };
        assert_eq!(
            r,
            0,
            "setting the mark needs root: {}",
            std::io::Error::last_os_error()
        );
    }
    std::fs::hard_link(&obj, link).expect("link");
    obj
}

#[test]
fn leftmost_wins_and_listing_merges() {
    let f = fixture(|rw, ro, _| {
        std::fs::write(rw.join("a"), b"rw").expect("w");
        std::fs::write(ro.join("a"), b"ro").expect("w");
        std::fs::write(ro.join("b"), b"ro-b").expect("w");
        std::fs::write(ro.join(".wh.hidden-in-ro"), b"").expect("w");
        std::fs::create_dir(ro.join("d")).expect("mkdir");
        std::fs::write(ro.join("d/x"), b"x").expect("w");
    });
    assert_eq!(f.read("a"), b"rw");
    assert_eq!(f.read("b"), b"ro-b");
    assert_eq!(f.list(""), vec!["a", "b", "d"]);
    assert_eq!(f.list("d"), vec!["x"]);
    assert_eq!(
        Fixture::errno(f.node(".wh.hidden-in-ro")),
        Some(libc::ENOENT)
    );
    assert_eq!(
        Fixture::errno(f.node(".cowfs.tmp.work")),
        Some(libc::ENOENT)
    );
}

#[test]
fn copy_up_on_write_keeps_metadata_and_creates_parents() {
    let f = fixture(|_, ro, _| {
        std::fs::create_dir_all(ro.join("etc/deep")).expect("mkdir");
        std::fs::set_permissions(ro.join("etc"), std::fs::Permissions::from_mode(0o750))
            .expect("chmod");
        write_file(&ro.join("etc/deep/conf"), b"hello", 0o640);
        nix::unistd::chown(
            &ro.join("etc"),
            Some(nix::unistd::Uid::from_raw(7)),
            Some(nix::unistd::Gid::from_raw(8)),
        )
        .expect("chown");
    });
    let inode_before = f.node("etc/deep/conf").expect("lookup");
    f.write("etc/deep/conf", 5, b" world");
    assert_eq!(f.read("etc/deep/conf"), b"hello world");
    assert_eq!(
        std::fs::read(f.ro.join("etc/deep/conf")).expect("ro"),
        b"hello",
        "lower branch untouched"
    );
    assert_eq!(
        std::fs::read(f.rw.join("etc/deep/conf")).expect("rw"),
        b"hello world"
    );
    let etc = std::fs::metadata(f.rw.join("etc")).expect("copied parent");
    assert_eq!((etc.mode() & 0o7777, etc.uid(), etc.gid()), (0o750, 7, 8));
    assert_eq!(
        std::fs::metadata(f.rw.join("etc/deep/conf"))
            .expect("copy")
            .mode()
            & 0o7777,
        0o640
    );
    assert_eq!(
        f.node("etc/deep/conf").expect("lookup"),
        inode_before,
        "inode number kept"
    );
    assert_eq!(
        std::fs::read_dir(f.rw.join(".cowfs.tmp.work"))
            .expect("work")
            .count(),
        0
    );
}

#[test]
fn unlink_and_rmdir_leave_whiteouts_only_when_needed() {
    let f = fixture(|rw, ro, _| {
        std::fs::write(ro.join("lower"), b"").expect("w");
        std::fs::write(rw.join("upper"), b"").expect("w");
        std::fs::write(rw.join("both"), b"").expect("w");
        std::fs::write(ro.join("both"), b"").expect("w");
        std::fs::create_dir_all(ro.join("dir/sub")).expect("mkdir");
    });
    for name in ["lower", "upper", "both"] {
        let (p, n) = f.parent_and_name(name);
        f.fs.unlink(p, n).expect("unlink");
    }
    assert!(f.rw.join(".wh.lower").exists());
    assert!(!f.rw.join(".wh.upper").exists());
    assert!(f.rw.join(".wh.both").exists() && !f.rw.join("both").exists());
    assert!(f.list("").contains(&"dir".to_string()));
    assert_eq!(f.list("").len(), 1);
    // rmdir honours whiteouts for emptiness.
    let (p, n) = f.parent_and_name("dir");
    assert_eq!(Fixture::errno(f.fs.rmdir(p, n)), Some(libc::ENOTEMPTY));
    let (p, n) = f.parent_and_name("dir/sub");
    f.fs.rmdir(p, n).expect("rmdir sub");
    assert!(f.rw.join("dir/.wh.sub").exists());
    let (p, n) = f.parent_and_name("dir");
    f.fs.rmdir(p, n).expect("rmdir dir (only whiteouts left)");
    assert!(f.list("").is_empty());
    assert!(f.ro.join("dir/sub").is_dir(), "lower branch untouched");
    // Re-creating a removed directory does not resurrect what was below.
    f.fs.mkdir(ROOT, OsStr::new("dir"), 0o755, USER)
        .expect("mkdir");
    assert!(f.list("dir").is_empty());
}

#[test]
fn rename_moves_files_across_branches_and_refuses_merged_dirs() {
    let f = fixture(|rw, ro, _| {
        std::fs::write(ro.join("f"), b"lower file").expect("w");
        std::fs::create_dir(ro.join("merged")).expect("mkdir");
        std::fs::create_dir(rw.join("merged")).expect("mkdir");
        std::fs::create_dir(rw.join("mine")).expect("mkdir");
        std::fs::write(rw.join("mine/x"), b"x").expect("w");
    });
    let id = f.node("f").expect("f");
    f.fs.rename(ROOT, OsStr::new("f"), ROOT, OsStr::new("g"), 0)
        .expect("rename file");
    assert_eq!(f.read("g"), b"lower file");
    assert_eq!(
        f.node("g").expect("g"),
        id,
        "a renamed file keeps its inode number"
    );
    assert_eq!(Fixture::errno(f.node("f")), Some(libc::ENOENT));
    assert_eq!(
        Fixture::errno(f.fs.rename(ROOT, OsStr::new("merged"), ROOT, OsStr::new("m2"), 0)),
        Some(libc::EXDEV)
    );
    f.fs.rename(ROOT, OsStr::new("mine"), ROOT, OsStr::new("yours"), 0)
        .expect("rename rw-only dir");
    assert_eq!(f.read("yours/x"), b"x");
    // Over an existing lower file: the target's lower copy stays hidden.
    std::fs::write(f.ro.join("target"), b"old").expect("w");
    f.fs.rename(ROOT, OsStr::new("g"), ROOT, OsStr::new("target"), 0)
        .expect("rename over");
    assert_eq!(f.read("target"), b"lower file");
    let (p, n) = f.parent_and_name("target");
    f.fs.unlink(p, n).expect("unlink");
    assert_eq!(
        Fixture::errno(f.node("target")),
        Some(libc::ENOENT),
        "no resurrection"
    );
    // RENAME_NOREPLACE and EXCHANGE
    f.fs.mknod(ROOT, OsStr::new("p"), libc::S_IFREG | 0o644, 0, USER)
        .expect("mknod");
    f.fs.mknod(ROOT, OsStr::new("q"), libc::S_IFREG | 0o600, 0, USER)
        .expect("mknod");
    assert_eq!(
        Fixture::errno(f.fs.rename(
            ROOT,
            OsStr::new("p"),
            ROOT,
            OsStr::new("q"),
            libc::RENAME_NOREPLACE
        )),
        Some(libc::EEXIST)
    );
    let (pid, qid) = (f.node("p").expect("p"), f.node("q").expect("q"));
    f.fs.rename(
        ROOT,
        OsStr::new("p"),
        ROOT,
        OsStr::new("q"),
        libc::RENAME_EXCHANGE,
    )
    .expect("exchange");
    assert_eq!(
        (f.node("p").expect("p"), f.node("q").expect("q")),
        (qid, pid)
    );
}

#[test]
fn creations_get_the_callers_owner_and_setgid_inheritance() {
    let f = fixture(|rw, _, _| {
        std::fs::create_dir(rw.join("shared")).expect("mkdir");
        nix::unistd::chown(
            &rw.join("shared"),
            None,
            Some(nix::unistd::Gid::from_raw(555)),
        )
        .expect("chown");
        std::fs::set_permissions(rw.join("shared"), std::fs::Permissions::from_mode(0o2775))
            .expect("chmod");
    });
    let (_, st, fh) =
        f.fs.create(ROOT, OsStr::new("new"), 0o4755, libc::O_RDWR, USER)
            .expect("create");
    f.fs.release(fh);
    assert_eq!((st.uid, st.gid, st.mode & 0o7777), (1000, 1000, 0o4755));
    let shared = f.node("shared").expect("shared");
    let (_, st) =
        f.fs.mkdir(shared, OsStr::new("sub"), 0o755, USER)
            .expect("mkdir");
    assert_eq!((st.uid, st.gid, st.mode & 0o7777), (1000, 555, 0o2755));
    assert_eq!(
        Fixture::errno(f.fs.mkdir(ROOT, OsStr::new(".wh.evil"), 0o755, USER)),
        Some(libc::EPERM)
    );
    // A guest may make a 0/0 character device: it is not a whiteout in the writable branch.
    f.fs.mknod(
        ROOT,
        OsStr::new("c00"),
        libc::S_IFCHR | 0o600,
        0,
        Caller::ROOT,
    )
    .expect("mknod c 0 0");
    assert!(f.list("").contains(&"c00".to_string()));
    f.fs.unlink(ROOT, OsStr::new("c00")).expect("unlink c 0 0");
    let long = OsStr::from_bytes(&[b'n'; 255]);
    f.fs.mknod(ROOT, long, libc::S_IFIFO | 0o600, 0, USER)
        .expect("255-byte name");
    let too_long = OsStr::from_bytes(&[b'n'; 256]);
    assert_eq!(
        Fixture::errno(f.fs.mkdir(ROOT, too_long, 0o755, USER)),
        Some(libc::ENAMETOOLONG)
    );
    let latin1 = OsStr::from_bytes(b"caf\xe9");
    f.fs.symlink(ROOT, latin1, Path::new("/etc/passwd"), USER)
        .expect("non-UTF-8 name");
    let id = f.node("caf\u{fffd}").err();
    assert!(id.is_some(), "lossy name must not match");
    let sym = f.fs.lookup(ROOT, latin1).expect("lookup").0.id;
    assert_eq!(
        f.fs.readlink(sym).expect("readlink"),
        OsStr::new("/etc/passwd")
    );
}

#[test]
fn long_names_in_lower_branches_are_whited_out_with_devices() {
    let long = "L".repeat(255);
    let f = fixture(|_, ro, _| {
        std::fs::write(ro.join(&long), b"lower").expect("w");
    });
    f.fs.unlink(ROOT, OsStr::new(&long)).expect("unlink");
    let wh = std::fs::symlink_metadata(f.rw.join(&long)).expect("device whiteout");
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &wh.file_type()
    ));
    assert!(f.list("").is_empty());
    let (_, _, fh) =
        f.fs.create(ROOT, OsStr::new(&long), 0o644, libc::O_WRONLY, USER)
            .expect("re-create");
    f.fs.write(fh, 0, b"new", false).expect("write");
    f.fs.release(fh);
    assert_eq!(f.read(&long), b"new");
}

#[test]
fn unified_files_are_broken_before_any_modification() {
    let f = fixture(|rw, ro, store| {
        unified(store, 1, b"shared content", &rw.join("in-rw"));
        unified(store, 1, b"shared content", &ro.join("in-ro"));
        unified(store, 2, b"chmod me", &rw.join("chmod"));
        unified(store, 3, b"xattr me", &rw.join("xattr"));
        unified(store, 4, b"truncate me", &rw.join("trunc"));
        unified(store, 5, b"rename me", &rw.join("rename"));
    });
    let obj = |k: u8| f.store.join(format!("obj{k}"));
    let before = std::fs::metadata(obj(1)).expect("obj");
    // The guest never sees the mark, and cannot set or remove it.
    let id = f.node("in-rw").expect("lookup");
    assert_eq!(
        Fixture::errno(f.fs.getxattr(id, OsStr::new(hashstore::MARK_XATTR))),
        Some(libc::ENODATA)
    );
    assert!(f.fs.listxattr(id).expect("list").is_empty());
    assert_eq!(
        Fixture::errno(f.fs.removexattr(id, OsStr::new(hashstore::MARK_XATTR))),
        Some(libc::EPERM)
    );
    assert_eq!(
        Fixture::errno(f.fs.setxattr(id, OsStr::new("trusted.cowfs.key"), b"x", 0)),
        Some(libc::EPERM)
    );
    assert_eq!(
        f.fs.getattr(id, None).expect("attr").nlink,
        1,
        "store links are not the guest's"
    );
    // Reading does not break the link.
    assert_eq!(f.read("in-rw"), b"shared content");
    assert_eq!(
        std::fs::metadata(f.rw.join("in-rw")).expect("m").ino(),
        before.ino()
    );
    // Writing does, for the rw and the ro copy alike; the object never changes.
    f.write("in-rw", 0, b"SHARED");
    f.write("in-ro", 0, b"Shared");
    assert_eq!(f.read("in-rw"), b"SHARED content");
    assert_eq!(f.read("in-ro"), b"Shared content");
    assert_eq!(std::fs::read(obj(1)).expect("obj"), b"shared content");
    assert_ne!(
        std::fs::metadata(f.rw.join("in-rw")).expect("m").ino(),
        before.ino()
    );
    assert_eq!(
        f.node("in-rw").expect("lookup"),
        id,
        "inode number kept across the break"
    );
    // chmod, setxattr, truncate break the link too.
    let id = f.node("chmod").expect("chmod");
    f.fs.setattr(
        id,
        SetAttr {
            mode: Some(0o600),
            ..SetAttr::default()
        },
        None,
    )
    .expect("chmod");
    assert_eq!(
        std::fs::metadata(obj(2)).expect("obj").mode() & 0o777,
        0o644
    );
    let id = f.node("xattr").expect("xattr");
    f.fs.setxattr(id, OsStr::new("user.note"), b"v", 0)
        .expect("setxattr");
    assert!(std::fs::read(f.rw.join("xattr")).is_ok());
    assert_eq!(std::fs::metadata(obj(3)).expect("obj").nlink(), 1);
    let id = f.node("trunc").expect("trunc");
    f.fs.setattr(
        id,
        SetAttr {
            size: Some(4),
            ..SetAttr::default()
        },
        None,
    )
    .expect("truncate");
    assert_eq!(f.read("trunc"), b"trun");
    assert_eq!(std::fs::read(obj(4)).expect("obj"), b"truncate me");
    // Rename needs no copy: the link moves.
    let ino = std::fs::metadata(obj(5)).expect("obj").ino();
    f.fs.rename(ROOT, OsStr::new("rename"), ROOT, OsStr::new("renamed"), 0)
        .expect("rename");
    assert_eq!(
        std::fs::metadata(f.rw.join("renamed")).expect("m").ino(),
        ino
    );
    for k in 1..=5u8 {
        let obj = obj(k);
        assert!(
            cowfs_fs::sys::get_xattr(
                cowfs_fs::sys::XattrTarget::At(
                    std::os::fd::AsFd::as_fd(
                        &std::fs::File::open(obj.parent().expect("dir")).expect("dir")
                    ),
                    obj.file_name().expect("name")
                ),
                OsStr::new(hashstore::MARK_XATTR)
            )
            .expect("xattr")
            .is_some()
        );
    }
}

#[test]
fn chown_utimes_removexattr_and_writable_opens_break_the_link_too() {
    let f = fixture(|rw, _, store| {
        for (k, name) in [
            (11u8, "chown"),
            (12, "utimes"),
            (13, "rdwr"),
            (14, "trunc-open"),
        ] {
            unified(store, k, format!("{name} me").as_bytes(), &rw.join(name));
        }
        let obj = unified(store, 15, b"removexattr me", &rw.join("rmxattr"));
        cowfs_fs::sys::set_xattr(
            cowfs_fs::sys::XattrTarget::At(
                std::os::fd::AsFd::as_fd(&std::fs::File::open(store).expect("store")),
                obj.file_name().expect("name"),
            ),
            OsStr::new("user.note"),
            b"v",
            0,
        )
        .expect("user xattr on the object");
    });
    let obj = |k: u8| f.store.join(format!("obj{k}"));
    let print = |k: u8| {
        let m = std::fs::metadata(obj(k)).expect("object");
        let data = std::fs::read(obj(k)).expect("object");
        (
            m.ino(),
            m.mode(),
            m.uid(),
            m.gid(),
            m.mtime(),
            m.mtime_nsec(),
            data,
        )
    };
    let before: Vec<_> = (11..=15).map(print).collect();
    let broken = |name: &str, k: u8| {
        assert_ne!(
            std::fs::metadata(f.rw.join(name)).expect("path").ino(),
            std::fs::metadata(obj(k)).expect("object").ino(),
            "{name}: still linked to the object"
        );
    };
    let set = |name: &str, attr: SetAttr| {
        let id = f.node(name).expect(name);
        f.fs.setattr(id, attr, None).expect(name);
    };
    set(
        "chown",
        SetAttr {
            uid: Some(1000),
            gid: Some(1000),
            ..SetAttr::default()
        },
    );
    broken("chown", 11);
    assert_eq!(
        std::fs::metadata(f.rw.join("chown")).expect("m").uid(),
        1000
    );
    set(
        "utimes",
        SetAttr {
            mtime: Some(cowfs_fs::fileops::SetTime::At(cowfs_fs::attr::Timespec {
                sec: 1_000_000,
                nsec: 5,
            })),
            ..SetAttr::default()
        },
    );
    broken("utimes", 12);
    assert_eq!(
        std::fs::metadata(f.rw.join("utimes")).expect("m").mtime(),
        1_000_000
    );
    // Opening for writing breaks the link before anything is written.
    let id = f.node("rdwr").expect("rdwr");
    let fh = f.fs.open(id, libc::O_RDWR, false).expect("open O_RDWR");
    broken("rdwr", 13);
    f.fs.release(fh);
    assert_eq!(f.read("rdwr"), b"rdwr me");
    let id = f.node("trunc-open").expect("trunc-open");
    let fh =
        f.fs.open(id, libc::O_WRONLY | libc::O_TRUNC, false)
            .expect("open O_TRUNC");
    f.fs.release(fh);
    broken("trunc-open", 14);
    assert_eq!(f.read("trunc-open"), b"");
    let id = f.node("rmxattr").expect("rmxattr");
    f.fs.removexattr(id, OsStr::new("user.note"))
        .expect("removexattr");
    broken("rmxattr", 15);
    let after: Vec<_> = (11..=15).map(print).collect();
    assert_eq!(before, after, "no store object changed");
}

#[test]
fn hard_links_share_a_node_and_see_each_others_changes() {
    let f = fixture(|rw, _, _| {
        std::fs::write(rw.join("a"), b"1").expect("w");
    });
    let a = f.node("a").expect("a");
    let (b, st) = f.fs.link(a, ROOT, OsStr::new("b")).expect("link");
    assert_eq!(b.id, a);
    assert_eq!(st.nlink, 2);
    assert_eq!(f.node("b").expect("b"), a);
    f.fs.setattr(
        a,
        SetAttr {
            mode: Some(0o600),
            ..SetAttr::default()
        },
        None,
    )
    .expect("chmod");
    assert_eq!(
        f.fs.getattr(f.node("b").expect("b"), None)
            .expect("attr")
            .mode
            & 0o777,
        0o600
    );
    f.fs.unlink(ROOT, OsStr::new("a")).expect("unlink");
    assert_eq!(
        f.fs.getattr(f.node("b").expect("b"), None)
            .expect("attr")
            .nlink,
        1
    );
}

#[test]
fn no_writable_branch_means_erofs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(tmp.path().join("f"), b"x").expect("w");
    let (fs, _rx) = UnionFs::new(
        vec![Branch::open(tmp.path(), BranchMode::Ro, None).expect("ro")],
        FsConfig::default(),
    );
    let f = fs.lookup(ROOT, OsStr::new("f")).expect("lookup").0.id;
    assert_eq!(
        Fixture::errno(fs.open(f, libc::O_WRONLY, false)),
        Some(libc::EROFS)
    );
    assert_eq!(
        Fixture::errno(fs.mkdir(ROOT, OsStr::new("d"), 0o755, USER)),
        Some(libc::EROFS)
    );
    assert_eq!(
        Fixture::errno(fs.unlink(ROOT, OsStr::new("f"))),
        Some(libc::EROFS)
    );
    let fh = fs
        .open(f, libc::O_RDONLY, false)
        .expect("read-only open works");
    assert_eq!(fs.read(fh, 0, 10).expect("read"), b"x");
}

#[test]
fn branches_change_at_run_time() {
    let f = fixture(|_, _, _| {});
    let extra = f._tmp.path().join("extra");
    std::fs::create_dir(&extra).expect("mkdir");
    std::fs::write(extra.join("new"), b"from extra").expect("w");
    assert_eq!(Fixture::errno(f.node("new")), Some(libc::ENOENT));
    f.fs.add_branch(&extra, BranchMode::Ro, Position::Last)
        .expect("add");
    assert_eq!(f.read("new"), b"from extra");
    assert_eq!(f.fs.branches().len(), 3);
    assert!(
        f.fs.add_branch(&extra, BranchMode::Ro, Position::Last)
            .is_err(),
        "duplicate"
    );
    assert!(
        f.fs.add_branch(&extra.join("nope"), BranchMode::Ro, Position::Last)
            .is_err(),
        "missing"
    );
    f.fs.remove_branch(&extra).expect("remove");
    assert_eq!(Fixture::errno(f.node("new")), Some(libc::ENOENT));
    f.fs.remove_branch(&f.rw).expect("remove rw");
    assert_eq!(
        Fixture::errno(f.fs.mkdir(ROOT, OsStr::new("x"), 0o755, USER)),
        Some(libc::EROFS)
    );
    assert!(f.fs.remove_branch(&f.ro).is_err(), "the last branch stays");
}

/// A big directory is handed out in bounded batches that follow each other without gaps or
/// repeats (handing out the whole rest on every call made listing it quadratic).
#[test]
fn big_directories_list_in_bounded_batches() {
    let n = cowfs_fs::fileops::READDIR_BATCH * 2 + 77;
    let f = fixture(|rw, ro, _| {
        std::fs::create_dir(ro.join("big")).expect("mkdir");
        std::fs::create_dir(rw.join("big")).expect("mkdir");
        for i in 0..n {
            let branch = if i % 3 == 0 { rw } else { ro };
            std::fs::write(branch.join(format!("big/e{i}")), b"").expect("write");
        }
    });
    let id = f.node("big").expect("lookup");
    let fh = f.fs.opendir(id).expect("opendir");
    let (mut offset, mut names, mut calls) = (0, Vec::new(), 0);
    loop {
        let batch = f.fs.readdir(id, fh, offset).expect("readdir");
        assert!(batch.len() <= cowfs_fs::fileops::READDIR_BATCH);
        let Some(last) = batch.last() else { break };
        offset = last.next_offset;
        names.extend(batch.into_iter().map(|e| e.item.name));
        calls += 1;
    }
    f.fs.releasedir(fh);
    assert!(calls >= 3, "{calls} calls");
    let mut want: Vec<std::ffi::OsString> = (0..n).map(|i| format!("e{i}").into()).collect();
    want.push(".".into());
    want.push("..".into());
    want.sort();
    names.sort();
    assert_eq!(names, want);
}
