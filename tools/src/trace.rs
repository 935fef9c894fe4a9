//! `cowfs trace CONTEXT`: record which files (and which byte ranges) a context reads.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use cowfs_kmod::access::{AccessLog, Status, TraceOptions, TraceSession};
use cowfs_kmod::hotset::write_json_atomic;
use cowfs_kmod::lifecycle::StateDir;

use crate::common::{self, human_size};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The context to trace (it need not run yet: a run started during the trace is seen from
    /// its first exec).
    pub context: String,
    /// Stop after this many seconds (default: when the command ends, or on Ctrl-C).
    #[arg(long, value_name = "S")]
    pub duration: Option<f64>,
    /// Write the access log (JSON, versioned) here instead of listing it on stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Size of the kernel's ring buffer; when the reader falls behind, records are dropped and
    /// counted, never waited for.
    #[arg(long, value_name = "BYTES", default_value = "8M", value_parser = common::parse_size)]
    pub buffer: u64,
    /// A branch directory to resolve inodes in, besides the context's union branches (e.g. the
    /// backing directories of a root mounted by other means).
    #[arg(long = "branch", value_name = "DIR")]
    pub branches: Vec<PathBuf>,
    /// JSON on stdout: the log itself without --out, a summary with it.
    #[arg(long)]
    pub json: bool,
    /// Where the context registry lives.
    #[arg(long, env = "COWFS_STATE_DIR", default_value = StateDir::DEFAULT)]
    pub state_dir: PathBuf,
    /// Run this command in the context (as `vcontext run CONTEXT -- CMD`) and trace until it
    /// ends (with --json, its stdout goes to stderr).
    #[arg(last = true)]
    pub command: Vec<OsString>,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn stop_on_signals() -> anyhow::Result<()> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { sigaction(sig, &action) }.context("installing a signal handler")?;
    }
    Ok(())
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let duration = match args.duration {
        Some(s) if !(s.is_finite() && s > 0.0) => {
            anyhow::bail!("--duration must be a positive number of seconds, not {s}")
        }
        Some(s) => Some(Duration::from_secs_f64(s)),
        None => None,
    };
    let mut state = StateDir::open(&args.state_dir)
        .with_context(|| format!("state directory {}", args.state_dir.display()))?;
    stop_on_signals()?;
    let opts = TraceOptions {
        buffer: args.buffer,
        branches: args.branches.clone(),
    };
    let mut session = TraceSession::start(&mut state, &args.context, &opts)
        .with_context(|| format!("tracing context {}", args.context))?;

    let mut child = None;
    if !args.command.is_empty() {
        let cowfs = std::env::current_exe()
            .context("locating this program")?
            .with_file_name("cowfs");
        let mut cmd = Command::new(&cowfs);
        if args.json {
            // stdout carries exactly one JSON document: the command's output goes to stderr.
            cmd.stdout(std::io::stderr());
        }
        child = Some(
            cmd.arg("context")
                .arg("--state-dir")
                .arg(&args.state_dir)
                .arg("run")
                .arg(&args.context)
                .arg("--")
                .args(&args.command)
                .spawn()
                .with_context(|| format!("running {} context run", cowfs.display()))?,
        );
    }
    let mut status = None;
    let result = session.run(duration, &mut || {
        if STOP.load(Ordering::SeqCst) {
            return true;
        }
        if let Some(c) = child.as_mut()
            && let Ok(Some(s)) = c.try_wait()
        {
            status = Some(s);
            return true;
        }
        false
    });
    if let Some(c) = child.as_mut()
        && status.is_none()
    {
        // Stopped by duration or signal: the command goes on; wait for it to end so that the
        // context's state is released in order.
        status = Some(c.wait().context("waiting for the command")?);
    }
    result.context("tracing")?;
    let log = session.finish(&mut state).context("finishing the trace")?;

    match (&args.out, args.json) {
        (Some(out), json) => {
            write_json_atomic(out, &log).with_context(|| format!("writing {}", out.display()))?;
            if json {
                common::print_json(&summary(&log, Some(out)))?;
            } else {
                print_summary(&log, Some(out));
            }
        }
        (None, true) => common::print_json(&log)?,
        (None, false) => {
            print_summary(&log, None);
            print_files(&log);
        }
    }
    if log.dropped > 0 {
        eprintln!(
            "cowfs trace: warning: {} records were dropped (the reader fell behind); use a larger --buffer",
            log.dropped
        );
    }
    Ok(match status {
        Some(s) if !s.success() => ExitCode::from(u8::try_from(s.code().unwrap_or(1)).unwrap_or(1)),
        _ => ExitCode::SUCCESS,
    })
}

#[derive(serde::Serialize)]
struct Summary<'a> {
    out: Option<&'a std::path::Path>,
    context: &'a str,
    duration_ms: u64,
    files: usize,
    renamed: usize,
    deleted: usize,
    unresolved: usize,
    read_bytes: u64,
    cached_bytes: u64,
    records: u64,
    dropped: u64,
    hooks: &'a [String],
}

fn summary<'a>(log: &'a AccessLog, out: Option<&'a std::path::Path>) -> Summary<'a> {
    let count = |s: Status| log.files.iter().filter(|f| f.status == s).count();
    Summary {
        out,
        context: &log.context,
        duration_ms: log.duration_ms,
        files: log.files.len(),
        renamed: count(Status::Renamed),
        deleted: count(Status::Deleted),
        unresolved: log.unresolved.len(),
        read_bytes: log.read_bytes(),
        cached_bytes: log.cached_bytes(),
        records: log.records,
        dropped: log.dropped,
        hooks: &log.hooks,
    }
}

fn print_summary(log: &AccessLog, out: Option<&std::path::Path>) {
    let s = summary(log, out);
    println!(
        "traced {} for {:.1} s: {} files ({} renamed, {} deleted, {} inodes unresolved), {} read, {} from disk; {} records, {} dropped",
        s.context,
        s.duration_ms as f64 / 1000.0,
        s.files,
        s.renamed,
        s.deleted,
        s.unresolved,
        human_size(s.read_bytes),
        human_size(s.cached_bytes),
        s.records,
        s.dropped
    );
    if let Some(out) = out {
        println!("access log written to {}", out.display());
    }
}

fn ranges(pairs: &[[u64; 2]]) -> String {
    let mut parts: Vec<String> = pairs
        .iter()
        .take(4)
        .map(|[off, len]| format!("{off}+{len}"))
        .collect();
    if pairs.len() > 4 {
        parts.push(format!("…{} more", pairs.len() - 4));
    }
    parts.join(",")
}

fn print_files(log: &AccessLog) {
    println!(
        "{:>5} {:>7} {:>9} {:<8} PATH  READ RANGES (offset+length)",
        "FIRST", "TOUCHES", "READ", "STATUS"
    );
    for f in &log.files {
        let read: u64 = f.read.iter().map(|r| r[1]).sum();
        let path = match (f.status, &f.was) {
            (Status::Renamed, Some(was)) => format!("{} (was {was})", f.path),
            (Status::Deleted, Some(was)) => format!("{was} (deleted)"),
            _ => f.path.clone(),
        };
        println!(
            "{:>5} {:>7} {:>9} {:<8} {path}  {}",
            f.first,
            f.touches,
            human_size(read),
            format!("{:?}", f.status).to_lowercase(),
            ranges(&f.read)
        );
    }
}
