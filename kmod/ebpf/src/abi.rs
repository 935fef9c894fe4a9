//! The contract between the eBPF programs and their loader: map names, keys, values and flags.
//!
//! This one file is compiled twice: into the eBPF object (`kmod/ebpf`, `no_std`) and into the
//! loader (`kmod/src/abi.rs` includes it), so the two sides cannot disagree on a layout.
//! Only `#[repr(C)]` plain data and constants live here: nothing that needs `std` or `aya`.

/// Wildcard for a device major or minor number in a [`DevKey`].
pub const DEV_ANY: u32 = u32::MAX;
/// `BPF_DEVCG_DEV_BLOCK` / `BPF_DEVCG_DEV_CHAR`: the device kind in the low 16 bits of
/// `bpf_cgroup_dev_ctx.access_type`.
pub const DEV_BLOCK: u32 = 1;
pub const DEV_CHAR: u32 = 2;
/// `BPF_DEVCG_ACC_*`: the access asked for, in the high 16 bits of `access_type`.
pub const ACC_MKNOD: u32 = 1;
pub const ACC_READ: u32 = 2;
pub const ACC_WRITE: u32 = 4;

/// Key of the device allowlist: kind, major and minor ([`DEV_ANY`] matches every number).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DevKey {
    pub kind: u32,
    pub major: u32,
    pub minor: u32,
}

/// The context has at least one IPv4 / IPv6 address of its own.
pub const NET_HAS_V4: u32 = 1;
pub const NET_HAS_V6: u32 = 2;
/// Loopback mode `host`: the host's loopback (127.0.0.0/8, ::1) may be connected to.
pub const NET_LOOPBACK_HOST: u32 = 4;
/// Loopback mode `remap`: 127.0.0.1 (and ::1) mean the context's own loopback address `lback4`.
pub const NET_LOOPBACK_REMAP: u32 = 8;

/// The network policy of one context (the single entry of the `NET_CONFIG` array).
///
/// Addresses are kept exactly as the kernel stores them in `bpf_sock_addr`: the four bytes of an
/// IPv4 address in network order read as one little-endian `u32` (bpfel), an IPv6 address as four
/// such words.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetConfig {
    pub flags: u32,
    /// Source of connections and target of wildcard binds (0 when the context has no IPv4).
    pub primary4: u32,
    /// The context's own loopback address (first of its addresses in 127.0.0.0/8), or 0.
    pub lback4: u32,
    pub _pad: u32,
    /// Source of IPv6 connections and target of `::` binds (zero when it has no IPv6).
    pub primary6: [u32; 4],
}

/// Forks and execs seen in one context's cgroup (a per-CPU value: the loader sums the CPUs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcCounters {
    pub forks: u64,
    pub execs: u64,
}

pub const MAX_DEVICES: u32 = 256;
pub const MAX_ADDRS: u32 = 64;
pub const MAX_CONTEXTS: u32 = 4096;

// Map names as they appear in the object (and, cut to 15 bytes, in the kernel).
pub const MAP_DEVICES: &str = "DEVICES";
pub const MAP_ADDRS4: &str = "ADDRS4";
pub const MAP_ADDRS6: &str = "ADDRS6";
pub const MAP_NET_CONFIG: &str = "NET_CONFIG";
pub const MAP_PROC_COUNTERS: &str = "PROC_COUNTERS";

// Program names (function names in the object; at most 15 bytes so the kernel keeps them whole).
pub const PROG_DEVICE: &str = "cowfs_device";
pub const PROG_BIND4: &str = "cowfs_bind4";
pub const PROG_BIND6: &str = "cowfs_bind6";
pub const PROG_CONNECT4: &str = "cowfs_connect4";
pub const PROG_CONNECT6: &str = "cowfs_connect6";
pub const PROG_SYSCTL: &str = "cowfs_sysctl";
pub const PROG_FORK: &str = "cowfs_fork";
pub const PROG_EXEC: &str = "cowfs_exec";

// Minimal programs, one per program type, that `cowfs kernel probe` tries to load.
pub const PROBE_CGROUP_DEVICE: &str = "probe_cgdev";
pub const PROBE_SOCK_ADDR: &str = "probe_sockaddr";
pub const PROBE_SYSCTL: &str = "probe_sysctl";
pub const PROBE_TRACEPOINT: &str = "probe_tp";
pub const PROBE_TP_BTF: &str = "probe_tp_btf";
pub const PROBE_RAW_TP: &str = "probe_raw_tp";
pub const PROBE_LSM: &str = "probe_lsm";
pub const PROBE_FENTRY: &str = "probe_fentry";
pub const PROBE_FEXIT: &str = "probe_fexit";

/// Kernel function the fentry/fexit probes attach to (exists in every kernel with BTF).
pub const PROBE_FENTRY_TARGET: &str = "vfs_unlink";
/// LSM hook the LSM probe attaches to (the one DESIGN.md wants for immutable-unlink).
pub const PROBE_LSM_HOOK: &str = "file_open";
/// Tracepoint of the accounting programs and of the tracepoint probes.
pub const TP_FORK: &str = "sched_process_fork";
pub const TP_EXEC: &str = "sched_process_exec";
