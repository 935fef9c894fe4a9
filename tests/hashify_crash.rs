//! SIGKILL vhashify at 20 random moments (seeded; the seed is printed), each inside the work of
//! the run (after its first change, well before its last); at least 18 of the 20 kills must
//! really end a run that still had paths to replace. After every kill no guest path has lost
//! content or metadata and the store verifies; the next full run repairs what the killed one
//! left (directory times, temporary links) so that every path's content and metadata equal the
//! originals, directories included.

mod store_support;

use std::path::Path;

use cowfs::listing::{ListingOptions, diff, list_tree};
use store_support::*;

/// Three guests of a few hundred files in nested directories: mostly identical, some with other
/// metadata, some unique, with guest-internal hard links; all times fixed.
fn build(root: &Path) {
    for (gi, g) in ["g1", "g2", "g3"].iter().enumerate() {
        let base = root.join(g);
        for d in 0..12 {
            for f in 0..25 {
                let n = d * 25 + f;
                let len = match n % 10 {
                    0 => 300 * 1024,
                    1..=3 => 40 * 1024 + n * 13,
                    _ => 100 + n * 37,
                };
                let unique = gi == 2 && n % 9 == 0;
                let seed = if unique {
                    format!("{g}/{n}")
                } else {
                    format!("shared/{n}")
                };
                let mut meta = Meta::default();
                if gi == 1 && n % 11 == 0 {
                    meta.mode = 0o600;
                }
                let path = base.join(format!("usr/d{}/sub{}/f{n}", d % 4, d));
                put(&path, &bytes(&seed, len), &meta);
            }
        }
        std::fs::hard_link(
            base.join("usr/d0/sub0/f1"),
            base.join("usr/d0/sub0/f1-alias"),
        )
        .expect("link");
        std::fs::hard_link(
            base.join("usr/d1/sub1/f30"),
            base.join("usr/d2/sub2/f30-alias"),
        )
        .expect("link");
        // Directory times last, deepest first.
        let mut dirs: Vec<_> = walk_dirs(&base);
        dirs.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for (i, d) in dirs.iter().enumerate() {
            set_mtime(d, 1_650_000_000 + i as i64);
        }
    }
}

fn walk_dirs(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let d = out[i].clone();
        for e in std::fs::read_dir(&d).expect("readdir").flatten() {
            if e.file_type().expect("type").is_dir() {
                out.push(e.path());
            }
        }
        i += 1;
    }
    out
}

fn listings(root: &Path, opts: ListingOptions) -> Vec<cowfs::listing::Listing> {
    ["g1", "g2", "g3"]
        .iter()
        .map(|g| list_tree(&root.join(g), opts).expect("list"))
        .collect()
}

/// Regular files of the three guests that are not yet links to a store object (no mark), not
/// counting a killed run's temporary links.
fn unified_paths_missing(root: &Path) -> u64 {
    let mut n = 0;
    for g in ["g1", "g2", "g3"] {
        for dir in walk_dirs(&root.join(g)) {
            for e in std::fs::read_dir(&dir).expect("readdir").flatten() {
                let name = e.file_name();
                if !e.file_type().expect("type").is_file()
                    || name.to_string_lossy().starts_with(".cowfs.tmp.")
                {
                    continue;
                }
                if hashstore::mark::read_mark_path(&e.path())
                    .expect("xattr")
                    .is_none()
                {
                    n += 1;
                }
            }
        }
    }
    n
}

fn args(store: &Path, root: &Path) -> Vec<String> {
    let mut v = vec!["--store".to_string(), store.display().to_string()];
    v.extend(
        ["g1", "g2", "g3"]
            .iter()
            .map(|g| root.join(g).display().to_string()),
    );
    v
}

#[test]
fn sigkill_at_random_moments_loses_nothing() {
    let t = tempfile::tempdir().expect("tempdir");
    let pristine = t.path().join("pristine");
    build(&pristine);
    let full = ListingOptions::default();
    let after_kill = ListingOptions {
        ignore_cowfs_temps: true,
        ignore_dir_mtime: true,
        ..ListingOptions::default()
    };
    let expect_full = listings(&pristine, full);
    let expect_killed = listings(&pristine, after_kill);

    // How many steps a whole run logs: into an empty store (round 0), and into a store that
    // already has the objects (later rounds link to the previous rounds' objects).
    let cal_store = t.path().join("cal-store");
    let (_, first_total) =
        kill_after_lines(command("vhashify", &args(&cal_store, &pristine)), u64::MAX);
    let again = t.path().join("cal-again");
    build(&again);
    let (_, later_total) =
        kill_after_lines(command("vhashify", &args(&cal_store, &again)), u64::MAX);
    assert!(
        later_total > 4 * KILL_LAG_LINES,
        "a run logs one line per change; got {later_total}"
    );

    let mut rng = Rng::from_env("sigkill_at_random_moments_loses_nothing");
    let store = t.path().join("store");
    let mut kills = 0;
    for round in 0..10 {
        let root = t.path().join(format!("round{round}"));
        build(&root);
        let total = if round == 0 { first_total } else { later_total };
        // The first kill lands in the first half of the run (after its first change: in round
        // 0 the first line is the store's creation), the second one inside the re-run, which
        // first repairs what the first one left and then logs at least one line per path it
        // still has to replace. Both stay KILL_LAG_LINES clear of the end of the work.
        let mut todo = unified_paths_missing(&root);
        assert!(todo > 0);
        for attempt in 0..2 {
            let (first_point, last_point) = if attempt == 0 {
                (2, total / 2)
            } else {
                (1, todo.saturating_sub(KILL_LAG_LINES))
            };
            assert!(
                last_point > first_point,
                "round {round}: only {todo} paths left, no room for a kill inside the work"
            );
            let k = first_point + rng.below(last_point - first_point);
            let (killed, _) = kill_after_lines(command("vhashify", &args(&store, &root)), k);
            let left = unified_paths_missing(&root);
            // A kill counts if it really ended the process with work still to do.
            if killed && left > 0 {
                kills += 1;
            }
            todo = left;
            for (g, want) in listings(&root, after_kill).iter().zip(&expect_killed) {
                let d = diff(want, g, 10);
                assert!(
                    d.is_empty(),
                    "round {round}, killed after {k} steps:\n{}",
                    d.join("\n")
                );
            }
            ok(cowfs(["store", "verify", store.to_str().expect("utf8")]));
        }
        let r = json(vhashify(
            std::iter::once("--json".to_string()).chain(args(&store, &root)),
        ));
        assert_eq!(
            r["report"]["skipped"].as_array().map(Vec::len),
            Some(0),
            "{r}"
        );
        assert_eq!(
            unified_paths_missing(&root),
            0,
            "the full run unifies everything"
        );
        for (g, want) in listings(&root, full).iter().zip(&expect_full) {
            let d = diff(want, g, 10);
            assert!(
                d.is_empty(),
                "round {round}, after the full run:\n{}",
                d.join("\n")
            );
        }
        let st = json(cowfs([
            "store",
            "stats",
            "--json",
            store.to_str().expect("utf8"),
        ]));
        assert_eq!(num(&st, &["journaled_dirs"]), 0, "{st}");
        ok(cowfs(["store", "verify", store.to_str().expect("utf8")]));
        std::fs::remove_dir_all(&root).expect("cleanup");
    }
    eprintln!("{kills} of 20 runs were killed with work left to do");
    // Every kill point lies inside the work by construction; allow two that the scheduler
    // somehow let finish rather than make the test flaky.
    assert!(
        kills >= 18,
        "only {kills} of 20 runs were really interrupted: the test did not test enough"
    );
}
