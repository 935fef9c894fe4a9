use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cowfs_tools::common::{self, GlobalArgs};
use cowfs_tools::{demo, du, hashify, store};

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
    /// Run the main job on an embedded example: two small guest roots, unified into a store.
    Demo(demo::Args),
    /// Manage a hash store: init, stats, verify, gc, fsck.
    Store(store::Args),
    /// Unify identical files of guest roots into a hash store (also: vhashify).
    Hashify(hashify::Args),
    /// Space each guest really uses: own, shared, total (also: vdu).
    #[command(disable_help_flag = true)]
    Du(du::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    common::init_tracing(cli.global.verbose);
    common::exit_with(match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Store(args) => store::run(args),
        Command::Hashify(args) => hashify::run(args),
        Command::Du(args) => du::run(args),
    })
}
