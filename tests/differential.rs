//! The differential random-operation tester (fsx-style, see ../shared/conformance.md).
//!
//! For each seed: build a corpus-like tree (part of corpus guest g3's /etc plus generated
//! files, directories, symlinks and hard links), lay it out over a writable and a read-only
//! branch (files below, above and in both; merged and opaque directories; entries hidden by
//! whiteouts; files unified into a store, some sharing one object), mount the union, and
//! materialise the same tree in a plain directory. Then apply the same random operations to both
//! (create, write, truncate, O_TRUNC, rename, link, unlink, mkdir, rmdir, chmod, xattrs, symlink,
//! fsync) and compare after every step: results and errnos, and for the paths involved and their
//! directories types, sizes, modes, owners, link counts, contents, symlink targets, user xattrs
//! and listings; the whole tree every 25 steps and at the end. Also checked throughout: inode
//! numbers through the mount do not change when a file is modified (copy-up, link breaking),
//! no private xattr is ever visible, and no store object ever changes.
//!
//! Allowed divergence: renaming a directory that is merged from several branches fails with
//! EXDEV through the union (as in overlayfs); the plain directory then does not rename either.
//!
//! Budget: `COWFS_FSX_SEEDS` seeds (default 8) of `COWFS_FSX_OPS` operations (default 200),
//! starting at `COWFS_FSX_FIRST_SEED` (default 1); `COWFS_FSX_SEED=N` replays one seed. A
//! failure prints its seed, step, the last operations and the replay command.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::Write;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn union_behaves_like_a_plain_directory() {
    let ops = env_u64("COWFS_FSX_OPS", 200) as usize;
    let seeds: Vec<u64> = match std::env::var("COWFS_FSX_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(seed) => vec![seed],
        None => {
            let first = env_u64("COWFS_FSX_FIRST_SEED", 1);
            (first..first + env_u64("COWFS_FSX_SEEDS", 8)).collect()
        }
    };
    let started = std::time::Instant::now();
    let mut total_ops = 0;
    for seed in &seeds {
        total_ops += run_seed(*seed, ops);
    }
    eprintln!(
        "differential: {} seeds × {ops} operations ({total_ops} applied) in {:.1} s",
        seeds.len(),
        started.elapsed().as_secs_f64()
    );
}

// ----- the initial tree ------------------------------------------------------------------

#[derive(Clone)]
enum Node {
    Dir(u32),
    File { mode: u32, data: Vec<u8> },
    Symlink(OsString),
    Fifo(u32),
}

/// How a file of the tree is laid out over the branches.
#[derive(Clone, Copy, PartialEq)]
enum Where {
    Lower,
    Upper,
    /// In both; the read-only copy is stale and must stay hidden.
    Both,
}

struct Tree {
    /// Relative path → node, parents before children.
    entries: Vec<(PathBuf, Node)>,
}

fn random_bytes(rng: &mut fastrand::Rng, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng.fill(&mut v);
    v
}

fn generate_tree(rng: &mut fastrand::Rng) -> Tree {
    let mut entries = Vec::new();
    let mut dirs = vec![PathBuf::new()];
    for i in 0..rng.usize(4..8) {
        let parent = dirs[rng.usize(..dirs.len())].clone();
        let d = parent.join(format!("d{i}"));
        entries.push((d.clone(), Node::Dir(0o755)));
        dirs.push(d);
    }
    let mut files = Vec::new();
    for i in 0..rng.usize(20..40) {
        let parent = dirs[rng.usize(..dirs.len())].clone();
        let p = parent.join(format!("f{i}"));
        let len = match rng.u8(..10) {
            0 => 0,
            1..=6 => rng.usize(1..4096),
            _ => rng.usize(4096..100_000),
        };
        // Some files share content, as identical files across a guest do (unified together).
        let data = if !files.is_empty() && rng.u8(..5) == 0 {
            let (_, d): &(PathBuf, Vec<u8>) = &files[rng.usize(..files.len())];
            d.clone()
        } else {
            random_bytes(rng, len)
        };
        files.push((p.clone(), data.clone()));
        entries.push((
            p,
            Node::File {
                mode: [0o644, 0o600, 0o755, 0o4755][rng.usize(..4)],
                data,
            },
        ));
    }
    for i in 0..3 {
        let parent = dirs[rng.usize(..dirs.len())].clone();
        let target = files[rng.usize(..files.len())].0.clone();
        entries.push((
            parent.join(format!("s{i}")),
            Node::Symlink(target.into_os_string()),
        ));
    }
    entries.push((PathBuf::from("fifo"), Node::Fifo(0o640)));
    Tree { entries }
}

