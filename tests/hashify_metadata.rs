//! Metadata-safe unification with real files: two guests whose files differ only in owner,
//! group, mode, mtime (even by a nanosecond), one xattr, a capability or an ACL stay apart;
//! identical ones (capabilities and ACLs included) are unified; nothing that stat, getfattr or
//! getcap shows changes. With --ignore-mtime, the mtime-only differences are unified too.

mod store_support;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use cowfs::listing::{ListingOptions, diff, list_tree};
use store_support::*;

/// (name, unified expected without --ignore-mtime, unified expected with it)
const CASES: &[(&str, bool, bool)] = &[
    ("same", true, true),
    ("setuid-same", true, true),
    ("mode", false, false),
    ("owner", false, false),
    ("group", false, false),
    ("mtime", false, true),
    ("mtime-ns", false, true),
    ("xattr-extra", false, false),
    ("xattr-value", false, false),
    ("xattr-same", true, true),
    ("cap-extra", false, false),
    ("cap-same", true, true),
    ("acl-extra", false, false),
    ("acl-same", true, true),
];

fn tool(cmd: &str, args: &[&str], path: &Path) {
    let out = Command::new(cmd)
        .args(args)
        .arg(path)
        .output()
        .unwrap_or_else(|e| {
            panic!("{cmd} must be installed (scripts/install-deps.sh installs it): {e}")
        });
    ok(out);
}

fn build(root: &Path, second: bool) {
    for (i, (name, _, _)) in CASES.iter().enumerate() {
        let path = root.join("usr/lib").join(name);
        let content = bytes(&format!("content of case {i}"), 4096 + i * 100);
        let mut meta = Meta::default();
        match (*name, second) {
            ("setuid-same", _) => meta.mode = 0o4755,
            ("mode", true) => meta.mode = 0o600,
            ("owner", true) => meta.uid = 1000,
            ("group", true) => meta.gid = 1000,
            ("mtime", true) => meta.mtime += 1,
            ("xattr-extra", true) => meta.xattrs.push(("user.origin", b"vs02".to_vec())),
            ("xattr-value", _) => meta.xattrs.push((
                "user.origin",
                if second { b"b".to_vec() } else { b"a".to_vec() },
            )),
            ("xattr-same", _) => meta.xattrs.push(("user.origin", b"template".to_vec())),
            _ => {}
        }
        put(&path, &content, &meta);
        match (*name, second) {
            ("cap-extra", true) | ("cap-same", _) => {
                tool("setcap", &["cap_net_raw+ep"], &path);
                set_mtime(&path, meta.mtime);
            }
            ("acl-extra", true) | ("acl-same", _) => {
                tool("setfacl", &["-m", "u:1000:r"], &path);
                set_mtime(&path, meta.mtime);
            }
            ("mtime-ns", true) => {
                let t = nix::sys::time::TimeSpec::new(meta.mtime, 1);
                nix::sys::stat::utimensat(
                    nix::fcntl::AT_FDCWD,
                    &path,
                    &t,
                    &t,
                    nix::sys::stat::UtimensatFlags::NoFollowSymlink,
                )
                .expect("utimensat");
            }
            _ => {}
        }
    }
    for d in ["usr/lib", "usr", ""] {
        set_mtime(&root.join(d), 1_650_000_000);
    }
}

fn getcap(path: &Path) -> String {
    ok(Command::new("getcap").arg(path).output().expect("getcap"))
        .replace(&path.display().to_string(), "")
}

fn run_case(ignore_mtime: bool) {
    let t = tempfile::tempdir().expect("tempdir");
    let a = t.path().join("a");
    let b = t.path().join("b");
    build(&a, false);
    build(&b, true);
    let opts = ListingOptions {
        ignore_file_mtime: ignore_mtime,
        ..ListingOptions::default()
    };
    let before = [
        list_tree(&a, opts).expect("list"),
        list_tree(&b, opts).expect("list"),
    ];
    let caps_before: Vec<String> = CASES
        .iter()
        .flat_map(|(n, _, _)| [a.join("usr/lib").join(n), b.join("usr/lib").join(n)])
        .map(|p| getcap(&p))
        .collect();
    let store = t.path().join("store");
    let mut args: Vec<String> = vec![
        "--json".into(),
        "--store".into(),
        store.display().to_string(),
    ];
    if ignore_mtime {
        args.push("--ignore-mtime".into());
    }
    args.push(a.display().to_string());
    args.push(b.display().to_string());
    let r = json(vhashify(&args));
    assert_eq!(
        r["report"]["skipped"].as_array().map(Vec::len),
        Some(0),
        "{r}"
    );

    for (name, same, same_ignoring_mtime) in CASES {
        let expect = if ignore_mtime {
            *same_ignoring_mtime
        } else {
            *same
        };
        let ia = std::fs::metadata(a.join("usr/lib").join(name))
            .expect("stat")
            .ino();
        let ib = std::fs::metadata(b.join("usr/lib").join(name))
            .expect("stat")
            .ino();
        assert_eq!(
            ia == ib,
            expect,
            "case {name}: unified = {}, expected {expect}",
            ia == ib
        );
    }
    for (dir, b4) in [&a, &b].iter().zip(&before) {
        let after = list_tree(dir, opts).expect("list");
        let d = diff(b4, &after, 10);
        assert!(d.is_empty(), "{}:\n{}", dir.display(), d.join("\n"));
    }
    let caps_after: Vec<String> = CASES
        .iter()
        .flat_map(|(n, _, _)| [a.join("usr/lib").join(n), b.join("usr/lib").join(n)])
        .map(|p| getcap(&p))
        .collect();
    assert_eq!(caps_before, caps_after);
    assert!(
        caps_after.iter().any(|c| c.contains("cap_net_raw")),
        "{caps_after:?}"
    );
    ok(cowfs(["store", "verify", store.to_str().expect("utf8")]));
}

#[test]
fn only_identical_metadata_is_unified() {
    run_case(false);
}

#[test]
fn ignore_mtime_unifies_mtime_only_differences() {
    run_case(true);
}
