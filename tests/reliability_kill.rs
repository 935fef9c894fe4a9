//! Issue 7, faults: the daemon SIGKILLed at random moments while guests copy files up, break
//! store links, rename, and while `unionctl` changes the branches.
//!
//! Each round lays out fresh targets (files of a read-only branch, store-linked files in the
//! writable branch sharing their objects with a second path, files and directories to rename,
//! extra branches), starts `cowfs mount -f`, runs one thread per kind of operation through the
//! mount, and SIGKILLs the daemon after a random delay (seeded; the first round measures how
//! long the workload takes, later delays are drawn from 0 to 1.2 times that). Then:
//! - what the dead daemon left in the work directory is counted (proof that kills landed inside
//!   a staging), the dead mount is unmounted and the union mounted again;
//! - the work directory is empty again (leftovers are cleaned at mount time);
//! - every target shows its old or its new state, exactly (content, size and mode), never a
//!   partial one; an operation that returned success before the kill shows its new state; one
//!   not yet started its old state;
//! - no whiteout or temp name is visible anywhere through the mount, and the writable branch
//!   holds no temp name outside the work directory;
//! - every store object is unchanged (inode, mode, content) and the second path linked to it
//!   still reads the object's content; the extra branches are unchanged.
//!
//! Budget: `COWFS_REL_KILL_ROUNDS` rounds (CI default 14). Replay: `COWFS_REL_SEED`.

mod common;
mod reliability_support;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use reliability_support::*;

/// What one file may look like: its content and permission bits.
#[derive(Clone, PartialEq, Eq)]
struct FileState {
    content: Arc<Vec<u8>>,
    mode: u32,
}

impl std::fmt::Debug for FileState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} bytes, blake3 {}, mode {:o}",
            self.content.len(),
            &blake3::hash(&self.content).to_hex()[..16],
            self.mode
        )
    }
}

/// A change to one file through the mount.
#[derive(Clone, Debug)]
enum Change {
    Append(Vec<u8>),
    Chmod(u32),
    Truncate(u64),
}

impl Change {
    fn random(rng: &mut fastrand::Rng) -> Change {
        match rng.u8(0..3) {
            0 => Change::Append((0..4096).map(|_| rng.u8(..)).collect()),
            1 => Change::Chmod([0o600, 0o640, 0o755, 0o4755][rng.usize(0..4)]),
            _ => Change::Truncate(rng.u64(0..64 * 1024)),
        }
    }

    fn apply_to(&self, s: &FileState) -> FileState {
        match self {
            Change::Append(b) => {
                let mut c = s.content.as_ref().clone();
                c.extend_from_slice(b);
                FileState {
                    content: Arc::new(c),
                    mode: s.mode,
                }
            }
            Change::Chmod(m) => FileState {
                content: s.content.clone(),
                mode: *m,
            },
            Change::Truncate(n) => FileState {
                content: Arc::new(s.content[..(*n as usize).min(s.content.len())].to_vec()),
                mode: s.mode,
            },
        }
    }

    fn run(&self, path: &Path) -> std::io::Result<()> {
        match self {
            Change::Append(b) => {
                let mut f = std::fs::OpenOptions::new().append(true).open(path)?;
                f.write_all(b)
            }
            Change::Chmod(m) => std::fs::set_permissions(path, PermissionsExt::from_mode(*m)),
            Change::Truncate(n) => std::fs::OpenOptions::new()
                .write(true)
                .open(path)?
                .set_len(*n),
        }
    }
}

/// One operation of a round and the states it moves between.
#[derive(Clone, Debug)]
enum Op {
    /// Change a file (a lower file: copy-up; a store-linked file: link break).
    Change {
        path: PathBuf,
        change: Change,
        old: FileState,
    },
    /// Rename `from` to `to` (which may exist: then it is replaced).
    Rename {
        from: PathBuf,
        to: PathBuf,
        moved: BTreeMap<PathBuf, FileState>,
        replaced: Option<FileState>,
    },
    /// Add (or remove) an extra branch through the control socket.
    Branch { path: PathBuf, add: bool, rw: bool },
}

/// How far a thread got before the kill: ops `..done` returned success; `in_flight` tells
/// whether op `done` had started (and may or may not have taken effect).
#[derive(Debug, Default)]
struct Progress {
    done: usize,
    in_flight: bool,
}

fn is_kill_error(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOTCONN) | Some(libc::ECONNABORTED)
    )
}

