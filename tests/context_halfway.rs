//! Issue 6: "a `run` that fails halfway leaves nothing behind either". Alone in its test binary:
//! it compares the kernel's list of loaded BPF programs before and after, which a concurrent
//! test loading programs would disturb.

mod context_support;

use context_support::Contexts;
use cowfs_kmod::bpf;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_run_that_fails_halfway_leaves_nothing_behind() {
    let c = Contexts::new();
    // An empty root: everything up to exec works (cgroup, programs, namespaces, pivot_root,
    // Landlock), then the command is not there.
    let root = c.dir.path().join("empty");
    std::fs::create_dir(&root).expect("mkdir");
    let r = root.to_str().expect("utf-8");
    c.ok(&[
        "create",
        "--xid",
        "20",
        "--name",
        "empty",
        "--root",
        r,
        "--ip",
        "127.0.0.20",
    ]);
    let loaded_before = bpf::loaded_program_ids();
    let out = c.vcontext(&["run", "empty", "--", "/bin/sh", "-c", "true"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("context empty: exec: /bin/sh: ENOENT"),
        "{}",
        stderr(&out)
    );
    let new_programs: Vec<u32> = bpf::loaded_program_ids()
        .into_iter()
        .filter(|id| !loaded_before.contains(id))
        .collect();
    c.assert_nothing_left(20, &root, &new_programs);
    assert!(
        !c.list().as_array().expect("array")[0]["running"]
            .as_bool()
            .expect("bool")
    );

    // A root whose union cannot be mounted fails before anything is created.
    let mnt = c.dir.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    let m = mnt.to_str().expect("utf-8");
    c.ok(&[
        "create",
        "--xid",
        "21",
        "--name",
        "union",
        "--root",
        m,
        "--branches",
        "/nonexistent/branch=rw",
    ]);
    let out = c.vcontext(&["run", "union", "--", "/bin/true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("mounting the root of context union"),
        "{}",
        stderr(&out)
    );
    c.assert_nothing_left(21, &mnt, &[]);
}
