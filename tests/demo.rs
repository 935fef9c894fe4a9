//! `cowfs demo`: builds two guests, unifies them, shows vdu before/after and a real saving;
//! removes its temporary directory unless --keep.

mod store_support;

use store_support::*;

fn sizes(out: &str) -> (f64, f64) {
    // "Disk usage of guests + store: 6.44 MiB before, 3.79 MiB after: …"
    let line = out
        .lines()
        .find(|l| l.starts_with("Disk usage of guests + store:"))
        .unwrap_or_else(|| panic!("no summary line in:\n{out}"));
    let mib = |s: &str| -> f64 {
        let mut it = s.split_whitespace();
        let n: f64 = it.next().and_then(|n| n.parse().ok()).expect("number");
        match it.next() {
            Some("KiB") => n / 1024.0,
            Some("MiB") => n,
            Some("GiB") => n * 1024.0,
            _ => n / 1024.0 / 1024.0,
        }
    };
    let rest = line.trim_start_matches("Disk usage of guests + store:");
    let before = rest.split(" before").next().expect("before");
    let after = rest
        .split(", ")
        .nth(1)
        .and_then(|s| s.split(" after").next())
        .expect("after");
    (mib(before), mib(after))
}

#[test]
fn demo_saves_space_and_cleans_up() {
    let out = ok(cowfs(["demo"]));
    assert!(
        out.contains("Before (vdu):") && out.contains("After (vdu):"),
        "{out}"
    );
    assert!(out.contains("unified    /usr/lib/libdemo.so.1"), "{out}");
    assert!(out.contains("kept apart /usr/bin/greet"), "{out}");
    let (before, after) = sizes(&out);
    assert!(after < before, "{out}");
    assert!(!out.contains("Kept "));

    let kept = ok(cowfs(["demo", "--keep"]));
    let dir = kept
        .lines()
        .find_map(|l| l.strip_prefix("Kept "))
        .and_then(|l| l.split(" (").next())
        .unwrap_or_else(|| panic!("no Kept line:\n{kept}"))
        .to_string();
    let dir = std::path::Path::new(&dir);
    assert!(dir.join("store/format").is_file());
    ok(cowfs([
        "store",
        "verify",
        dir.join("store").to_str().expect("utf8"),
    ]));
    std::fs::remove_dir_all(dir).expect("cleanup");
}

#[test]
fn demo_without_root_says_it_needs_root() {
    // As README says: without root the demo stops at once, with a clear message.
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(cowfs::bin("cowfs"))
        .arg("demo")
        .output()
        .expect("setpriv runs");
    let err = fails(out);
    assert!(err.contains("cowfs demo needs root"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
