//! `cowfs store init|stats|verify|gc|fsck` end to end: JSON output, exact gc, a flipped byte
//! named by verify, clear messages for missing/corrupt/locked stores, fsck repairs.

mod store_support;

use std::collections::BTreeSet;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use store_support::*;

/// A guest with `n` distinct files (sizes 16 B … 200 KiB) plus a duplicate of each of the first
/// five under dup/.
fn guest(dir: &Path, n: usize) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for i in 0..n {
        let len = file_len(i);
        let content = bytes(&format!("file {i}"), len);
        let p = dir.join(format!("d{}/f{i}", i % 4));
        put(&p, &content, &Meta::default());
        if i < 5 {
            put(&dir.join(format!("dup/f{i}")), &content, &Meta::default());
        }
        files.push(p);
    }
    files
}

/// Size of file `i` of [`guest`].
fn file_len(i: usize) -> usize {
    16 + (i * 7919) % (200 * 1024)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Unifies guest `g` into `store` (everything, no exclude list).
fn hashify(store: &Path, g: &Path) {
    ok(cowfs([
        "hashify",
        "--no-default-excludes",
        "--store",
        s(store),
        s(g),
    ]));
}

/// Apparent size of every regular file path under `dir`, and of the distinct inodes among them.
fn apparent_sizes(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut paths = 0;
    let mut inodes = std::collections::HashMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("readdir").flatten() {
            let m = e.metadata().expect("stat");
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() {
                paths += m.len();
                inodes.insert((m.dev(), m.ino()), m.len());
            }
        }
    }
    (paths, inodes.values().sum())
}

fn objects(store: &Path) -> BTreeSet<PathBuf> {
    object_files(store).into_iter().collect()
}

#[test]
fn commands_report_json_and_gc_removes_exactly_the_unreferenced() {
    let t = tempfile::tempdir().expect("tempdir");
    let store = t.path().join("store");
    let g = t.path().join("g");
    let files = guest(&g, 20);

    let init = json(cowfs(["store", "init", "--json", s(&store)]));
    assert_eq!(init["created"], true);
    let again = json(cowfs(["store", "init", "--json", s(&store)]));
    assert_eq!(again["created"], false);

    let r = json(cowfs([
        "hashify",
        "--json",
        "--no-default-excludes",
        "--store",
        s(&store),
        s(&g),
    ]));
    assert_eq!(num(&r, &["report", "objects_linked"]), 20);
    assert_eq!(num(&r, &["report", "links_made"]), 5);

    let st = json(cowfs(["store", "stats", "--json", s(&store)]));
    assert_eq!(num(&st, &["objects"]), 20);
    assert_eq!(num(&st, &["links"]), 25);
    assert_eq!(num(&st, &["unreferenced"]), 0);
    assert_eq!(num(&st, &["index_rows"]), 20);
    // Sizes from what the guest was built with: the store holds each of the 20 contents once,
    // and the five duplicated ones would take their size a second time without it.
    let size = |range: std::ops::Range<usize>| range.map(|i| file_len(i) as i64).sum::<i64>();
    assert_eq!(num(&st, &["bytes"]) as i64, size(0..20), "{st}");
    assert_eq!(st["bytes_saved"].as_i64(), Some(size(0..5)), "{st}");
    // And the same from the filesystem: apparent size of all guest paths minus that of the
    // distinct inodes among them.
    let (all_paths, distinct_inodes) = apparent_sizes(&g);
    assert_eq!(
        st["bytes_saved"].as_i64(),
        Some((all_paths - distinct_inodes) as i64)
    );

    // Nothing to collect yet.
    let gc = json(cowfs(["store", "gc", "--json", s(&store)]));
    assert_eq!(num(&gc, &["removed"]), 0);

    // Remove the only link of three objects and one of the two links of a duplicated one.
    let before = objects(&store);
    let mut gone = BTreeSet::new();
    for f in &files[10..13] {
        let key = hashstore::mark::read_mark_path(f)
            .expect("xattr")
            .expect("marked");
        gone.insert(
            store
                .join("objects")
                .join(&key.to_hex()[..2])
                .join(&key.to_hex()[2..]),
        );
        std::fs::remove_file(f).expect("rm");
    }
    std::fs::remove_file(&files[0]).expect("rm");
    // Unreferenced objects cost their size; the object of file 0 now saves nothing.
    let st = json(cowfs(["store", "stats", "--json", s(&store)]));
    assert_eq!(num(&st, &["unreferenced"]), 3);
    assert_eq!(num(&st, &["unreferenced_bytes"]) as i64, size(10..13));
    assert_eq!(num(&st, &["bytes"]) as i64, size(0..20));
    assert_eq!(
        st["bytes_saved"].as_i64(),
        Some(size(1..5) - size(10..13)),
        "{st}"
    );
    let dry = json(cowfs(["store", "gc", "--json", "--dry-run", s(&store)]));
    assert_eq!(num(&dry, &["removed"]), 3);
    assert_eq!(objects(&store), before, "a dry run removes nothing");
    let gc = json(cowfs(["store", "gc", "--json", s(&store)]));
    assert_eq!(num(&gc, &["removed"]), 3, "{gc}");
    let after = objects(&store);
    let removed: BTreeSet<PathBuf> = before.difference(&after).cloned().collect();
    assert_eq!(removed, gone, "gc removes exactly the unreferenced objects");
    let st = json(cowfs(["store", "stats", "--json", s(&store)]));
    assert_eq!(
        num(&st, &["bytes"]) as i64,
        size(0..10) + size(13..20),
        "{st}"
    );
    assert_eq!(st["bytes_saved"].as_i64(), Some(size(1..5)), "{st}");
    assert_eq!(ok(cowfs(["store", "verify", s(&store)])).lines().count(), 1);

    let fsck = json(cowfs(["store", "fsck", "--json", s(&store)]));
    assert_eq!(num(&fsck, &["objects"]), 17);
    assert_eq!(fsck["unresolved"].as_array().map(Vec::len), Some(0));
}