fn run_ops(mnt: &Path, ops: &[Op], killed: &AtomicBool, ctx: &str) -> Progress {
    let mut p = Progress::default();
    for op in ops {
        p.in_flight = true;
        let result: Result<(), String> = match op {
            Op::Change { path, change, .. } => change.run(&mnt.join(path)).map_err(|e| {
                if is_kill_error(&e) {
                    String::new()
                } else {
                    format!("{change:?} {}: {e}", path.display())
                }
            }),
            Op::Rename { from, to, .. } => {
                std::fs::rename(mnt.join(from), mnt.join(to)).map_err(|e| {
                    if is_kill_error(&e) {
                        String::new()
                    } else {
                        format!("rename {} {}: {e}", from.display(), to.display())
                    }
                })
            }
            Op::Branch { path, add, rw } => {
                let r = cowfs_fs::control::Client::connect(mnt).and_then(|mut c| {
                    if *add {
                        let mode = if *rw {
                            cowfs_fs::branch::BranchMode::Rw
                        } else {
                            cowfs_fs::branch::BranchMode::Ro
                        };
                        c.add(path, mode, cowfs_fs::control::PositionSpec::Last)
                    } else {
                        c.remove(path)
                    }
                });
                r.map(|_| ()).map_err(|e| format!("branch {op:?}: {e}"))
            }
        };
        match result {
            Ok(()) => {
                p.done += 1;
                p.in_flight = false;
            }
            Err(msg) => {
                assert!(
                    killed.load(Ordering::SeqCst),
                    "{ctx}: an operation failed while the daemon was alive: {msg}"
                );
                return p;
            }
        }
    }
    p.in_flight = false;
    p
}

fn random_content(rng: &mut fastrand::Rng, len: std::ops::Range<usize>) -> Vec<u8> {
    let mut v = vec![0u8; rng.usize(len)];
    let seed: [u8; 32] = std::array::from_fn(|_| rng.u8(..));
    blake3::Hasher::new_keyed(&seed).finalize_xof().fill(&mut v);
    v
}

fn put(path: &Path, s: &FileState) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, s.content.as_slice()).expect("write");
    std::fs::set_permissions(path, PermissionsExt::from_mode(s.mode)).expect("chmod");
}

fn state_of(path: &Path) -> std::io::Result<FileState> {
    let meta = std::fs::symlink_metadata(path)?;
    Ok(FileState {
        content: Arc::new(std::fs::read(path)?),
        mode: meta.mode() & 0o7777,
    })
}

/// A store object, its fingerprint, the second path linked to it and that path's content.
type Shared = (PathBuf, (u64, u64, u32, String), PathBuf, Arc<Vec<u8>>);

/// The targets of one round, laid out in the unmounted branches.
struct Round {
    ops: [Vec<Op>; 4],
    objects: Vec<Shared>,
    extras: Vec<(PathBuf, cowfs::listing::Listing)>,
}

