//! `vcontext` / `cowfs context`: create, run, list and destroy contexts (isolated guests).

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::Context as _;
use cowfs_kmod::context::CreateRequest;
use cowfs_kmod::hotset::HotSet;
use cowfs_kmod::lifecycle::{self, RootMounter, StateDir};
use cowfs_kmod::prewarm;
use cowfs_kmod::run::{self, RunOptions};

use crate::common;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where the context registry lives.
    #[arg(long, global = true, env = "COWFS_STATE_DIR", default_value = StateDir::DEFAULT)]
    pub state_dir: PathBuf,
    #[command(subcommand)]
    pub command: Sub,
}

#[derive(clap::Subcommand, Debug)]
pub enum Sub {
    /// Register a context (nothing runs until `run`).
    Create(CreateArgs),
    /// Run a command in a context: mounts its root, confines it, execs the command.
    Run(RunArgs),
    /// List contexts and whether they run.
    List {
        /// Print one JSON document (every context with its run-time status) on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Kill a context's processes, remove its cgroup, programs and mount, and unregister it.
    Destroy {
        /// The context's name.
        name: String,
        /// Print what was destroyed as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// Context id (2 and up; 0 is the host and 1 the spectator).
    #[arg(long)]
    pub xid: u32,
    /// Context name: unique, used by run/destroy, and the default hostname inside.
    #[arg(long)]
    pub name: String,
    /// The guest's root directory (the mount point, when it has --branches).
    #[arg(long)]
    pub root: PathBuf,
    /// Union branches mounted on the root when the context runs (UnionFS syntax:
    /// /g/vs01=rw:/g/master=ro).
    #[arg(long)]
    pub branches: Option<String>,
    /// User the command runs as (default 0: the guest's root).
    #[arg(long)]
    pub uid: Option<u32>,
    /// Group the command runs as, and its only group (default 0).
    #[arg(long)]
    pub gid: Option<u32>,
    /// Capabilities: a profile (secure, none, all) and/or edits, e.g. "+net_raw,-kill".
    /// Anything beyond "secure" is written to the audit log.
    #[arg(long)]
    pub caps: Option<String>,
    /// The context's own addresses (bind/connect are limited to them).
    #[arg(long = "ip", num_args = 1.., value_delimiter = ',')]
    pub ips: Vec<String>,
    /// What 127.0.0.1 means inside: remap (the context's own 127.x address), deny, host.
    #[arg(long)]
    pub loopback: Option<String>,
    /// Extra devices beyond the minimal /dev: "c 10:229 rw", "b 8:* r" or a name (fuse, tun…).
    #[arg(long = "device")]
    pub devices: Vec<String>,
    /// Hostname inside (default: the name).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Refuse to run when an isolation layer is unavailable, instead of running degraded.
    #[arg(long)]
    pub require_kernel_isolation: bool,
    /// Print the registered context as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The context to run in.
    pub name: String,
    /// Refuse to run when an isolation layer is unavailable (even if the context allows it).
    #[arg(long)]
    pub require_kernel_isolation: bool,
    /// Load this hot set (`cowfs hotset build`) into the page cache before the command runs.
    #[arg(long, value_name = "HOTSET")]
    pub prewarm: Option<PathBuf>,
    /// Parallel readers of the prewarm.
    #[arg(long, default_value_t = 8, requires = "prewarm")]
    pub prewarm_workers: usize,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<OsString>,
}

/// Mounts a guest's union root with `cowfs mount` of this very build, as mount(8) would.
pub struct CowfsMount;

impl CowfsMount {
    fn cowfs() -> Result<PathBuf, String> {
        let exe = std::env::current_exe().map_err(|e| format!("locating this program: {e}"))?;
        Ok(exe.with_file_name("cowfs"))
    }
}

impl RootMounter for CowfsMount {
    fn mount(&self, branches: &str, root: &Path) -> Result<(), String> {
        let cowfs = Self::cowfs()?;
        // stderr goes to a file, not a pipe: a daemonized mount keeps its stderr open, and
        // reading a pipe to its end would wait for the daemon to exit.
        let log = std::env::temp_dir().join(format!("cowfs-mount-{}.log", std::process::id()));
        let err_file =
            std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let status = Command::new(&cowfs)
            .arg("mount")
            .arg("-o")
            .arg(format!("dirs={branches}"))
            .arg("none")
            .arg(root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err_file)
            .status();
        let mut stderr = String::new();
        if let Ok(mut f) = std::fs::File::open(&log) {
            let _ = f.read_to_string(&mut stderr);
        }
        let _ = std::fs::remove_file(&log);
        let status = status.map_err(|e| format!("running {}: {e}", cowfs.display()))?;
        if !status.success() {
            return Err(format!(
                "`{} mount -o dirs={branches} none {}` failed ({status}): {}",
                cowfs.display(),
                root.display(),
                stderr.trim()
            ));
        }
        match cowfs_kmod::mounts::is_mount_point(root) {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!(
                "`cowfs mount` succeeded but nothing is mounted on {}",
                root.display()
            )),
            Err(e) => Err(e.to_string()),
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut state = StateDir::open(&args.state_dir)
        .with_context(|| format!("state directory {}", args.state_dir.display()))?;
    match args.command {
        Sub::Create(c) => create(&mut state, c),
        Sub::Run(r) => {
            let warn = |msg: &str| eprintln!("vcontext: warning: {msg}");
            let info = |msg: &str| eprintln!("vcontext: {msg}");
            let prewarm = match &r.prewarm {
                Some(path) => Some((
                    HotSet::load(path).with_context(|| format!("hot set {}", path.display()))?,
                    prewarm::Options {
                        workers: r.prewarm_workers,
                        ..Default::default()
                    },
                )),
                None => None,
            };
            let code = run::run(
                &mut state,
                &r.name,
                &CowfsMount,
                RunOptions {
                    command: r.command,
                    require_isolation: r.require_kernel_isolation,
                    warn: &warn,
                    info: &info,
                    prewarm,
                },
            )
            .with_context(|| format!("running context {}", r.name))?;
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(255)))
        }
        Sub::List { json } => list(&state, json),
        Sub::Destroy { name, json } => {
            let d = lifecycle::destroy(&mut state, &name, &CowfsMount)
                .with_context(|| format!("destroying context {name}"))?;
            if json {
                common::print_json(&d)?;
            } else {
                println!(
                    "destroyed context {} (xid {}): {} process(es) killed",
                    d.name, d.xid, d.killed
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn create(state: &mut StateDir, c: CreateArgs) -> anyhow::Result<ExitCode> {
    let req = CreateRequest {
        xid: c.xid,
        name: c.name.clone(),
        root: c.root,
        branches: c.branches,
        uid: c.uid,
        gid: c.gid,
        caps: c.caps,
        addrs: c.ips,
        loopback: c.loopback,
        devices: c.devices,
        hostname: c.hostname,
        require_isolation: c.require_kernel_isolation,
    };
    let spec = state
        .create(&req)
        .with_context(|| format!("creating context {}", c.name))?;
    if c.json {
        common::print_json(&spec)?;
    } else {
        println!(
            "created context {} (xid {}) root {} caps {}",
            spec.name,
            spec.xid,
            spec.root.display(),
            spec.caps
        );
        if !spec.caps.beyond_secure().is_empty() {
            eprintln!(
                "vcontext: note: capabilities beyond the secure profile were granted and audited in {}",
                state.path().join("audit.log").display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn list(state: &StateDir, json: bool) -> anyhow::Result<ExitCode> {
    let contexts = state.registry_ref().list()?;
    let statuses = contexts
        .iter()
        .map(|c| lifecycle::status(state, c))
        .collect::<Result<Vec<_>, _>>()?;
    if json {
        common::print_json(&statuses)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:>6} {:<16} {:<8} {:>5} {:>6} {:>6} {:<24} {:<20} ROOT",
        "XID", "NAME", "STATE", "PROCS", "FORKS", "EXECS", "CAPS", "ADDRESSES"
    );
    for s in statuses {
        let count = |v: Option<u64>| v.map_or("-".to_string(), |n| n.to_string());
        let addrs: Vec<String> = s.spec.addrs.iter().map(|a| a.to_string()).collect();
        println!(
            "{:>6} {:<16} {:<8} {:>5} {:>6} {:>6} {:<24} {:<20} {}",
            s.spec.xid,
            s.spec.name,
            if s.running { "running" } else { "stopped" },
            s.processes,
            count(s.forks),
            count(s.execs),
            s.spec.caps.to_string(),
            if addrs.is_empty() {
                "-".to_string()
            } else {
                addrs.join(",")
            },
            s.spec.root.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
