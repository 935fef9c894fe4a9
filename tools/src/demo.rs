//! `cowfs demo`: the main job on an embedded example. Two small guest roots are built in a
//! temporary directory — some files identical, some differing only in mode, owner, mtime or an
//! xattr — unified into a store next to them, and the space used is shown before and after.
//! Then one guest is mounted as a union and a unified file is modified through the mount: the
//! write breaks the link (copy-on-write), and the other guest and the store object stay as they
//! were.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use hashstore::du::{self, DuReport};
use hashstore::unify::{self, Options};
use hashstore::walk::Root;

use crate::common::human_size;
use crate::progress::Bar;

/// Build two small guest roots in a temporary directory, unify them into a store there, and show
/// the space they use before and after (vdu) and what was saved. Needs root (objects are marked
/// with trusted.* xattrs; the example has files of several owners).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Keep the temporary directory (guests and store) and print where it is.
    #[arg(long)]
    pub keep: bool,
}

/// How a file of the second guest differs from the first one's.
#[derive(Clone, Copy)]
enum Twist {
    Same,
    Mode(u32),
    Owner(u32),
    Mtime(i64),
    Xattr(&'static str, &'static str),
}

impl Twist {
    fn describe(self) -> String {
        match self {
            Twist::Same => "identical".into(),
            Twist::Mode(m) => format!("mode {m:o} in vs02"),
            Twist::Owner(u) => format!("owner uid {u} in vs02"),
            Twist::Mtime(_) => "different mtime in vs02".into(),
            Twist::Xattr(n, v) => format!("xattr {n}={v} in vs02"),
        }
    }
}

struct DemoFile {
    path: &'static str,
    mode: u32,
    content: Vec<u8>,
    twist: Twist,
}

