//! vhashify's options and special files, end to end with the real binary: unreadable files and
//! directories (reported, exit status 1, everything else still unified), `--dry-run` (nothing
//! changes, no store is created, the numbers are those of the real run), `--min-size` and empty
//! files, `--only-duplicates`, and a re-run that hashes exactly the files replaced since.

mod store_support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use cowfs::listing::{ListingOptions, diff, list_tree};
use serde_json::Value;
use store_support::*;

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// `vhashify --json --no-default-excludes --store STORE EXTRA… GUESTS…`
fn hashify_args(store: &Path, extra: &[&str], guests: &[&Path]) -> Vec<String> {
    let mut a = vec![
        "--json".to_string(),
        "--no-default-excludes".into(),
        "--store".into(),
        s(store),
    ];
    a.extend(extra.iter().map(|x| x.to_string()));
    a.extend(guests.iter().map(|g| s(g)));
    a
}

fn hashify(store: &Path, extra: &[&str], guests: &[&Path]) -> Value {
    json(vhashify(hashify_args(store, extra, guests)))
}

fn report_num(r: &Value, field: &str) -> u64 {
    num(r, &["report", field])
}

fn ino(p: &Path) -> u64 {
    std::fs::symlink_metadata(p).expect("stat").ino()
}

fn marked(p: &Path) -> bool {
    hashstore::mark::read_mark_path(p).expect("xattr").is_some()
}

/// Whether `a` and `b` are the same inode (unified with each other).
fn same(a: &Path, b: &Path) -> bool {
    ino(a) == ino(b)
}

fn listing(g: &Path) -> cowfs::listing::Listing {
    list_tree(g, ListingOptions::default()).expect("list")
}

fn assert_same_listing(g: &Path, before: &cowfs::listing::Listing) {
    let d = diff(before, &listing(g), 10);
    assert!(d.is_empty(), "{} changed:\n{}", g.display(), d.join("\n"));
}

#[test]
fn unreadable_files_are_reported_and_the_rest_is_unified() {
    let t = tempfile::tempdir().expect("tempdir");
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    for g in [&a, &b] {
        for i in 0..10 {
            put(
                &g.join(format!("usr/f{i}")),
                &bytes(&format!("f{i}"), 1000 + i),
                &Meta::default(),
            );
            put(
                &g.join(format!("usr/locked/l{i}")),
                &bytes(&format!("l{i}"), 1000 + i),
                &Meta::default(),
            );
        }
    }
    // An unreadable file in a (b's copy of it is readable) and an unreadable directory in a.
    let secret = a.join("usr/f3");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).expect("chmod");
    let locked = a.join("usr/locked");
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).expect("chmod");
    let before_a = listing(&a);
    let store = t.path().join("store");

    // Root without the capabilities that override file permissions, as an unprivileged
    // operator's files would look to vhashify.
    let run = |json_out: bool| {
        let mut args = hashify_args(&store, &[], &[&a, &b]);
        if !json_out {
            args.retain(|x| x != "--json");
        }
        Command::new("setpriv")
            .args([
                "--inh-caps=-dac_override,-dac_read_search",
                "--bounding-set=-dac_override,-dac_read_search",
            ])
            .arg(cowfs::bin("vhashify"))
            .args(args)
            .output()
            .expect("setpriv runs")
    };
    let out = run(false);
    assert_eq!(out.status.code(), Some(1), "a skipped error means exit 1");
    let text = String::from_utf8_lossy(&out.stdout);
    for path in [&secret, &locked] {
        assert!(
            text.lines()
                .any(|l| l.contains(&format!("{}: unreadable", path.display()))),
            "{} not reported as unreadable:\n{text}",
            path.display()
        );
    }
    // Everything else is unified: a's readable files and all of b's.
    for i in (0..10).filter(|&i| i != 3) {
        let (fa, fb) = (a.join(format!("usr/f{i}")), b.join(format!("usr/f{i}")));
        assert!(same(&fa, &fb) && marked(&fa), "usr/f{i} not unified");
    }
    assert!(marked(&b.join("usr/f3")), "b's readable copy is an object");
    assert!(!same(&secret, &b.join("usr/f3")));
    // The unreadable ones are exactly as they were (looked at with full privileges).
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    assert!(!marked(&secret));
    for i in 0..10 {
        assert!(!marked(&locked.join(format!("l{i}"))));
        assert!(marked(&b.join(format!("usr/locked/l{i}"))));
    }
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).expect("chmod");
    assert_same_listing(&a, &before_a);

    // The JSON report says the same, and a re-run still fails while they stay unreadable.
    let out = run(true);
    assert_eq!(out.status.code(), Some(1));
    let r: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(r["report"]["skipped_by_reason"]["unreadable"], 2, "{r}");
    let mut skipped: Vec<&str> = r["report"]["skipped"]
        .as_array()
        .expect("skipped")
        .iter()
        .map(|x| {
            assert_eq!(x["reason"], "unreadable");
            x["path"].as_str().expect("path")
        })
        .collect();
    skipped.sort();
    let mut want = vec![s(&secret), s(&locked)];
    want.sort();
    assert_eq!(skipped, want);
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    ok(cowfs(["store", "verify", &s(&store)]));
}

