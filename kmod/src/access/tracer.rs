//! Loads the access programs for one trace session and reads what they record.
//!
//! Unlike accounting (one shared set pinned in bpffs, read by any `vps` at any time), a trace
//! session has exactly one consumer and must not outlive it: the programs, their links and the
//! ring buffer belong to the [`Tracer`]'s file descriptors, so when it is dropped — or the
//! process dies, even by SIGKILL — the kernel detaches and frees all of it. Nothing is pinned,
//! nothing can leak. Two concurrent sessions cost a tracepoint two hash lookups for an
//! untraced task; sessions are rare operator actions, so that is the right trade.

use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

use aya::maps::{Array, HashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::RawTracePoint;
use aya::{Ebpf, EbpfLoader};
use serde::Serialize;

use super::layout;
use crate::abi::{self, AccessConfig, AccessRecord, AccessStats};
use crate::bpf::describe;
use crate::object::OBJECT;
use crate::{Error, Result};

/// The programs of the access log and the tracepoints they attach to.
pub const HOOKS: [(&str, &str); 5] = [
    (abi::PROG_PC_READ, abi::TP_PC_READ),
    (abi::PROG_PC_FAULT, abi::TP_PC_FAULT),
    (abi::PROG_PC_MAP, abi::TP_PC_MAP),
    (abi::PROG_PC_ADD, abi::TP_PC_ADD),
    (abi::PROG_PC_DIRTY, abi::TP_PC_DIRTY),
];

/// Smallest and largest ring buffer (the kernel wants a power of two, a multiple of the page).
pub const MIN_BUFFER: u64 = 4096;
pub const MAX_BUFFER: u64 = 1 << 30;
pub const DEFAULT_BUFFER: u64 = 8 << 20;

/// Whether one hook is attached, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HookReport {
    pub program: String,
    pub tracepoint: String,
    pub attached: bool,
    pub error: Option<String>,
}

/// The ring buffer size the kernel will get for a request of `bytes`.
pub fn buffer_size(bytes: u64) -> u64 {
    bytes.clamp(MIN_BUFFER, MAX_BUFFER).next_power_of_two()
}

/// One loaded, attached set of access programs.
pub struct Tracer {
    // Held only to keep the programs and their links alive. Field order is drop order: the
    // links go first, then the maps.
    _ebpf: Ebpf,
    ring: RingBuf<MapData>,
    traced: HashMap<MapData, u64, u8>,
    stats: PerCpuArray<MapData, AccessStats>,
    hooks: Vec<HookReport>,
    buffer: u64,
}

fn missing(what: &str) -> Error {
    Error::BadValue {
        what: "eBPF object",
        value: what.into(),
        why: "missing from the embedded object".into(),
    }
}

impl Tracer {
    /// Loads the programs with a ring buffer of [`buffer_size`]`(buffer)` bytes and attaches
    /// them; nothing is recorded until [`Tracer::trace_cgroup`]. `cgroup_level` is the depth
    /// of the traced cgroups below the cgroup2 root. Hooks this kernel lacks are reported in
    /// [`Tracer::hooks`]; if none attaches, this fails.
    pub fn start(buffer: u64, cgroup_level: u32) -> Result<Self> {
        let mut config = layout::from_btf(Path::new(layout::VMLINUX_BTF))?;
        config.cgroup_level = cgroup_level;
        Self::start_with(config, buffer)
    }

    fn start_with(config: AccessConfig, buffer: u64) -> Result<Self> {
        let buffer = buffer_size(buffer);
        let size = u32::try_from(buffer).map_err(|_| Error::BadValue {
            what: "ring buffer size",
            value: buffer.to_string(),
            why: format!("at most {MAX_BUFFER} bytes"),
        })?;
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(abi::MAP_ACCESS_LOG, size)
            .load(OBJECT)
            .map_err(|e| Error::bpf("loading the embedded object", e))?;
        let map_err = |what: &'static str| move |e| Error::bpf(format!("map {what}"), e);
        let mut cfg: Array<MapData, AccessConfig> = Array::try_from(
            ebpf.take_map(abi::MAP_ACCESS_CONFIG)
                .ok_or_else(|| missing(abi::MAP_ACCESS_CONFIG))?,
        )
        .map_err(map_err(abi::MAP_ACCESS_CONFIG))?;
        cfg.set(0, config, 0)
            .map_err(map_err(abi::MAP_ACCESS_CONFIG))?;
        let traced = HashMap::try_from(
            ebpf.take_map(abi::MAP_TRACED_CGROUPS)
                .ok_or_else(|| missing(abi::MAP_TRACED_CGROUPS))?,
        )
        .map_err(map_err(abi::MAP_TRACED_CGROUPS))?;
        let stats = PerCpuArray::try_from(
            ebpf.take_map(abi::MAP_ACCESS_STATS)
                .ok_or_else(|| missing(abi::MAP_ACCESS_STATS))?,
        )
        .map_err(map_err(abi::MAP_ACCESS_STATS))?;
        let ring = RingBuf::try_from(
            ebpf.take_map(abi::MAP_ACCESS_LOG)
                .ok_or_else(|| missing(abi::MAP_ACCESS_LOG))?,
        )
        .map_err(map_err(abi::MAP_ACCESS_LOG))?;

        let mut hooks = Vec::new();
        for (prog, tp) in HOOKS {
            let result = attach(&mut ebpf, prog, tp);
            hooks.push(HookReport {
                program: prog.into(),
                tracepoint: tp.into(),
                attached: result.is_ok(),
                error: result.err(),
            });
        }
        if !hooks.iter().any(|h| h.attached) {
            let why: Vec<String> = hooks
                .iter()
                .map(|h| format!("{}: {}", h.tracepoint, h.error.as_deref().unwrap_or("?")))
                .collect();
            return Err(Error::bpf(
                "attaching the access programs",
                std::io::Error::other(why.join("; ")),
            ));
        }
        Ok(Tracer {
            _ebpf: ebpf,
            ring,
            traced,
            stats,
            hooks,
            buffer,
        })
    }