fn lay_out(l: &Layout, store: &hashstore::Store, r: usize, rng: &mut fastrand::Rng) -> Round {
    let (ro, rw) = (l.dir("ro"), l.dir("rw"));
    let base = PathBuf::from(format!("r{r}"));
    let mut copy_ups = Vec::new();
    let mut breaks = Vec::new();
    let mut renames = Vec::new();
    let mut branches = Vec::new();
    let mut objects = Vec::new();
    for i in 0..4 {
        // Copy-up: a file of the read-only branch, two directories deep (parents copied too).
        let rel = base.join(format!("deep/a/c{i}"));
        let old = FileState {
            content: Arc::new(random_content(rng, 512 << 10..4 << 20)),
            mode: 0o644,
        };
        put(&ro.join(&rel), &old);
        copy_ups.push(Op::Change {
            path: rel,
            change: Change::random(rng),
            old,
        });
        // Link break: a store-linked file of the writable branch; a second path shares it.
        let rel = base.join(format!("unified/u{i}"));
        let twin = rw.join(&base).join(format!("unified/v{i}"));
        let old = FileState {
            content: Arc::new(random_content(rng, 256 << 10..2 << 20)),
            mode: 0o644,
        };
        put(&rw.join(&rel), &old);
        put(&twin, &old);
        let object = cowfs::unify_files(store, &[&rw.join(&rel), &twin]).expect("unify");
        objects.push((
            object.clone(),
            fingerprint(&object),
            twin,
            old.content.clone(),
        ));
        breaks.push(Op::Change {
            path: rel,
            change: Change::random(rng),
            old,
        });
    }
    for i in 0..3 {
        // A file of the read-only branch moving (copied up or linked, then whited out).
        let from = base.join(format!("ren/l{i}"));
        let s = FileState {
            content: Arc::new(random_content(rng, 1..256 << 10)),
            mode: 0o644,
        };
        put(&ro.join(&from), &s);
        renames.push(Op::Rename {
            to: base.join(format!("ren/m{i}")),
            moved: BTreeMap::from([(PathBuf::new(), s)]),
            from,
            replaced: None,
        });
        // A directory of the writable branch with files in it.
        let from = base.join(format!("dirs/d{i}"));
        let mut moved = BTreeMap::new();
        for j in 0..3 {
            let s = FileState {
                content: Arc::new(random_content(rng, 1..64 << 10)),
                mode: 0o644,
            };
            put(&rw.join(&from).join(format!("f{j}")), &s);
            moved.insert(PathBuf::from(format!("f{j}")), s);
        }
        renames.push(Op::Rename {
            to: base.join(format!("dirs/e{i}")),
            moved,
            from,
            replaced: None,
        });
        // A file replacing another (the target lives below, in the read-only branch).
        let from = base.join(format!("rep/a{i}"));
        let to = base.join(format!("rep/b{i}"));
        let s = FileState {
            content: Arc::new(random_content(rng, 1..64 << 10)),
            mode: 0o644,
        };
        let t = FileState {
            content: Arc::new(random_content(rng, 1..64 << 10)),
            mode: 0o600,
        };
        put(&rw.join(&from), &s);
        put(&ro.join(&to), &t);
        renames.push(Op::Rename {
            from,
            to,
            moved: BTreeMap::from([(PathBuf::new(), s)]),
            replaced: Some(t),
        });
    }
    let mut extras = Vec::new();
    for k in 0..3 {
        let dir = l.dir(&format!("extra-r{r}-{k}"));
        std::fs::create_dir_all(dir.join("etc")).expect("mkdir");
        std::fs::write(dir.join(format!("etc/extra{k}")), format!("extra {r} {k}")).expect("w");
        let rw = k == 2;
        extras.push((dir, rw));
    }
    // Enough branch changes to last as long as the file operations.
    for _ in 0..8 {
        for (dir, rw) in &extras {
            branches.push(Op::Branch {
                path: dir.clone(),
                add: true,
                rw: *rw,
            });
        }
        for (dir, rw) in &extras {
            branches.push(Op::Branch {
                path: dir.clone(),
                add: false,
                rw: *rw,
            });
        }
    }
    let extras = extras
        .into_iter()
        .map(|(d, _)| (d.clone(), listing(&d)))
        .collect();
    Round {
        ops: [copy_ups, breaks, renames, branches],
        objects,
        extras,
    }
}

/// A branch's listing without its root directory (whose mtime changes when a writable branch
/// gets its work directory) and without cowfs' temp names.
fn listing(dir: &Path) -> cowfs::listing::Listing {
    let opts = cowfs::listing::ListingOptions {
        ignore_cowfs_temps: true,
        ..Default::default()
    };
    let mut l = cowfs::listing::list_tree(dir, opts).expect("list");
    l.remove(Path::new(""));
    l
}

/// Checks one op's target against its possible states; returns the bytes checked.
fn check_op(mnt: &Path, op: &Op, may_old: bool, may_new: bool, ctx: &str) -> u64 {
    let fail = |what: String| -> ! { panic!("{ctx}: {op:?}\n  {what}") };
    match op {
        Op::Change { path, change, old } => {
            let new = change.apply_to(old);
            let seen = state_of(&mnt.join(path))
                .unwrap_or_else(|e| fail(format!("{} unreadable: {e}", path.display())));
            let ok = (may_old && seen == *old) || (may_new && seen == new);
            if !ok {
                fail(format!(
                    "{} shows {seen:?}; old {old:?} (allowed: {may_old}), new {new:?} (allowed: {may_new})",
                    path.display()
                ));
            }
            seen.content.len() as u64
        }
        Op::Rename {
            from,
            to,
            moved,
            replaced,
        } => {
            let at = |root: &Path| -> Option<BTreeMap<PathBuf, FileState>> {
                let p = mnt.join(root);
                let meta = std::fs::symlink_metadata(&p).ok()?;
                if meta.is_dir() {
                    let mut m = BTreeMap::new();
                    for e in std::fs::read_dir(&p).expect("readdir").flatten() {
                        m.insert(
                            PathBuf::from(e.file_name()),
                            state_of(&e.path()).expect("read moved file"),
                        );
                    }
                    Some(m)
                } else {
                    Some(BTreeMap::from([(
                        PathBuf::new(),
                        state_of(&p).expect("read moved file"),
                    )]))
                }
            };
            let (src, dst) = (at(from), at(to));
            let old_dst = replaced
                .as_ref()
                .map(|t| BTreeMap::from([(PathBuf::new(), t.clone())]));
            let is_old = src.as_ref() == Some(moved) && dst == old_dst;
            let is_new = src.is_none() && dst.as_ref() == Some(moved);
            if !((may_old && is_old) || (may_new && is_new)) {
                fail(format!(
                    "source present: {}, target: {:?} (old allowed: {may_old}, new allowed: {may_new})",
                    src.is_some(),
                    dst.map(|d| d.into_iter().collect::<Vec<_>>())
                ));
            }
            moved.values().map(|s| s.content.len() as u64).sum()
        }
        // After a remount the branches are those of the mount options again; the extra
        // branches themselves are checked separately.
        Op::Branch { .. } => 0,
    }
}

