//! `unionctl MNT add|remove|list`: the same as `cowfs branch`.

use std::process::ExitCode;

use clap::Parser;
use cowfs_tools::common::{self, GlobalArgs};

/// Change or show the branches of a mounted cowfs union.
#[derive(Parser, Debug)]
#[command(name = "unionctl", version)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(flatten)]
    args: cowfs_tools::branch::Args,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    common::init_tracing(cli.global.verbose);
    common::exit_with(cowfs_tools::branch::run(cli.args))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn every_command_and_argument_has_help() {
        cowfs_tools::common::assert_documented(super::Cli::command(), "unionctl");
    }
}
