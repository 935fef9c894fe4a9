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
        let cmd = super::Cli::command();
        cmd.clone().debug_assert();
        // --help and --version show this name, not the crate's.
        assert_eq!(cmd.get_name(), "vhashify");
        let about = cmd.get_about().map(ToString::to_string).unwrap_or_default();
        assert!(
            !about.contains("front ends"),
            "the crate's description: {about}"
        );
        let missing = cowfs_tools::common::undocumented(&cmd);
        assert!(missing.is_empty(), "without help text: {missing:#?}");
    }
}