/// Two guests with identical files, a few differing ones, hard links and empty files.
fn two_guests(t: &Path) -> (PathBuf, PathBuf) {
    let (a, b) = (t.join("a"), t.join("b"));
    for (gi, g) in [&a, &b].into_iter().enumerate() {
        for i in 0..30 {
            put(
                &g.join(format!("usr/d{}/f{i}", i % 3)),
                &bytes(&format!("f{i}"), 200 + i * 37),
                &Meta::default(),
            );
        }
        put(
            &g.join("etc/own"),
            &bytes(&format!("own {gi}"), 300),
            &Meta::default(),
        );
        put(&g.join("etc/empty"), b"", &Meta::default());
    }
    (a, b)
}

#[test]
fn dry_run_changes_nothing_and_creates_no_store() {
    let t = tempfile::tempdir().expect("tempdir");
    let (a, b) = two_guests(t.path());
    let (before_a, before_b) = (listing(&a), listing(&b));
    let inodes_before: Vec<u64> = (0..30)
        .map(|i| ino(&b.join(format!("usr/d{}/f{i}", i % 3))))
        .collect();
    let store = t.path().join("stores/new");

    let dry = hashify(&store, &["--dry-run"], &[&a, &b]);
    assert_eq!(dry["report"]["dry_run"], true);
    assert!(!store.exists(), "a dry run must not create the store");
    assert!(
        !t.path().join("stores").exists(),
        "nor its parent directory"
    );
    assert_same_listing(&a, &before_a);
    assert_same_listing(&b, &before_b);
    for (i, want) in inodes_before.iter().enumerate() {
        assert_eq!(ino(&b.join(format!("usr/d{}/f{i}", i % 3))), *want);
    }
    assert!(!marked(&a.join("usr/d0/f0")));

    // The dry run's numbers are what the real run then does.
    let real = hashify(&store, &[], &[&a, &b]);
    for field in [
        "files",
        "inodes",
        "too_small",
        "hashed_files",
        "objects_linked",
        "links_made",
        "bytes_reclaimed",
    ] {
        assert_eq!(
            report_num(&dry, field),
            report_num(&real, field),
            "{field}: dry run {dry}\nreal run {real}"
        );
    }
    assert_eq!(report_num(&real, "links_made"), 30);

    // A dry run against an existing store leaves the store as it is, too.
    put(
        &b.join("usr/new"),
        &bytes("new file", 999),
        &Meta::default(),
    );
    put(
        &a.join("usr/new"),
        &bytes("new file", 999),
        &Meta::default(),
    );
    let (before_a, before_b) = (listing(&a), listing(&b));
    let objects_before = object_files(&store);
    let stats_before = json(cowfs(["store", "stats", "--json", &s(&store)]));
    let dry = hashify(&store, &["--dry-run"], &[&a, &b]);
    assert_eq!(report_num(&dry, "objects_linked"), 1, "{dry}");
    assert_eq!(report_num(&dry, "links_made"), 1, "{dry}");
    assert_same_listing(&a, &before_a);
    assert_same_listing(&b, &before_b);
    assert_eq!(object_files(&store), objects_before);
    assert_eq!(
        json(cowfs(["store", "stats", "--json", &s(&store)])),
        stats_before
    );
}

#[test]
fn min_size_is_honoured_and_empty_files_are_never_linked() {
    let sizes = [0usize, 1, 15, 16, 17, 99, 100, 4096];
    // (--min-size argument or default, smallest size that is unified)
    for (arg, smallest) in [(None, 16), (Some("0"), 1), (Some("100"), 100)] {
        let t = tempfile::tempdir().expect("tempdir");
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        for g in [&a, &b] {
            for &n in &sizes {
                put(
                    &g.join(format!("f{n}")),
                    &bytes(&format!("size {n}"), n),
                    &Meta::default(),
                );
            }
        }
        let store = t.path().join("store");
        let extra: Vec<&str> = match arg {
            Some(v) => vec!["--min-size", v],
            None => vec![],
        };
        let r = hashify(&store, &extra, &[&a, &b]);
        let small = sizes.iter().filter(|&&n| n < smallest).count() as u64;
        assert_eq!(report_num(&r, "too_small"), 2 * small, "{arg:?}: {r}");
        assert_eq!(
            report_num(&r, "files"),
            2 * (sizes.len() as u64 - small),
            "{arg:?}: {r}"
        );
        for &n in &sizes {
            let (fa, fb) = (a.join(format!("f{n}")), b.join(format!("f{n}")));
            let unified = same(&fa, &fb);
            assert_eq!(unified, n >= smallest, "{arg:?}: size {n}");
            assert_eq!(marked(&fa), n >= smallest, "{arg:?}: size {n}");
            if n == 0 {
                assert_eq!(std::fs::metadata(&fa).expect("stat").nlink(), 1);
            }
        }
    }
}

