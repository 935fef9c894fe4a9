//! Issue 4, test 5: two corpus guests unified and mounted; writes through each guest to the same
//! unified file stay private to that guest, and the store object and its hash never change.
//!
//! The guests are unified by the real `vhashify`.

mod common;

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// Unifies the two guests with the real `vhashify` and returns every path of `a` that became a
/// link to a store object, with that object.
fn vhashify(store: &Path, a: &Path, b: &Path) -> HashMap<PathBuf, PathBuf> {
    ok(Command::new(cowfs::bin("vhashify"))
        .arg("--store")
        .arg(store)
        .arg(a)
        .arg(b));
    let mut objects = HashMap::new();
    for fanout in std::fs::read_dir(store.join("objects")).expect("objects/") {
        for object in std::fs::read_dir(fanout.expect("entry").path()).expect("fan-out dir") {
            let object = object.expect("entry").path();
            objects.insert(inode(&object), object);
        }
    }
    let mut unified = HashMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in std::fs::read_dir(a.join(&rel)).expect("readdir") {
            let entry = entry.expect("entry");
            let rel = rel.join(entry.file_name());
            let meta = entry.metadata().expect("stat");
            if meta.is_dir() {
                stack.push(rel);
            } else if let Some(object) = objects.get(&meta.ino()) {
                unified.insert(rel, object.clone());
            }
        }
    }
    unified
}

#[test]
fn two_unified_guests_write_privately_and_the_store_never_changes() {
    let l = Layout::new();
    let (g1, g2, store) = (l.dir("g1"), l.dir("g2"), l.dir("store"));
    cowfs::restore_guest("g1", &g1).expect("corpus guest g1 (scripts/install-deps.sh builds it)");
    cowfs::restore_guest("g2", &g2).expect("corpus guest g2");
    let unified = vhashify(&store, &g1, &g2);
    let target = Path::new("etc/bash.bashrc");
    assert!(unified.contains_key(target), "{} unified", target.display());
    assert!(
        unified.len() > 1000,
        "most of a Debian guest is identical: {} files",
        unified.len()
    );

    let object_of = |rel: &Path| unified[rel].clone();
    let object = object_of(target);
    assert_eq!(
        inode(&object),
        inode(&g1.join(target)),
        "g1's file is a link to the object"
    );
    assert_eq!(
        inode(&object),
        inode(&g2.join(target)),
        "g2's file is a link to the object"
    );
    let before = fingerprint(&object);
    let original = std::fs::read(&object).expect("read");
    // Other unified files, to check chmod and the marks later.
    let ls = Path::new("usr/bin/ls");
    let ls_object = object_of(ls);
    let ls_before = fingerprint(&ls_object);

    let m1 = Mounted::new(&format!("dirs={}=rw", g1.display()), &l.dir("m1"));
    let m2 = Mounted::new(&format!("dirs={}=rw", g2.display()), &l.dir("m2"));
    let ino1 = inode(&m1.path(target));
    assert_eq!(
        std::fs::metadata(m1.path(target)).expect("stat").nlink(),
        1,
        "store links are not the guest's"
    );
    assert!(
        !xattr_names(&m1.path(target)).contains("cowfs"),
        "the mark is invisible"
    );
    let refused = Command::new("setfattr")
        .args(["-x", hashstore::MARK_XATTR])
        .arg(m1.path(target))
        .status()
        .expect("setfattr");
    assert!(
        !refused.success(),
        "the mark cannot be removed through the mount"
    );

    sh(&format!("echo guest1 >> {}", m1.path(target).display()));
    sh(&format!("echo guest2 >> {}", m2.path(target).display()));

    let mut want1 = original.clone();
    want1.extend_from_slice(b"guest1\n");
    let mut want2 = original.clone();
    want2.extend_from_slice(b"guest2\n");
    assert_eq!(std::fs::read(m1.path(target)).expect("read"), want1);
    assert_eq!(std::fs::read(m2.path(target)).expect("read"), want2);
    assert_eq!(
        fingerprint(&object),
        before,
        "store object (inode, mode, content hash) unchanged"
    );
    assert_eq!(
        std::fs::metadata(&object).expect("stat").nlink(),
        1,
        "both guests broke away"
    );
    assert_ne!(inode(&g1.join(target)), inode(&object));
    assert_eq!(
        inode(&m1.path(target)),
        ino1,
        "inode number stable across the break"
    );

    // chmod breaks the link too; a unified binary still runs in a chroot.
    sh(&format!("chmod 700 {}", m2.path(ls).display()));
    assert_eq!(fingerprint(&ls_object), ls_before);
    let out = ok(Command::new("chroot")
        .arg(&m1.mnt)
        .args(["/usr/bin/ls", "/etc"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("debian_version"));
    assert_eq!(
        inode(&g1.join(ls)),
        inode(&ls_object),
        "running a unified binary does not break its link"
    );

    let marked = Command::new("getfattr")
        .args(["-n", hashstore::MARK_XATTR, "--only-values"])
        .arg(&object)
        .output()
        .expect("getfattr");
    assert!(
        marked.status.success() && marked.stdout.len() == 32,
        "the object keeps its mark"
    );
    let mut counts: HashMap<u64, usize> = HashMap::new();
    for p in [&g1, &g2] {
        *counts.entry(inode(&p.join(target))).or_default() += 1;
    }
    assert_eq!(counts.len(), 2, "each guest has its own private copy");
}
