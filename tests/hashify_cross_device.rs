//! A guest on another filesystem than the store: refused with a clear message and nothing
//! changed; with --copy its files are copied into the store as objects and the guest is left as
//! it was.

mod store_support;

use std::os::unix::fs::MetadataExt;

use cowfs::listing::{ListingOptions, list_tree};
use store_support::*;

#[test]
fn other_filesystem_is_refused_or_copied_on_request() {
    let t = tempfile::tempdir().expect("tempdir");
    let other = Tmpfs::mount(&t.path().join("other"));
    let local = t.path().join("local");
    let foreign = other.path.join("guest");
    for (i, g) in [&local, &foreign].iter().enumerate() {
        for n in 0..8 {
            put(
                &g.join(format!("usr/f{n}")),
                &bytes(&format!("f{n}"), 3000 + n),
                &Meta::default(),
            );
        }
        put(
            &g.join("usr/own"),
            &bytes(&format!("own {i}"), 5000),
            &Meta::default(),
        );
    }
    let store = t.path().join("store");
    let (ss, sl, sf) = (
        store.display().to_string(),
        local.display().to_string(),
        foreign.display().to_string(),
    );
    let before = list_tree(&foreign, ListingOptions::default()).expect("list");

    let err = fails(vhashify(["--store", &ss, &sl, &sf]));
    assert!(
        err.contains("another filesystem") && err.contains("--copy"),
        "{err}"
    );
    assert!(!store.exists(), "a refused run created the store");

    let r = json(vhashify(["--json", "--copy", "--store", &ss, &sl, &sf]));
    let rep = &r["report"];
    // The local guest's 9 files become objects by link; the foreign guest's own file is copied;
    // none of the foreign guest's 9 paths can be linked.
    assert_eq!(num(rep, &["objects_linked"]), 9, "{r}");
    assert_eq!(num(rep, &["objects_copied"]), 1, "{r}");
    assert_eq!(num(rep, &["foreign_left"]), 9, "{r}");
    assert_eq!(num(rep, &["links_made"]), 0, "{r}");
    assert_eq!(
        list_tree(&foreign, ListingOptions::default()).expect("list"),
        before
    );
    assert_eq!(object_files(&store).len(), 10);
    let foreign_dev = std::fs::metadata(&foreign).expect("stat").dev();
    for o in object_files(&store) {
        assert_ne!(std::fs::metadata(&o).expect("stat").dev(), foreign_dev);
    }
    ok(cowfs(["store", "verify", &ss]));
}
