//! `vps` / `cowfs ps`: processes with their context id and name (the spectator's view), and
//! per context the forks and execs the kernel counted.
//!
//! As Linux-VServer's vps does, arguments meant for ps(1) (`vps aux`, `vps -ef`,
//! `vps -o pid,user,comm`) are passed on to the real ps, and the context of every process it
//! lists is added after its PID column.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};

use anyhow::Context as _;
use cowfs_kmod::lifecycle::{self, StateDir};
use cowfs_kmod::ps::{self, Filter};
use serde::Serialize;

use crate::common;

/// Processes with their context id and name. Without PS_ARGS: cowfs's own listing (the columns
/// of `ps aux` after XID and CONTEXT), then one line per context with the forks and execs
/// counted in it. With PS_ARGS: ps(1) runs with them, and XID and CONTEXT columns are inserted
/// after its PID column.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where the context registry lives.
    #[arg(long, env = "COWFS_STATE_DIR", default_value = StateDir::DEFAULT)]
    pub state_dir: PathBuf,
    /// Only this context's processes (0: the host's; 1, the spectator: all, the default).
    #[arg(long, conflicts_with = "context")]
    pub xid: Option<u32>,
    /// Only the processes of the context with this name.
    #[arg(long)]
    pub context: Option<String>,
    /// One line per context instead of per process: its processes and the forks and execs the
    /// kernel counted in it since its cgroup was created.
    #[arg(long, conflicts_with = "ps_args")]
    pub contexts: bool,
    /// Print JSON on stdout: the processes, or with --contexts the contexts.
    #[arg(long, conflicts_with = "ps_args")]
    pub json: bool,
    /// Arguments for ps(1), passed on as Linux-VServer's vps does (e.g. `aux`, `-ef`,
    /// `-o pid,user,comm`); ps's output must have a PID column.
    #[arg(
        value_name = "PS_ARGS",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub ps_args: Vec<OsString>,
}

/// One context in the per-context summary.
#[derive(Debug, Clone, Serialize)]
pub struct ContextCounts {
    pub xid: u32,
    pub name: String,
    pub running: bool,
    pub processes: usize,
    /// Forks and execs counted in the context's cgroup (None: not running, or the kernel's
    /// accounting program is not loaded).
    pub forks: Option<u64>,
    pub execs: Option<u64>,
}

