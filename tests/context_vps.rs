//! `vps` as Linux-VServer's: ps arguments (`vps aux`, `vps -ef`, `vps -o …`) are passed on to
//! ps and every process gets its context id and name after its PID; and per context the forks
//! and execs the kernel's tracepoint program counted, consistent with `vcontext list`.

mod context_support;

use std::process::{Command, Output};

use context_support::{Contexts, guest};

fn vps(c: &Contexts, args: &[&str]) -> Output {
    Command::new(cowfs::bin("vps"))
        .arg("--state-dir")
        .arg(c.state())
        .args(args)
        .output()
        .expect("run vps")
}

fn stdout_ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The whitespace-separated fields of the line of `pid` in ps-style output, by the header's
/// PID column.
fn line_of(text: &str, pid: i64) -> Vec<String> {
    let header: Vec<&str> = text
        .lines()
        .next()
        .expect("header")
        .split_whitespace()
        .collect();
    let col = header.iter().position(|h| *h == "PID").expect("PID column");
    text.lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
        .find(|f| f.get(col).and_then(|p| p.parse::<i64>().ok()) == Some(pid))
        .unwrap_or_else(|| panic!("pid {pid} not listed:\n{text}"))
}

/// (forks, execs) of context `name` as `vps --contexts --json` reports them.
fn counted(c: &Contexts, name: &str) -> (u64, u64) {
    let v: serde_json::Value =
        serde_json::from_str(&stdout_ok(vps(c, &["--contexts", "--json"]))).expect("json");
    let ctx = v
        .as_array()
        .expect("array")
        .iter()
        .find(|x| x["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {v}"));
    (
        ctx["forks"].as_u64().expect("forks counted"),
        ctx["execs"].as_u64().expect("execs counted"),
    )
}

#[test]
fn vps_passes_ps_arguments_on_and_shows_fork_and_exec_counts() {
    let c = Contexts::new();
    let root = guest(c.dir.path(), "g");
    let r = root.to_str().expect("utf-8");
    c.ok(&["create", "--xid", "221", "--name", "psctx", "--root", r]);
    c.ok(&["create", "--xid", "222", "--name", "idle", "--root", r]);
    let (mut bg, sleep_pid) = c.run_sleeper("psctx");
    let me = i64::from(std::process::id());

    // `vps aux` and `cowfs ps aux`: ps's columns with XID and CONTEXT right after PID.
    for out in [
        vps(&c, &["aux"]),
        Command::new(cowfs::bin("cowfs"))
            .arg("ps")
            .arg("--state-dir")
            .arg(c.state())
            .arg("aux")
            .output()
            .expect("cowfs ps"),
    ] {
        let text = stdout_ok(out);
        let header: Vec<&str> = text
            .lines()
            .next()
            .expect("header")
            .split_whitespace()
            .collect();
        assert_eq!(
            header[..5],
            ["USER", "PID", "XID", "CONTEXT", "%CPU"],
            "{text}"
        );
        let sleep = line_of(&text, sleep_pid);
        assert_eq!(sleep[2..4], ["221", "psctx"], "{sleep:?}");
        assert_eq!(sleep[sleep.len() - 2..], ["/bin/sleep", "300"], "{sleep:?}");
        assert_eq!(line_of(&text, me)[2..4], ["0", "host"]);
    }
    // Other ps syntaxes: the PID column is found wherever ps puts it.
    let text = stdout_ok(vps(&c, &["-ef"]));
    assert!(text.starts_with("UID"), "{text}");
    assert_eq!(line_of(&text, sleep_pid)[2..4], ["221", "psctx"]);
    let text = stdout_ok(vps(&c, &["-o", "comm,pid"]));
    let sleep = line_of(&text, sleep_pid);
    assert_eq!(sleep, ["sleep", &sleep_pid.to_string(), "221", "psctx"]);
    // Filters apply to ps's lines too: only psctx's processes (its pid 1 and the sleep).
    let text = stdout_ok(vps(&c, &["--context", "psctx", "-e", "-o", "pid,comm"]));
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert!(rows.iter().all(|r| r[1..3] == ["221", "psctx"]), "{text}");
    // ps's own errors come through as ps's exit status.
    let bad = vps(&c, &["-o", "no-such-column"]);
    assert!(!bad.status.success());
    assert!(!String::from_utf8_lossy(&bad.stderr).contains("panicked"));

    // Forks and execs counted by the tracepoint program: a command that execs a shell and five
    // programs and forks at least four times (the shell may exec its last command itself).
    let (forks0, execs0) = counted(&c, "psctx");
    c.ok(&[
        "run",
        "psctx",
        "--",
        "/bin/sh",
        "-c",
        "/bin/true; /bin/true; /bin/true; /bin/true; /bin/true",
    ]);
    let (forks1, execs1) = counted(&c, "psctx");
    assert!(forks1 >= forks0 + 4, "forks {forks0} -> {forks1}");
    assert!(execs1 >= execs0 + 6, "execs {execs0} -> {execs1}");
    // The same numbers as `vcontext list`, and in vps's text summary; a context that does not
    // run has none.
    let list = c.list();
    let listed = list
        .as_array()
        .expect("array")
        .iter()
        .find(|s| s["name"] == "psctx")
        .expect("psctx listed");
    assert_eq!(
        (listed["forks"].as_u64(), listed["execs"].as_u64()),
        (Some(forks1), Some(execs1))
    );
    let text = stdout_ok(vps(&c, &[]));
    let summary: Vec<&str> = text
        .lines()
        .find(|l| l.split_whitespace().take(3).eq(["221", "psctx", "running"]))
        .unwrap_or_else(|| panic!("no summary line for psctx:\n{text}"))
        .split_whitespace()
        .collect();
    assert_eq!(summary[4..], [forks1.to_string(), execs1.to_string()]);
    let idle: Vec<&str> = text
        .lines()
        .find(|l| l.split_whitespace().take(2).eq(["222", "idle"]))
        .unwrap_or_else(|| panic!("no summary line for idle:\n{text}"))
        .split_whitespace()
        .collect();
    assert_eq!(idle[2..], ["stopped", "0", "-", "-"]);

    c.ok(&["destroy", "psctx"]);
    let _ = bg.wait();
}
