//! `cowfs trace CONTEXT`: one trace session of one context, from start to access log.
//!
//! ```text
//! lock; create the context's cgroup if it does not run; hold it; unlock
//! walk the root and the branches (first paths)          load + attach the programs
//! register the cgroup id ─────────────────────────────▶ the kernel records its tasks
//! loop: wait on the ring buffer, fold records; walk again (at most every 2 s) when
//!       an inode no walk knows is touched, so its path at first touch is kept
//! stop (duration, caller's signal, the context destroyed): drain, read the counters
//! walk again (last paths); resolve; release the hold (the context stops if it is idle)
//! ```
//!
//! Holding the cgroup is what lets a trace start before the context does and see it from its
//! first exec: a run reuses the cgroup (its id is already registered) instead of creating a
//! new one, and does not remove it when it ends while the hold lasts.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::log::{
    AccessLog, Collector, FileAccess, LOG_FORMAT, LOG_VERSION, Status, decode_path, encode_path,
};
use super::tracer::Tracer;
use super::walk::Snapshot;
use crate::cgroup::{ContextCgroup, Hierarchy};
use crate::context::ContextSpec;
use crate::lifecycle::{self, CgroupHold, RootMounter, StateDir};
use crate::{Result, beneath, hotset};

/// How to trace.
#[derive(Debug, Clone)]
pub struct TraceOptions {
    /// Ring buffer size (rounded up to a power of two, at least a page).
    pub buffer: u64,
    /// Branch directories to resolve inodes in, besides those of the context's union spec.
    pub branches: Vec<PathBuf>,
}

/// The branch directories of a UnionFS `dirs=` spec (`/a=rw:/b=ro`).
pub fn branch_dirs(spec: &str) -> Vec<PathBuf> {
    spec.split(':')
        .filter(|s| !s.is_empty())
        .map(|s| match s.rsplit_once('=') {
            Some((dir, _mode)) => PathBuf::from(dir),
            None => PathBuf::from(s),
        })
        .collect()
}

/// A context being traced.
pub struct TraceSession {
    state_path: PathBuf,
    ctx: ContextSpec,
    cgroup: ContextCgroup,
    cgroup_id: u64,
    hold: Option<CgroupHold>,
    tracer: Tracer,
    collector: Collector,
    trees: Vec<PathBuf>,
    first: Snapshot,
    last_walk: Instant,
    pending: bool,
    started: SystemTime,
    clock: Instant,
    page_size: u64,
    gone: bool,
}

/// Only unmounts (a trace never mounts a root; a run it outlived may have).
struct UnmountOnly;

impl RootMounter for UnmountOnly {
    fn mount(&self, _branches: &str, root: &Path) -> std::result::Result<(), String> {
        Err(format!("a trace does not mount {}", root.display()))
    }
}

const RESCAN_EVERY: Duration = Duration::from_secs(2);

impl TraceSession {
    /// Holds the context's cgroup (creating it if the context does not run), walks its trees
    /// and starts recording. The caller may start the context's workload once this returns.
    pub fn start(state: &mut StateDir, name: &str, opts: &TraceOptions) -> Result<Self> {
        let ctx = state.registry().get(name)?;
        let hierarchy = Hierarchy::detect()?;
        let cgroup = state.cgroup(&hierarchy, &ctx);
        let (hold, cgroup_id) = {
            let _lock = state.lock()?;
            cgroup.create()?;
            let hold = state.hold_cgroup(&ctx)?;
            (hold, cgroup.id()?)
        };
        let level = cgroup
            .relative()
            .split('/')
            .filter(|c| !c.is_empty())
            .count();
        let mut trees = vec![ctx.root.clone()];
        if let Some(spec) = &ctx.branches {
            trees.extend(branch_dirs(spec));
        }
        for b in &opts.branches {
            if !trees.contains(b) {
                trees.push(b.clone());
            }
        }
        let started = SystemTime::now();
        let prepared = Snapshot::walk(&trees).and_then(|first| {
            let mut tracer = Tracer::start(opts.buffer, level as u32)?;
            tracer.trace_cgroup(cgroup_id)?;
            Ok((first, tracer))
        });
        let (first, tracer) = match prepared {
            Ok(p) => p,
            Err(e) => {
                release(state, &ctx, hold);
                return Err(e);
            }
        };
        let page_size = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .map_or(4096, |p| p as u64);
        tracing::info!(
            "tracing context {} (cgroup {}, id {cgroup_id}); {} files known",
            ctx.name,
            cgroup.path().display(),
            first.files.len()
        );
        Ok(TraceSession {
            state_path: state.path().to_path_buf(),
            ctx,
            cgroup,
            cgroup_id,
            hold: Some(hold),
            tracer,
            collector: Collector::new(page_size),
            trees,
            first,
            last_walk: Instant::now(),
            pending: false,
            started,
            clock: Instant::now(),
            page_size,
            gone: false,
        })
    }

    /// Folds whatever the ring buffer holds; returns how many records.
    pub fn poll(&mut self, timeout: Duration) -> Result<usize> {
        self.tracer.wait(timeout)?;
        let collector = &mut self.collector;
        let first = &self.first;
        let mut pending = false;
        let n = self.tracer.drain(|rec| {
            if collector.add(&rec) && !first.files.contains_key(&(rec.dev, rec.ino)) {
                pending = true;
            }
        });
        self.pending |= pending;
        if self.pending && self.last_walk.elapsed() >= RESCAN_EVERY {
            self.rescan()?;
        }
        if !self.gone && !self.cgroup.exists() {
            // Destroyed under us: nothing more will come.
            self.gone = true;
        }
        Ok(n)
    }

