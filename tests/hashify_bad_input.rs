//! Bad input to vhashify and vdu: clear messages, exit status 1, nothing changed (no store
//! created, no guest touched).

mod store_support;

use std::path::Path;

use cowfs::listing::{ListingOptions, list_tree};
use store_support::*;

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn setup() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let t = tempfile::tempdir().expect("tempdir");
    let g1 = t.path().join("g1");
    let g2 = t.path().join("g2");
    for g in [&g1, &g2] {
        put(
            &g.join("usr/bin/tool"),
            &bytes("tool", 5000),
            &Meta::default(),
        );
        put(
            &g.join("usr/sub/lib"),
            &bytes("lib", 7000),
            &Meta::default(),
        );
    }
    (t, g1, g2)
}

/// Runs vhashify with `args`, expects failure with a message containing `needle`, and checks
/// that nothing changed.
fn refused(t: &Path, args: &[String], needle: &str) {
    let guests = [t.join("g1"), t.join("g2")];
    let before: Vec<_> = guests
        .iter()
        .map(|g| list_tree(g, ListingOptions::default()).expect("list"))
        .collect();
    let err = fails(vhashify(args));
    assert!(err.contains(needle), "expected {needle:?} in:\n{err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    for (g, b) in guests.iter().zip(&before) {
        assert_eq!(
            &list_tree(g, ListingOptions::default()).expect("list"),
            b,
            "{} changed",
            g.display()
        );
    }
    for store in ["store", "g1/store"] {
        assert!(
            !t.join(store).exists(),
            "{store} was created by a refused run"
        );
    }
}

#[test]
fn nonexistent_nested_twice_store_inside_and_bad_excludes_are_refused() {
    let (t, g1, g2) = setup();
    let store = t.path().join("store");
    let base = |extra: &[String]| {
        let mut v = vec!["--store".to_string(), s(&store)];
        v.extend_from_slice(extra);
        v
    };
    refused(
        t.path(),
        &base(&[s(&g1), s(&t.path().join("nope"))]),
        "does not exist",
    );
    refused(
        t.path(),
        &base(&[s(&g1), s(&g1.join("usr"))]),
        "is inside guest root",
    );
    refused(
        t.path(),
        &base(&[s(&g1.join("usr")), s(&g1)]),
        "is inside guest root",
    );
    refused(t.path(), &base(&[s(&g1), s(&g2), s(&g1)]), "is given twice");
    // The same guest under another spelling.
    let alias = t.path().join("alias");
    std::os::unix::fs::symlink(&g1, &alias).expect("symlink");
    refused(t.path(), &base(&[s(&g1), s(&alias)]), "is given twice");
    refused(
        t.path(),
        &base(&[s(&g1.join("usr/bin/tool"))]),
        "is not a directory",
    );
    // The store inside a guest would be unified into itself.
    refused(
        t.path(),
        &["--store".into(), s(&g1.join("store")), s(&g1), s(&g2)],
        "is inside guest root",
    );
    // A malformed exclude list names file and line.
    let list = t.path().join("excludes");
    std::fs::write(&list, "# ours\n/usr/share/doc\n\n+usr/bin\n").expect("write");
    let mut args = base(&["--exclude-from".into(), s(&list)]);
    args.extend([s(&g1), s(&g2)]);
    refused(t.path(), &args, &format!("{}:4:", list.display()));
    std::fs::write(&list, "/usr/[bin\n").expect("write");
    refused(t.path(), &args, &format!("{}:1:", list.display()));
    let mut args = base(&["--exclude-from".into(), s(&t.path().join("no-such-list"))]);
    args.extend([s(&g1), s(&g2)]);
    refused(t.path(), &args, "no-such-list");
    // No guests at all is a usage error (clap, exit status 2).
    let out = vhashify(["--store", &s(&store)]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_good_exclude_list_is_honoured() {
    let (t, g1, g2) = setup();
    let list = t.path().join("excludes");
    std::fs::write(&list, "# keep sub apart\n-/usr/sub\n").expect("write");
    let store = t.path().join("store");
    let r = json(vhashify([
        "--json".to_string(),
        "--exclude-from".into(),
        s(&list),
        "--store".into(),
        s(&store),
        s(&g1),
        s(&g2),
    ]));
    assert_eq!(num(&r, &["report", "links_made"]), 1, "{r}");
    use std::os::unix::fs::MetadataExt;
    let ino = |p: &Path| std::fs::metadata(p).expect("stat").ino();
    assert_eq!(ino(&g1.join("usr/bin/tool")), ino(&g2.join("usr/bin/tool")));
    assert_ne!(ino(&g1.join("usr/sub/lib")), ino(&g2.join("usr/sub/lib")));
}

#[test]
fn vdu_refuses_bad_guest_lists() {
    let (t, g1, _) = setup();
    for (args, needle) in [
        (vec![s(&t.path().join("nope"))], "does not exist"),
        (vec![s(&g1), s(&g1)], "is given twice"),
        (vec![s(&g1), s(&g1.join("usr"))], "is inside guest root"),
    ] {
        let err = fails(vdu(&args));
        assert!(err.contains(needle), "{err}");
    }
}
