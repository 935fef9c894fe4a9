//! `vhashify`: the familiar name of `cowfs hashify`.

use std::process::ExitCode;

use clap::Parser;
use cowfs_tools::common::{self, GlobalArgs};
use cowfs_tools::hashify;

#[derive(Parser, Debug)]
#[command(name = "vhashify", version, about = "Unify identical files of guest roots into a cowfs hash store", long_about = None)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(flatten)]
    args: hashify::Args,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    common::init_tracing(cli.global.verbose);
    common::exit_with(hashify::run(cli.args))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn every_command_and_argument_has_help() {
        cowfs_tools::common::assert_documented(super::Cli::command(), "vhashify");
    }
}
