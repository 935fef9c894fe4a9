//! Issue 7, load: many writers in the same directories, many processes racing to break one
//! store link, and scale (a guest of many small files through vhashify, a directory of many
//! entries through the mount).
//!
//! Budgets (CI defaults in brackets; raise them for the long runs):
//! - `COWFS_REL_LOAD_OPS` operations per thread [250] or `COWFS_REL_LOAD_SECS` seconds of it;
//! - `COWFS_REL_BREAK_ROUNDS` rounds of the link-break race [4], `COWFS_REL_BREAK_PROCS`
//!   processes each [32];
//! - `COWFS_REL_SCALE_FILES` files of the vhashify guest [20000] (on demand: 1000000);
//! - `COWFS_REL_SCALE_ENTRIES` entries of the big directory [20000] (on demand: 100000).
//!
//! Replay any run with `COWFS_REL_SEED`. Times and memory are reported, never asserted; the one
//! memory bound asserted (the daemon's resident set per entry) is generous and catches leaks,
//! not slowness.

mod common;
mod reliability_support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use reliability_support::*;

const DIRS: usize = 3;

/// One writer's model: its own names (spread over the shared directories) and their contents.
struct Writer {
    id: usize,
    rng: fastrand::Rng,
    files: BTreeMap<PathBuf, Vec<u8>>,
    serial: u64,
}

impl Writer {
    fn name(&mut self) -> PathBuf {
        self.serial += 1;
        PathBuf::from(format!(
            "d{}/t{}-{}",
            self.rng.usize(0..DIRS),
            self.id,
            self.serial
        ))
    }

    fn content(&mut self) -> Vec<u8> {
        let len = self.rng.usize(0..20_000);
        let tag = format!("writer {} op {} ", self.id, self.serial);
        tag.bytes().cycle().take(len).collect()
    }

    /// One random operation through the mount, then a read-back of what it touched.
    fn step(&mut self, mnt: &Path) -> Result<String, String> {
        let pick = |w: &mut Writer| -> Option<PathBuf> {
            let n = w.files.len();
            (n > 0).then(|| w.files.keys().nth(w.rng.usize(0..n)).cloned())?
        };
        let op = match self.rng.u8(0..10) {
            0..=2 => {
                let p = self.name();
                let c = self.content();
                std::fs::write(mnt.join(&p), &c).map_err(|e| format!("create {p:?}: {e}"))?;
                self.files.insert(p.clone(), c);
                format!("create {p:?}")
            }
            3..=4 => {
                let Some(p) = pick(self) else {
                    return Ok("skip".into());
                };
                let extra = self.content();
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(mnt.join(&p))
                    .map_err(|e| format!("open {p:?}: {e}"))?;
                f.write_all(&extra)
                    .map_err(|e| format!("append {p:?}: {e}"))?;
                self.files.get_mut(&p).expect("own file").extend(extra);
                format!("append {p:?}")
            }
            5 => {
                let Some(p) = pick(self) else {
                    return Ok("skip".into());
                };
                let c = self.files.get_mut(&p).expect("own file");
                let n = self.rng.usize(0..=c.len());
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(mnt.join(&p))
                    .and_then(|f| f.set_len(n as u64))
                    .map_err(|e| format!("truncate {p:?}: {e}"))?;
                c.truncate(n);
                format!("truncate {p:?} {n}")
            }
            6..=7 => {
                let Some(p) = pick(self) else {
                    return Ok("skip".into());
                };
                // Onto one of its own names (replacing it) or a new one, in any directory.
                let to = if self.rng.bool() {
                    pick(self).unwrap_or_else(|| self.name())
                } else {
                    self.name()
                };
                std::fs::rename(mnt.join(&p), mnt.join(&to))
                    .map_err(|e| format!("rename {p:?} {to:?}: {e}"))?;
                let c = self.files.remove(&p).expect("own file");
                self.files.insert(to.clone(), c);
                format!("rename {p:?} {to:?}")
            }
            8 => {
                let Some(p) = pick(self) else {
                    return Ok("skip".into());
                };
                std::fs::remove_file(mnt.join(&p)).map_err(|e| format!("unlink {p:?}: {e}"))?;
                self.files.remove(&p);
                format!("unlink {p:?}")
            }
            _ => {
                let Some(p) = pick(self) else {
                    return Ok("skip".into());
                };
                let c = self.content();
                std::fs::write(mnt.join(&p), &c).map_err(|e| format!("rewrite {p:?}: {e}"))?;
                self.files.insert(p.clone(), c);
                format!("rewrite {p:?}")
            }
        };
        Ok(op)
    }
}

