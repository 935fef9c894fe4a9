//! `vdu` / `cowfs du`: how much space each guest really uses.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use hashstore::du::{self, DuReport};

use crate::common::{human_size, print_json};

/// Per guest: the space and inodes that are its own (nobody else links them: link count 1, or a
/// store object no other guest links), what it shares with other guests, and the total it sees.
/// Every inode counts once however many names it has, and the numbers do not depend on the
/// order of the arguments. Sizes are disk usage in 1K blocks unless -h, -b or --apparent-size.
#[derive(clap::Args, Debug)]
#[command(disable_help_flag = true)]
pub struct Args {
    /// Guest root directories.
    #[arg(value_name = "GUEST", required = true)]
    pub guests: Vec<PathBuf>,
    /// Print only the space each guest uses on its own, one line per guest (as `du -s`).
    #[arg(short = 's', long)]
    pub summarize: bool,
    /// Sizes in human-readable units (K, M, G; powers of 1024).
    #[arg(short = 'h', long)]
    pub human_readable: bool,
    /// Sizes in bytes.
    #[arg(short = 'b', long, conflicts_with = "human_readable")]
    pub bytes: bool,
    /// Count apparent sizes (st_size) instead of disk usage.
    #[arg(long)]
    pub apparent_size: bool,
    /// Worker threads (default: one per CPU).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print one JSON document on stdout (sizes in bytes).
    #[arg(long)]
    pub json: bool,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
}

fn size(args: &Args, bytes: u64) -> String {
    if args.human_readable {
        human_size(bytes)
    } else if args.bytes {
        bytes.to_string()
    } else {
        bytes.div_ceil(1024).to_string()
    }
}

/// Runs vdu.
pub fn run(args: Args) -> Result<ExitCode> {
    let threads = args
        .threads
        .unwrap_or_else(hashstore::objects::default_threads);
    let report = du::usage(&args.guests, args.apparent_size, threads).context("vdu failed")?;
    if args.json {
        print_json(&report)?;
    } else {
        print_text(&args, &report);
    }
    for e in &report.errors {
        eprintln!("vdu: cannot read {e}");
    }
    Ok(if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_text(args: &Args, r: &DuReport) {
    if args.summarize {
        for g in &r.guests {
            println!("{}\t{}", size(args, g.own_bytes), g.path.display());
        }
        return;
    }
    println!(
        "{:>10} {:>10} {:>10} {:>10} {:>10}  GUEST",
        "OWN", "SHARED", "TOTAL", "OWN-INO", "SHARED-INO"
    );
    for g in &r.guests {
        println!(
            "{:>10} {:>10} {:>10} {:>10} {:>10}  {}",
            size(args, g.own_bytes),
            size(args, g.shared_bytes),
            size(args, g.total_bytes),
            g.own_inodes,
            g.shared_inodes,
            g.path.display()
        );
    }
    println!(
        "{:>10} {:>10} {:>10} {:>10} {:>10}  all guests together, each inode once",
        "",
        "",
        size(args, r.total_bytes),
        "",
        r.total_inodes
    );
}
