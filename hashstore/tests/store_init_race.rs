//! Creating and opening a store concurrently: many threads initialising the same new path all
//! get the one store (exactly one of them creates it), an open that finds a store being created
//! waits for it instead of calling it "not a store", and init still refuses a directory that
//! holds anything but a lock file.

use std::fs;
use std::path::Path;
use std::sync::Barrier;

use hashstore::{Error, LockMode, Store};

#[test]
fn concurrent_inits_of_a_new_path_all_get_the_one_store() {
    const THREADS: usize = 8;
    for round in 0..10 {
        let t = tempfile::tempdir().expect("tempdir");
        // Some rounds start from an existing empty directory, some from nothing at all.
        let root = t.path().join("new/store");
        if round % 2 == 1 {
            fs::create_dir_all(&root).expect("mkdir");
        }
        let start = Barrier::new(THREADS);
        let results: Vec<Result<bool, String>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        // Keep every store open until all threads are done, so that later
                        // inits meet holders of the shared lock too.
                        let r = Store::init(&root).map_err(|e| e.to_string());
                        start.wait();
                        r.map(|(_, created)| created)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        assert!(failures.is_empty(), "round {round}: {failures:?}");
        let created = results.iter().filter(|r| r == &&Ok(true)).count();
        assert_eq!(
            created, 1,
            "round {round}: exactly one thread creates the store"
        );
        let store = Store::open(&root).expect("open");
        assert_eq!(store.lock_mode(), LockMode::Shared);
        let entries: Vec<String> = fs::read_dir(&root)
            .expect("readdir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(entries.is_empty(), "leftovers of init: {entries:?}");
    }
}

/// Holds `root/lock` exclusively, as an `init` at work does.
fn hold_exclusively(root: &Path) -> nix::fcntl::Flock<fs::File> {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(root.join("lock"))
        .expect("lock file");
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).expect("flock")
}

#[test]
fn an_open_waits_for_a_store_being_created() {
    let t = tempfile::tempdir().expect("tempdir");
    // A complete store elsewhere, to be moved into place piece by piece "by the creator".
    let template = t.path().join("template");
    drop(Store::init(&template).expect("template"));
    let root = t.path().join("store");
    fs::create_dir(&root).expect("mkdir");
    let held = hold_exclusively(&root);

    std::thread::scope(|s| {
        let opener = s.spawn(|| Store::open(&root).map(|st| st.lock_mode()));
        let initer = s.spawn(|| Store::init(&root).map(|(st, created)| (st.lock_mode(), created)));
        // Let both find the store half-made (this pause orders the test; nothing is timed).
        std::thread::sleep(std::time::Duration::from_millis(300));
        for name in ["objects", "tmp", "index.db"] {
            fs::rename(template.join(name), root.join(name)).expect("move into place");
        }
        fs::rename(template.join("format"), root.join("format")).expect("format");
        drop(held);
        match opener.join().expect("opener") {
            Ok(mode) => assert_eq!(mode, LockMode::Shared),
            Err(e) => panic!("an open during creation must wait for it, got: {e}"),
        }
        match initer.join().expect("initer") {
            Ok((mode, created)) => {
                assert_eq!(mode, LockMode::Shared);
                assert!(!created, "the store was made by the other creator");
            }
            Err(e) => panic!("an init during creation must wait for it, got: {e}"),
        }
    });
}

#[test]
fn init_refuses_anything_but_a_lock_file_and_open_creates_no_lock_file() {
    let t = tempfile::tempdir().expect("tempdir");
    // A lock file left by a failed or concurrent init is fine.
    let with_lock = t.path().join("with-lock");
    fs::create_dir(&with_lock).expect("mkdir");
    fs::write(with_lock.join("lock"), "").expect("lock");
    let (_, created) = Store::init(&with_lock).expect("init over a lone lock file");
    assert!(created);

    // Anything else is refused, and the directory is left as it was.
    for other in ["data", ".hidden", "objects"] {
        let dir = t.path().join(format!("with-{other}"));
        fs::create_dir(&dir).expect("mkdir");
        fs::write(dir.join("lock"), "").expect("lock");
        fs::write(dir.join(other), "x").expect("file");
        let msg = Store::init(&dir)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(msg.contains("not empty"), "{other}: {msg}");
        let mut names: Vec<String> = fs::read_dir(&dir)
            .expect("readdir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut want = vec!["lock".to_string(), other.to_string()];
        want.sort();
        assert_eq!(names, want);
    }

    // Opening a plain directory says "not a store" and leaves no lock file in it.
    let plain = t.path().join("plain");
    fs::create_dir(&plain).expect("mkdir");
    assert!(matches!(Store::open(&plain), Err(Error::NotAStore(_))));
    assert!(!plain.join("lock").exists());
    // Nor does it with a lock file but no format (a dead init): not a store, after the wait.
    fs::write(plain.join("lock"), "").expect("lock");
    assert!(matches!(Store::open(&plain), Err(Error::NotAStore(_))));
}