/// Every name under the shared directories, as listed through the mount.
fn listed(mnt: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for d in 0..DIRS {
        for e in std::fs::read_dir(mnt.join(format!("d{d}")))
            .expect("readdir")
            .flatten()
        {
            out.insert(PathBuf::from(format!("d{d}")).join(e.file_name()));
        }
    }
    out
}

/// Kernel stacks of every thread of `pid`: what a deadlock report needs.
fn stacks(pid: i32) -> String {
    let mut out = String::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            let stack = std::fs::read_to_string(t.path().join("stack")).unwrap_or_default();
            out.push_str(&format!(
                "{} {}{}\n",
                t.file_name().to_string_lossy(),
                comm,
                stack
            ));
        }
    }
    out
}

#[test]
fn sixteen_writers_in_shared_directories_lose_nothing_and_listings_match_the_model() {
    let ops = budget("LOAD_OPS", 250);
    let secs = budget("LOAD_SECS", 0);
    let seed =
        seed("sixteen_writers_in_shared_directories_lose_nothing_and_listings_match_the_model");
    let l = Layout::new();
    // Lower files each writer owns, in the same directories (so the first writes copy up).
    let mut writers: Vec<Writer> = (0..16)
        .map(|id| Writer {
            id,
            rng: fastrand::Rng::with_seed(seed.wrapping_add(id as u64)),
            files: BTreeMap::new(),
            serial: 0,
        })
        .collect();
    for w in &mut writers {
        for k in 0..4 {
            let p = PathBuf::from(format!("d{}/lower-{}-{k}", k % DIRS, w.id));
            let c: Vec<u8> = format!("lower {} {k} ", w.id)
                .bytes()
                .cycle()
                .take(3000)
                .collect();
            std::fs::create_dir_all(l.dir("ro").join(&p).parent().expect("dir")).expect("mkdir");
            std::fs::write(l.dir("ro").join(&p), &c).expect("write");
            w.files.insert(p, c);
        }
    }
    let options = format!("{},threads=8,entry_timeout=0,attr_timeout=0", l.dirs());
    let d = ForegroundDaemon::start(&options, &l.dir("mnt"), &[]);
    let mnt = d.mnt.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let deadline = Duration::from_secs(secs.max(60) + 600);
    let workers: Vec<_> = writers
        .into_iter()
        .map(|mut w| {
            let (mnt, stop) = (mnt.clone(), stop.clone());
            std::thread::spawn(move || -> Result<(Writer, u64), String> {
                let mut done = 0u64;
                let mut last = Vec::new();
                loop {
                    let more = if secs > 0 {
                        started.elapsed() < Duration::from_secs(secs)
                    } else {
                        done < ops
                    };
                    if !more || stop.load(Ordering::Relaxed) {
                        return Ok((w, done));
                    }
                    let op = w.step(&mnt).map_err(|e| {
                        format!("writer {}: {e}; last operations: {last:?}", w.id)
                    })?;
                    // No lost update: what this writer wrote is what it reads back.
                    for (p, c) in w.files.iter().filter(|(p, _)| op.contains(&format!("{p:?}"))) {
                        let seen = std::fs::read(mnt.join(p))
                            .map_err(|e| format!("writer {}: read {p:?} after {op}: {e}", w.id))?;
                        if &seen != c {
                            return Err(format!(
                                "writer {}: {p:?} after {op}: {} bytes read, {} written; last: {last:?}",
                                w.id,
                                seen.len(),
                                c.len()
                            ));
                        }
                    }
                    last.push(op);
                    if last.len() > 8 {
                        last.remove(0);
                    }
                    done += 1;
                }
            })
        })
        .collect();
    // Readers list the directories all along: never a hidden name, never a name no writer made.
    let listers: Vec<_> = (0..2)
        .map(|_| {
            let (mnt, stop) = (mnt.clone(), stop.clone());
            std::thread::spawn(move || -> Result<u64, String> {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    for name in listed(&mnt) {
                        let b = name
                            .file_name()
                            .map(|n| n.as_encoded_bytes())
                            .unwrap_or_default();
                        if b.starts_with(b".wh.") || b.starts_with(b".cowfs.tmp.") {
                            return Err(format!("listed a hidden name {name:?}"));
                        }
                        if !(b.starts_with(b"t") || b.starts_with(b"lower-")) {
                            return Err(format!("listed a name nobody made: {name:?}"));
                        }
                    }
                    n += 1;
                }
                Ok(n)
            })
        })
        .collect();
    while workers.iter().any(|w| !w.is_finished()) {
        if started.elapsed() > deadline {
            panic!(
                "seed {seed}: writers still running after {deadline:?}: deadlock? daemon threads:\n{}",
                stacks(d.pid())
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    let mut model: BTreeMap<PathBuf, Vec<u8>> = BTreeMap::new();
    let mut total = 0;
    for w in workers {
        let (w, done) = w
            .join()
            .expect("writer thread")
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        total += done;
        model.extend(w.files);
    }
    let mut listings = 0;
    for t in listers {
        listings += t
            .join()
            .expect("lister")
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    }
    let elapsed = started.elapsed();
    let check = |mnt: &Path, when: &str| {
        let names = listed(mnt);
        let want: BTreeSet<PathBuf> = model.keys().cloned().collect();
        assert_eq!(
            names, want,
            "seed {seed}: listing differs from the model {when}"
        );
        for (p, c) in &model {
            assert_eq!(
                &std::fs::read(mnt.join(p)).expect("read"),
                c,
                "seed {seed}: {p:?} lost an update ({when})"
            );
        }
    };
    check(&mnt, "at the end");
    d.stop();
    let m = l.mount();
    check(&m.mnt, "after a remount");
    assert!(work_dir_entries(&l.dir("rw")).is_empty());
    let bytes: usize = model.values().map(Vec::len).sum();
    m.unmount();
    report(
        "16 writers",
        &[
            ("seed", seed.into()),
            ("threads", 16.into()),
            ("operations", total.into()),
            ("concurrent_listings", listings.into()),
            ("files_checked", model.len().into()),
            ("bytes_checked", bytes.into()),
            ("bytes_lost", 0.into()),
            ("seconds", elapsed.as_secs_f64().into()),
        ],
    );
}

#[test]
fn many_processes_opening_one_unified_file_for_write_break_the_link_once() {
    let rounds = budget("BREAK_ROUNDS", 4);
    let procs = budget("BREAK_PROCS", 32) as usize;
    let l = Layout::new();
    let (store, _) = hashstore::Store::init(&l.dir("store")).expect("store");
    let m = Mounted::new(&format!("{},threads=8", l.dirs()), &l.dir("mnt"));
    let mut writers = 0;
    for r in 0..rounds {
        let content: Vec<u8> = format!("shared object {r} ")
            .bytes()
            .cycle()
            .take(3 << 20)
            .collect();
        let (path, twin) = (l.dir(&format!("rw/f{r}")), l.dir(&format!("rw/twin{r}")));
        std::fs::write(&path, &content).expect("write");
        std::fs::write(&twin, &content).expect("write");
        let object = cowfs::unify_files(&store, &[&path, &twin]).expect("unify");
        let print = fingerprint(&object);
        let through = m.path(format!("f{r}"));
        let ino = inode(&through);
        // All processes block on a fifo, then open the file for appending at once.
        let fifo = l.dir(&format!("go{r}"));
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        let children: Vec<_> = (0..procs)
            .map(|i| {
                Command::new("sh")
                    .arg("-c")
                    .arg(format!(
                        "read _ < '{}'; printf '<writer {i}>' >> '{}'",
                        fifo.display(),
                        through.display()
                    ))
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn writer")
            })
            .collect();
        // Opening the fifo for writing waits for the readers; closing it releases them all.
        std::thread::sleep(Duration::from_millis(200));
        drop(
            std::fs::OpenOptions::new()
                .write(true)
                .open(&fifo)
                .expect("open fifo"),
        );
        for c in children {
            let out = c.wait_with_output().expect("wait");
            assert!(
                out.status.success(),
                "round {r}: a writer failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        writers += procs;
        let seen = std::fs::read(&through).expect("read");
        assert_eq!(
            &seen[..content.len()],
            &content[..],
            "round {r}: the copy lost the object's content"
        );
        let tail = String::from_utf8_lossy(&seen[content.len()..]).into_owned();
        for i in 0..procs {
            assert_eq!(
                tail.matches(&format!("<writer {i}>")).count(),
                1,
                "round {r}: writer {i} missing or doubled: a second private copy replaced the first? tail: {tail}"
            );
        }
        assert_eq!(seen.len(), content.len() + tail.len());
        assert_eq!(
            fingerprint(&object),
            print,
            "round {r}: the store object changed"
        );
        assert_eq!(
            std::fs::read(&twin).expect("twin"),
            content,
            "round {r}: twin changed"
        );
        assert_eq!(inode(&twin), inode(&object), "round {r}: twin unlinked");
        assert_ne!(
            inode(&path),
            inode(&object),
            "round {r}: the link was not broken"
        );
        assert_eq!(
            std::fs::metadata(&path).expect("stat").nlink(),
            1,
            "round {r}: one private copy"
        );
        assert_eq!(
            inode(&through),
            ino,
            "round {r}: inode number through the mount changed"
        );
        assert!(
            work_dir_entries(&l.dir("rw")).is_empty(),
            "round {r}: temp entries left"
        );
    }
    m.unmount();
    report(
        "one link, many writers",
        &[
            ("rounds", rounds.into()),
            ("writer_processes", writers.into()),
            ("link_breaks", rounds.into()),
            ("bytes_lost", 0.into()),
        ],
    );
}

/// Runs a command and returns (wall time, its own peak RSS in KiB) from wait4.
fn timed(cmd: &mut Command) -> (Duration, i64) {
    let t0 = Instant::now();
    // Reaped by the wait4 below (which also gives its resource usage), not by Child::wait.
    #[allow(clippy::zombie_processes)]
    let child = cmd.stdout(Stdio::null()).spawn().expect("spawn");
    let mut status = 0;
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: waits for our own child; status and rusage point at valid memory.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, ru.as_mut_ptr()) };
    assert_eq!(pid, child.id() as i32, "wait4");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{cmd:?} failed: {status}"
    );
    // SAFETY: filled by the successful wait4.
    (t0.elapsed(), unsafe { ru.assume_init() }.ru_maxrss)
}

#[test]
fn scale_a_guest_of_many_small_files_through_vhashify() {
    let files = budget("SCALE_FILES", 20_000) as usize;
    let l = Layout::new();
    let guest = l.dir("guest");
    let t0 = Instant::now();
    // 100 files per directory, 64–200 bytes, every content four times (duplicates to unify).
    for i in 0..files {
        let dir = guest.join(format!("usr/d{}/s{}", i / 10_000, (i / 100) % 100));
        if i % 100 == 0 {
            std::fs::create_dir_all(&dir).expect("mkdir");
        }
        let k = i / 4;
        let body: Vec<u8> = format!("generated content {k} ")
            .bytes()
            .cycle()
            .take(64 + k % 137)
            .collect();
        std::fs::write(dir.join(format!("f{i}")), body).expect("write");
    }
    let generated = t0.elapsed();
    let (took, rss) = timed(
        Command::new(cowfs::bin("vhashify"))
            .arg("--store")
            .arg(l.dir("store"))
            .args(["--no-default-excludes", "--ignore-mtime"])
            .arg(&guest),
    );
    // Every file still reads its content, and each shares its inode with its duplicates.
    let path = |i: usize| guest.join(format!("usr/d{}/s{}/f{i}", i / 10_000, (i / 100) % 100));
    let mut sampled = 0;
    for i in (0..files).step_by(7) {
        let k = i / 4;
        let body: Vec<u8> = format!("generated content {k} ")
            .bytes()
            .cycle()
            .take(64 + k % 137)
            .collect();
        assert_eq!(
            std::fs::read(path(i)).expect("read"),
            body,
            "{}",
            path(i).display()
        );
        assert_eq!(
            inode(&path(i)),
            inode(&path(k * 4)),
            "{} not unified",
            path(i).display()
        );
        sampled += 1;
    }
    report(
        "scale: vhashify",
        &[
            ("files", files.into()),
            ("generate_seconds", generated.as_secs_f64().into()),
            ("vhashify_seconds", took.as_secs_f64().into()),
            ("vhashify_peak_rss_kib", rss.into()),
            ("files_checked", sampled.into()),
        ],
    );
}

#[test]
fn scale_a_directory_of_many_entries_through_the_mount() {
    let entries = budget("SCALE_ENTRIES", 20_000) as usize;
    let l = Layout::new();
    let dir = l.dir("ro/big");
    std::fs::create_dir(&dir).expect("mkdir");
    for i in 0..entries {
        std::fs::write(dir.join(format!("entry-{i:07}")), b"x").expect("write");
    }
    // Some of them overridden or removed in the writable branch, so the listing merges.
    std::fs::create_dir(l.dir("rw/big")).expect("mkdir");
    for i in (0..entries).step_by(100) {
        std::fs::write(l.dir(&format!("rw/big/.wh.entry-{i:07}")), b"").expect("whiteout");
    }
    let d = ForegroundDaemon::start(&format!("{},threads=4", l.dirs()), &l.dir("mnt"), &[]);
    let rss_before = rss_kib(d.pid()).unwrap_or(0);
    let t0 = Instant::now();
    let names: Vec<_> = std::fs::read_dir(d.mnt.join("big"))
        .expect("readdir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    let readdir = t0.elapsed();
    let expected = entries - entries.div_ceil(100);
    assert_eq!(names.len(), expected, "listing size");
    let t0 = Instant::now();
    for n in &names {
        std::fs::symlink_metadata(d.mnt.join("big").join(n)).expect("lookup");
    }
    let lookups = t0.elapsed();
    let rss_after = rss_kib(d.pid()).unwrap_or(0);
    let peak = peak_rss_kib(d.pid()).unwrap_or(0);
    // Memory bounded: a generous allowance per entry the kernel keeps looked up.
    let allowance = 64 * 1024 + 4 * expected as u64;
    assert!(
        peak < allowance,
        "daemon peak RSS {peak} KiB for {expected} entries (allowance {allowance} KiB)"
    );
    d.stop();
    report(
        "scale: big directory",
        &[
            ("entries", expected.into()),
            ("readdir_seconds", readdir.as_secs_f64().into()),
            ("lookup_seconds", lookups.as_secs_f64().into()),
            ("daemon_rss_before_kib", rss_before.into()),
            ("daemon_rss_after_kib", rss_after.into()),
            ("daemon_peak_rss_kib", peak.into()),
        ],
    );
}