    /// Whether the context's cgroup is gone (the context was destroyed).
    pub fn context_gone(&self) -> bool {
        self.gone
    }

    fn rescan(&mut self) -> Result<()> {
        let unknown: std::collections::HashSet<_> = self
            .collector
            .keys()
            .filter(|k| !self.first.files.contains_key(k))
            .copied()
            .collect();
        for (i, top) in self.trees.iter().enumerate() {
            if top.is_dir() {
                self.first.add_tree(i, top, |k| unknown.contains(k))?;
            }
        }
        self.pending = false;
        self.last_walk = Instant::now();
        Ok(())
    }

    /// Records until `stop` returns true, `duration` has passed or the context is destroyed.
    pub fn run(
        &mut self,
        duration: Option<Duration>,
        stop: &mut dyn FnMut() -> bool,
    ) -> Result<()> {
        let deadline = duration.map(|d| self.clock + d);
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left.is_some_and(|l| l.is_zero()) || stop() || self.context_gone() {
                return Ok(());
            }
            let wait = left.map_or(Duration::from_millis(100), |l| {
                l.min(Duration::from_millis(100))
            });
            self.poll(wait)?;
        }
    }

    /// Stops recording, resolves paths and releases the cgroup (the context's kernel state
    /// goes if nothing runs in it).
    pub fn finish(mut self, state: &mut StateDir) -> Result<AccessLog> {
        let duration = self.clock.elapsed();
        self.tracer.untrace_cgroup(self.cgroup_id)?;
        let collector = &mut self.collector;
        self.tracer.drain(|rec| {
            collector.add(&rec);
        });
        let stats = self.tracer.stats()?;
        // The last walk happens while the hold keeps a union root that a run mounted in place
        // (a FUSE inode is only found through its mount). A tree that vanished (a branch
        // removed) keeps its index for the others.
        let mut last = Snapshot::default();
        for (i, top) in self.trees.iter().enumerate() {
            if top.is_dir() {
                last.add_tree(i, top, |_| true)?;
            }
        }
        let mut names = vec!["root".to_string()];
        names.extend(self.trees.iter().skip(1).map(|t| encode_path(t)));
        let (mut files, unresolved) = self.collector.resolve(&self.first, &last, &names);
        fingerprint_files(&mut files, &self.trees, &names);
        if let Some(hold) = self.hold.take() {
            let _lock = state.lock()?;
            drop(hold);
            lifecycle::stop_if_idle(state, &self.ctx, &UnmountOnly)?;
        }
        let hooks = self
            .tracer
            .hooks()
            .iter()
            .filter(|h| h.attached)
            .map(|h| h.tracepoint.clone())
            .collect();
        Ok(AccessLog {
            format: LOG_FORMAT.into(),
            version: LOG_VERSION,
            context: self.ctx.name.clone(),
            xid: self.ctx.xid,
            root: encode_path(&self.ctx.root),
            branches: names.into_iter().skip(1).collect(),
            started: humantime::format_rfc3339_millis(self.started).to_string(),
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            page_size: self.page_size,
            buffer_bytes: self.tracer.buffer(),
            hooks,
            records: self.collector.records(),
            dropped: stats.dropped,
            unreadable: stats.unreadable,
            files,
            unresolved,
        })
    }
}

/// Fills in each present file's fingerprint, read beneath the tree it was found in (its pages
/// were just used, so this is a cache hit). A file that cannot be read keeps none.
fn fingerprint_files(files: &mut [FileAccess], trees: &[PathBuf], names: &[String]) {
    let roots: Vec<Option<OwnedFd>> = trees.iter().map(|t| beneath::open_root(t).ok()).collect();
    for f in files.iter_mut().filter(|f| f.status != Status::Deleted) {
        let Some(Some(root)) = names.iter().position(|n| *n == f.tree).map(|i| &roots[i]) else {
            continue;
        };
        f.fingerprint = beneath::open_file(root, &decode_path(&f.path))
            .ok()
            .and_then(|fd| hotset::fingerprint(&mut std::fs::File::from(fd)).ok());
    }
}

/// Drops `hold` and stops the context if it is idle (nothing of a failed trace is left).
fn release(state: &StateDir, ctx: &ContextSpec, hold: CgroupHold) {
    let result = state.lock().and_then(|_lock| {
        drop(hold);
        lifecycle::stop_if_idle(state, ctx, &UnmountOnly)
    });
    if let Err(e) = result {
        tracing::warn!("releasing the cgroup of {} after a trace: {e}", ctx.name);
    }
}

impl Drop for TraceSession {
    fn drop(&mut self) {
        // An error path (finish takes the hold): release here, so that a failed trace leaves
        // no idle cgroup behind.
        if let Some(hold) = self.hold.take() {
            match StateDir::open(&self.state_path) {
                Ok(state) => release(&state, &self.ctx, hold),
                Err(e) => tracing::warn!("trace of {}: {e}", self.ctx.name),
            }
        }
    }
}
