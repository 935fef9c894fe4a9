//! vhashify on the real guest corpus: every path keeps its content and metadata (directories
//! included), every eligible file ends up linked to a verified object, a re-run hashes nothing,
//! and vdu's accounting adds up.

mod store_support;

use std::path::Path;

use cowfs::listing::{ListingOptions, diff, list_tree};
use store_support::*;

#[test]
fn unifies_the_corpus_without_changing_what_guests_see() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let guests = restore_corpus(tmp.path());
    let store = tmp.path().join("store");
    let opts = ListingOptions::default();
    let before: Vec<_> = guests
        .iter()
        .map(|g| list_tree(g, opts).expect("list"))
        .collect();
    let mut all: Vec<&Path> = guests.iter().map(|g| g.as_path()).collect();
    let du_before = du_bytes(&all);

    let mut args = vec![
        "--json".to_string(),
        "--store".into(),
        store.display().to_string(),
    ];
    args.extend(guests.iter().map(|g| g.display().to_string()));
    let first = json(vhashify(&args));
    let r = &first["report"];
    assert!(num(r, &["links_made"]) > 0, "{first}");
    assert_eq!(r["skipped"].as_array().map(Vec::len), Some(0), "{first}");

    // Nothing a guest can see changed (trusted.cowfs.* excluded by the listing).
    for (g, b) in guests.iter().zip(&before) {
        let after = list_tree(g, opts).expect("list");
        let d = diff(b, &after, 20);
        assert!(d.is_empty(), "{} changed:\n{}", g.display(), d.join("\n"));
    }

    // The space the report claims is really gone: guests + store use that much less, up to the
    // store's own overhead (directories and index).
    all.push(&store);
    let du_after = du_bytes(&all);
    let claimed = num(r, &["bytes_reclaimed"]);
    let measured = du_before - du_after;
    let overhead = du_bytes(&[&store]) - object_bytes(&store);
    assert!(
        measured <= claimed && claimed - measured <= overhead,
        "measured {measured}, claimed {claimed}, store overhead {overhead}"
    );

    // SQLite leaves nothing beside index.db once vhashify has exited, and the first run into a
    // new store compacted the index: no page is left on SQLite's free list.
    for side in ["index.db-wal", "index.db-shm"] {
        assert!(!store.join(side).exists(), "{side} left behind");
    }
    let index = hashstore::index::Index::open(&store.join("index.db")).expect("index");
    assert_eq!(index.free_pages().expect("freelist"), 0);
    drop(index);

    // Every object checks out.
    let v = json(cowfs([
        "store",
        "verify",
        "--json",
        store.to_str().expect("utf8"),
    ]));
    assert_eq!(v["problems"].as_array().map(Vec::len), Some(0), "{v}");
    assert_eq!(num(&v, &["objects"]), num(r, &["objects_linked"]));

    // A re-run finds everything unified: nothing hashed, nothing linked.
    let second = json(vhashify(&args));
    let r2 = &second["report"];
    assert_eq!(num(r2, &["hashed_files"]), 0, "{second}");
    assert_eq!(num(r2, &["links_made"]), 0, "{second}");
    assert_eq!(
        num(r2, &["already_unified"]),
        num(r, &["files"]),
        "{second}"
    );

    // vdu: own + shared = total per guest, the guests share a lot, and the order of the
    // arguments does not change any guest's numbers.
    let names: Vec<String> = guests.iter().map(|g| g.display().to_string()).collect();
    let mut fwd = vec!["--json".to_string()];
    fwd.extend(names.iter().cloned());
    let mut rev = vec!["--json".to_string()];
    rev.extend(names.iter().rev().cloned());
    let a = json(vdu(&fwd));
    let b = json(vdu(&rev));
    for (i, g) in a["guests"].as_array().expect("guests").iter().enumerate() {
        assert_eq!(
            num(g, &["own_bytes"]) + num(g, &["shared_bytes"]),
            num(g, &["total_bytes"])
        );
        assert!(num(g, &["shared_bytes"]) > num(g, &["own_bytes"]), "{g}");
        let same = &b["guests"][names.len() - 1 - i];
        assert_eq!(g, same, "vdu depends on argument order");
    }
}

fn object_bytes(store: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    object_files(store)
        .iter()
        .map(|p| std::fs::symlink_metadata(p).expect("stat").blocks() * 512)
        .sum()
}
