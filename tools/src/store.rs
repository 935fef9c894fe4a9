//! `cowfs store init|stats|verify|gc|fsck STORE`: look after a hash store.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use hashstore::{LockMode, Store};

use crate::common::{human_size, print_json};

/// Manage a hash store (the directory of shared, immutable objects).
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: StoreCommand,
}

/// What to do with the store.
#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Create an empty store (STORE must not exist or be an empty directory; an existing store
    /// is left as it is).
    Init(Target),
    /// Objects, bytes, links and bytes saved, counted from the objects themselves.
    Stats(Target),
    /// Rehash every object and check it against its key; list mismatches and exit non-zero if any.
    Verify {
        #[command(flatten)]
        target: Target,
        /// Worker threads (default: one per CPU).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Remove objects nobody links any more (safe while vhashify runs).
    Gc {
        #[command(flatten)]
        target: Target,
        /// Only count what would be removed.
        #[arg(short = 'n', long)]
        dry_run: bool,
    },
    /// Rebuild the index from the objects, repair what can be repaired, report the rest
    /// (exit non-zero if something is left). Takes the store lock exclusively.
    Fsck {
        #[command(flatten)]
        target: Target,
        /// Rehash every object instead of trusting the hashes the index remembers.
        #[arg(long)]
        rehash: bool,
        /// Worker threads (default: one per CPU).
        #[arg(long)]
        threads: Option<usize>,
    },
}

/// The store to work on and the output format.
#[derive(clap::Args, Debug)]
pub struct Target {
    /// The store directory.
    #[arg(value_name = "STORE")]
    pub store: PathBuf,
    /// Print one JSON document on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

fn open(t: &Target, mode: LockMode) -> Result<Store> {
    Store::open_with(&t.store, mode)
        .with_context(|| format!("cannot open store {}", t.store.display()))
}

/// Runs `cowfs store …`.
pub fn run(args: Args) -> Result<ExitCode> {
    match args.command {
        StoreCommand::Init(t) => {
            let (store, created) = Store::init(&t.store)
                .with_context(|| format!("cannot initialise store {}", t.store.display()))?;
            if t.json {
                print_json(&serde_json::json!({
                    "store": store.root(),
                    "created": created,
                    "format": hashstore::layout::FORMAT_LINE,
                }))?;
            } else if created {
                println!("initialised store {}", store.root().display());
            } else {
                println!(
                    "{} already is a store; left as it is",
                    store.root().display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        StoreCommand::Stats(t) => {
            let store = open(&t, LockMode::Shared)?;
            let s = hashstore::stats::stats(&store).context("cannot count the store")?;
            if t.json {
                print_json(&s)?;
            } else {
                println!("store        {}", store.root().display());
                println!(
                    "objects      {} ({} distinct contents)",
                    s.objects, s.distinct_contents
                );
                println!(
                    "bytes        {} ({} on disk)",
                    human_size(s.bytes),
                    human_size(s.disk_bytes)
                );
                println!("links        {} from guests", s.links);
                let saved = if s.bytes_saved < 0 {
                    format!("-{}", human_size(s.bytes_saved.unsigned_abs()))
                } else {
                    human_size(s.bytes_saved as u64)
                };
                println!("bytes saved  {saved}");
                println!(
                    "unreferenced {} objects, {} (`cowfs store gc` removes them)",
                    s.unreferenced,
                    human_size(s.unreferenced_bytes)
                );
                if s.index_rows != s.objects || s.stray_files > 0 || s.journaled_dirs > 0 {
                    println!(
                        "note         index rows {}, stray files {}, journaled directories {}: `cowfs store fsck` tidies up",
                        s.index_rows, s.stray_files, s.journaled_dirs
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        StoreCommand::Verify { target, threads } => {
            let store = open(&target, LockMode::Shared)?;
            let threads = threads.unwrap_or_else(hashstore::objects::default_threads);
            let r = hashstore::verify::verify(&store, threads).context("verify failed")?;
            if target.json {
                print_json(&r)?;
            } else {
                for p in &r.problems {
                    println!("{}: {}: {}", p.object.display(), p.kind, p.detail);
                }
                println!(
                    "{} objects ({}) verified: {} ok, {} damaged",
                    r.objects,
                    human_size(r.bytes),
                    r.ok,
                    r.problems.len()
                );
                if r.index_rows_without_object + r.objects_without_index_row > 0 {
                    println!(
                        "index out of date ({} rows without object, {} objects without row): run `cowfs store fsck`",
                        r.index_rows_without_object, r.objects_without_index_row
                    );
                }
            }
            Ok(if r.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        StoreCommand::Gc { target, dry_run } => {
            let store = open(&target, LockMode::Shared)?;
            let r = hashstore::gc::gc(&store, dry_run).context("gc failed")?;
            if target.json {
                print_json(&r)?;
            } else {
                let verb = if dry_run { "would remove" } else { "removed" };
                println!(
                    "{verb} {} of {} objects ({})",
                    r.removed,
                    r.objects,
                    human_size(r.bytes_freed)
                );
                if r.raced > 0 {
                    println!(
                        "{} objects got linked while being collected and were kept",
                        r.raced
                    );
                }
                for id in &r.renumbered {
                    println!("kept as {id}: a new object took its name meanwhile");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        StoreCommand::Fsck {
            target,
            rehash,
            threads,
        } => {
            let opts = hashstore::fsck::FsckOptions {
                rehash,
                threads: threads.unwrap_or(0),
            };
            let r = hashstore::fsck::fsck(&target.store, opts)
                .with_context(|| format!("fsck of {} failed", target.store.display()))?;
            if target.json {
                print_json(&r)?;
            } else {
                if r.format_restored {
                    println!("format file was missing: restored");
                }
                if let Some(why) = &r.index_recreated {
                    println!("index rebuilt from scratch ({why})");
                }
                if let Some(to) = &r.corrupt_index_moved_to {
                    println!("damaged index kept as {to}");
                }
                println!(
                    "{} objects ({} hashed), {} index rows written, {} stale rows dropped",
                    r.objects, r.hashed, r.index_rows, r.stale_rows_dropped
                );
                for m in &r.marks_repaired {
                    println!("mark repaired: {m}");
                }
                for q in &r.quarantined {
                    println!("quarantined: {q}");
                }
                if r.tmp_settled > 0 {
                    println!("{} leftovers in tmp/ settled", r.tmp_settled);
                }
                if r.journal_dirs_restored > 0 {
                    println!(
                        "{} directories of an interrupted vhashify restored, {} temporary links removed",
                        r.journal_dirs_restored, r.journal_temps_removed
                    );
                }
                for u in &r.unresolved {
                    println!("unresolved: {u}");
                }
            }
            Ok(if r.has_unresolved() || !r.quarantined.is_empty() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}
