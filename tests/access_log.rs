//! Issue 8: the per-context access log and prewarm, for real (root, eBPF, a corpus guest).
//!
//! Traces are driven through the library where the test must control when records are read
//! (so that "the reader fell behind" is a fact, not a race), and through the `cowfs` and
//! `vcontext` binaries for the command-line paths.

mod context_support;

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use context_support::Contexts;
use cowfs_kmod::access::{AccessLog, FileAccess, Status, TraceOptions, TraceSession};
use cowfs_kmod::lifecycle::StateDir;

/// A context `name` (xid) on a private copy of corpus guest g1.
fn context(c: &Contexts, xid: u32, name: &str) -> PathBuf {
    let root = context_support::guest(c.dir.path(), name);
    c.create(xid, name, &root, &[]);
    root
}

/// Writes `len` bytes to `path` and drops them from the page cache (this file only).
fn cold_file(path: &Path, len: usize) {
    let data: Vec<u8> = (0..len).map(|i| (i * 31 % 253) as u8).collect();
    std::fs::write(path, data).expect("write");
    let f = std::fs::File::open(path).expect("open");
    f.sync_all().expect("fsync");
    // SAFETY: a valid fd.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0);
}

/// `vcontext run NAME -- ARGS…`, asserting success.
fn run_in(c: &Contexts, name: &str, args: &[&str]) {
    let mut all = vec!["run", name, "--"];
    all.extend_from_slice(args);
    c.ok(&all);
}

fn state(c: &Contexts) -> StateDir {
    StateDir::open(&c.state()).expect("state dir")
}

fn start(c: &Contexts, name: &str, buffer: u64) -> (StateDir, TraceSession) {
    let mut state = state(c);
    let session = TraceSession::start(
        &mut state,
        name,
        &TraceOptions {
            buffer,
            branches: vec![],
        },
    )
    .expect("start tracing");
    (state, session)
}

fn find<'a>(log: &'a AccessLog, path: &str) -> Option<&'a FileAccess> {
    log.files
        .iter()
        .find(|f| f.path == path || f.was.as_deref() == Some(path))
}

#[test]
fn records_what_the_context_reads_and_nothing_read_outside_it() {
    let c = Contexts::new();
    let root = context(&c, 20, "reader");
    std::fs::create_dir_all(root.join("srv")).expect("mkdir");
    cold_file(&root.join("srv/known"), 300 << 10);
    cold_file(&root.join("srv/host-only"), 300 << 10);

    let (mut st, session) = start(&c, "reader", 8 << 20);
    // Read by the host, during the trace: must not appear.
    let host = std::fs::read(root.join("srv/host-only")).expect("host read");
    assert_eq!(host.len(), 300 << 10);
    run_in(&c, "reader", &["cat", "/srv/known"]);
    let log = session.finish(&mut st).expect("finish");

    let known = find(&log, "srv/known").unwrap_or_else(|| panic!("srv/known not in {log:#?}"));
    assert_eq!(known.status, Status::Present);
    assert_eq!(known.read, [[0, 300 << 10]], "{known:?}");
    assert_eq!(known.cached, [[0, 300 << 10]], "{known:?}");
    assert!(known.fingerprint.is_some());
    // cat itself and its libraries were read too, from the guest's own tree.
    assert!(find(&log, "usr/bin/cat").is_some(), "{:?}", log.files);
    assert!(
        find(&log, "srv/host-only").is_none(),
        "a read from outside the context was recorded: {log:#?}"
    );
    assert_eq!(log.dropped, 0);
    assert_eq!(log.hooks.len(), 5, "{:?}", log.hooks);
    // The trace held the cgroup; finishing released it and the idle context is gone.
    assert!(!c.cgroup(20).exists(), "cgroup left behind");
}

#[test]
fn records_the_reader_could_not_take_are_dropped_and_counted() {
    let c = Contexts::new();
    let root = context(&c, 21, "burst");
    std::fs::create_dir_all(root.join("srv")).expect("mkdir");
    cold_file(&root.join("srv/big"), 4 << 20);
    // One page of ring buffer holds 85 records; nothing reads it while the command runs, and
    // 1024 reads of 4 KiB make at least 1024 records.
    let (mut st, session) = start(&c, "burst", 4096);
    run_in(
        &c,
        "burst",
        &["dd", "if=/srv/big", "of=/dev/null", "bs=4096", "count=1024"],
    );
    let log = session.finish(&mut st).expect("finish");
    assert_eq!(log.buffer_bytes, 4096);
    assert!(log.dropped > 0, "nothing dropped: {} records", log.records);
    assert!(
        log.records + log.dropped >= 1024,
        "{} records + {} dropped < 1024 reads",
        log.records,
        log.dropped
    );
    assert!(
        log.records <= 4096 / 48,
        "{} records in one page",
        log.records
    );
}