fn write_node(path: &Path, node: &Node) {
    match node {
        Node::Dir(mode) => {
            std::fs::create_dir_all(path).expect("mkdir");
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode)).expect("chmod");
        }
        Node::File { mode, data } => {
            std::fs::write(path, data).expect("write");
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode)).expect("chmod");
        }
        Node::Symlink(target) => std::os::unix::fs::symlink(target, path).expect("symlink"),
        Node::Fifo(mode) => {
            nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(*mode))
                .expect("mkfifo");
        }
    }
}

/// Lays the tree out: the plain directory gets it as is; the branches get it spread over
/// lower/upper, with stale hidden copies, whiteouts, an opaque directory and unified files.
fn build(rng: &mut fastrand::Rng, tree: &Tree, l: &Layout) -> Vec<PathBuf> {
    let (plain, rw, ro, store) = (l.dir("plain"), l.dir("rw"), l.dir("ro"), l.dir("store"));
    std::fs::create_dir(&plain).expect("mkdir");
    // A real slice of a guest: part of g3's /etc, in the read-only branch.
    let g3 = cowfs::corpus_base().join("guests/g3/etc");
    assert!(
        g3.is_dir(),
        "corpus guest g3 missing: run scripts/install-deps.sh"
    );
    for dst in [&plain, &ro] {
        std::fs::create_dir(dst.join("etc")).expect("mkdir");
        for name in [
            "apt",
            "default",
            "motd",
            "passwd",
            "group",
            "hostname",
            "profile",
            "bash.bashrc",
            "skel",
            "ssh",
        ] {
            if g3.join(name).exists() {
                ok(Command::new("cp")
                    .arg("-a")
                    .arg(g3.join(name))
                    .arg(dst.join("etc")));
            }
        }
    }
    // vhashify unifies only files with the same content *and* metadata.
    let mut unify: HashMap<(Vec<u8>, u32), Vec<PathBuf>> = HashMap::new();
    for (rel, node) in &tree.entries {
        write_node(&plain.join(rel), node);
        let place = match node {
            Node::Dir(_) => {
                // Directories live below, and above too (merged) now and then.
                write_node(&ro.join(rel), node);
                if rng.u8(..3) == 0 {
                    write_node(&rw.join(rel), node);
                }
                continue;
            }
            _ => [Where::Lower, Where::Lower, Where::Upper, Where::Both][rng.usize(..4)],
        };
        let parent_mode = |p: &Path| {
            std::fs::metadata(plain.join(p.parent().unwrap_or(Path::new(""))))
                .map(|m| m.mode() & 0o7777)
                .unwrap_or(0o755)
        };
        let put = |branch: &Path, node: &Node| {
            let target = branch.join(rel);
            if let Some(parent) = target.parent()
                && !parent.exists()
            {
                std::fs::create_dir_all(parent).expect("mkdir -p");
                std::fs::set_permissions(parent, std::fs::Permissions::from_mode(parent_mode(rel)))
                    .expect("chmod");
            }
            write_node(&target, node);
            target
        };
        let shown = match place {
            Where::Lower => put(&ro, node),
            Where::Upper => put(&rw, node),
            Where::Both => {
                put(
                    &ro,
                    &Node::File {
                        mode: 0o644,
                        data: b"stale lower copy that must stay hidden".to_vec(),
                    },
                );
                put(&rw, node)
            }
        };
        if let Node::File { data, mode } = node
            && data.len() >= 16
            && rng.u8(..3) != 0
        {
            unify.entry((data.clone(), *mode)).or_default().push(shown);
        }
    }
    // Hidden noise: lower entries whited out from above, and an opaque directory.
    std::fs::create_dir_all(ro.join("gone/deep")).expect("mkdir");
    std::fs::write(ro.join("gone/deep/file"), b"hidden").expect("write");
    std::fs::write(ro.join("gone-file"), b"hidden").expect("write");
    std::fs::write(rw.join(".wh.gone"), b"").expect("whiteout");
    std::fs::write(rw.join(".wh.gone-file"), b"").expect("whiteout");
    std::fs::create_dir_all(ro.join("opaque")).expect("mkdir");
    std::fs::write(ro.join("opaque/hidden"), b"hidden").expect("write");
    std::fs::create_dir_all(rw.join("opaque")).expect("mkdir");
    std::fs::write(rw.join("opaque/.wh..wh..opq"), b"").expect("marker");
    std::fs::write(rw.join("opaque/seen"), b"seen").expect("write");
    std::fs::create_dir_all(plain.join("opaque")).expect("mkdir");
    std::fs::write(plain.join("opaque/seen"), b"seen").expect("write");
    // Hard links the guest made (in the writable branch: a copy-up would split lower ones,
    // as it does in overlayfs without index=on).
    std::fs::create_dir_all(rw.join("links")).expect("mkdir");
    std::fs::create_dir_all(plain.join("links")).expect("mkdir");
    for base in [&rw, &plain] {
        std::fs::write(base.join("links/a"), b"linked").expect("write");
        std::fs::hard_link(base.join("links/a"), base.join("links/b")).expect("link");
    }
    // Unify: identical files become links to one store object; corpus files too.
    let (store, _) = hashstore::Store::init(&store).expect("store");
    let mut objects = Vec::new();
    for group in unify.values() {
        let refs: Vec<&Path> = group.iter().map(PathBuf::as_path).collect();
        objects.push(cowfs::unify_files(&store, &refs).expect("unify"));
    }
    for entry in std::fs::read_dir(ro.join("etc")).expect("etc") {
        let p = entry.expect("entry").path();
        if p.is_file() && std::fs::metadata(&p).expect("stat").len() >= 16 {
            objects.push(cowfs::unify_files(&store, &[&p]).expect("unify"));
        }
    }
    objects
}

