//! `vps`: the familiar name of `cowfs ps`.

use std::process::ExitCode;

use clap::Parser;
use cowfs_tools::common::{self, GlobalArgs};
use cowfs_tools::vps;

/// Processes with their context id and name (the spectator's view: all contexts), and the forks
/// and execs counted per context. Arguments for ps(1) (`vps aux`, `vps -ef`) are passed on to
/// ps, with the context columns added.
#[derive(Parser, Debug)]
#[command(name = "vps", version)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(flatten)]
    args: vps::Args,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    common::init_tracing(cli.global.verbose);
    common::exit_with(vps::run(cli.args))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn every_command_and_argument_has_help() {
        cowfs_tools::common::assert_documented(super::Cli::command(), "vps");
    }
}