#[test]
fn only_duplicates_hashes_only_what_can_match() {
    let t = tempfile::tempdir().expect("tempdir");
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    for g in [&a, &b] {
        // Identical in both guests: candidates, unified.
        for i in 0..5 {
            put(
                &g.join(format!("dup{i}")),
                &bytes(&format!("dup {i}"), 1000 + i),
                &Meta::default(),
            );
        }
    }
    // Same size and metadata, different content: candidates (hashed), not unified.
    put(&a.join("twin"), &bytes("twin a", 3000), &Meta::default());
    put(&b.join("twin"), &bytes("twin b", 3000), &Meta::default());
    // Unique sizes: nothing can match them.
    for i in 0..4 {
        put(
            &a.join(format!("alone{i}")),
            &bytes(&format!("alone {i}"), 5000 + i),
            &Meta::default(),
        );
    }
    // Same size as a duplicate, but another mode: its stat group is of its own.
    put(
        &b.join("other-mode"),
        &bytes("other mode", 1000),
        &Meta {
            mode: 0o600,
            ..Meta::default()
        },
    );
    let store = t.path().join("store");
    let r = hashify(&store, &["--only-duplicates"], &[&a, &b]);
    assert_eq!(report_num(&r, "unique_not_hashed"), 5, "{r}");
    assert_eq!(report_num(&r, "hashed_files"), 12, "{r}");
    assert_eq!(report_num(&r, "links_made"), 5, "{r}");
    for i in 0..5 {
        let f = format!("dup{i}");
        assert!(same(&a.join(&f), &b.join(&f)), "{f}");
    }
    assert!(!same(&a.join("twin"), &b.join("twin")));
    for i in 0..4 {
        let p = a.join(format!("alone{i}"));
        assert!(!marked(&p), "a unique file stays out of the store");
        assert_eq!(std::fs::metadata(&p).expect("stat").nlink(), 1);
    }
    assert!(!marked(&b.join("other-mode")));
    // No object for the unique files: the store holds the 5 shared contents and the twins.
    assert_eq!(object_files(&store).len(), 7);

    // A file of a new guest is a candidate when the store has an object of its size, even
    // with nothing to match in the guests themselves.
    let c = t.path().join("c");
    put(&c.join("dup0"), &bytes("dup 0", 1000), &Meta::default());
    put(
        &c.join("alone-here"),
        &bytes("c alone", 7777),
        &Meta::default(),
    );
    let r = hashify(&store, &["--only-duplicates"], &[&c]);
    assert_eq!(report_num(&r, "hashed_files"), 1, "{r}");
    assert_eq!(report_num(&r, "unique_not_hashed"), 1, "{r}");
    assert!(same(&c.join("dup0"), &a.join("dup0")));

    // Without the option every file is hashed and becomes or links to an object.
    let r = hashify(&store, &[], &[&a, &b, &c]);
    assert_eq!(report_num(&r, "unique_not_hashed"), 0, "{r}");
    assert_eq!(report_num(&r, "hashed_files"), 6, "{r}");
    for p in (0..4)
        .map(|i| a.join(format!("alone{i}")))
        .chain([b.join("other-mode"), c.join("alone-here")])
    {
        assert!(marked(&p), "{} is in the store now", p.display());
    }
}

#[test]
fn a_rerun_hashes_exactly_the_files_replaced_since() {
    let t = tempfile::tempdir().expect("tempdir");
    let (a, b) = two_guests(t.path());
    let store = t.path().join("store");
    hashify(&store, &[], &[&a, &b]);
    let r = hashify(&store, &[], &[&a, &b]);
    assert_eq!(report_num(&r, "hashed_files"), 0, "{r}");

    let mut rng = Rng::from_env("a_rerun_hashes_exactly_the_files_replaced_since");
    for round in 0..3u64 {
        let k = 1 + rng.below(10);
        // k distinct files of a, replaced the way package managers do (new file, rename).
        let mut chosen: Vec<usize> = (0..30).collect();
        for i in 0..k as usize {
            let j = i + rng.below((30 - i) as u64) as usize;
            chosen.swap(i, j);
        }
        for &i in &chosen[..k as usize] {
            let p = a.join(format!("usr/d{}/f{i}", i % 3));
            let tmp = p.with_extension("new");
            put(
                &tmp,
                &bytes(&format!("round {round} f{i}"), 500),
                &Meta::default(),
            );
            std::fs::rename(&tmp, &p).expect("rename");
        }
        let r = hashify(&store, &[], &[&a, &b]);
        assert_eq!(report_num(&r, "hashed_files"), k, "round {round}: {r}");
        assert_eq!(report_num(&r, "hash_cache_hits"), 0, "round {round}: {r}");
        assert_eq!(
            report_num(&r, "already_unified"),
            report_num(&r, "files") - k,
            "round {round}: {r}"
        );
    }
}