// ----- operations --------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Create(PathBuf, u32, Vec<u8>),
    Write(PathBuf, u64, Vec<u8>),
    Truncate(PathBuf, u64),
    OpenTrunc(PathBuf, Vec<u8>),
    Rename(PathBuf, PathBuf),
    Link(PathBuf, PathBuf),
    Unlink(PathBuf),
    Mkdir(PathBuf, u32),
    Rmdir(PathBuf),
    Chmod(PathBuf, u32),
    SetXattr(PathBuf, String, Vec<u8>),
    RemoveXattr(PathBuf, String),
    Symlink(OsString, PathBuf),
    Fsync(PathBuf),
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Create(p, m, d) => write!(f, "create {} {m:o} ({} bytes)", p.display(), d.len()),
            Op::Write(p, o, d) => write!(f, "write {} @{o} ({} bytes)", p.display(), d.len()),
            Op::Truncate(p, s) => write!(f, "truncate {} {s}", p.display()),
            Op::OpenTrunc(p, d) => write!(f, "open O_TRUNC {} ({} bytes)", p.display(), d.len()),
            Op::Rename(a, b) => write!(f, "rename {} {}", a.display(), b.display()),
            Op::Link(a, b) => write!(f, "link {} {}", a.display(), b.display()),
            Op::Unlink(p) => write!(f, "unlink {}", p.display()),
            Op::Mkdir(p, m) => write!(f, "mkdir {} {m:o}", p.display()),
            Op::Rmdir(p) => write!(f, "rmdir {}", p.display()),
            Op::Chmod(p, m) => write!(f, "chmod {} {m:o}", p.display()),
            Op::SetXattr(p, n, v) => write!(f, "setxattr {} {n} ({} bytes)", p.display(), v.len()),
            Op::RemoveXattr(p, n) => write!(f, "removexattr {} {n}", p.display()),
            Op::Symlink(t, p) => write!(f, "symlink {} -> {t:?}", p.display()),
            Op::Fsync(p) => write!(f, "fsync {}", p.display()),
        }
    }
}

