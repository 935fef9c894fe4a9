use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cowfs_tools::common::{self, GlobalArgs};
use cowfs_tools::{hotset, kernel, prewarm, trace, vcontext, vps};

/// cowfs: copy-on-write guest root filesystems from shared templates.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Contexts: isolated guests (also `vcontext`).
    Context(vcontext::Args),
    /// Processes with their context (also `vps`).
    Ps(vps::Args),
    /// What this kernel allows (`cowfs kernel probe`).
    Kernel(kernel::Args),
    /// Record which files and byte ranges a context reads (an access log).
    Trace(trace::Args),
    /// Hot sets: the ranges worth preloading, built from access logs.
    Hotset(hotset::Args),
    /// Load a hot set into the page cache through a guest's root.
    Prewarm(prewarm::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    common::init_tracing(cli.global.verbose);
    common::exit_with(match cli.command {
        Command::Context(args) => vcontext::run(args),
        Command::Ps(args) => vps::run(args),
        Command::Kernel(args) => kernel::run(args),
        Command::Trace(args) => trace::run(args),
        Command::Hotset(args) => hotset::run(args),
        Command::Prewarm(args) => prewarm::run(args),
    })
}