#[test]
fn verify_names_a_flipped_byte_in_any_object() {
    let t = tempfile::tempdir().expect("tempdir");
    let store = t.path().join("store");
    let g = t.path().join("g");
    guest(&g, 12);
    hashify(&store, &g);
    let all = object_files(&store);
    assert_eq!(all.len(), 12);
    let mut rng = Rng::from_env("verify_names_a_flipped_byte_in_any_object");
    for _ in 0..6 {
        let victim = &all[rng.below(all.len() as u64) as usize];
        let meta = std::fs::metadata(victim).expect("stat");
        let offset = rng.below(meta.len());
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(victim)
            .expect("open");
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, offset).expect("read");
        let bit = 1u8 << rng.below(8);
        f.write_all_at(&[b[0] ^ bit], offset).expect("write");
        // Bit rot does not touch the mtime: put it back.
        set_times_from(victim, &meta);

        let out = cowfs(["store", "verify", s(&store)]);
        assert_eq!(out.status.code(), Some(1), "verify must fail");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let rel = victim.strip_prefix(&store).expect("inside store");
        let named: Vec<&str> = text.lines().filter(|l| l.starts_with("objects/")).collect();
        assert_eq!(named.len(), 1, "exactly one damaged object listed:\n{text}");
        assert!(
            named[0].starts_with(&format!("{}: content-changed", rel.display())),
            "byte {offset} of {} not named:\n{text}",
            rel.display()
        );

        f.write_all_at(&b, offset).expect("write back");
        set_times_from(victim, &meta);
        ok(cowfs(["store", "verify", s(&store)]));
    }
}

