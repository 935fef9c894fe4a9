//! Issue 6 with a real union root: `vcontext create --branches` mounts the guest's root as a cowfs
//! union when it runs; the guest reads the read-only template, its writes land in its own
//! writable branch, and `destroy` leaves no mount behind.

mod context_support;

use context_support::{Contexts, guest, program_ids};

#[test]
fn a_context_runs_on_a_union_root_and_writes_only_to_its_own_branch() {
    let c = Contexts::new();
    let template = guest(c.dir.path(), "template");
    let motd_before = std::fs::read(template.join("etc/motd")).expect("template motd");
    let (private, root) = c.create_on_union(31, "unioned", &template);

    let out = c.ok(&[
        "run",
        "unioned",
        "--",
        "/bin/sh",
        "-c",
        "cat /etc/debian_version && echo from-guest > /root/new-file && echo appended >> /etc/motd && tail -n 1 /etc/motd",
    ]);
    let version = std::fs::read_to_string(template.join("etc/debian_version")).expect("version");
    assert!(
        out.starts_with(version.trim()),
        "guest did not read the template: {out:?}"
    );
    assert!(
        out.trim_end().ends_with("appended"),
        "guest did not see its own write: {out:?}"
    );

    // The writes went to the context's branch, never to the shared template.
    let new_file = std::fs::read_to_string(private.join("root/new-file")).expect("new file in rw");
    assert_eq!(new_file, "from-guest\n");
    let motd = std::fs::read(private.join("etc/motd")).expect("copied-up motd");
    assert!(motd.starts_with(&motd_before) && motd.ends_with(b"appended\n"));
    assert_eq!(
        std::fs::read(template.join("etc/motd")).expect("motd"),
        motd_before
    );
    assert!(!template.join("root/new-file").exists());

    let ids = program_ids(&c.list(), "unioned");
    c.ok(&["destroy", "unioned"]);
    c.assert_nothing_left(31, &root, &ids);
    // Unmounted: the root is the empty mountpoint again.
    assert_eq!(std::fs::read_dir(&root).expect("root").count(), 0);
}
