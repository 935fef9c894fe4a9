//! `cowfs store gc` removes exactly the unreferenced objects, also while another process
//! inserts: collections run back to back while vhashify links a new guest against objects that
//! are being collected, and one more runs while vhashify is held up in the middle of its changes
//! (so at least one collection certainly overlaps them). No guest path loses its content, every unified path links to an object
//! that is in the store, referenced objects survive, unreferenced ones that nobody wanted are
//! gone, and a final collection leaves no unreferenced object.

mod store_support;

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use cowfs::listing::{ListingOptions, diff, list_tree};
use store_support::*;

fn content(i: usize) -> Vec<u8> {
    bytes(&format!("object {i}"), 2000 + (i * 389) % 30000)
}

fn object_of(store: &Path, path: &Path) -> Option<PathBuf> {
    let key = hashstore::mark::read_mark_path(path).ok()??.to_hex();
    let ino = std::fs::metadata(path).ok()?.ino();
    let dir = store.join("objects").join(&key[..2]);
    std::fs::read_dir(&dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&key[2..]))
                && std::fs::metadata(p).is_ok_and(|m| m.ino() == ino)
        })
}

#[test]
fn gc_while_inserting_removes_exactly_the_unreferenced() {
    let t = tempfile::tempdir().expect("tempdir");
    let store = t.path().join("store");
    let a = t.path().join("a");
    for i in 0..300 {
        put(
            &a.join(format!("d{}/f{i}", i % 10)),
            &content(i),
            &Meta::default(),
        );
    }
    let sa = a.display().to_string();
    let ss = store.display().to_string();
    ok(vhashify(["--no-default-excludes", "--store", &ss, &sa]));
    // Objects 0..150 lose their guest path: unreferenced. 150..300 stay referenced.
    let mut referenced = HashSet::new();
    let mut unreferenced = HashSet::new();
    for i in 0..300 {
        let p = a.join(format!("d{}/f{i}", i % 10));
        let obj = object_of(&store, &p).expect("unified");
        if i < 150 {
            std::fs::remove_file(&p).expect("rm");
            unreferenced.insert((i, obj));
        } else {
            referenced.insert((i, obj, std::fs::metadata(&p).expect("stat").ino()));
        }
    }
    // Guest b wants 75 of the unreferenced contents back, 75 referenced ones, and 150 new ones.
    let b = t.path().join("b");
    let wanted: Vec<usize> = (0..75)
        .map(|i| i * 2)
        .chain(150..225)
        .chain(1000..1150)
        .collect();
    for &i in &wanted {
        put(
            &b.join(format!("e{}/g{i}", i % 7)),
            &content(i),
            &Meta::default(),
        );
    }
    let b_before = list_tree(&b, ListingOptions::default()).expect("list");
    let a_before = list_tree(&a, ListingOptions::default()).expect("list");

    let mut rng = Rng::from_env("gc_while_inserting_removes_exactly_the_unreferenced");
    let pause_at = 5 + rng.below(40);
    let mut paused_gc = Vec::new();
    let inserting = AtomicBool::new(true);
    let collections = std::thread::scope(|s| {
        let gc = s.spawn(|| {
            let mut n = 0;
            // At least one collection, then back to back until the inserter is done.
            while n == 0 || inserting.load(Ordering::Relaxed) {
                ok(cowfs(["store", "gc", "--json", &ss]));
                n += 1;
            }
            n
        });
        // One collection runs while vhashify is held up in the middle of its changes (it
        // stalls on its log pipe while we do not read it), so at least one collection provably
        // overlaps the inserts, whatever the scheduler does with the back-to-back ones.
        let (out, lines) = with_log_lines(
            command(
                "vhashify",
                &[
                    "--json".to_string(),
                    "--no-default-excludes".into(),
                    "--store".into(),
                    ss.clone(),
                    b.display().to_string(),
                ],
            ),
            |n, _, _| {
                if n == pause_at {
                    paused_gc.push(json(cowfs(["store", "gc", "--json", &ss])));
                }
            },
        );
        let r = json(out);
        assert!(
            lines > pause_at + KILL_LAG_LINES,
            "vhashify logged {lines} changes: it may have finished before the collection at change {pause_at}"
        );
        inserting.store(false, Ordering::Relaxed);
        assert_eq!(
            r["report"]["skipped"].as_array().map(Vec::len),
            Some(0),
            "{r}"
        );
        gc.join().expect("gc thread")
    });
    eprintln!(
        "{collections} collections ran during the insert, one of them at change {pause_at}: {paused_gc:?}"
    );
    assert_eq!(
        paused_gc.len(),
        1,
        "the collection in the middle of the run happened"
    );

    // Nothing a guest sees changed.
    for (dir, before) in [(&a, &a_before), (&b, &b_before)] {
        let d = diff(
            before,
            &list_tree(dir, ListingOptions::default()).expect("list"),
            10,
        );
        assert!(d.is_empty(), "{}:\n{}", dir.display(), d.join("\n"));
    }
    // Every path of b links to an object that is in the store.
    for &i in &wanted {
        let p = b.join(format!("e{}/g{i}", i % 7));
        assert!(
            object_of(&store, &p).is_some(),
            "{} is not linked to a stored object",
            p.display()
        );
    }
    // Referenced objects survived, as the same inodes.
    for (i, obj, ino) in &referenced {
        let m = std::fs::metadata(obj).unwrap_or_else(|e| panic!("object of {i} collected: {e}"));
        assert_eq!(m.ino(), *ino);
    }
    // Unreferenced objects nobody asked for again are gone.
    let asked: HashSet<usize> = wanted.iter().copied().collect();
    for (i, obj) in &unreferenced {
        if !asked.contains(i) {
            assert!(
                !obj.exists(),
                "unreferenced object of {i} survived: {}",
                obj.display()
            );
        }
    }
    // A last collection removes exactly what nobody links, and then nothing is unreferenced.
    let unlinked: Vec<PathBuf> = object_files(&store)
        .into_iter()
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.nlink() == 1))
        .collect();
    let last = json(cowfs(["store", "gc", "--json", &ss]));
    assert_eq!(num(&last, &["removed"]), unlinked.len() as u64, "{last}");
    assert!(unlinked.iter().all(|p| !p.exists()));
    let st = json(cowfs(["store", "stats", "--json", &ss]));
    assert_eq!(num(&st, &["unreferenced"]), 0, "{st}");
    ok(cowfs(["store", "verify", &ss]));
}
