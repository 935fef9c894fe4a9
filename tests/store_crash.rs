//! A process inserting objects (vhashify copying a guest from another filesystem into the store)
//! is SIGKILLed at 20 random moments (seeded; the seed is printed), each chosen inside the work
//! (after its first copy, well before its last); at least 18 of the 20 kills must really end a
//! process that still had objects to copy. Meanwhile an observer keeps checking that every
//! object visible under objects/ is complete. After every kill the store verifies and tmp/ holds
//! no debris; a re-run completes and stores every file.

mod store_support;

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use cowfs::listing::{ListingOptions, list_tree};
use store_support::*;

fn build(root: &Path) {
    for n in 0..240usize {
        let len = match n % 8 {
            0 => 1024 * 1024 + n,
            1 | 2 => 96 * 1024 + n * 7,
            _ => 200 + n * 53,
        };
        let meta = Meta {
            mode: if n % 5 == 0 { 0o755 } else { 0o644 },
            ..Meta::default()
        };
        put(
            &root.join(format!("d{}/f{n}", n % 6)),
            &bytes(&format!("obj {n}"), len),
            &meta,
        );
    }
}

/// key (hex) → size of every file the guest should become in the store.
fn expected_objects(root: &Path) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    for d in std::fs::read_dir(root).expect("readdir").flatten() {
        for f in std::fs::read_dir(d.path()).expect("readdir").flatten() {
            let file = std::fs::File::open(f.path()).expect("open");
            let (meta, st, content) = hashstore::key::describe_fd(file.as_fd()).expect("read");
            let content = content.expect("stable");
            let key = meta.key(hashstore::KeyPolicy::default(), &content);
            out.insert(key.to_hex(), st.st_size as u64);
        }
    }
    out
}

#[test]
fn killed_inserts_never_leave_a_partial_object() {
    let t = tempfile::tempdir().expect("tempdir");
    let fs2 = Tmpfs::mount(&t.path().join("otherfs"));
    let guest = fs2.path.join("guest");
    build(&guest);
    let guest_before = list_tree(&guest, ListingOptions::default()).expect("list");
    let expected = expected_objects(&guest);
    let total = expected.len() as u64;
    let store = t.path().join("store");
    let args = |store: &Path| {
        vec![
            "--copy".to_string(),
            "--store".into(),
            store.display().to_string(),
            guest.display().to_string(),
        ]
    };
    let mut rng = Rng::from_env("killed_inserts_never_leave_a_partial_object");
    let checked = AtomicU64::new(0);
    let mut kills = 0;
    for i in 0..20 {
        // A run logs one line per object it copies, after a line for the store's creation
        // when there is no store yet. The kill point leaves at least one copy before it and
        // KILL_LAG_LINES after it, so it always lands inside the work.
        if total - (object_files(&store).len() as u64) < KILL_LAG_LINES + 2 {
            // Start over so that the kills keep landing in inserts.
            std::fs::remove_dir_all(&store).expect("reset store");
        }
        let have = object_files(&store).len() as u64;
        let creation = u64::from(!store.join("format").exists());
        let first = creation + 1;
        let last = creation + (total - have) - KILL_LAG_LINES;
        let k = first + rng.below(last - first + 1);
        let running = AtomicBool::new(true);
        let (killed, _) = std::thread::scope(|s| {
            s.spawn(|| {
                // The observer: every object that can be seen is whole.
                while running.load(Ordering::Relaxed) {
                    for obj in object_files(&store) {
                        let name = obj.file_name().and_then(|n| n.to_str()).unwrap_or("");
                        let sub = obj
                            .parent()
                            .and_then(|p| p.file_name())
                            .and_then(|n| n.to_str())
                            .unwrap_or("");
                        let key = format!("{sub}{name}");
                        let Ok(meta) = std::fs::metadata(&obj) else {
                            continue;
                        };
                        assert_eq!(
                            Some(&meta.len()),
                            expected.get(&key),
                            "object {} visible with a wrong size (run {i})",
                            obj.display()
                        );
                        checked.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
            let r = kill_after_lines(
                command("cowfs", &{
                    let mut a = vec!["hashify".to_string()];
                    a.extend(args(&store));
                    a
                }),
                k,
            );
            running.store(false, Ordering::Relaxed);
            r
        });
        // It counts if it really ended the process with objects still to copy.
        if killed && (object_files(&store).len() as u64) < total {
            kills += 1;
        }
        ok(cowfs(["store", "verify", store.to_str().expect("utf8")]));
        let debris: Vec<_> = std::fs::read_dir(store.join("tmp"))
            .expect("tmp")
            .flatten()
            .collect();
        assert!(debris.is_empty(), "tmp/ after a kill: {debris:?}");
    }
    // A re-run completes and stores everything; the guest was never touched.
    let r = json(vhashify(
        std::iter::once("--json".to_string()).chain(args(&store)),
    ));
    assert_eq!(
        r["report"]["skipped"].as_array().map(Vec::len),
        Some(0),
        "{r}"
    );
    assert_eq!(object_files(&store).len() as u64, total);
    ok(cowfs(["store", "verify", store.to_str().expect("utf8")]));
    assert_eq!(
        list_tree(&guest, ListingOptions::default()).expect("list"),
        guest_before
    );
    eprintln!(
        "{kills} of 20 runs killed with objects left to copy; {} object sightings checked",
        checked.load(Ordering::Relaxed)
    );
    // Every kill point lies inside the work by construction; allow two that the scheduler
    // somehow let finish rather than make the test flaky.
    assert!(
        kills >= 18,
        "only {kills} of 20 runs were really interrupted: the test did not test enough"
    );
}