/// Deterministic bytes that look like a binary (BLAKE3 in XOF mode over a seed).
fn blob(seed: &str, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(seed.as_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

/// Deterministic text: numbered lines of a word list.
fn text(words: &[&str], lines: usize) -> Vec<u8> {
    let mut s = String::new();
    for i in 0..lines {
        let w = words[i % words.len()];
        let v = words[(i * 7 + 3) % words.len()];
        s.push_str(&format!("{i:06} {w} {v} {}\n", i * 31 % 997));
    }
    s.into_bytes()
}

fn files() -> Vec<DemoFile> {
    let words = [
        "template", "guest", "object", "inode", "shared", "private", "copy", "write", "store",
        "branch", "whiteout", "context",
    ];
    vec![
        DemoFile {
            path: "etc/os-release",
            mode: 0o644,
            content: b"PRETTY_NAME=\"Demo GNU/Linux 1 (cowfs)\"\nNAME=\"Demo GNU/Linux\"\nVERSION_ID=\"1\"\nID=demo\n".to_vec(),
            twist: Twist::Same,
        },
        DemoFile {
            path: "usr/lib/libdemo.so.1",
            mode: 0o644,
            content: blob("libdemo", 768 * 1024),
            twist: Twist::Same,
        },
        DemoFile {
            path: "usr/lib/libcrypto-demo.so.3",
            mode: 0o644,
            content: blob("libcrypto-demo", 1536 * 1024),
            twist: Twist::Same,
        },
        DemoFile {
            path: "usr/bin/demo-tool",
            mode: 0o755,
            content: blob("demo-tool", 256 * 1024),
            twist: Twist::Same,
        },
        DemoFile {
            path: "usr/share/dict/demo-words",
            mode: 0o644,
            content: text(&words, 12_000),
            twist: Twist::Same,
        },
        DemoFile {
            path: "usr/bin/greet",
            mode: 0o755,
            content: b"#!/bin/sh\n# Greets whoever runs it.\necho \"hello from $(hostname)\"\n".to_vec(),
            twist: Twist::Mode(0o700),
        },
        DemoFile {
            path: "etc/app.conf",
            mode: 0o640,
            content: b"# demo application\nlisten = 127.0.0.1:8080\nworkers = 4\nlog = /var/log/app.log\n".to_vec(),
            twist: Twist::Owner(1000),
        },
        DemoFile {
            path: "usr/share/doc/demo/README",
            mode: 0o644,
            content: text(&words[..6], 400),
            twist: Twist::Mtime(1_600_000_000),
        },
        DemoFile {
            path: "usr/lib/libplugin.so",
            mode: 0o644,
            content: blob("libplugin", 384 * 1024),
            twist: Twist::Xattr("user.origin", "vs02"),
        },
    ]
}

/// A fixed, realistic mtime for the example's files.
const MTIME: i64 = 1_700_000_000;

fn set_mtime(path: &Path, sec: i64) -> Result<()> {
    let t = nix::sys::time::TimeSpec::new(sec, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .with_context(|| format!("cannot set the mtime of {}", path.display()))
}

fn build_guest(root: &Path, second: bool) -> Result<()> {
    for f in files() {
        let path = root.join(f.path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        fs::write(&path, &f.content).with_context(|| format!("cannot write {}", path.display()))?;
        let mut mode = f.mode;
        let mut mtime = MTIME;
        if second {
            match f.twist {
                Twist::Same => {}
                Twist::Mode(m) => mode = m,
                Twist::Owner(uid) => {
                    nix::unistd::chown(&path, Some(nix::unistd::Uid::from_raw(uid)), None)
                        .with_context(|| format!("cannot chown {}", path.display()))?;
                }
                Twist::Mtime(t) => mtime = t,
                Twist::Xattr(name, value) => {
                    let fd = fs::File::open(&path)?;
                    hashstore::sys::fsetxattr(
                        std::os::fd::AsFd::as_fd(&fd),
                        name.as_bytes(),
                        value.as_bytes(),
                    )
                    .with_context(|| format!("cannot set {name} on {}", path.display()))?;
                }
            }
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
        set_mtime(&path, mtime)?;
    }
    // A guest-internal hard link, as util-linux, perl and gzip packages have.
    let tool = root.join("usr/bin/demo-tool");
    fs::hard_link(&tool, root.join("usr/bin/demo-tool-alias"))?;
    Ok(())
}

fn print_usage(title: &str, r: &DuReport) {
    println!("{title}");
    println!("  {:>10} {:>10} {:>10}  GUEST", "OWN", "SHARED", "TOTAL");
    for g in &r.guests {
        let name = g
            .path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        println!(
            "  {:>10} {:>10} {:>10}  {name}",
            human_size(g.own_bytes),
            human_size(g.shared_bytes),
            human_size(g.total_bytes)
        );
    }
}

/// Disk usage of everything under `dirs`, each inode once.
fn footprint(dirs: &[PathBuf]) -> Result<u64> {
    let roots: Vec<Root> = dirs
        .iter()
        .map(|d| Root::open(d).with_context(|| format!("cannot open {}", d.display())))
        .collect::<Result<_>>()?;
    Ok(du::usage_of(&roots, false, 2).total_bytes)
}

/// The unified file the demo modifies through the mount.
const COW_FILE: &str = "etc/os-release";

/// Mounts vs01 as a union, appends to a unified file through the mount and shows that only
/// vs01's view changed: its link to the object was replaced by a private copy.
fn copy_on_write(base: &Path, guests: &[PathBuf], store: &hashstore::Store) -> Result<()> {
    let (vs01, vs02) = (guests[0].join(COW_FILE), guests[1].join(COW_FILE));
    let key = hashstore::mark::read_mark_path(&vs01)
        .with_context(|| format!("cannot read the mark of {}", vs01.display()))?
        .with_context(|| format!("{} is not unified", vs01.display()))?;
    let object = store
        .lookup(&key)?
        .into_iter()
        .map(|row| store.object_path(&row.id))
        .find(|p| same_inode(p, &vs02))
        .with_context(|| format!("no store object is linked from {}", vs02.display()))?;
    let object_hash = file_hash(&object)?;
    let original = fs::read(&vs02)?;

    let mnt = base.join("mnt/vs01");
    fs::create_dir_all(&mnt).with_context(|| format!("cannot create {}", mnt.display()))?;
    let dirs = format!("dirs={}=rw", guests[0].display());
    let options = cowfs_fs::options::parse("none", &[&dirs])?;
    let mount = cowfs_fs::mount::Daemon::mount(&options, &mnt, false)
        .and_then(cowfs_fs::mount::Daemon::spawn)
        .with_context(|| {
            format!(
                "cannot mount vs01 as a union on {} (needs /dev/fuse)",
                mnt.display()
            )
        })?;
    println!("\ncowfs mount -o {dirs} none {}", mnt.display());
    let through = mnt.join(COW_FILE);
    let ino_before = fs::metadata(&through)?.ino();
    let line = b"VARIANT=\"written through the vs01 mount\"\n";
    fs::OpenOptions::new()
        .append(true)
        .open(&through)
        .and_then(|mut f| std::io::Write::write_all(&mut f, line))
        .with_context(|| format!("cannot append to {}", through.display()))?;
    let seen = fs::read(&through)?;
    let ino_after = fs::metadata(&through)?.ino();
    mount.unmount().context("cannot unmount vs01")?;

    println!("  appended a line to /{COW_FILE} through the mount:");
    println!(
        "  vs01 sees its write: {}; inode number through the mount {} ({ino_before} before, {ino_after} after)",
        yes(seen.ends_with(line)),
        if ino_before == ino_after {
            "unchanged"
        } else {
            "CHANGED"
        }
    );
    println!(
        "  vs01's file is now a private copy, no longer the store object: {}",
        yes(!same_inode(&vs01, &object))
    );
    println!(
        "  vs02 still links to the store object and reads the original: {}",
        yes(same_inode(&vs02, &object) && fs::read(&vs02)? == original)
    );
    println!(
        "  the store object's content hash is unchanged: {}",
        yes(file_hash(&object)? == object_hash)
    );
    let verify = hashstore::verify::verify(store, 2)?;
    println!(
        "  cowfs store verify: {} objects, {}",
        verify.objects,
        if verify.is_clean() {
            "all intact"
        } else {
            "PROBLEMS FOUND"
        }
    );
    if !(seen.ends_with(line)
        && ino_before == ino_after
        && same_inode(&vs02, &object)
        && file_hash(&object)? == object_hash
        && verify.is_clean())
    {
        bail!("copy-on-write did not behave as it must (see above)");
    }
    Ok(())
}

fn same_inode(a: &Path, b: &Path) -> bool {
    match (fs::symlink_metadata(a), fs::symlink_metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

fn file_hash(path: &Path) -> Result<blake3::Hash> {
    Ok(blake3::hash(&fs::read(path).with_context(|| {
        format!("cannot read {}", path.display())
    })?))
}

fn yes(ok: bool) -> &'static str {
    if ok { "yes" } else { "NO" }
}

/// Runs the demo.
pub fn run(args: Args) -> Result<ExitCode> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "cowfs demo needs root: store objects carry a trusted.* xattr and the example has files of several owners (try: sudo cowfs demo)"
        );
    }
    let tmp = tempfile::Builder::new()
        .prefix("cowfs-demo-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let base = tmp.path().to_path_buf();
    let guests = vec![base.join("guests/vs01"), base.join("guests/vs02")];
    let store_path = base.join("store");
    build_guest(&guests[0], false)?;
    build_guest(&guests[1], true)?;
    println!(
        "Two guest roots in {}: vs01 and vs02 (vs02 differs in a few files' metadata).",
        base.join("guests").display()
    );

    let before_guests = du::usage(&guests, false, 2)?;
    print_usage("\nBefore (vdu):", &before_guests);
    let before = footprint(&guests)?;

    let roots = unify::open_guests(&guests, &store_path, false)?;
    let (store, _) = hashstore::Store::init(&store_path)?;
    let bar = Bar::new(false);
    let report = unify::unify(&store, &roots, &Options::default(), &bar);
    bar.finish();
    let report = report.context("unification failed")?;
    println!(
        "\nvhashify --store {} vs01 vs02:\n  {} files hashed, {} objects created, {} paths linked to objects, {} reclaimed",
        store_path.display(),
        report.hashed_files,
        report.objects_linked,
        report.links_made,
        human_size(report.bytes_reclaimed)
    );

    let after_guests = du::usage(&guests, false, 2)?;
    print_usage("\nAfter (vdu):", &after_guests);
    let mut all = guests.clone();
    all.push(store_path.clone());
    let after = footprint(&all)?;

    println!("\nWhat was unified (same inode in both guests now) and what was kept apart:");
    let mut lines = BTreeMap::new();
    for f in files() {
        let a = fs::symlink_metadata(guests[0].join(f.path))?;
        let b = fs::symlink_metadata(guests[1].join(f.path))?;
        let verdict = if a.ino() == b.ino() {
            "unified"
        } else {
            "kept apart"
        };
        lines.insert(
            f.path,
            format!("  {verdict:<10} /{} ({})", f.path, f.twist.describe()),
        );
    }
    for l in lines.values() {
        println!("{l}");
    }

    let saved = before.saturating_sub(after);
    println!(
        "\nDisk usage of guests + store: {} before, {} after: {} saved ({:.0} %).",
        human_size(before),
        human_size(after),
        human_size(saved),
        if before > 0 {
            saved as f64 * 100.0 / before as f64
        } else {
            0.0
        }
    );
    copy_on_write(&base, &guests, &store)?;
    let after_cow = du::usage(&guests, false, 2)?;
    print_usage("\nAfter the write through the mount (vdu):", &after_cow);

    if args.keep {
        let kept = tmp.keep();
        println!("Kept {} (guests/ and store/).", kept.display());
    }
    Ok(ExitCode::SUCCESS)
}