fn counts(state: &StateDir, filter: Filter) -> anyhow::Result<Vec<ContextCounts>> {
    let mut out = Vec::new();
    for spec in state.registry_ref().list()? {
        if let Filter::Xid(x) = filter
            && x != spec.xid
        {
            continue;
        }
        let s = lifecycle::status(state, &spec)
            .with_context(|| format!("status of context {}", spec.name))?;
        out.push(ContextCounts {
            xid: spec.xid,
            name: spec.name,
            running: s.running,
            processes: s.processes,
            forks: s.forks,
            execs: s.execs,
        });
    }
    Ok(out)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let state = StateDir::open(&args.state_dir)
        .with_context(|| format!("state directory {}", args.state_dir.display()))?;
    let filter = match (args.xid, &args.context) {
        (Some(cowfs_kmod::XID_SPECTATOR), _) | (None, None) => Filter::All,
        (Some(xid), _) => Filter::Xid(xid),
        (None, Some(name)) => Filter::Xid(state.registry_ref().get(name)?.xid),
    };
    if !args.ps_args.is_empty() {
        return with_ps(&state, filter, &args.ps_args);
    }
    if args.contexts {
        let c = counts(&state, filter)?;
        if args.json {
            common::print_json(&c)?;
        } else {
            print_counts(&c);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let rows = ps::list(&state, filter)?;
    if args.json {
        common::print_json(&rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:>5} {:<12} {:<10} {:>7} {:>7} {:>5} {:>5} {:>9} {:>8} {:<7} {:<5} {:>8} COMMAND",
        "XID",
        "CONTEXT",
        "USER",
        "PID",
        "PPID",
        "%CPU",
        "%MEM",
        "VSZ",
        "RSS",
        "TTY",
        "STAT",
        "TIME"
    );
    for r in rows {
        println!(
            "{:>5} {:<12} {:<10} {:>7} {:>7} {:>5.1} {:>5.1} {:>9} {:>8} {:<7} {:<5} {:>5}:{:02} {}",
            r.xid,
            r.context,
            r.user,
            r.pid,
            r.ppid,
            r.cpu_percent,
            r.mem_percent,
            r.vsz / 1024,
            r.rss / 1024,
            r.tty,
            r.stat,
            r.cpu_seconds / 60,
            r.cpu_seconds % 60,
            r.command
        );
    }
    let c = counts(&state, filter)?;
    if !c.is_empty() {
        println!();
        print_counts(&c);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_counts(c: &[ContextCounts]) {
    println!(
        "{:>5} {:<12} {:<8} {:>6} {:>8} {:>8}",
        "XID", "CONTEXT", "STATE", "PROCS", "FORKS", "EXECS"
    );
    let n = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |n| n.to_string());
    for c in c {
        println!(
            "{:>5} {:<12} {:<8} {:>6} {:>8} {:>8}",
            c.xid,
            c.name,
            if c.running { "running" } else { "stopped" },
            c.processes,
            n(c.forks),
            n(c.execs)
        );
    }
}

/// Where a line's whitespace-separated field `index` ends (a byte offset).
fn field_end(line: &str, index: usize) -> Option<usize> {
    let mut seen = 0;
    let mut in_field = false;
    for (i, ch) in line.char_indices() {
        if ch.is_whitespace() {
            if in_field {
                if seen == index {
                    return Some(i);
                }
                seen += 1;
                in_field = false;
            }
        } else {
            in_field = true;
        }
    }
    (in_field && seen == index).then_some(line.len())
}

/// The PID of a ps line and where it ends: the field with the header's index (procps truncates
/// user names, so the fields before PID keep their places); failing that (a column with spaces
/// before PID), the number that ends where the header's PID ends, as ps right-aligns it.
fn pid_of(line: &str, header_end: usize, field: usize) -> Option<(i32, usize)> {
    let token_before = |end: usize| {
        let head = line.get(..end)?;
        let token = head.rsplit(char::is_whitespace).next()?;
        token.parse::<i32>().ok().map(|pid| (pid, end))
    };
    field_end(line, field).and_then(token_before).or_else(|| {
        line.get(header_end..)
            .filter(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace))
            .and_then(|_| token_before(header_end))
    })
}

/// `ps PS_ARGS` with XID and CONTEXT inserted after the PID column.
fn with_ps(state: &StateDir, filter: Filter, ps_args: &[OsString]) -> anyhow::Result<ExitCode> {
    let out = Command::new("ps")
        .args(ps_args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("running ps (procps)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or("");
    let field = header.split_whitespace().position(|f| f == "PID");
    let header_end = field.and_then(|f| field_end(header, f));
    let (Some(field), Some(header_end)) = (field, header_end) else {
        // Nothing to attach a context to: show what ps said, and say why it is plain.
        std::io::stdout().write_all(&out.stdout)?;
        if out.status.success() {
            eprintln!("vps: ps printed no PID column (add pid to -o): contexts not shown");
        }
        return Ok(exit_code_of(&out.status));
    };
    // Listed after ps ran: every process ps printed that still lives is in it.
    let by_pid: HashMap<i32, (u32, String)> = ps::list(state, Filter::All)?
        .into_iter()
        .map(|r| (r.pid, (r.xid, r.context)))
        .collect();
    match print_with_contexts(header, lines, field, header_end, filter, &by_pid) {
        // The reader went away (`vps aux | head`): nothing more to say.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        r => r?,
    }
    Ok(exit_code_of(&out.status))
}

/// Prints ps's `header` and `lines` with each process's XID and CONTEXT after its PID.
fn print_with_contexts<'a>(
    header: &str,
    lines: impl Iterator<Item = &'a str>,
    field: usize,
    header_end: usize,
    filter: Filter,
    by_pid: &HashMap<i32, (u32, String)>,
) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    let insert = |line: &str, at: usize, xid: &str, name: &str| {
        format!("{} {xid:>5} {name:<12}{}", &line[..at], &line[at..])
    };
    writeln!(stdout, "{}", insert(header, header_end, "XID", "CONTEXT"))?;
    for line in lines {
        let Some((pid, at)) = pid_of(line, header_end, field) else {
            writeln!(stdout, "{line}")?;
            continue;
        };
        let (xid, name) = match by_pid.get(&pid) {
            Some((xid, name)) => (xid.to_string(), name.as_str()),
            // Exited between ps and our look at it.
            None => ("-".to_string(), "-"),
        };
        if let Filter::Xid(want) = filter
            && xid != want.to_string()
        {
            continue;
        }
        writeln!(stdout, "{}", insert(line, at, &xid, name))?;
    }
    stdout.flush()
}

fn exit_code_of(status: &std::process::ExitStatus) -> ExitCode {
    match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_columns_are_found_aligned_or_shifted() {
        let header = "USER         PID %CPU %MEM    VSZ   RSS TTY      STAT START   TIME COMMAND";
        let field = 1;
        let end = field_end(header, field).expect("PID");
        assert_eq!(&header[..end], "USER         PID");
        let line = "root           1  0.0  0.1 167764 11880 ?        Ss   Dec06   0:02 /sbin/init";
        assert_eq!(pid_of(line, end, field), Some((1, end)));
        // A column that overflowed pushes the PID right: still the second field.
        let long = "averylongusername 4242  0.0  0.1 1 1 ? S 10:00 0:00 sleep 300";
        let (pid, at) = pid_of(long, end, field).expect("pid");
        assert_eq!(pid, 4242);
        assert_eq!(&long[..at], "averylongusername 4242");
        // PID first (ps -o pid,comm), and a name with spaces after it does not matter.
        let header = "    PID COMMAND";
        let end = field_end(header, 0).expect("PID");
        assert_eq!(pid_of("    977 tokio runtime", end, 0), Some((977, end)));
        assert_eq!(pid_of("", end, 0), None);
        // A column with spaces before PID (ps -o lstart,pid): the right-aligned number.
        let header = "                 STARTED     PID";
        let end = field_end(header, 1).expect("PID");
        let line = "Sun Dec  6 22:40:01 2026     812";
        assert_eq!(pid_of(line, end, 1), Some((812, end)));
        assert_eq!(field_end("a b c", 2), Some(5));
        assert_eq!(field_end("a b", 2), None);
    }
}
