//! Per-context process accounting for `vps`: forks and execs counted per cgroup.
//!
//! One shared set serves every context: a tracepoint fires for every task on the machine, so
//! one program per context would cost every fork N lookups. Only cgroups the loader registered
//! (a zeroed entry per context) are counted; everything else is one failed hash lookup.

use aya_ebpf::{
    helpers::bpf_get_current_cgroup_id, macros::map, macros::raw_tracepoint, maps::PerCpuHashMap,
    programs::RawTracePointContext,
};

use crate::abi::{MAX_CONTEXTS, ProcCounters};

/// cgroup id → counters (per CPU, so no atomics are needed).
#[map]
static PROC_COUNTERS: PerCpuHashMap<u64, ProcCounters> =
    PerCpuHashMap::with_max_entries(MAX_CONTEXTS, 0);

fn counters() -> Option<*mut ProcCounters> {
    // SAFETY: a helper without arguments.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    PROC_COUNTERS.get_ptr_mut(&cgroup)
}

/// sched_process_fork runs in the parent, whose cgroup the child starts in.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn cowfs_fork(_ctx: RawTracePointContext) -> i32 {
    if let Some(c) = counters() {
        // SAFETY: a per-CPU value of this CPU, valid while the program runs.
        unsafe { (*c).forks += 1 };
    }
    0
}

#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn cowfs_exec(_ctx: RawTracePointContext) -> i32 {
    if let Some(c) = counters() {
        // SAFETY: as in cowfs_fork.
        unsafe { (*c).execs += 1 };
    }
    0
}
