//! Issue 4, test 6: a real Debian guest root (corpus g3, every file unified into a store) as the
//! read-only branch under an empty writable one, used for real through chroot. The guest is
//! unified by the real `vhashify`.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// Runs the real `vhashify` over `root` without the default excludes, so every regular file of
/// at least 16 bytes becomes a store object (files without a twin become objects of their own).
/// Returns how many objects the store holds.
fn unify_tree(store: &Path, root: &Path) -> usize {
    ok(Command::new(cowfs::bin("vhashify"))
        .args(["--no-default-excludes", "--store"])
        .arg(store)
        .arg(root));
    std::fs::read_dir(store.join("objects"))
        .expect("objects/")
        .map(|d| {
            std::fs::read_dir(d.expect("entry").path())
                .expect("fan-out")
                .count()
        })
        .sum()
}

#[test]
fn corpus_guest_runs_dpkg_shell_and_python_through_the_union() {
    let l = Layout::new();
    let (lower, upper, store) = (l.dir("ro"), l.dir("rw"), l.dir("store"));
    cowfs::restore_guest("g3", &lower)
        .expect("corpus guest g3 (scripts/install-deps.sh builds it)");
    let unified = unify_tree(&store, &lower);
    assert!(unified > 5000, "{unified} files unified");
    let motd_before = fingerprint(&lower.join("etc/motd"));
    let motd = std::fs::read(lower.join("etc/motd")).expect("motd");
    let m = l.mount();

    let out = ok(Command::new("chroot").arg(&m.mnt).args(["dpkg", "-l"]));
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.lines().any(|l| l.starts_with("ii  bash ")),
        "dpkg -l lists bash"
    );
    assert!(listing.lines().filter(|l| l.starts_with("ii ")).count() > 100);
    let out = ok(Command::new("chroot")
        .arg(&m.mnt)
        .args(["dpkg", "-L", "coreutils"]));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.ends_with("bin/ls"))
    );

    ok(Command::new("chroot")
        .arg(&m.mnt)
        .args(["sh", "-c", "echo x >> /etc/motd"]));
    let mut want = motd.clone();
    want.extend_from_slice(b"x\n");
    assert_eq!(std::fs::read(m.path("etc/motd")).expect("read"), want);
    assert_eq!(
        std::fs::read(upper.join("etc/motd")).expect("copied up"),
        want
    );
    assert_eq!(
        fingerprint(&lower.join("etc/motd")),
        motd_before,
        "lower branch and its object unchanged"
    );

    let out = ok(Command::new("chroot").arg(&m.mnt).args([
        "python3",
        "-c",
        "import json, hashlib; print(json.dumps({'sum': 2 + 2, 'sha': hashlib.sha256(b'cowfs').hexdigest()[:8]}))",
    ]));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"{"sum": 4, "sha": "d31ac141"}"#
    );

    // Package-manager style changes: a new directory tree, a rename over an existing file.
    ok(Command::new("chroot").arg(&m.mnt).args([
        "sh",
        "-c",
        "mkdir -p /opt/app/bin && cp /usr/bin/true /opt/app/bin/t && /opt/app/bin/t && \
         cp /etc/hostname /etc/hostname.new && echo guest3 > /etc/hostname.new && mv /etc/hostname.new /etc/hostname",
    ]));
    assert_eq!(
        std::fs::read_to_string(m.path("etc/hostname")).expect("read"),
        "guest3\n"
    );
    assert!(upper.join("opt/app/bin/t").is_file());
    // Only what changed landed in the writable branch.
    let out = ok(Command::new("find").arg(&upper).args([
        "-type",
        "f",
        "-not",
        "-path",
        "*/.cowfs.tmp.work*",
    ]));
    let changed: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_start_matches(&*upper.to_string_lossy()).to_string())
        .collect();
    let mut changed = changed;
    changed.sort();
    assert_eq!(
        changed,
        vec!["/etc/hostname", "/etc/motd", "/opt/app/bin/t"],
        "{changed:?}"
    );
}
