//! A real EMLINK: when an object has as many links as the filesystem allows, unification starts
//! another object for the same key and every path still ends up unified.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use hashstore::Store;
use hashstore::unify::{self, ExcludeList, NoProgress, Options};

fn write(path: &Path, content: &[u8]) {
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(path, content).expect("write");
    let f = fs::File::open(path).expect("open");
    let t = (1_600_000_000, 0);
    hashstore::sys::set_times(std::os::fd::AsFd::as_fd(&f), t, t).expect("times");
}

#[test]
fn a_full_object_gets_a_sibling() {
    let t = tempfile::tempdir().expect("tempdir");
    let content = b"a file that everybody has, many many times";
    let g1 = t.path().join("g1");
    let g2 = t.path().join("g2");
    write(&g1.join("etc/common"), content);
    let store_path = t.path().join("store");
    let (store, _) = Store::init(&store_path).expect("init");
    let opts = Options {
        excludes: ExcludeList::default(),
        ..Options::default()
    };
    let roots = unify::open_guests(std::slice::from_ref(&g1), &store_path, false).expect("guests");
    unify::unify(&store, &roots, &opts, &NoProgress).expect("first run");
    let object = hashstore::objects::list(&store).expect("list");
    assert_eq!(object.len(), 1);
    let obj_path = store_path.join(object[0].rel_path());

    // Fill the object up to the filesystem's link limit from outside the guests.
    let filler = t.path().join("filler");
    fs::create_dir(&filler).expect("mkdir");
    let mut n = 0u64;
    loop {
        match fs::hard_link(&obj_path, filler.join(n.to_string())) {
            Ok(()) => n += 1,
            Err(e) if e.raw_os_error() == Some(libc::EMLINK) => break,
            Err(e) => panic!("link: {e}"),
        }
        assert!(n < 10_000_000, "no link limit on this filesystem?");
    }
    let full_ino = fs::metadata(&obj_path).expect("stat").ino();

    // A second guest with two more copies: the first one becomes object .1, the other links to it.
    write(&g2.join("etc/common"), content);
    write(&g2.join("etc/common-copy"), content);
    let roots = unify::open_guests(&[g1.clone(), g2.clone()], &store_path, false).expect("guests");
    let report = unify::unify(&store, &roots, &opts, &NoProgress).expect("second run");
    assert!(report.skipped.is_empty(), "{report:?}");
    let a = fs::metadata(g2.join("etc/common")).expect("stat");
    let b = fs::metadata(g2.join("etc/common-copy")).expect("stat");
    assert_eq!(a.ino(), b.ino(), "both copies unified");
    assert_ne!(a.ino(), full_ino, "not with the full object");
    let listed = hashstore::objects::list(&store).expect("list");
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.iter().any(|l| l.id.is_some_and(|id| id.seq == 1)));
    let v = hashstore::verify::verify(&store, 2).expect("verify");
    assert!(v.is_clean(), "{v:?}");
    // Free the filler links quickly (the tempdir would do it too).
    fs::remove_dir_all(&filler).expect("cleanup");
}
