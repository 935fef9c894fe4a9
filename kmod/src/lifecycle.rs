//! The kernel state of contexts: created when a context starts, removed when its last process
//! is gone or when it is destroyed.
//!
//! A running context is: its root mounted (when it has branches), its cgroup
//! `<cgroup2>/cowfs/<instance>/x<xid>` with the enforcement programs attached, and an entry in
//! the shared accounting map. Every step is undone in reverse when a later one fails, and
//! [`stop_if_idle`] is idempotent, so a start that fails halfway, a `run` whose command exits
//! and a `destroy` all end in the same place: nothing left. All of it happens under the state
//! directory's lock, so two `run`s of one context, or a `run` and a `destroy`, never interleave.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use serde::Serialize;

use crate::bpf::{self, Accounting, Attached, LayerReport};
use crate::cgroup::{ContextCgroup, Hierarchy};
use crate::context::{ContextSpec, CreateRequest};
use crate::registry::Registry;
use crate::{Error, Result, landlock, mounts, net};

/// Mounts and unmounts a context's union root. cowfs-kmod knows nothing of the union
/// filesystem; the caller (the `cowfs` binary) implements this with `cowfs mount`.
pub trait RootMounter {
    /// Mounts the union `branches` (UnionFS `dirs=` syntax) on `root`; returns once mounted.
    fn mount(&self, branches: &str, root: &Path) -> std::result::Result<(), String>;