impl Op {
    /// Paths whose state the operation may change (compared after it).
    fn paths(&self) -> Vec<&Path> {
        match self {
            Op::Rename(a, b) | Op::Link(a, b) => vec![a, b],
            Op::Create(p, ..)
            | Op::Write(p, ..)
            | Op::Truncate(p, _)
            | Op::OpenTrunc(p, _)
            | Op::Unlink(p)
            | Op::Mkdir(p, _)
            | Op::Rmdir(p)
            | Op::Chmod(p, _)
            | Op::SetXattr(p, ..)
            | Op::RemoveXattr(p, _)
            | Op::Symlink(_, p)
            | Op::Fsync(p) => vec![p],
        }
    }

    /// Operations that modify a file in place (its inode number must not change).
    fn modifies_in_place(&self) -> Option<&Path> {
        match self {
            Op::Write(p, ..)
            | Op::Truncate(p, _)
            | Op::OpenTrunc(p, _)
            | Op::Chmod(p, _)
            | Op::SetXattr(p, ..) => Some(p),
            _ => None,
        }
    }
}

fn errno(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

fn apply(root: &Path, op: &Op) -> Result<(), i32> {
    let p = |rel: &Path| root.join(rel);
    let r: std::io::Result<()> = match op {
        Op::Create(rel, mode, data) => (|| {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(*mode)
                .open(p(rel))?;
            f.write_all(data)
        })(),
        Op::Write(rel, off, data) => (|| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(p(rel))?
                .write_all_at(data, *off)
        })(),
        Op::Truncate(rel, size) => (|| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(p(rel))?
                .set_len(*size)
        })(),
        Op::OpenTrunc(rel, data) => (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(p(rel))?;
            f.write_all(data)
        })(),
        Op::Rename(a, b) => std::fs::rename(p(a), p(b)),
        Op::Link(a, b) => std::fs::hard_link(p(a), p(b)),
        Op::Unlink(rel) => std::fs::remove_file(p(rel)),
        Op::Mkdir(rel, mode) => (|| {
            std::fs::create_dir(p(rel))?;
            std::fs::set_permissions(p(rel), std::fs::Permissions::from_mode(*mode))
        })(),
        Op::Rmdir(rel) => std::fs::remove_dir(p(rel)),
        Op::Chmod(rel, mode) => {
            std::fs::set_permissions(p(rel), std::fs::Permissions::from_mode(*mode))
        }
        Op::SetXattr(rel, name, value) => xattr::set(&p(rel), name, value),
        Op::RemoveXattr(rel, name) => xattr::remove(&p(rel), name),
        Op::Symlink(target, rel) => std::os::unix::fs::symlink(target, p(rel)),
        Op::Fsync(rel) => (|| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(p(rel))?
                .sync_all()
        })(),
    };
    r.map_err(errno)
}

mod xattr {
    //! Minimal no-follow xattr calls on paths (the test's own, independent of cowfs code).
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    fn c(p: &Path) -> CString {
        CString::new(p.as_os_str().as_bytes()).expect("path")
    }

