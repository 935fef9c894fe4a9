//! `vhashify` / `cowfs hashify`: unify identical files of guest roots into a hash store.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use hashstore::unify::{self, DEFAULT_EXCLUDES, ExcludeList, Options, Report};
use hashstore::{KeyPolicy, Store};

use crate::common::{human_size, print_json};
use crate::progress::Bar;

/// Make identical files of guest roots hard links to one immutable object in a hash store.
///
/// Two files are unified only if their content and their file type, mode, owner, group, every
/// xattr (capabilities and ACLs included) and — unless --ignore-mtime — mtime are equal. Every
/// path keeps the content and metadata it had; directories keep their times. Every eligible file
/// becomes or links to an object, so guests added later unify against it. A re-run only reads
/// files that changed. Exit status 1 when a file was skipped because of an error (changed or
/// vanished files are reported, not errors).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The hash store (created if it does not exist; must be on the guests' filesystem).
    #[arg(
        short = 's',
        long,
        value_name = "STORE",
        required_unless_present = "print_default_excludes"
    )]
    pub store: Option<PathBuf>,
    /// Guest root directories.
    #[arg(
        value_name = "GUEST",
        required_unless_present = "print_default_excludes"
    )]
    pub guests: Vec<PathBuf>,
    /// Leave files smaller than this many bytes alone (empty files always are).
    #[arg(long, default_value_t = 16, value_name = "BYTES")]
    pub min_size: u64,
    /// Exclude list in util-vserver's format (one glob per line relative to the guest root, e.g.
    /// /etc/ssh/ssh_host_*; `+` include, `-` or nothing exclude, `~` skip; first match wins).
    /// Its rules come before the built-in ones. May be given several times.
    #[arg(long, value_name = "FILE")]
    pub exclude_from: Vec<PathBuf>,
    /// Do not apply the built-in exclude list (see --print-default-excludes).
    #[arg(long)]
    pub no_default_excludes: bool,
    /// Print the built-in exclude list and exit.
    #[arg(long)]
    pub print_default_excludes: bool,
    /// Unify files that differ only in mtime (they then all show the mtime of the first one).
    #[arg(long)]
    pub ignore_mtime: bool,
    /// Hash only files that can match another file or an existing object; leave unique files
    /// out of the store (faster; later guests cannot unify against them).
    #[arg(long)]
    pub only_duplicates: bool,
    /// Guests on another filesystem than the store: copy their files into the store as objects
    /// (their own paths cannot be linked and stay as they are) instead of refusing.
    #[arg(long)]
    pub copy: bool,
    /// Show what would be done; change nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Worker threads for every phase (default: one per CPU for the changes, four per CPU for
    /// walking and hashing).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print one JSON document (the report) on stdout.
    #[arg(long)]
    pub json: bool,
}

fn excludes(args: &Args) -> Result<ExcludeList> {
    let mut list = ExcludeList::default();
    for f in &args.exclude_from {
        list.append_file(f)
            .with_context(|| format!("cannot use exclude list {}", f.display()))?;
    }
    if !args.no_default_excludes {
        list.append(DEFAULT_EXCLUDES, Path::new("<built-in default excludes>"))
            .context("built-in exclude list")?;
    }
    Ok(list)
}

/// Runs vhashify.
pub fn run(args: Args) -> Result<ExitCode> {
    if args.print_default_excludes {
        print!("{DEFAULT_EXCLUDES}");
        return Ok(ExitCode::SUCCESS);
    }
    let store_path = args.store.clone().context("--store is required")?;
    let mut opts = Options {
        policy: KeyPolicy {
            ignore_mtime: args.ignore_mtime,
        },
        min_size: args.min_size,
        excludes: excludes(&args)?,
        dry_run: args.dry_run,
        copy_foreign: args.copy,
        only_duplicates: args.only_duplicates,
        threads: args.threads.unwrap_or(0),
        store_dev: None,
    };
    // Every check before the first change: nothing is created for bad input.
    let roots = unify::open_guests(&args.guests, &store_path, args.copy).map_err(|e| match e {
        hashstore::Error::CrossDevice { .. } => {
            anyhow::anyhow!("{e}; --copy copies such a guest's files into the store instead")
        }
        e => e.into(),
    })?;
    let exists = store_path.join(hashstore::layout::FORMAT_FILE).exists();
    let _scratch;
    let store = if args.dry_run && !exists {
        // A dry run must not create the store: work against an empty scratch one.
        let (_, dev) = unify::store_location(&store_path)?;
        let dir = tempfile::tempdir().context("cannot create a scratch directory")?;
        let (store, _) = Store::init(&dir.path().join("store"))?;
        _scratch = dir;
        opts.store_dev = Some(dev);
        store
    } else {
        Store::init(&store_path)
            .with_context(|| format!("cannot open store {}", store_path.display()))?
            .0
    };
    let bar = Bar::new(false);
    let result = unify::unify(&store, &roots, &opts, &bar);
    bar.finish();
    let report = result.context("vhashify failed")?;
    if args.json {
        print_json(&serde_json::json!({
            "store": store_path,
            "guests": roots.iter().map(|r| &r.path).collect::<Vec<_>>(),
            "report": report,
        }))?;
    } else {
        print_report(&report);
    }
    Ok(if report.has_errors() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn print_report(r: &Report) {
    let would = if r.dry_run {
        " (dry run: nothing changed)"
    } else {
        ""
    };
    println!(
        "{} guests: {} files ({}) in {} inodes{would}",
        r.guests,
        r.files,
        human_size(r.bytes),
        r.inodes
    );
    println!(
        "  left out: {} excluded paths, {} files under the minimum size, {} not regular files",
        r.excluded, r.too_small, r.not_regular
    );
    println!(
        "  hashed {} files ({}), {} from the index; {} paths already unified{}",
        r.hashed_files,
        human_size(r.hashed_bytes),
        r.hash_cache_hits,
        r.already_unified,
        if r.unique_not_hashed > 0 {
            format!("; {} unique files not hashed", r.unique_not_hashed)
        } else {
            String::new()
        }
    );
    println!(
        "  objects: {} new by link, {} by copy",
        r.objects_linked, r.objects_copied
    );
    println!(
        "  {} paths linked to objects, {} reclaimed",
        r.links_made,
        human_size(r.bytes_reclaimed)
    );
    if r.foreign_left > 0 {
        println!(
            "  {} paths on another filesystem left in place (copied into the store)",
            r.foreign_left
        );
    }
    if r.recovered_dirs > 0 {
        println!(
            "  recovered an interrupted run: {} directories restored, {} temporary links removed",
            r.recovered_dirs, r.stale_temps_removed
        );
    }
    if !r.skipped_by_reason.is_empty() {
        let parts: Vec<String> = r
            .skipped_by_reason
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect();
        println!("  skipped: {}", parts.join(", "));
        for s in &r.skipped {
            println!(
                "    {}: {} ({})",
                s.path.display(),
                s.reason.as_str(),
                s.detail
            );
        }
        let listed = r.skipped.len() as u64;
        let total: u64 = r.skipped_by_reason.values().sum();
        if total > listed {
            println!("    … and {} more", total - listed);
        }
    }
    let phases: Vec<String> = r
        .phase_ms
        .iter()
        .map(|(k, v)| format!("{k} {:.2}", *v as f64 / 1000.0))
        .collect();
    println!(
        "  time {:.2} s ({})",
        r.elapsed_ms as f64 / 1000.0,
        phases.join(", ")
    );
}