#[test]
fn renamed_and_deleted_files_are_reported_as_such() {
    let c = Contexts::new();
    let root = context(&c, 22, "mover");
    let srv = root.join("srv");
    std::fs::create_dir_all(&srv).expect("mkdir");
    for n in ["stays", "moves", "goes", "moved-inside"] {
        cold_file(&srv.join(n), 64 << 10);
    }
    let (mut st, session) = start(&c, "mover", 8 << 20);
    // The guest reads all four and renames one itself; the host renames and deletes after.
    run_in(
        &c,
        "mover",
        &[
            "sh",
            "-c",
            "cat /srv/stays /srv/moves /srv/goes /srv/moved-inside >/dev/null && \
             mv /srv/moved-inside /srv/renamed-inside",
        ],
    );
    std::fs::rename(srv.join("moves"), srv.join("moved")).expect("rename");
    std::fs::remove_file(srv.join("goes")).expect("rm");
    // A new file that may reuse the deleted inode's number must not be taken for it.
    cold_file(&srv.join("newcomer"), 4096);
    let log = session.finish(&mut st).expect("finish");

    let get = |p: &str| find(&log, p).unwrap_or_else(|| panic!("{p} not in {:#?}", log.files));
    let stays = get("srv/stays");
    assert_eq!(
        (stays.status, stays.path.as_str()),
        (Status::Present, "srv/stays")
    );
    let moved = get("srv/moves");
    assert_eq!(
        (moved.status, moved.path.as_str(), moved.was.as_deref()),
        (Status::Renamed, "srv/moved", Some("srv/moves"))
    );
    let inside = get("srv/moved-inside");
    assert_eq!(
        (inside.status, inside.path.as_str()),
        (Status::Renamed, "srv/renamed-inside")
    );
    let gone = get("srv/goes");
    assert_eq!(
        (gone.status, gone.path.as_str(), gone.was.as_deref()),
        (Status::Deleted, "", Some("srv/goes"))
    );
    assert!(
        log.files.iter().all(|f| f.path != "srv/newcomer"),
        "a file created after the trace's reads is reported as read: {:#?}",
        log.files
    );
}

fn cowfs(c: &Contexts, args: &[&str]) -> std::process::Output {
    Command::new(cowfs::bin("cowfs"))
        .args(args)
        .env("COWFS_STATE_DIR", c.state())
        .output()
        .expect("run cowfs")
}

