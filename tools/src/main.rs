use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cowfs_tools::common::{self, GlobalArgs};
use cowfs_tools::{kernel, vcontext, vps};

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    common::init_tracing(cli.global.verbose);
    common::exit_with(match cli.command {
        Command::Context(args) => vcontext::run(args),
        Command::Ps(args) => vps::run(args),
        Command::Kernel(args) => kernel::run(args),
    })
}