#[test]
fn sigkill_at_random_moments_leaves_old_or_new_state_never_partial() {
    let rounds = budget("KILL_ROUNDS", 14) as usize;
    let seed = seed("sigkill_at_random_moments_leaves_old_or_new_state_never_partial");
    let mut rng = fastrand::Rng::with_seed(seed);
    let l = Layout::new();
    let (store, _) = hashstore::Store::init(&l.dir("store")).expect("store");
    let options = format!("{},threads=4", l.dirs());
    let mnt = l.dir("mnt");
    let mut workload = Duration::from_millis(200);
    let (mut faults, mut in_flight, mut leftovers, mut files, mut bytes) = (0, 0, 0, 0u64, 0u64);
    let mut delays = Vec::new();
    let started = Instant::now();
    for r in 0..rounds {
        let ctx = format!("seed {seed}, round {r}");
        let round = lay_out(&l, &store, r, &mut rng);
        let daemon = ForegroundDaemon::start(&options, &mnt, &[]);
        let killed = Arc::new(AtomicBool::new(false));
        let t0 = Instant::now();
        let threads: Vec<_> = round
            .ops
            .iter()
            .cloned()
            .map(|ops| {
                let (mnt, killed, ctx) = (daemon.mnt.clone(), killed.clone(), ctx.clone());
                std::thread::spawn(move || run_ops(&mnt, &ops, &killed, &ctx))
            })
            .collect();
        // Round 0 lets the workload finish, to learn how long it takes.
        let delay = if r == 0 {
            None
        } else {
            Some(Duration::from_micros(
                rng.u64(0..(workload.as_micros() as u64 * 6 / 5).max(1)),
            ))
        };
        if let Some(d) = delay {
            std::thread::sleep(d);
            delays.push(d.as_micros() as u64);
        } else {
            while threads.iter().any(|t| !t.is_finished()) {
                std::thread::sleep(Duration::from_millis(1));
            }
            workload = t0.elapsed();
        }
        killed.store(true, Ordering::SeqCst);
        let mnt_dead = daemon.mnt.clone();
        daemon.kill();
        faults += 1;
        let progress: Vec<Progress> = threads
            .into_iter()
            .map(|t| t.join().expect("workload thread"))
            .collect();
        in_flight += progress.iter().filter(|p| p.in_flight).count();
        let left = work_dir_entries(&l.dir("rw"));
        leftovers += left.len();
        eprintln!(
            "{ctx}: killed after {:?}; progress {:?}; {} entries left in the work dir",
            delay,
            progress
                .iter()
                .map(|p| (p.done, p.in_flight))
                .collect::<Vec<_>>(),
            left.len()
        );

        // Remount: leftovers cleaned, every target old or new, nothing hidden shows.
        let m = Mounted::new(&options, &mnt_dead);
        assert!(
            work_dir_entries(&l.dir("rw")).is_empty(),
            "{ctx}: the mount did not clean the work directory"
        );
        for (ops, p) in round.ops.iter().zip(&progress) {
            for (i, op) in ops.iter().enumerate() {
                let (may_old, may_new) = match i.cmp(&p.done) {
                    std::cmp::Ordering::Less => (false, true),
                    std::cmp::Ordering::Equal if p.in_flight => (true, true),
                    _ => (true, false),
                };
                // A branch op leaves no trace in the remounted union; only count the others.
                if !matches!(op, Op::Branch { .. }) {
                    files += 1;
                }
                bytes += check_op(&m.mnt, op, may_old, may_new, &ctx);
            }
        }
        let hidden = hidden_names(&m.mnt);
        assert!(
            hidden.is_empty(),
            "{ctx}: visible through the mount: {hidden:?}"
        );
        for (object, print, twin, content) in &round.objects {
            assert_eq!(
                &fingerprint(object),
                print,
                "{ctx}: object {} changed",
                object.display()
            );
            assert_eq!(
                &std::fs::read(twin).expect("twin"),
                content.as_ref(),
                "{ctx}: {} changed",
                twin.display()
            );
            assert_eq!(
                inode(twin),
                inode(object),
                "{ctx}: {} unlinked",
                twin.display()
            );
        }
        for (dir, before) in &round.extras {
            assert_eq!(
                &listing(dir),
                before,
                "{ctx}: extra branch {} changed",
                dir.display()
            );
            let temps = work_dir_entries(dir);
            assert!(
                temps.is_empty(),
                "{ctx}: temp entries in {}: {temps:?}",
                dir.display()
            );
        }
        let stray = hidden_names(&l.dir("rw"))
            .into_iter()
            .filter(|p| {
                let n = p
                    .file_name()
                    .map(|n| n.as_encoded_bytes())
                    .unwrap_or_default();
                n.starts_with(b".cowfs.tmp.") && !p.ends_with(".cowfs.tmp.work")
            })
            .collect::<Vec<_>>();
        assert!(
            stray.is_empty(),
            "{ctx}: temp names in the writable branch: {stray:?}"
        );
        m.unmount();
        // Keep the disk use bounded: this round's targets go (the union is unmounted).
        for b in ["ro", "rw"] {
            let _ = std::fs::remove_dir_all(l.dir(b).join(format!("r{r}")));
        }
        for (dir, _) in &round.extras {
            let _ = std::fs::remove_dir_all(dir);
        }
        if r % 10 == 9 {
            ok(cowfs().args(["store", "gc"]).arg(l.dir("store")));
        }
    }
    report(
        "sigkill",
        &[
            ("seed", seed.into()),
            ("rounds", rounds.into()),
            ("faults_injected", faults.into()),
            ("operations_in_flight_at_kill", in_flight.into()),
            ("temp_entries_left_by_kills", leftovers.into()),
            ("files_checked", files.into()),
            ("bytes_checked", bytes.into()),
            ("bytes_lost", 0.into()),
            ("workload_ms", (workload.as_millis() as u64).into()),
            ("seconds", started.elapsed().as_secs().into()),
        ],
    );
    assert!(faults > 0);
}