fn ok(out: std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn trace_hotset_and_prewarm_from_the_command_line_skip_changed_files() {
    let c = Contexts::new();
    let root = context(&c, 23, "tmpl");
    let srv = root.join("srv");
    std::fs::create_dir_all(&srv).expect("mkdir");
    for n in ["a", "b", "c", "d"] {
        cold_file(&srv.join(n), 100 << 10);
    }
    let log = c.dir.path().join("tmpl.log");
    let log_s = log.to_str().expect("utf-8");
    let summary = ok(
        cowfs(
            &c,
            &[
                "trace",
                "tmpl",
                "--out",
                log_s,
                "--json",
                "--",
                "sh",
                "-c",
                "cat /srv/a /srv/b /srv/c /srv/d >/dev/null",
            ],
        ),
        "cowfs trace",
    );
    let summary: serde_json::Value = serde_json::from_str(&summary).expect("JSON summary");
    assert_eq!(summary["dropped"], 0, "{summary}");
    let hot = c.dir.path().join("hot.json");
    let hot_s = hot.to_str().expect("utf-8");
    ok(
        cowfs(&c, &["hotset", "build", log_s, "--out", hot_s, "--json"]),
        "cowfs hotset build",
    );
    let set: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&hot).expect("read")).expect("JSON");
    let paths: Vec<&str> = set["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(|f| f["path"].as_str())
        .collect();
    let pos = |p: &str| paths.iter().position(|x| *x == p);
    assert!(
        pos("srv/a") < pos("srv/d") && pos("srv/a").is_some(),
        "{paths:?}"
    );

    // Another guest of the same template: same files, some changed since.
    let other = c.dir.path().join("other");
    std::fs::create_dir(&other).expect("mkdir");
    let status = Command::new("cp")
        .arg("-a")
        .arg(&srv)
        .arg(other.join("srv"))
        .status()
        .expect("cp");
    assert!(status.success());
    std::fs::write(other.join("srv/b"), vec![1u8; 50 << 10]).expect("grow");
    let mtime = std::fs::metadata(other.join("srv/c"))
        .and_then(|m| m.modified())
        .expect("mtime");
    std::fs::write(other.join("srv/c"), vec![2u8; 100 << 10]).expect("rewrite");
    std::fs::File::options()
        .write(true)
        .open(other.join("srv/c"))
        .and_then(|f| f.set_modified(mtime))
        .expect("utimes");
    std::fs::remove_file(other.join("srv/d")).expect("rm");
    std::os::unix::fs::symlink("/etc/shadow", other.join("srv/d")).expect("symlink");

    let report = ok(
        cowfs(
            &c,
            &["prewarm", other.to_str().expect("utf-8"), hot_s, "--json"],
        ),
        "cowfs prewarm",
    );
    let report: serde_json::Value = serde_json::from_str(&report).expect("JSON report");
    let skipped: Vec<(String, String)> = report["skipped"]
        .as_array()
        .expect("skipped")
        .iter()
        .map(|s| {
            (
                s["path"].as_str().unwrap_or("").to_string(),
                s["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let reason = |p: &str| {
        skipped
            .iter()
            .find(|s| s.0 == p)
            .map(|s| s.1.clone())
            .unwrap_or_else(|| panic!("{p} not skipped: {skipped:?}"))
    };
    assert!(reason("srv/b").starts_with("size changed"), "{skipped:?}");
    assert!(
        reason("srv/c").starts_with("content changed"),
        "{skipped:?}"
    );
    assert!(reason("srv/d").contains("symlink"), "{skipped:?}");
    assert!(skipped.iter().all(|s| s.0 != "srv/a"), "{skipped:?}");
    assert!(
        report["bytes"].as_u64().unwrap_or(0) >= 100 << 10,
        "{report}"
    );

    // The same hot set before a run of the original context, by its pid 1.
    let out = c.vcontext(&["run", "--prewarm", hot_s, "tmpl", "--", "true"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("prewarm: "), "{stderr}");
    assert!(!stderr.contains("skipped"), "{stderr}");
    // And by context name.
    ok(
        cowfs(&c, &["prewarm", "tmpl", hot_s]),
        "cowfs prewarm CONTEXT",
    );
}

#[test]
fn bad_input_is_refused_clearly() {
    let c = Contexts::new();
    let dir = c.dir.path();
    let junk = dir.join("junk.json");
    std::fs::write(&junk, r#"{"format":"something-else","version":1}"#).expect("write");
    let j = junk.to_str().expect("utf-8");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["trace", "nosuch", "--duration", "1"],
            "no context named",
        ),
        (vec!["trace", "x", "--duration=-1"], "--duration must be"),
        (vec!["trace", "x", "--buffer", "12Q"], "unknown unit"),
        (
            vec!["hotset", "build", j, "--out", "/tmp/never"],
            "not a cowfs-access-log",
        ),
        (vec!["prewarm", "/", j], "not a cowfs-hotset"),
        (
            vec!["prewarm", "nosuch", j],
            "neither a directory nor a context",
        ),
    ];
    for (args, expect) in cases {
        let out = cowfs(&c, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
    }
}

/// On a cowfs union root the kernel serves large files through passthrough (the page cache
/// filled is the backing file's, in the template branch) and small ones through the mount's
/// own page cache: both are recorded, under the path the guest used.
#[test]
fn a_union_root_is_traced_through_passthrough_and_the_page_cache() {
    let c = Contexts::new();
    let template = context_support::guest(c.dir.path(), "template");
    std::fs::create_dir_all(template.join("srv")).expect("mkdir");
    cold_file(&template.join("srv/large"), 400 << 10); // passthrough (≥ 64 KiB)
    cold_file(&template.join("srv/small"), 20 << 10); // the mount's page cache
    c.create_on_union(24, "unioned", &template);
    // A first run mounts the root, so the trace can walk it.
    run_in(&c, "unioned", &["true"]);
    let (mut st, session) = start(&c, "unioned", 8 << 20);
    run_in(&c, "unioned", &["cat", "/srv/large", "/srv/small"]);
    let log = session.finish(&mut st).expect("finish");
    for (path, len) in [("srv/large", 400 << 10), ("srv/small", 20 << 10)] {
        let f = find(&log, path).unwrap_or_else(|| panic!("{path} not in {:#?}", log.files));
        assert_eq!(f.status, Status::Present, "{f:?}");
        assert_eq!(f.read, [[0, len]], "{path}: {f:?}");
    }
    assert_eq!(log.dropped, 0);
    c.ok(&["destroy", "unioned"]);
}
