//! `cowfs hotset build LOG… --out HOTSET`: merge access logs into the ranges worth preloading.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use cowfs_kmod::access::AccessLog;
use cowfs_kmod::hotset::{self, BuildOptions};

use crate::common::{self, human_size};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: Sub,
}

#[derive(clap::Subcommand, Debug)]
pub enum Sub {
    /// Merge access logs (`cowfs trace --out`) into a hot set: overlapping and adjacent ranges
    /// merged, files ranked by how many logs touched them and how early.
    Build(BuildArgs),
}

#[derive(clap::Args, Debug)]
pub struct BuildArgs {
    /// Access logs, e.g. of several starts of guests of one template.
    #[arg(required = true)]
    pub logs: Vec<PathBuf>,
    /// Where to write the hot set (JSON; what `cowfs prewarm` and `vcontext run --prewarm` load).
    #[arg(long, value_name = "HOTSET")]
    pub out: PathBuf,
    /// Keep at most this much (files most logs agree on, then the earliest touched, first).
    #[arg(long, value_name = "SIZE", value_parser = common::parse_size)]
    pub max_bytes: Option<u64>,
    /// Only files touched in at least this many logs.
    #[arg(long, default_value_t = 1)]
    pub min_logs: u32,
    /// Merge ranges closer than this (fewer, larger reads).
    #[arg(long, value_name = "SIZE", default_value = "0", value_parser = common::parse_size)]
    pub gap: u64,
    /// Also preload what the kernel read ahead around the accesses, not only what was accessed.
    #[arg(long)]
    pub readahead: bool,
    /// Print a summary of the hot set as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Sub::Build(b) = args.command;
    let logs = b
        .logs
        .iter()
        .map(|p| AccessLog::load(p).with_context(|| format!("access log {}", p.display())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let set = hotset::build(
        &logs,
        &BuildOptions {
            max_bytes: b.max_bytes,
            min_logs: b.min_logs,
            gap: b.gap,
            readahead: b.readahead,
        },
    );
    hotset::write_json_atomic(&b.out, &set)
        .with_context(|| format!("writing {}", b.out.display()))?;
    let dropped: u64 = logs.iter().map(|l| l.dropped).sum();
    if b.json {
        common::print_json(&serde_json::json!({
            "out": b.out,
            "logs": logs.len(),
            "files": set.files.len(),
            "bytes": set.bytes,
            "capped_bytes": set.capped_bytes,
            "dropped_in_logs": dropped,
        }))?;
    } else {
        println!(
            "hot set {}: {} files, {} to preload{} (from {} log(s){})",
            b.out.display(),
            set.files.len(),
            human_size(set.bytes),
            if set.capped_bytes > 0 {
                format!(", {} left out by --max-bytes", human_size(set.capped_bytes))
            } else {
                String::new()
            },
            logs.len(),
            if dropped > 0 {
                format!("; {dropped} records had been dropped while tracing")
            } else {
                String::new()
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}