    /// Unmounts `root`.
    fn unmount(&self, root: &Path) -> std::result::Result<(), String> {
        use nix::mount::{MntFlags, umount2};
        match umount2(root, MntFlags::empty()) {
            Ok(()) => Ok(()),
            // Still referenced by a dying namespace: detach now, freed when unused.
            Err(nix::errno::Errno::EBUSY) => {
                umount2(root, MntFlags::MNT_DETACH).map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

/// The state directory: the registry, its lock and the audit log.
pub struct StateDir {
    path: PathBuf,
    registry: Registry,
}

/// Held while contexts' kernel state changes.
pub struct StateLock(#[allow(dead_code)] Flock<File>);

impl StateDir {
    pub const DEFAULT: &'static str = "/var/lib/cowfs";

    /// Opens the state directory, creating it (mode 0700) and its registry if needed.
    pub fn open(path: &Path) -> Result<Self> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(|e| Error::io(format!("creating state directory {}", path.display()), e))?;
        let registry = Registry::open(&path.join("contexts.db"))?;
        Ok(StateDir {
            path: path.to_path_buf(),
            registry,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn registry(&mut self) -> &mut Registry {
        &mut self.registry
    }

    pub fn registry_ref(&self) -> &Registry {
        &self.registry
    }

    /// Takes the state directory's lock (blocking).
    pub fn lock(&self) -> Result<StateLock> {
        let path = self.path.join("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map(StateLock)
            .map_err(|(_, e)| Error::sys(format!("locking {}", path.display()), e))
    }

    /// Appends one line to `audit.log`: when, who, what.
    pub fn audit(&self, what: &str) -> Result<()> {
        let path = self.path.join("audit.log");
        let who = match std::env::var("SUDO_USER") {
            Ok(user) => format!("uid={} (sudo from {user})", nix::unistd::getuid()),
            Err(_) => format!("uid={}", nix::unistd::getuid()),
        };
        let line = format!(
            "{} {who} {what}\n",
            humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        );
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        f.write_all(line.as_bytes())
            .and_then(|()| f.sync_data())
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        tracing::info!(target: "cowfs::audit", "{}", line.trim_end());
        Ok(())
    }

    /// Validates and registers a context. Capabilities beyond the secure profile are written to
    /// the audit log before the context exists, so no grant goes unrecorded.
    pub fn create(&mut self, req: &CreateRequest) -> Result<ContextSpec> {
        let spec = req.validate()?;
        let _lock = self.lock()?;
        let beyond = spec.caps.beyond_secure();
        if !beyond.is_empty() {
            let names: Vec<String> = beyond
                .iter()
                .map(|c| format!("+{}", crate::caps::short(*c)))
                .collect();
            self.audit(&format!(
                "create context {} (xid {}) grants capabilities beyond the secure profile: {}",
                spec.name,
                spec.xid,
                names.join(",")
            ))?;
        }
        self.registry.create(&spec)?;
        Ok(spec)
    }

    /// The context cgroup of `ctx`.
    pub fn cgroup(&self, hierarchy: &Hierarchy, ctx: &ContextSpec) -> ContextCgroup {
        hierarchy.context(self.registry.instance(), ctx.xid)
    }

    fn accounting_dir(&self, bpffs: &Path) -> PathBuf {
        Accounting::dir(bpffs, self.registry.instance())
    }

    fn holds_dir(&self) -> PathBuf {
        self.path.join("holds")
    }

    /// Keeps the cgroup of `ctx` (and so its id) alive across runs until the hold is dropped:
    /// a tracer registers the id once and sees every later run. The caller holds the lock.
    pub fn hold_cgroup(&self, ctx: &ContextSpec) -> Result<CgroupHold> {
        let dir = self.holds_dir();
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let pid = std::process::id() as i32;
        let start = process_start(pid).unwrap_or(0);
        let path = dir.join(format!("x{}.{pid}.{start}", ctx.xid));
        std::fs::write(&path, b"")
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        Ok(CgroupHold { path })
    }

    /// Whether a live process holds the cgroup of `ctx`; holds of dead processes (a tracer
    /// that was killed) are removed on the way.
    pub fn cgroup_held(&self, ctx: &ContextSpec) -> Result<bool> {
        let dir = self.holds_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Error::io(format!("listing {}", dir.display()), e)),
        };
        let prefix = format!("x{}.", ctx.xid);
        let mut held = false;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(&prefix) else {
                continue;
            };
            let mut parts = rest.split('.');
            let pid = parts.next().and_then(|p| p.parse::<i32>().ok());
            let start = parts.next().and_then(|p| p.parse::<u64>().ok());
            let alive = matches!((pid, start), (Some(pid), Some(start)) if process_start(pid) == Some(start));
            if alive {
                held = true;
            } else {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(held)
    }
}

/// Start time of a process (clock ticks after boot): tells a live pid from a reused one.
fn process_start(pid: i32) -> Option<u64> {
    procfs::process::Process::new(pid)
        .and_then(|p| p.stat())
        .ok()
        .map(|s| s.starttime)
}

/// See [`StateDir::hold_cgroup`]; released when dropped (or when its process dies).
#[derive(Debug)]
pub struct CgroupHold {
    path: PathBuf,
}

impl Drop for CgroupHold {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What a start established, and what it could not.
#[derive(Debug, Clone, Serialize)]
pub struct Started {
    #[serde(skip)]
    pub cgroup: ContextCgroup,
    /// The enforcement layers (devices, network, sysctl).
    pub layers: Vec<LayerReport>,
    pub accounting: LayerReport,
}

impl Started {
    /// The layers that are not in force.
    pub fn missing(&self) -> Vec<&LayerReport> {
        self.layers.iter().filter(|l| !l.enforced).collect()
    }
}

/// Brings up a context's kernel state (the caller holds the lock): mounts its root, creates its
/// cgroup with the enforcement programs, registers it for accounting. With `require`, a layer
/// the kernel refuses is an error; either way, a failure undoes everything this start did.
pub fn start(
    state: &StateDir,
    ctx: &ContextSpec,
    mounter: &dyn RootMounter,
    require: bool,
) -> Result<Started> {
    let hierarchy = Hierarchy::detect()?;
    if require {
        match landlock::kernel_abi() {
            Ok(abi) if abi >= landlock::SCOPES_ABI => {}
            Ok(abi) => {
                return Err(Error::IsolationUnavailable(format!(
                    "Landlock ABI {abi} cannot scope signals and abstract sockets (needs {})",
                    landlock::SCOPES_ABI
                )));
            }
            Err(_) => {
                return Err(Error::IsolationUnavailable(
                    "no Landlock in this kernel".into(),
                ));
            }
        }
    }
    if !ctx.root.is_dir() {
        return Err(Error::BadRoot {
            path: ctx.root.clone(),
            why: "missing (it was there when the context was created)".into(),
        });
    }
    if let Some(branches) = &ctx.branches
        && !mounts::is_mount_point(&ctx.root)?
    {
        mounter
            .mount(branches, &ctx.root)
            .map_err(|why| Error::Mount {
                name: ctx.name.clone(),
                root: ctx.root.clone(),
                why,
            })?;
    }
    let result = bring_up(state, &hierarchy, ctx, require);
    if result.is_err()
        && let Err(e) = stop_if_idle(state, ctx, mounter)
    {
        tracing::warn!("undoing the start of {}: {e}", ctx.name);
    }
    result
}

fn bring_up(
    state: &StateDir,
    hierarchy: &Hierarchy,
    ctx: &ContextSpec,
    require: bool,
) -> Result<Started> {
    let cgroup = state.cgroup(hierarchy, ctx);
    let created = cgroup.create()?;
    let layers = if !created && cgroup.populated()? {
        // Other runs of this context are alive: its programs are in place; report them.
        let names: Vec<String> = bpf::attached(&cgroup)?
            .into_iter()
            .map(|a| a.name)
            .collect();
        bpf::LAYERS
            .iter()
            .map(|(layer, hooks)| {
                if hooks.iter().all(|h| names.iter().any(|n| n == h.program())) {
                    LayerReport::enforced(layer, "attached by an earlier run")
                } else {
                    LayerReport::missing(layer, "not attached when the context started")
                }
            })
            .collect()
    } else {
        // A new cgroup, or a stale empty one from a run that was killed: a fresh policy.
        bpf::detach_all(&cgroup)?;
        let rules = ctx.device_rules();
        let maps = net::maps(&ctx.addrs, ctx.loopback);
        bpf::attach_enforcement(
            &cgroup,
            &bpf::Policy {
                devices: &rules,
                net: &maps,
            },
        )?
    };
    let started_layers: Vec<&LayerReport> = layers.iter().filter(|l| !l.enforced).collect();
    if require && !started_layers.is_empty() {
        let list: Vec<String> = started_layers
            .iter()
            .map(|l| format!("{}: {}", l.layer, l.detail))
            .collect();
        return Err(Error::IsolationUnavailable(list.join("; ")));
    }
    let accounting = match register_accounting(state, &cgroup) {
        Ok(()) => LayerReport::enforced("accounting", "forks/execs counted"),
        Err(e) => LayerReport::missing("accounting", e.to_string()),
    };
    Ok(Started {
        cgroup,
        layers,
        accounting,
    })
}

fn register_accounting(state: &StateDir, cgroup: &ContextCgroup) -> Result<()> {
    let dir = state.accounting_dir(&bpf::bpffs()?);
    let acct = Accounting::ensure(&dir)?;
    let id = cgroup.id()?;
    if acct.read(id)?.is_none() {
        acct.register(id)?;
    }
    Ok(())
}

/// Removes a context's kernel state if none of its processes is left and no tracer holds its
/// cgroup (the caller holds the lock); returns whether it did. Idempotent: whatever is already
/// gone is skipped.
pub fn stop_if_idle(
    state: &StateDir,
    ctx: &ContextSpec,
    mounter: &dyn RootMounter,
) -> Result<bool> {
    stop_idle(state, ctx, mounter, false)
}

fn stop_idle(
    state: &StateDir,
    ctx: &ContextSpec,
    mounter: &dyn RootMounter,
    ignore_holds: bool,
) -> Result<bool> {
    let hierarchy = Hierarchy::detect()?;
    let cgroup = state.cgroup(&hierarchy, ctx);
    if cgroup.populated()? {
        return Ok(false);
    }
    if !ignore_holds && state.cgroup_held(ctx)? {
        return Ok(false);
    }
    if cgroup.exists() {
        let id = cgroup.id()?;
        bpf::detach_all(&cgroup)?;
        if let Some(bpffs) = mounts::find_fs("bpf")?
            && let Some(acct) = Accounting::open(&state.accounting_dir(&bpffs))
        {
            acct.unregister(id)?;
        }
        cgroup.remove()?;
    }
    release_accounting_if_unused(state, &hierarchy)?;
    if ctx.branches.is_some() && mounts::is_mount_point(&ctx.root)? {
        mounter.unmount(&ctx.root).map_err(|why| Error::Mount {
            name: ctx.name.clone(),
            root: ctx.root.clone(),
            why: format!("unmounting: {why}"),
        })?;
    }
    Ok(true)
}

/// Unloads the shared accounting set when no context of this registry runs any more.
fn release_accounting_if_unused(state: &StateDir, hierarchy: &Hierarchy) -> Result<()> {
    let Some(bpffs) = mounts::find_fs("bpf")? else {
        return Ok(());
    };
    let Some(acct) = Accounting::open(&state.accounting_dir(&bpffs)) else {
        return Ok(());
    };
    let running = state
        .registry
        .list()?
        .iter()
        .any(|c| state.cgroup(hierarchy, c).exists());
    if !running {
        acct.unload()?;
    }
    Ok(())
}

/// What `destroy` removed.
#[derive(Debug, Clone, Serialize)]
pub struct Destroyed {
    pub name: String,
    pub xid: u32,
    pub killed: usize,
}

/// Kills every process of a context, removes its kernel state and its registry entry.
pub fn destroy(state: &mut StateDir, name: &str, mounter: &dyn RootMounter) -> Result<Destroyed> {
    let _lock = state.lock()?;
    let ctx = state.registry.get(name)?;
    let hierarchy = Hierarchy::detect()?;
    let cgroup = state.cgroup(&hierarchy, &ctx);
    let killed = cgroup.procs()?.len();
    cgroup.kill_all(&ctx.name, Duration::from_secs(10))?;
    // A tracer's hold does not outlive the context: it sees the cgroup go and stops.
    if !stop_idle(state, &ctx, mounter, true)? {
        return Err(Error::StillRunning {
            name: ctx.name.clone(),
            secs: 10,
            pids: cgroup.procs()?,
        });
    }
    state.registry.remove(ctx.xid)?;
    state.audit(&format!(
        "destroy context {} (xid {}), {killed} process(es) killed",
        ctx.name, ctx.xid
    ))?;
    Ok(Destroyed {
        name: ctx.name,
        xid: ctx.xid,
        killed,
    })
}

/// A context as `vcontext list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    #[serde(flatten)]
    pub spec: ContextSpec,
    pub running: bool,
    pub processes: usize,
    pub cgroup: Option<PathBuf>,
    pub programs: Vec<Attached>,
    pub forks: Option<u64>,
    pub execs: Option<u64>,
    pub root_mounted: bool,
}

/// The run-time status of `ctx`.
pub fn status(state: &StateDir, ctx: &ContextSpec) -> Result<Status> {
    let hierarchy = Hierarchy::detect()?;
    let cgroup = state.cgroup(&hierarchy, ctx);
    let exists = cgroup.exists();
    let counters = match (exists, mounts::find_fs("bpf")?) {
        (true, Some(bpffs)) => match Accounting::open(&state.accounting_dir(&bpffs)) {
            Some(acct) => acct.read(cgroup.id()?)?,
            None => None,
        },
        _ => None,
    };
    Ok(Status {
        spec: ctx.clone(),
        running: exists && cgroup.populated()?,
        processes: cgroup.procs()?.len(),
        cgroup: exists.then(|| cgroup.path().to_path_buf()),
        programs: bpf::attached(&cgroup)?,
        forks: counters.map(|c| c.forks),
        execs: counters.map(|c| c.execs),
        root_mounted: mounts::is_mount_point(&ctx.root)?,
    })
}
