//! vdu: own versus shared space per guest, each inode counted once, the same answer in any
//! argument order, and the -s / -h / -b / --json forms.

mod store_support;

use std::path::Path;

use store_support::*;

fn file(p: &Path, len: usize, seed: &str) {
    put(p, &bytes(seed, len), &Meta::default());
}

#[test]
fn own_and_shared_space_is_counted_once_in_any_order() {
    let t = tempfile::tempdir().expect("tempdir");
    let (a, b, c, outside) = (
        t.path().join("a"),
        t.path().join("b"),
        t.path().join("c"),
        t.path().join("x"),
    );
    // a: a private file, a private pair of hard links (one inode), a file unified with b
    // through the store, a file hard-linked straight into c, and one linked from outside.
    file(&a.join("own"), 10_000, "own a");
    file(&a.join("pair1"), 20_000, "pair");
    std::fs::hard_link(a.join("pair1"), a.join("pair2")).expect("link");
    file(&a.join("common"), 30_000, "common");
    file(&b.join("common"), 30_000, "common");
    file(&b.join("own"), 40_000, "own b");
    file(&a.join("to-c"), 50_000, "to c");
    std::fs::create_dir_all(&c).expect("mkdir");
    std::fs::hard_link(a.join("to-c"), c.join("from-a")).expect("link");
    file(&a.join("from-outside"), 60_000, "outside");
    std::fs::create_dir_all(&outside).expect("mkdir");
    std::fs::hard_link(a.join("from-outside"), outside.join("x")).expect("link");
    let store = t.path().join("store");
    // Unify only a and b (c's inode stays a plain hard link).
    ok(vhashify([
        "--no-default-excludes",
        "--store",
        &store.display().to_string(),
        &a.display().to_string(),
        &b.display().to_string(),
    ]));

    let guests = [&a, &b, &c];
    let run = |order: &[usize]| {
        let mut args = vec!["--json".to_string(), "--apparent-size".into()];
        args.extend(order.iter().map(|&i| guests[i].display().to_string()));
        json(vdu(&args))
    };
    let r = run(&[0, 1, 2]);
    let g = |name: &str, field: &str| {
        let arr = r["guests"].as_array().expect("guests");
        let e = arr
            .iter()
            .find(|e| {
                e["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with(&format!("/{name}")))
            })
            .expect("guest listed");
        num(e, &[field])
    };
    // Directories count as own inodes too: measure them rather than assume their size.
    let dir = |p: &Path| std::fs::metadata(p).expect("stat").len();
    assert_eq!(g("a", "own_bytes"), 10_000 + 20_000 + dir(&a));
    assert_eq!(g("a", "own_inodes"), 3);
    assert_eq!(g("a", "shared_bytes"), 30_000 + 50_000 + 60_000);
    assert_eq!(g("a", "shared_inodes"), 3);
    assert_eq!(g("b", "own_bytes"), 40_000 + dir(&b));
    assert_eq!(g("b", "shared_bytes"), 30_000);
    assert_eq!(g("c", "own_bytes"), dir(&c));
    assert_eq!(g("c", "shared_bytes"), 50_000);
    for name in ["a", "b", "c"] {
        assert_eq!(
            g(name, "own_bytes") + g(name, "shared_bytes"),
            g(name, "total_bytes")
        );
    }
    // Every inode of all three together once.
    assert_eq!(
        num(&r, &["total_bytes"]),
        10_000 + 20_000 + 30_000 + 40_000 + 50_000 + 60_000 + dir(&a) + dir(&b) + dir(&c)
    );
    // Any order, same numbers per guest.
    for order in [[2, 1, 0], [1, 2, 0], [0, 2, 1]] {
        let other = run(&order);
        for e in r["guests"].as_array().expect("guests") {
            let same = other["guests"]
                .as_array()
                .expect("guests")
                .iter()
                .find(|o| o["path"] == e["path"])
                .expect("listed");
            assert_eq!(e, same, "order {order:?}");
        }
    }
    // A guest alone: what it shares with anyone is still shared.
    let alone = json(vdu(["--json", "--apparent-size", &b.display().to_string()]));
    assert_eq!(num(&alone["guests"][0], &["shared_bytes"]), 30_000);

    // Text forms.
    let s = ok(vdu([
        "-s",
        "-b",
        "--apparent-size",
        &a.display().to_string(),
        &b.display().to_string(),
    ]));
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines.len(), 2, "{s}");
    assert_eq!(lines[0], format!("{}\t{}", 30_000 + dir(&a), a.display()));
    let h = ok(vdu(["-h", &a.display().to_string()]));
    assert!(
        h.contains("KiB") && h.contains("OWN") && h.contains("SHARED"),
        "{h}"
    );
    let help = ok(vdu(["--help"]));
    assert!(help.contains("--human-readable"), "{help}");
}
