//! `vcontext`: the familiar name of `cowfs context`.

use std::process::ExitCode;

use clap::Parser;
use cowfs_tools::common::{self, GlobalArgs};
use cowfs_tools::vcontext;

/// Create, run, list and destroy contexts: guests isolated by namespaces, cgroup eBPF
/// programs, Landlock and capability profiles.
#[derive(Parser, Debug)]
#[command(name = "vcontext", version)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(flatten)]
    args: vcontext::Args,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    common::init_tracing(cli.global.verbose);
    common::exit_with(vcontext::run(cli.args))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn every_command_and_argument_has_help() {
        cowfs_tools::common::assert_documented(super::Cli::command(), "vcontext");
    }
}
