//! `vdu`: the familiar name of `cowfs du`.

use std::process::ExitCode;

use clap::Parser;
use cowfs_tools::common::{self, GlobalArgs};
use cowfs_tools::du;

#[derive(Parser, Debug)]
#[command(name = "vdu", version, about = "Space each guest root really uses: its own, shared, total", long_about = None, disable_help_flag = true)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(flatten)]
    args: du::Args,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    common::init_tracing(cli.global.verbose);
    common::exit_with(du::run(cli.args))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn every_command_and_argument_has_help() {
        cowfs_tools::common::assert_documented(super::Cli::command(), "vdu");
    }
}
