//! `vps` / `cowfs ps`: processes with their context id and name (the spectator's view).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use cowfs_kmod::lifecycle::StateDir;
use cowfs_kmod::ps::{self, Filter};

use crate::common;

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
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let state = StateDir::open(&args.state_dir)
        .with_context(|| format!("state directory {}", args.state_dir.display()))?;
    let filter = match (args.xid, &args.context) {
        (Some(cowfs_kmod::XID_SPECTATOR), _) | (None, None) => Filter::All,
        (Some(xid), _) => Filter::Xid(xid),
        (None, Some(name)) => Filter::Xid(state.registry_ref().get(name)?.xid),
    };
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
    Ok(ExitCode::SUCCESS)
}
