//! vhashify on a guest that is being changed while it runs: a writer keeps replacing files (new
//! content, atomically by rename, as package managers do) and deleting and recreating others.
//! Whatever the interleaving, every path ends with the content the writer last gave it (or its
//! original), nothing of the quiet guest changes, the store verifies, and changed or vanished
//! files are reported as skipped, not as errors. A second test makes such skips happen for
//! certain, by holding vhashify up in the middle of its changes.

mod store_support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use cowfs::listing::{ListingOptions, diff, list_tree};
use store_support::*;

const FILES: usize = 300;

fn path(root: &Path, i: usize) -> PathBuf {
    root.join(format!("usr/d{}/f{i}", i % 12))
}

#[test]
fn files_changing_or_vanishing_during_a_run_are_never_lost() {
    let t = tempfile::tempdir().expect("tempdir");
    let quiet = t.path().join("quiet");
    let busy = t.path().join("busy");
    for i in 0..FILES {
        let content = bytes(&format!("file {i}"), 500 + i * 97);
        put(&path(&quiet, i), &content, &Meta::default());
        put(&path(&busy, i), &content, &Meta::default());
    }
    let quiet_before = list_tree(&quiet, ListingOptions::default()).expect("list");
    let store = t.path().join("store");
    let mut rng = Rng::from_env("files_changing_or_vanishing_during_a_run_are_never_lost");
    let seed = rng.next();

    let stop = AtomicBool::new(false);
    let (report, last) = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut rng = Rng::from_seed(seed);
            // What each path must hold at the end: None = deleted.
            let mut last: HashMap<usize, Option<Vec<u8>>> = HashMap::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) || n < 50 {
                let i = rng.below(FILES as u64) as usize;
                let p = path(&busy, i);
                n += 1;
                if rng.below(4) == 0 {
                    let _ = std::fs::remove_file(&p);
                    last.insert(i, None);
                } else {
                    let content = bytes(&format!("rewrite {i} {n}"), 500 + (n as usize % 5000));
                    let tmp = p.with_file_name(format!(".w{i}"));
                    std::fs::write(&tmp, &content).expect("write");
                    std::fs::rename(&tmp, &p).expect("rename");
                    last.insert(i, Some(content));
                }
            }
            last
        });
        let out = vhashify([
            "--json".to_string(),
            "--no-default-excludes".into(),
            "--store".into(),
            store.display().to_string(),
            quiet.display().to_string(),
            busy.display().to_string(),
        ]);
        stop.store(true, Ordering::Relaxed);
        let last = writer.join().expect("writer");
        (json(out), last)
    });

    // Every path of the busy guest holds what it last got.
    for i in 0..FILES {
        let p = path(&busy, i);
        let expect = last
            .get(&i)
            .cloned()
            .unwrap_or_else(|| Some(bytes(&format!("file {i}"), 500 + i * 97)));
        assert_eq!(std::fs::read(&p).ok(), expect, "{}", p.display());
    }
    // The quiet guest is exactly as it was.
    let d = diff(
        &quiet_before,
        &list_tree(&quiet, ListingOptions::default()).expect("list"),
        10,
    );
    assert!(d.is_empty(), "{}", d.join("\n"));
    // Skips, if any, are races, not errors.
    let by_reason = report["report"]["skipped_by_reason"]
        .as_object()
        .expect("reasons");
    for reason in by_reason.keys() {
        assert!(
            ["changed", "vanished"].contains(&reason.as_str()),
            "{report}"
        );
    }
    ok(cowfs(["store", "verify", store.to_str().expect("utf8")]));
    eprintln!("skipped: {by_reason:?}");
}

/// Deterministic companion of the test above: vhashify is held up right after its first link
/// (it stalls on its log pipe while the test does not read it, and the test waits until all
/// its threads are blocked), and every path it has not
/// replaced yet is then either rewritten (new file renamed over it) or deleted. Those paths
/// must be skipped as changed or vanished — never linked, never an error — and keep exactly
/// what the test gave them.
#[test]
fn paths_changed_or_deleted_before_their_turn_are_skipped_as_such() {
    let t = tempfile::tempdir().expect("tempdir");
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    for g in [&a, &b] {
        for i in 0..FILES {
            put(
                &path(g, i),
                &bytes(&format!("file {i}"), 500 + i * 97),
                &Meta::default(),
            );
        }
    }
    let store = t.path().join("store");
    // What the test did to each path it touched: Some(new content) or None (deleted).
    let mut touched: HashMap<PathBuf, Option<Vec<u8>>> = HashMap::new();
    let (out, _) = with_log_lines(
        command(
            "vhashify",
            &[
                "--json".to_string(),
                "--no-default-excludes".into(),
                "--store".into(),
                store.display().to_string(),
                a.display().to_string(),
                b.display().to_string(),
            ],
        ),
        |_, line, pid| {
            // The first path replaced by a link: every object exists and is marked, so a
            // path without the mark is one still to be replaced.
            let first_link = line.contains("unify::apply") && line.contains("linked");
            if !touched.is_empty() || !first_link {
                return;
            }
            // Nothing is in the middle of a replacement once it is held up (a path checked,
            // then renamed over after we touched it, would lose what we gave it).
            wait_until_stalled(pid);
            for g in [&a, &b] {
                for i in 0..FILES {
                    let p = path(g, i);
                    if hashstore::mark::read_mark_path(&p)
                        .expect("xattr")
                        .is_some()
                    {
                        continue;
                    }
                    if i % 2 == 0 {
                        std::fs::remove_file(&p).expect("rm");
                        touched.insert(p, None);
                    } else {
                        let content = bytes(&format!("rewritten {i}"), 700);
                        let tmp = p.with_file_name(format!(".w{i}"));
                        std::fs::write(&tmp, &content).expect("write");
                        std::fs::rename(&tmp, &p).expect("rename");
                        touched.insert(p, Some(content));
                    }
                }
            }
        },
    );
    let r = json(out);
    assert!(
        touched.len() as u64 > 2 * KILL_LAG_LINES,
        "only {} paths were left to replace when the run was held up",
        touched.len()
    );
    let count = |reason: &str| {
        r["report"]["skipped_by_reason"][reason]
            .as_u64()
            .unwrap_or(0)
    };
    let (changed, vanished) = (count("changed"), count("vanished"));
    eprintln!(
        "{} paths touched while the run was held up: {changed} changed, {vanished} vanished",
        touched.len()
    );
    // It stalled before the paths were touched, so every touched path was met changed or gone.
    assert!(
        changed > 0 && vanished > 0,
        "changed {changed}, vanished {vanished}: {r}"
    );
    assert_eq!(
        changed + vanished,
        touched.len() as u64,
        "every touched path is skipped: {r}"
    );
    let reasons: Vec<&String> = r["report"]["skipped_by_reason"]
        .as_object()
        .expect("reasons")
        .keys()
        .collect();
    assert!(
        reasons.iter().all(|k| *k == "changed" || *k == "vanished"),
        "{r}"
    );
    for s in r["report"]["skipped"].as_array().expect("skipped") {
        let p = PathBuf::from(s["path"].as_str().expect("path"));
        let want = if touched
            .get(&p)
            .expect("only touched paths are skipped")
            .is_some()
        {
            "changed"
        } else {
            "vanished"
        };
        assert_eq!(s["reason"], want, "{s}");
    }
    for (p, want) in &touched {
        assert_eq!(&std::fs::read(p).ok(), want, "{}", p.display());
    }
    ok(cowfs(["store", "verify", store.to_str().expect("utf8")]));
}
