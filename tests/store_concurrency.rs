//! Concurrent writers of one store, with the real binaries: several `vhashify` and
//! `cowfs store init` processes started together on a store path that does not exist yet, and
//! vhashify runs on different guests overlapping on an existing store. Every process succeeds,
//! exactly one creates the store, each key ends up as exactly one object, the store verifies,
//! every path keeps its content and metadata, and a last run finds everything unified.

mod store_support;

use std::collections::HashSet;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use cowfs::listing::{Listing, ListingOptions, diff, list_tree};
use store_support::*;

/// Files per guest: `SHARED` identical in every guest, `UNIQUE` of its own.
const SHARED: usize = 120;
const UNIQUE: usize = 30;

fn build_guest(root: &Path, name: &str) {
    for i in 0..SHARED {
        put(
            &root.join(format!("usr/d{}/s{i}", i % 7)),
            &bytes(&format!("shared {i}"), 40 + i * 131),
            &Meta::default(),
        );
    }
    for i in 0..UNIQUE {
        put(
            &root.join(format!("etc/u{i}")),
            &bytes(&format!("{name} own {i}"), 40 + i * 53),
            &Meta::default(),
        );
    }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn listings(guests: &[PathBuf]) -> Vec<Listing> {
    guests
        .iter()
        .map(|g| list_tree(g, ListingOptions::default()).expect("list"))
        .collect()
}

fn assert_unchanged(guests: &[PathBuf], before: &[Listing]) {
    for (g, b) in guests.iter().zip(before) {
        let d = diff(
            b,
            &list_tree(g, ListingOptions::default()).expect("list"),
            10,
        );
        assert!(d.is_empty(), "{} changed:\n{}", g.display(), d.join("\n"));
    }
}

/// Starts every command at once (each logging the store's debug lines), waits for all.
fn run_together(cmds: Vec<Command>) -> Vec<Output> {
    let children: Vec<_> = cmds
        .into_iter()
        .map(|mut c| {
            c.env("RUST_LOG", "hashstore=debug")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    // Each child's pipes drained by its own thread: a child blocked on a full pipe while it
    // holds a guest would stall every run waiting for that guest.
    std::thread::scope(|s| {
        let readers: Vec<_> = children
            .into_iter()
            .map(|c| s.spawn(move || c.wait_with_output().expect("wait")))
            .collect();
        readers
            .into_iter()
            .map(|r| r.join().expect("reader"))
            .collect()
    })
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The key of every distinct file of `guests` (what the store must end up holding).
fn distinct_keys(guests: &[PathBuf]) -> HashSet<String> {
    let mut keys = HashSet::new();
    for g in guests {
        for entry in walk(g) {
            let f = std::fs::File::open(&entry).expect("open");
            let (meta, _, content) = hashstore::key::describe_fd(f.as_fd()).expect("read");
            let key = meta.key(hashstore::KeyPolicy::default(), &content.expect("stable"));
            keys.insert(key.to_hex());
        }
    }
    keys
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("readdir").flatten() {
        let ft = e.file_type().expect("type");
        if ft.is_dir() {
            out.extend(walk(&e.path()));
        } else if ft.is_file() {
            out.push(e.path());
        }
    }
    out
}

/// A last, sequential run must find every file already unified, and the store must verify.
fn settled(store: &Path, guests: &[PathBuf]) {
    ok(cowfs(["store", "verify", &s(store)]));
    let mut args = vec![
        "--json".to_string(),
        "--no-default-excludes".into(),
        "--store".into(),
        s(store),
    ];
    args.extend(guests.iter().map(|g| s(g)));
    // Paths the concurrent runs skipped as changed by one another get unified now …
    json(vhashify(&args));
    // … and then nothing is left to do.
    let r = json(vhashify(&args));
    let files = (guests.len() * (SHARED + UNIQUE)) as u64;
    assert_eq!(num(&r, &["report", "files"]), files, "{r}");
    assert_eq!(num(&r, &["report", "already_unified"]), files, "{r}");
    assert_eq!(num(&r, &["report", "hashed_files"]), 0, "{r}");
    assert_eq!(num(&r, &["report", "links_made"]), 0, "{r}");
}

#[test]
fn parallel_vhashify_and_init_on_a_new_store_path_all_succeed() {
    for round in 0..4 {
        let t = tempfile::tempdir().expect("tempdir");
        let guests: Vec<PathBuf> = ["a", "b", "c"].iter().map(|n| t.path().join(n)).collect();
        for (g, n) in guests.iter().zip(["a", "b", "c"]) {
            build_guest(g, n);
        }
        let before = listings(&guests);
        let keys = distinct_keys(&guests);
        let store = t.path().join("stores/new");
        let mut cmds = Vec::new();
        // Runs on the same guests (as an operator repeating a command would start them) …
        for _ in 0..2 {
            let mut c = Command::new(cowfs::bin("vhashify"));
            c.args(["--no-default-excludes", "--store", &s(&store)])
                .args(&guests);
            cmds.push(c);
        }
        // … runs on one guest each …
        for g in &guests {
            let mut c = Command::new(cowfs::bin("vhashify"));
            c.args(["--no-default-excludes", "--store", &s(&store), &s(g)]);
            cmds.push(c);
        }
        // … and plain inits.
        for _ in 0..2 {
            let mut c = Command::new(cowfs::bin("cowfs"));
            c.args(["store", "init", "--json", &s(&store)]);
            cmds.push(c);
        }
        let outs = run_together(cmds);
        for o in &outs {
            assert!(
                o.status.success(),
                "round {round}: a concurrent run failed ({}):\n{}",
                o.status,
                stderr(o)
            );
        }
        let creators = outs
            .iter()
            .filter(|o| stderr(o).contains("initialised store"))
            .count();
        assert_eq!(
            creators, 1,
            "round {round}: exactly one process creates the store"
        );
        assert_eq!(
            object_files(&store).len(),
            keys.len(),
            "round {round}: one object per distinct file"
        );
        settled(&store, &guests);
        assert_eq!(object_files(&store).len(), keys.len());
        assert_unchanged(&guests, &before);
    }
}

#[test]
fn overlapping_writers_on_an_existing_store_all_succeed() {
    let t = tempfile::tempdir().expect("tempdir");
    let names = ["g0", "g1", "g2", "g3"];
    let guests: Vec<PathBuf> = names.iter().map(|n| t.path().join(n)).collect();
    for (g, n) in guests.iter().zip(names) {
        build_guest(g, n);
    }
    let before = listings(&guests);
    let keys = distinct_keys(&guests);
    let store = t.path().join("store");
    ok(cowfs(["store", "init", &s(&store)]));

    // Each run unifies its own guest, all against the same store: they race to make the
    // shared files' objects and write the index at the same time. A collector runs alongside.
    let mut cmds: Vec<Command> = guests
        .iter()
        .map(|g| {
            let mut c = Command::new(cowfs::bin("vhashify"));
            c.args([
                "--json",
                "--no-default-excludes",
                "--store",
                &s(&store),
                &s(g),
            ]);
            c
        })
        .collect();
    let mut gc = Command::new(cowfs::bin("cowfs"));
    gc.args(["store", "gc", &s(&store)]);
    cmds.push(gc);
    let outs = run_together(cmds);
    for o in &outs {
        assert!(
            o.status.success(),
            "a concurrent run failed ({}):\n{}",
            o.status,
            stderr(o)
        );
    }
    // Every run reports every file of its guest as handled: object made, linked, or (when
    // another run's link replaced it first) already unified — none as an error.
    for o in &outs[..guests.len()] {
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
        assert_eq!(num(&r, &["report", "files"]), (SHARED + UNIQUE) as u64);
        assert!(
            !r["report"]["skipped_by_reason"]
                .as_object()
                .expect("reasons")
                .keys()
                .any(|k| !["changed", "vanished"].contains(&k.as_str()))
        );
    }
    assert_eq!(object_files(&store).len(), keys.len(), "one object per key");
    settled(&store, &guests);
    assert_unchanged(&guests, &before);
    let st = json(cowfs(["store", "stats", "--json", &s(&store)]));
    assert_eq!(num(&st, &["objects"]), keys.len() as u64);
    assert_eq!(
        num(&st, &["links"]),
        (guests.len() * (SHARED + UNIQUE)) as u64,
        "every path links to an object"
    );
}

#[test]
fn a_run_waits_while_another_run_holds_the_same_guest() {
    use std::io::BufRead;
    let t = tempfile::tempdir().expect("tempdir");
    let guest = t.path().join("g");
    build_guest(&guest, "g");
    let before = listings(std::slice::from_ref(&guest));
    let store = t.path().join("store");
    // What a running vhashify holds on each of its guests.
    let dir = std::fs::File::open(&guest).expect("open guest");
    let held = nix::fcntl::Flock::lock(dir, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .expect("hold the guest");
    let mut child = Command::new(cowfs::bin("vhashify"))
        .args([
            "--json",
            "--no-default-excludes",
            "--store",
            &s(&store),
            &s(&guest),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut lines = std::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let waiting = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("another vhashify run is working on this guest"));
    assert!(waiting, "vhashify must wait for the guest's holder");
    // Nothing was touched while it waited.
    assert_unchanged(std::slice::from_ref(&guest), &before);
    assert!(object_files(&store).is_empty());
    drop(held);
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{}", out.status);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        num(&r, &["report", "objects_linked"]),
        (SHARED + UNIQUE) as u64
    );
    assert_unchanged(std::slice::from_ref(&guest), &before);
}