/// The hang the watchdog exists for, made to happen: daemon A's read-only branch is daemon B's
/// mount, and B is stopped, so A's LOOKUP handler waits for B while the lookup holds the
/// directory's lock; a branch change makes A's invalidation thread wait for that lock.
/// SIGKILL A: the thread waiting for the lock cannot die, so A cannot finish dying and its
/// connection would stay, hanging every guest process, until aborted. A's watchdog aborts it.
#[test]
fn a_daemon_killed_while_its_invalidations_wait_finishes_dying() {
    let l = Layout::new();
    let (b_branch, b_mnt, extra) = (l.dir("b-branch"), l.dir("b-mnt"), l.dir("extra"));
    for d in [&b_branch.join("d"), &extra] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    std::fs::write(b_branch.join("d/known"), b"x").expect("write");
    let b = ForegroundDaemon::start(&format!("dirs={}=rw", b_branch.display()), &b_mnt, &[]);
    let a = ForegroundDaemon::start(
        &format!("dirs={}=rw:{}=ro", l.dir("rw").display(), b.mnt.display()),
        &l.dir("mnt"),
        &[],
    );
    let a_mnt = a.mnt.clone();
    assert!(a_mnt.join("d/known").exists(), "A knows d and d/known");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(b.pid()),
        nix::sys::signal::SIGSTOP,
    )
    .expect("stop B");
    // Holds d's lock until A answers, which waits for B.
    let stuck_lookup = {
        let p = a_mnt.join("d/not-known-yet");
        std::thread::spawn(move || std::fs::symlink_metadata(p))
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    // A branch change: A's invalidation thread now waits for d's lock.
    let change = {
        let (m, e) = (a_mnt.clone(), extra.clone());
        std::thread::spawn(move || {
            std::process::Command::new(cowfs::bin("unionctl"))
                .arg(&m)
                .args(["add", "--last"])
                .arg(format!("{}=ro", e.display()))
                .output()
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    // Dies by itself (asserted by `kill`), through the watchdog's abort.
    let start = std::time::Instant::now();
    a.kill();
    eprintln!("daemon A finished dying after {:?}", start.elapsed());
    let lookup = stuck_lookup.join().expect("lookup thread");
    assert!(
        lookup.is_err(),
        "the aborted connection fails the waiting lookup"
    );
    let _ = change.join();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(b.pid()),
        nix::sys::signal::SIGCONT,
    )
    .expect("continue B");
    b.stop();
}
