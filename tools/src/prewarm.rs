//! `cowfs prewarm MNT|CONTEXT HOTSET`: load a hot set into the page cache.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use cowfs_kmod::hotset::HotSet;
use cowfs_kmod::lifecycle::StateDir;
use cowfs_kmod::prewarm::{self, Method};

use crate::common::{self, human_size};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A guest root (a directory or a mount point), or the name of a context (its root).
    pub target: String,
    /// The hot set (`cowfs hotset build`).
    pub hotset: PathBuf,
    /// Parallel readers (each holds one read buffer: memory is bounded by workers × 256 KiB).
    #[arg(long, default_value_t = 8)]
    pub workers: usize,
    /// read: through the root, data cached when done (right for every root kind);
    /// readahead: readahead(2), no copy, returns before the I/O ends (plain dirs, overlayfs).
    #[arg(long, default_value = "read")]
    pub method: Method,
    /// Load at most this much.
    #[arg(long, value_name = "SIZE", value_parser = common::parse_size)]
    pub max_bytes: Option<u64>,
    /// Print the outcome (files and bytes loaded, files skipped and why) as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Where the context registry lives (for a context name).
    #[arg(long, env = "COWFS_STATE_DIR", default_value = StateDir::DEFAULT)]
    pub state_dir: PathBuf,
}

/// The directory to prewarm through: `target` itself if it is a directory, else the root of
/// the context of that name.
fn root_of(target: &str, state_dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    let path = PathBuf::from(target);
    if path.is_dir() {
        return Ok(path);
    }
    if target.contains('/') {
        anyhow::bail!("{target}: not a directory");
    }
    let mut state = StateDir::open(state_dir)
        .with_context(|| format!("state directory {}", state_dir.display()))?;
    let ctx = state
        .registry()
        .get(target)
        .with_context(|| format!("{target} is neither a directory nor a context"))?;
    if ctx.branches.is_some() && !cowfs_kmod::mounts::is_mount_point(&ctx.root)? {
        anyhow::bail!(
            "context {target}: its union root {} is not mounted (prewarm loads pages through the \
             mount; run the context with `vcontext run --prewarm`, or mount it first)",
            ctx.root.display()
        );
    }
    Ok(ctx.root)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let root = root_of(&args.target, &args.state_dir)?;
    let set =
        HotSet::load(&args.hotset).with_context(|| format!("hot set {}", args.hotset.display()))?;
    let report = prewarm::prewarm(
        &root,
        &set,
        &prewarm::Options {
            workers: args.workers,
            method: args.method,
            max_bytes: args.max_bytes,
            ..Default::default()
        },
    )
    .with_context(|| format!("prewarming {}", root.display()))?;
    if args.json {
        common::print_json(&report)?;
    } else {
        println!(
            "prewarmed {}: {} of {} files, {}, {} directories listed in {} ms ({:?}, {} workers)",
            root.display(),
            report.loaded,
            report.files,
            human_size(report.bytes),
            report.dirs_listed,
            report.elapsed_ms,
            report.method,
            report.workers
        );
        if report.over_budget > 0 {
            println!("{} files left out by --max-bytes", report.over_budget);
        }
        for s in &report.skipped {
            println!("skipped {}: {}", s.path, s.reason);
        }
    }
    Ok(ExitCode::SUCCESS)
}