    pub fn set(path: &Path, name: &str, value: &[u8]) -> std::io::Result<()> {
        let n = CString::new(name).expect("name");
        // SAFETY: NUL-terminated strings and a valid buffer.
        let r = unsafe {
            libc::lsetxattr(
                c(path).as_ptr(),
                n.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    pub fn remove(path: &Path, name: &str) -> std::io::Result<()> {
        let n = CString::new(name).expect("name");
        // SAFETY: NUL-terminated strings.
        let r = unsafe { libc::lremovexattr(c(path).as_ptr(), n.as_ptr()) };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// All (name, value) pairs; `all` also includes non-`user.` names.
    pub fn list(path: &Path) -> Vec<(String, Vec<u8>)> {
        let mut buf = vec![0u8; 65536];
        // SAFETY: buffer of the given size.
        let n = unsafe { libc::llistxattr(c(path).as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Vec::new();
        }
        buf.truncate(n as usize);
        let mut out = Vec::new();
        for name in buf.split(|&b| b == 0).filter(|n| !n.is_empty()) {
            let name = String::from_utf8_lossy(name).into_owned();
            let cname = CString::new(name.clone()).expect("name");
            let mut v = vec![0u8; 65536];
            // SAFETY: buffer of the given size.
            let len = unsafe {
                libc::lgetxattr(
                    c(path).as_ptr(),
                    cname.as_ptr(),
                    v.as_mut_ptr().cast(),
                    v.len(),
                )
            };
            v.truncate(len.max(0) as usize);
            out.push((name, v));
        }
        out
    }
}

/// A name to create: mostly short ones that collide with existing entries, sometimes a
/// 255-byte one or one that is not UTF-8.
fn new_name(rng: &mut fastrand::Rng) -> OsString {
    match rng.u8(..20) {
        0 => OsString::from("L".repeat(255)),
        1 => OsString::from_vec(vec![b'n', 0xe9, b'0' + rng.u8(..3)]),
        _ => OsString::from(format!(
            "{}{}",
            ["a", "b", "c", "f1", "d0", "x"][rng.usize(..6)],
            rng.u8(..4)
        )),
    }
}

fn gen_op(rng: &mut fastrand::Rng, files: &[PathBuf], dirs: &[PathBuf], all: &[PathBuf]) -> Op {
    let pick = |rng: &mut fastrand::Rng, v: &[PathBuf]| v[rng.usize(..v.len())].clone();
    let fresh = |rng: &mut fastrand::Rng| {
        let d = pick(rng, dirs);
        d.join(new_name(rng))
    };
    let file = |rng: &mut fastrand::Rng| {
        if files.is_empty() {
            fresh(rng)
        } else {
            pick(rng, files)
        }
    };
    let data = |rng: &mut fastrand::Rng| {
        let len = if rng.bool() {
            rng.usize(1..512)
        } else {
            rng.usize(512..70_000)
        };
        random_bytes(rng, len)
    };
    match rng.u8(..100) {
        0..=11 => Op::Create(fresh(rng), [0o644, 0o600, 0o755][rng.usize(..3)], data(rng)),
        12..=27 => {
            let f = file(rng);
            Op::Write(f, rng.u64(..80_000), data(rng))
        }
        28..=34 => Op::Truncate(file(rng), rng.u64(..90_000)),
        35..=39 => Op::OpenTrunc(file(rng), data(rng)),
        40..=51 => {
            let from = pick(rng, all);
            let to = if rng.u8(..3) == 0 {
                pick(rng, all)
            } else {
                fresh(rng)
            };
            Op::Rename(from, to)
        }
        52..=57 => Op::Link(file(rng), fresh(rng)),
        58..=65 => Op::Unlink(pick(rng, all)),
        66..=71 => Op::Mkdir(fresh(rng), [0o755, 0o700, 0o1777][rng.usize(..3)]),
        // (dirs[0] is the tree's root: a mountpoint cannot be removed, a plain dir can.)
        72..=77 if dirs.len() > 1 => Op::Rmdir(pick(rng, &dirs[1..])),
        78..=84 => Op::Chmod(
            pick(rng, all),
            [0o644, 0o600, 0o755, 0o2750, 0o4711][rng.usize(..5)],
        ),
        85..=89 => {
            let len = rng.usize(0..64);
            Op::SetXattr(
                file(rng),
                format!("user.k{}", rng.u8(..3)),
                random_bytes(rng, len),
            )
        }
        90..=92 => Op::RemoveXattr(file(rng), format!("user.k{}", rng.u8(..3))),
        93..=96 => Op::Symlink(pick(rng, all).into_os_string(), fresh(rng)),
        _ => Op::Fsync(file(rng)),
    }
}

// ----- comparison --------------------------------------------------------------------------

#[derive(Debug, PartialEq)]
struct Snap {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    size: Option<u64>,
    nlink: Option<u64>,
    content: Option<String>,
    target: Option<OsString>,
    xattrs: Vec<(String, Vec<u8>)>,
    listing: Option<Vec<OsString>>,
}

fn snap(path: &Path) -> Option<Snap> {
    let m = std::fs::symlink_metadata(path).ok()?;
    let ft = m.file_type();
    let kind = if ft.is_dir() {
        "dir"
    } else if ft.is_file() {
        "file"
    } else if ft.is_symlink() {
        "symlink"
    } else {
        "special"
    };
    let mut xattrs: Vec<(String, Vec<u8>)> = xattr::list(path)
        .into_iter()
        .filter(|(n, _)| n.starts_with("user."))
        .collect();
    xattrs.sort();
    Some(Snap {
        kind,
        mode: m.mode(),
        uid: m.uid(),
        gid: m.gid(),
        size: (!ft.is_dir()).then_some(m.len()),
        // A merged directory's link count is not meaningful (it reports 1, like overlayfs).
        nlink: (!ft.is_dir()).then_some(m.nlink()),
        content: ft.is_file().then(|| {
            blake3::hash(&std::fs::read(path).unwrap_or_default())
                .to_hex()
                .to_string()
        }),
        target: ft.is_symlink().then(|| {
            std::fs::read_link(path)
                .map(PathBuf::into_os_string)
                .unwrap_or_default()
        }),
        xattrs,
        listing: ft.is_dir().then(|| {
            let mut names: Vec<OsString> = std::fs::read_dir(path)
                .map(|r| r.filter_map(|e| e.ok().map(|e| e.file_name())).collect())
                .unwrap_or_default();
            names.sort();
            names
        }),
    })
}

/// Every path of a tree (relative), by kind.
fn walk(root: &Path) -> (Vec<PathBuf>, Vec<PathBuf>, Vec<PathBuf>) {
    let (mut files, mut dirs, mut all) = (Vec::new(), vec![PathBuf::new()], Vec::new());
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(root.join(&rel)) else {
            continue;
        };
        let mut names: Vec<OsString> = rd.filter_map(|e| e.ok().map(|e| e.file_name())).collect();
        names.sort();
        for name in names {
            let p = rel.join(&name);
            let m = std::fs::symlink_metadata(root.join(&p)).expect("stat");
            if m.is_dir() {
                dirs.push(p.clone());
                stack.push(p.clone());
            } else if m.is_file() {
                files.push(p.clone());
            }
            all.push(p);
        }
    }
    (files, dirs, all)
}

struct Run {
    seed: u64,
    step: usize,
    log: Vec<String>,
}

impl Run {
    fn fail(&self, what: String) -> ! {
        let tail: Vec<&String> = self
            .log
            .iter()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        panic!(
            "differential tester: seed {} step {}: {what}\nlast operations:\n  {}\nreplay: COWFS_FSX_SEED={} COWFS_FSX_OPS={} cargo test --test differential -- --nocapture",
            self.seed,
            self.step,
            tail.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n  "),
            self.seed,
            self.step + 1,
        );
    }

    fn compare(&self, plain: &Path, mnt: &Path, rel: &Path) {
        let (a, b) = (snap(&plain.join(rel)), snap(&mnt.join(rel)));
        if a != b {
            self.fail(format!(
                "{} differs:\n  plain: {a:?}\n  union: {b:?}",
                rel.display()
            ));
        }
        if let Some(b) = &b
            && xattr::list(&mnt.join(rel))
                .iter()
                .any(|(n, _)| n.starts_with("trusted.cowfs") || n.starts_with("trusted.overlay"))
        {
            self.fail(format!(
                "{} shows a private xattr: {:?}",
                rel.display(),
                b.xattrs
            ));
        }
    }

    fn compare_all(&self, plain: &Path, mnt: &Path) {
        let (_, _, all) = walk(plain);
        self.compare(plain, mnt, Path::new(""));
        for rel in &all {
            self.compare(plain, mnt, rel);
        }
        let (_, _, union_all) = walk(mnt);
        if union_all != all {
            self.fail(format!(
                "trees differ:\n  plain: {all:?}\n  union: {union_all:?}"
            ));
        }
    }
}

/// Runs one seed; returns the number of operations applied.
fn run_seed(seed: u64, ops: usize) -> usize {
    let mut rng = fastrand::Rng::with_seed(seed);
    let l = Layout::new();
    let tree = generate_tree(&mut rng);
    let objects = build(&mut rng, &tree, &l);
    let before: Vec<_> = objects.iter().map(|o| fingerprint(o)).collect();
    let plain = l.dir("plain");
    let m = Mounted::new(&format!("{},threads=4", l.dirs()), &l.dir("mnt"));
    let mut run = Run {
        seed,
        step: 0,
        log: Vec::new(),
    };
    run.compare_all(&plain, &m.mnt);
    let mut inodes: BTreeMap<PathBuf, u64> = BTreeMap::new();
    for step in 0..ops {
        run.step = step;
        let (files, dirs, all) = walk(&plain);
        let op = gen_op(&mut rng, &files, &dirs, &all);
        if let Some(p) = op.modifies_in_place()
            && let Ok(meta) = std::fs::symlink_metadata(m.mnt.join(p))
        {
            inodes.insert(p.to_path_buf(), meta.ino());
        }
        let union_result = apply(&m.mnt, &op);
        let merged_dir_rename = matches!(op, Op::Rename(..)) && union_result == Err(libc::EXDEV);
        let plain_result = if merged_dir_rename {
            Err(libc::EXDEV)
        } else {
            apply(&plain, &op)
        };
        run.log.push(format!(
            "{op} -> union {union_result:?}, plain {plain_result:?}"
        ));
        if union_result != plain_result {
            run.fail(format!(
                "{op}: union {union_result:?}, plain {plain_result:?}"
            ));
        }
        for p in op.paths() {
            run.compare(&plain, &m.mnt, p);
            run.compare(&plain, &m.mnt, p.parent().unwrap_or(Path::new("")));
        }
        if let Some(p) = op.modifies_in_place()
            && let (Some(old), Ok(meta)) = (inodes.get(p), std::fs::symlink_metadata(m.mnt.join(p)))
            && *old != meta.ino()
        {
            run.fail(format!(
                "{op}: the inode number changed from {old} to {}",
                meta.ino()
            ));
        }
        if step % 25 == 24 {
            run.compare_all(&plain, &m.mnt);
        }
    }
    run.step = ops;
    run.compare_all(&plain, &m.mnt);
    let after: Vec<_> = objects.iter().map(|o| fingerprint(o)).collect();
    if before != after {
        run.fail("a store object changed".to_string());
    }
    // Everything still right after a remount (nothing lived only in the daemon's memory).
    m.unmount();
    let m = Mounted::new(&l.dirs(), &l.dir("mnt"));
    run.compare_all(&plain, &m.mnt);
    let _ = name_check(&m.mnt);
    ops
}

/// The union never shows its own names.
fn name_check(mnt: &Path) -> usize {
    let (_, _, all) = walk(mnt);
    for p in &all {
        let name = p.file_name().map(OsStr::as_bytes).unwrap_or_default();
        assert!(
            !name.starts_with(b".wh.") && !name.starts_with(b".cowfs.tmp."),
            "{} visible",
            p.display()
        );
    }
    all.len()
}