fn no_panic(stderr: &str) {
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn missing_corrupt_locked_and_foreign_stores_give_clear_messages() {
    let t = tempfile::tempdir().expect("tempdir");
    let store = t.path().join("store");
    let g = t.path().join("g");
    guest(&g, 6);
    hashify(&store, &g);

    // Not a store.
    let err = fails(cowfs(["store", "stats", s(&g)]));
    assert!(err.contains("is not a cowfs store"), "{err}");
    no_panic(&err);

    // Locked by a running fsck (exclusive flock held here).
    let lockfile = std::fs::File::open(store.join("lock")).expect("lock file");
    let held = nix::fcntl::Flock::lock(lockfile, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .expect("take the lock");
    for cmd in [["store", "stats"], ["store", "gc"], ["store", "verify"]] {
        let err = fails(cowfs([cmd[0], cmd[1], s(&store)]));
        assert!(err.contains("is locked by another process"), "{err}");
        no_panic(&err);
    }
    let err = fails(cowfs(["hashify", "--store", s(&store), s(&g)]));
    assert!(err.contains("is locked"), "{err}");
    drop(held);

    // Missing index.
    std::fs::remove_file(store.join("index.db")).expect("rm");
    let _ = std::fs::remove_file(store.join("index.db-wal"));
    let _ = std::fs::remove_file(store.join("index.db-shm"));
    let err = fails(cowfs(["store", "stats", s(&store)]));
    assert!(
        err.contains("is missing") && err.contains("cowfs store fsck"),
        "{err}"
    );
    no_panic(&err);
    let fsck = json(cowfs(["store", "fsck", "--json", s(&store)]));
    assert_eq!(fsck["index_recreated"], "missing");
    assert_eq!(num(&fsck, &["index_rows"]), 6);

    // Corrupt index.
    std::fs::write(store.join("index.db"), bytes("garbage", 16384)).expect("write");
    let err = fails(cowfs(["store", "stats", s(&store)]));
    assert!(err.contains("is corrupt") && err.contains("fsck"), "{err}");
    no_panic(&err);
    let fsck = json(cowfs(["store", "fsck", "--json", s(&store)]));
    assert!(fsck["corrupt_index_moved_to"].is_string(), "{fsck}");
    ok(cowfs(["store", "verify", s(&store)]));

    // A format this version does not know.
    std::fs::write(store.join("format"), "cowfs-hashstore 7\n").expect("write");
    let err = fails(cowfs(["store", "stats", s(&store)]));
    assert!(err.contains("cowfs-hashstore 7"), "{err}");
    let err = fails(cowfs(["store", "fsck", s(&store)]));
    assert!(
        err.contains("cowfs-hashstore 7"),
        "fsck must not touch a foreign format: {err}"
    );
}

#[test]
fn fsck_repairs_marks_and_quarantines_damaged_objects() {
    let t = tempfile::tempdir().expect("tempdir");
    let store = t.path().join("store");
    let g = t.path().join("g");
    guest(&g, 6);
    hashify(&store, &g);
    let objs = object_files(&store);

    // A lost mark is put back.
    let c = std::ffi::CString::new(s(&objs[0])).expect("path");
    // SAFETY: valid NUL-terminated strings.
    let r = unsafe { libc::lremovexattr(c.as_ptr(), c"trusted.cowfs.key".as_ptr()) };
    assert_eq!(r, 0);
    let err = String::from_utf8_lossy(&cowfs(["store", "verify", s(&store)]).stdout).into_owned();
    assert!(err.contains("missing-mark"), "{err}");
    let fsck = json(cowfs(["store", "fsck", "--json", s(&store)]));
    assert_eq!(
        fsck["marks_repaired"].as_array().map(Vec::len),
        Some(1),
        "{fsck}"
    );
    ok(cowfs(["store", "verify", s(&store)]));

    // A damaged object is moved to quarantine (with --rehash fsck reads everything).
    let meta = std::fs::metadata(&objs[1]).expect("stat");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&objs[1])
        .expect("open");
    f.write_all_at(b"X", 0).expect("write");
    set_times_from(&objs[1], &meta);
    let out = cowfs(["store", "fsck", "--rehash", "--json", s(&store)]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "damage is reported with a failure status"
    );
    let fsck: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        fsck["quarantined"].as_array().map(Vec::len),
        Some(1),
        "{fsck}"
    );
    assert!(!objs[1].exists());
    assert_eq!(
        std::fs::read_dir(store.join("quarantine"))
            .expect("quarantine")
            .count(),
        1
    );
    ok(cowfs(["store", "verify", s(&store)]));
}
