//! `unionctl` / `cowfs branch`: list, add and remove the branches of a mounted union through
//! its daemon's control socket (root only).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use cowfs_fs::branch::BranchMode;
use cowfs_fs::control::{Client, PositionSpec};
use cowfs_fs::unionfs::BranchInfo;

use crate::common;

/// Change or show the branches of a mounted union.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// The union's mountpoint.
    pub mountpoint: PathBuf,
    /// Print the result (branch list, or counters) as JSON.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub action: Action,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum Action {
    /// Add a branch: leftmost (highest priority) unless --before, --after or --last.
    Add {
        /// Insert just left of (above) this branch.
        #[arg(long, value_name = "BRANCH", conflicts_with_all = ["after", "last"])]
        before: Option<PathBuf>,
        /// Insert just right of (below) this branch.
        #[arg(long, value_name = "BRANCH", conflicts_with = "last")]
        after: Option<PathBuf>,
        /// Append as the rightmost (lowest priority) branch.
        #[arg(long)]
        last: bool,
        /// PATH=ro or PATH=rw (PATH alone is read-write, as in UnionFS).
        #[arg(value_name = "PATH[=ro|rw]")]
        branch: String,
    },
    /// Remove a branch (open files in it stay readable until closed).
    Remove {
        /// The branch directory.
        path: PathBuf,
    },
    /// Show the branches, leftmost first.
    List,
    /// Show what the kernel asked of the daemon so far: requests per kind (lookup, open,
    /// read, …), passthrough opens, known nodes and open handles.
    Stats,
}

/// `PATH=ro|rw` → (absolute path, mode); UnionFS' default mode is rw.
fn parse_branch(spec: &str) -> anyhow::Result<(PathBuf, BranchMode)> {
    let (path, mode) = match spec.rsplit_once('=') {
        Some((p, m @ ("ro" | "rw"))) => (p, m.parse::<BranchMode>().map_err(anyhow::Error::msg)?),
        _ => (spec, BranchMode::Rw),
    };
    if path.is_empty() {
        bail!("empty branch path in '{spec}'");
    }
    Ok((absolute(Path::new(path))?, mode))
}

/// The daemon resolves paths from "/": send absolute, canonical ones.
fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    path.canonicalize()
        .with_context(|| format!("branch {}", path.display()))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut client = Client::connect(&args.mountpoint)?;
    let branches = match &args.action {
        Action::Stats => {
            let stats = client.stats()?;
            if args.json {
                common::print_json(&stats)?;
            } else {
                for (name, value) in stats.iter().filter(|(_, v)| **v > 0) {
                    println!("{name}\t{value}");
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        Action::List => client.list()?,
        Action::Add {
            before,
            after,
            last,
            branch,
        } => {
            let (path, mode) = parse_branch(branch)?;
            let position = match (before, after, last) {
                (Some(b), _, _) => PositionSpec::Before(absolute(b)?),
                (_, Some(a), _) => PositionSpec::After(absolute(a)?),
                (_, _, true) => PositionSpec::Last,
                _ => PositionSpec::First,
            };
            client
                .add(&path, mode, position)
                .with_context(|| format!("cannot add branch {}", path.display()))?
        }
        Action::Remove { path } => {
            let path = path.canonicalize().unwrap_or_else(|_| path.clone());
            client
                .remove(&path)
                .with_context(|| format!("cannot remove branch {}", path.display()))?
        }
    };
    print_branches(&branches, args.json, matches!(args.action, Action::List))?;
    Ok(ExitCode::SUCCESS)
}

fn print_branches(branches: &[BranchInfo], json: bool, always: bool) -> anyhow::Result<()> {
    if json {
        return common::print_json(&branches);
    }
    if always {
        for (i, b) in branches.iter().enumerate() {
            println!("{i}\t{}\t{}", b.mode, b.path.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_specs() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let p = tmp.path().to_str().expect("utf8");
        assert_eq!(
            parse_branch(&format!("{p}=rw")).expect("rw").1,
            BranchMode::Rw
        );
        assert_eq!(parse_branch(p).expect("default").1, BranchMode::Rw);
        assert_eq!(
            parse_branch(&format!("{p}=ro")).expect("ro").1,
            BranchMode::Ro
        );
        assert!(parse_branch("/does/not/exist=ro").is_err());
        assert!(parse_branch("=rw").is_err());
    }
}
