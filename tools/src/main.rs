use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cowfs_tools::common::{self, GlobalArgs};

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
enum Command {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    common::init_tracing(cli.global.verbose);
    common::exit_with(match cli.command {})
}
