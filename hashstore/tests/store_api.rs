//! The store's library API on real files: insert by link and by copy, lookup, candidates,
//! busy files, gc, verify, fsck, lock conflicts and clear errors for broken stores.

use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use hashstore::key::describe_fd;
use hashstore::{Error, InsertSource, Inserted, KeyPolicy, LockMode, Store};

fn file(path: &Path, content: &[u8], mode: u32) {
    fs::write(path, content).expect("write");
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Gives `path` the times every test file has (writing moved them).
fn fixed_times(path: &Path) {
    let f = fs::File::open(path).expect("open");
    hashstore::sys::set_times(f.as_fd(), (1, 0), (1_600_000_000, 5)).expect("times");
}

/// Opens, describes and hashes `path`, then runs `f` with an insert source for it.
fn with_source<R>(path: &Path, f: impl FnOnce(&InsertSource<'_>) -> R) -> R {
    let fd = fs::File::open(path).expect("open");
    let (meta, st, content) = describe_fd(fd.as_fd()).expect("read");
    let content = content.expect("stable");
    let src = InsertSource {
        fd: fd.as_fd(),
        path,
        stat: &st,
        meta: &meta,
        content,
        policy: KeyPolicy::default(),
    };
    f(&src)
}

#[test]
fn insert_lookup_copy_gc_verify_fsck() {
    let t = tempfile::tempdir().expect("tempdir");
    let root = t.path().join("store");
    let (store, created) = Store::init(&root).expect("init");
    assert!(created);
    let a = t.path().join("a");
    let b = t.path().join("b");
    let c = t.path().join("c");
    file(&a, b"the same content, long enough", 0o644);
    file(&b, b"the same content, long enough", 0o644);
    file(&c, b"the same content, long enough", 0o600);
    fs::hard_link(&a, t.path().join("a2")).expect("link");
    for p in [&a, &b, &c] {
        fixed_times(p);
    }

    // a becomes an object by link: zero copy, same inode, marked.
    let row = match with_source(&a, |s| store.insert_by_link(s, 0)).expect("insert a") {
        Inserted::New(row) => row,
        other => panic!("expected a new object, got {other:?}"),
    };
    let obj = store.object_path(&row.id);
    assert_eq!(
        fs::metadata(&obj).expect("object").ino(),
        fs::metadata(&a).expect("a").ino()
    );
    let marked = hashstore::mark::read_mark_path(&obj).expect("mark");
    assert_eq!(marked, Some(row.id.key));
    store.record(std::slice::from_ref(&row)).expect("record");
    assert_eq!(
        store.lookup(&row.id.key).expect("lookup"),
        vec![row.clone()]
    );
    assert_eq!(store.candidates_by_size(29).expect("by size").len(), 1);
    assert!(store.candidates_by_size(30).expect("by size").is_empty());

    // Inserting a again is idempotent; b (same content and metadata) finds the existing object.
    assert!(matches!(
        with_source(&a, |s| store.insert_by_link(s, 0)),
        Ok(Inserted::New(_))
    ));
    match with_source(&b, |s| store.insert_by_link(s, 0)).expect("insert b") {
        Inserted::Exists(id) => assert_eq!(id, row.id),
        other => panic!("expected Exists, got {other:?}"),
    }
    // b did not keep a mark it was given for a moment.
    assert_eq!(hashstore::mark::read_mark_path(&b).expect("mark"), None);

    // c differs only in mode: another key. Copy mode makes a separate inode with the same
    // metadata.
    let crow = match with_source(&c, |s| store.insert_by_copy(s, 0)).expect("copy c") {
        Inserted::New(row) => row,
        other => panic!("expected a new object, got {other:?}"),
    };
    assert_ne!(crow.id.key, row.id.key);
    let cobj = fs::metadata(store.object_path(&crow.id)).expect("copied object");
    let cm = fs::metadata(&c).expect("c");
    assert_ne!(cobj.ino(), cm.ino());
    assert_eq!(
        (cobj.mode(), cobj.uid(), cobj.gid()),
        (cm.mode(), cm.uid(), cm.gid())
    );
    assert_eq!(
        (cobj.mtime(), cobj.mtime_nsec()),
        (cm.mtime(), cm.mtime_nsec())
    );
    assert_eq!(cobj.nlink(), 1);
    store.record(std::slice::from_ref(&crow)).expect("record");

    // A file open for writing cannot become an immutable object.
    let busy = t.path().join("busy");
    file(&busy, b"somebody is writing this file", 0o644);
    let writer = fs::OpenOptions::new()
        .append(true)
        .open(&busy)
        .expect("open for write");
    match with_source(&busy, |s| store.insert_by_link(s, 0)) {
        Err(Error::Busy(p)) => assert_eq!(p, busy),
        other => panic!("expected Busy, got {other:?}"),
    }
    drop(writer);
    assert_eq!(hashstore::mark::read_mark_path(&busy).expect("mark"), None);

    // verify: clean, then a flipped byte in the copied object is named.
    let v = hashstore::verify::verify(&store, 2).expect("verify");
    assert!(v.is_clean(), "{v:?}");
    let cpath = store.object_path(&crow.id);
    let mut bytes = fs::read(&cpath).expect("read");
    bytes[3] ^= 0x20;
    fs::write(&cpath, &bytes).expect("write");
    fixed_times(&cpath);
    let v = hashstore::verify::verify(&store, 2).expect("verify");
    assert_eq!(v.problems.len(), 1, "{v:?}");
    assert_eq!(v.problems[0].kind, "content-changed");
    assert!(
        store
            .root()
            .join(&v.problems[0].object)
            .ends_with(crow.id.rel_path())
    );
    bytes[3] ^= 0x20;
    fs::write(&cpath, &bytes).expect("write");
    fixed_times(&cpath);

    // gc: the copy has no outside link and goes; a's object is linked (a, a2) and stays.
    let g = hashstore::gc::gc(&store, false).expect("gc");
    assert_eq!(g.removed, 1, "{g:?}");
    assert!(!store.object_path(&crow.id).exists());
    assert!(obj.exists());
    assert!(store.lookup(&crow.id.key).expect("lookup").is_empty());
    fs::remove_file(&a).expect("rm a");
    fs::remove_file(t.path().join("a2")).expect("rm a2");
    let g = hashstore::gc::gc(&store, false).expect("gc");
    assert_eq!(g.removed, 1);
    assert!(!obj.exists());
    drop(store);

    // fsck rebuilds a deleted index from the tree.
    let (store, _) = Store::init(&root).expect("open");
    let d = t.path().join("d");
    file(&d, b"another object to keep around", 0o644);
    let drow = match with_source(&d, |s| store.insert_by_link(s, 0)).expect("insert d") {
        Inserted::New(r) => r,
        other => panic!("{other:?}"),
    };
    drop(store);
    fs::remove_file(root.join("index.db")).expect("rm index");
    match Store::open(&root) {
        Err(Error::IndexMissing(_)) => {}
        other => panic!("expected IndexMissing, got {:?}", other.err()),
    }
    let r = hashstore::fsck::fsck(&root, Default::default()).expect("fsck");
    assert_eq!(r.index_recreated.as_deref(), Some("missing"));
    assert_eq!(r.index_rows, 1);
    let store = Store::open(&root).expect("open after fsck");
    assert_eq!(store.lookup(&drow.id.key).expect("lookup").len(), 1);
}

#[test]
fn locks_and_broken_stores_give_clear_errors() {
    let t = tempfile::tempdir().expect("tempdir");
    let root = t.path().join("store");
    let (shared, _) = Store::init(&root).expect("init");
    // fsck (exclusive) cannot run while an inserter holds the store.
    match Store::open_with(&root, LockMode::Exclusive) {
        Err(Error::Locked(p)) => assert_eq!(p, root),
        other => panic!("expected Locked, got {:?}", other.err()),
    }
    assert!(matches!(
        hashstore::fsck::fsck(&root, Default::default()),
        Err(Error::Locked(_))
    ));
    // Two inserters share it.
    let second = Store::open(&root).expect("second shared open");
    drop((shared, second));

    // Not a store / not empty / wrong format.
    let plain = t.path().join("plain");
    fs::create_dir(&plain).expect("mkdir");
    fs::write(plain.join("x"), "x").expect("write");
    assert!(matches!(Store::open(&plain), Err(Error::NotAStore(_))));
    let msg = Store::init(&plain)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(msg.contains("not empty"), "{msg}");
    fs::write(root.join("format"), "cowfs-hashstore 99\n").expect("write");
    let msg = Store::open(&root)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(msg.contains("cowfs-hashstore 99"), "{msg}");
    fs::write(root.join("format"), "cowfs-hashstore 1\n").expect("write");

    // A corrupt index: a clear error, and fsck sets it aside and rebuilds.
    for side in ["index.db-wal", "index.db-shm"] {
        let _ = fs::remove_file(root.join(side));
    }
    fs::write(root.join("index.db"), vec![0x42u8; 4096]).expect("write");
    match Store::open(&root) {
        Err(e @ Error::IndexCorrupt { .. }) => assert!(e.to_string().contains("fsck"), "{e}"),
        other => panic!("expected IndexCorrupt, got {:?}", other.err()),
    }
    let r = hashstore::fsck::fsck(&root, Default::default()).expect("fsck");
    assert!(r.corrupt_index_moved_to.is_some(), "{r:?}");
    Store::open(&root).expect("open after fsck");
}

#[test]
fn a_vanished_object_is_reported_not_linked() {
    let t = tempfile::tempdir().expect("tempdir");
    let (store, _) = Store::init(&t.path().join("store")).expect("init");
    let a = t.path().join("a");
    file(&a, b"content that will be collected", 0o644);
    let row = match with_source(&a, |s| store.insert_by_link(s, 0)).expect("insert") {
        Inserted::New(r) => r,
        other => panic!("{other:?}"),
    };
    let dir = fs::File::open(t.path()).expect("dir");
    store
        .link_object(&row.id, row.ino, dir.as_fd(), std::ffi::OsStr::new("l1"))
        .expect("link works while the object exists");
    fs::remove_file(store.object_path(&row.id)).expect("rm object");
    match store.link_object(&row.id, row.ino, dir.as_fd(), std::ffi::OsStr::new("l2")) {
        Err(hashstore::LinkFailure::Vanished) => {}
        other => panic!("expected Vanished, got {other:?}"),
    }
    assert!(!t.path().join("l2").exists());
}
