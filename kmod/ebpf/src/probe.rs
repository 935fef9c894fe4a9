//! One minimal program per program type, loaded (never attached) by `cowfs kernel probe` to ask
//! the kernel which types it accepts. They do nothing and allow everything.

use aya_ebpf::{
    macros::{
        btf_tracepoint, cgroup_device, cgroup_sock_addr, cgroup_sysctl, fentry, fexit, lsm,
        raw_tracepoint, tracepoint,
    },
    programs::{
        BtfTracePointContext, DeviceContext, FEntryContext, FExitContext, LsmContext,
        RawTracePointContext, SockAddrContext, SysctlContext, TracePointContext,
    },
};

#[cgroup_device]
pub fn probe_cgdev(_ctx: DeviceContext) -> i32 {
    1
}

#[cgroup_sock_addr(connect4)]
pub fn probe_sockaddr(_ctx: SockAddrContext) -> i32 {
    1
}

#[cgroup_sysctl]
pub fn probe_sysctl(_ctx: SysctlContext) -> i32 {
    1
}

#[tracepoint(category = "sched", name = "sched_process_fork")]
pub fn probe_tp(_ctx: TracePointContext) -> u32 {
    0
}

#[btf_tracepoint(function = "sched_process_fork")]
pub fn probe_tp_btf(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn probe_raw_tp(_ctx: RawTracePointContext) -> i32 {
    0
}

#[lsm(hook = "file_open")]
pub fn probe_lsm(_ctx: LsmContext) -> i32 {
    0
}

#[fentry(function = "vfs_unlink")]
pub fn probe_fentry(_ctx: FEntryContext) -> u32 {
    0
}

#[fexit(function = "vfs_unlink")]
pub fn probe_fexit(_ctx: FExitContext) -> u32 {
    0
}