    pub fn hooks(&self) -> &[HookReport] {
        &self.hooks
    }

    /// The ring buffer size in bytes.
    pub fn buffer(&self) -> u64 {
        self.buffer
    }

    /// Starts recording the tasks of cgroup `id` (and of the cgroups below it).
    pub fn trace_cgroup(&mut self, id: u64) -> Result<()> {
        self.traced
            .insert(id, 1, 0)
            .map_err(|e| Error::bpf("adding a traced cgroup", e))
    }

    pub fn untrace_cgroup(&mut self, id: u64) -> Result<()> {
        match self.traced.remove(&id) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(Error::bpf("removing a traced cgroup", e)),
        }
    }

    /// Waits up to `timeout` for records; returns whether some are ready.
    pub fn wait(&self, timeout: Duration) -> Result<bool> {
        let mut fds = [nix::poll::PollFd::new(
            self.ring.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        match nix::poll::poll(&mut fds, ms) {
            Ok(n) => Ok(n > 0),
            Err(nix::errno::Errno::EINTR) => Ok(false),
            Err(e) => Err(Error::sys("polling the access ring buffer", e)),
        }
    }

    /// Hands every record in the ring buffer to `f`, in the order they were written; returns
    /// how many.
    pub fn drain(&mut self, mut f: impl FnMut(AccessRecord)) -> usize {
        let mut n = 0;
        while let Some(item) = self.ring.next() {
            if item.len() >= size_of::<AccessRecord>() {
                // SAFETY: the programs write whole AccessRecords; read_unaligned copes with the
                // ring buffer's 8-byte alignment of the payload.
                let rec = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<AccessRecord>()) };
                f(rec);
                n += 1;
            }
        }
        n
    }

    /// The programs' counters, summed over the CPUs.
    pub fn stats(&self) -> Result<AccessStats> {
        let values = self
            .stats
            .get(&0, 0)
            .map_err(|e| Error::bpf("reading the access counters", e))?;
        Ok(values
            .iter()
            .fold(AccessStats::default(), |a, v| AccessStats {
                records: a.records + v.records,
                dropped: a.dropped + v.dropped,
                unreadable: a.unreadable + v.unreadable,
            }))
    }
}

fn attach(ebpf: &mut Ebpf, prog: &str, tp: &str) -> std::result::Result<(), String> {
    let p: &mut RawTracePoint = ebpf
        .program_mut(prog)
        .ok_or_else(|| format!("{prog} missing from the embedded object"))?
        .try_into()
        .map_err(|e| format!("{prog}: {e}"))?;
    p.load().map_err(|e| {
        let mut why = format!("loading {prog}: {}", describe(&e).1);
        if let aya::programs::ProgramError::LoadError { verifier_log, .. } = &e {
            // The verifier's last words say what it refused.
            let log = verifier_log.to_string();
            let tail: Vec<&str> = log.lines().rev().take(4).collect();
            why.push_str(&format!(
                " (verifier: {})",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ));
        }
        why
    })?;
    p.attach(tp)
        .map(drop)
        .map_err(|e| format!("attaching {prog} to {tp}: {}", describe(&e).1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_sizes_are_powers_of_two_within_bounds() {
        assert_eq!(buffer_size(0), MIN_BUFFER);
        assert_eq!(buffer_size(5000), 8192);
        assert_eq!(buffer_size(8 << 20), 8 << 20);
        assert_eq!(buffer_size(u64::MAX), MAX_BUFFER);
    }
}
