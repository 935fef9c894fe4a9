use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use cowfs_tools::common::{self, GlobalArgs};
use cowfs_tools::{demo, du, hashify, hotset, kernel, prewarm, store, trace, vcontext, vps};

/// cowfs: copy-on-write guest root filesystems from shared templates.
#[derive(Parser, Debug)]
#[command(name = "cowfs", version, long_about = None, propagate_version = true)]
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
    /// Mount a union of branches and serve it (detached once mounted).
    Mount(cowfs_tools::mount::Args),
    /// Unmount a cowfs union.
    Umount(cowfs_tools::umount::Args),
    /// Change or show the branches of a mounted union (what `unionctl` does).
    Branch(cowfs_tools::branch::Args),
    /// Contexts: isolated guests (also `vcontext`).
    Context(vcontext::Args),
    /// Processes with their context (also `vps`).
    Ps(vps::Args),
    /// Record which files and byte ranges a context reads (an access log).
    Trace(trace::Args),
    /// Hot sets: the ranges worth preloading, built from access logs.
    Hotset(hotset::Args),
    /// Load a hot set into the page cache through a guest's root.
    Prewarm(prewarm::Args),
    /// What this kernel allows (`cowfs kernel probe`).
    Kernel(kernel::Args),
}

fn main() -> ExitCode {
    // mount(8) / mount.fuse run `cowfs SOURCE MNT -o OPTS` or `mount.fuse.cowfs SOURCE MNT …`.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let subcommands: Vec<String> = Cli::command()
        .get_subcommands()
        .flat_map(|c| {
            std::iter::once(c.get_name().to_string()).chain(c.get_all_aliases().map(String::from))
        })
        .chain(["help".to_string()])
        .collect();
    if let Some(args) = cowfs_tools::mount::helper_invocation(&argv, &subcommands) {
        common::init_tracing(0);
        return common::exit_with(args.and_then(cowfs_tools::mount::run));
    }
    let cli = Cli::parse();
    common::init_tracing(cli.global.verbose);
    common::exit_with(match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Store(args) => store::run(args),
        Command::Hashify(args) => hashify::run(args),
        Command::Du(args) => du::run(args),
        Command::Mount(args) => cowfs_tools::mount::run(args),
        Command::Umount(args) => cowfs_tools::umount::run(args),
        Command::Branch(args) => cowfs_tools::branch::run(args),
        Command::Context(args) => vcontext::run(args),
        Command::Ps(args) => vps::run(args),
        Command::Trace(args) => trace::run(args),
        Command::Hotset(args) => hotset::run(args),
        Command::Prewarm(args) => prewarm::run(args),
        Command::Kernel(args) => kernel::run(args),
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn every_command_and_argument_has_help() {
        cowfs_tools::common::assert_documented(super::Cli::command(), "cowfs");
    }
}
