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

/// What an [`AccessRecord`] saw (bits of `kind`).
/// A buffered read asked for these pages (`mm_filemap_get_pages`): warm or cold.
pub const ACCESS_READ: u32 = 1;
/// A page fault on a file mapping (`mm_filemap_fault`): mmap'd code and data.
pub const ACCESS_FAULT: u32 = 2;
/// Fault-around mapped these cached pages (`mm_filemap_map_pages`).
pub const ACCESS_MAP: u32 = 4;
/// The pages entered the page cache (`mm_filemap_add_to_page_cache`): read from disk,
/// readahead included.
pub const ACCESS_CACHE_ADD: u32 = 8;
/// The pages were dirtied (`writeback_dirty_folio`): a write.
pub const ACCESS_WRITE: u32 = 16;

/// One file access as the kernel saw it: an entry of the `ACCESS_LOG` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AccessRecord {
    /// `inode->i_ino` of the file whose page cache was used.
    pub ino: u64,
    /// The traced cgroup the accessing task is in (or below).
    pub cgroup: u64,
    /// First page, as an index into the file (pages of the kernel's page size).
    pub index: u64,
    /// Number of pages (at least 1).
    pub pages: u32,
    /// `inode->i_sb->s_dev` as the kernel encodes a dev_t: major << 20 | minor.
    pub dev: u32,
    /// One `ACCESS_*` bit.
    pub kind: u32,
    pub _pad: u32,
}

/// Marks an offset or bit the running kernel does not have.
pub const OFFSET_NONE: u32 = u32::MAX;

/// Where the fields the access programs read live in this kernel's structs, found by the
/// loader in the kernel's BTF (the programs are built without CO-RE relocations).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AccessConfig {
    pub folio_flags: u32,
    pub folio_mapping: u32,
    pub folio_index: u32,
    /// `folio->_flags_1`, whose low byte is the order of a large folio ([`OFFSET_NONE`]: treat
    /// every folio as one page).
    pub folio_flags_1: u32,
    /// Bit of `PG_head` in `folio->flags` ([`OFFSET_NONE`] as above).
    pub pg_head: u32,
    pub mapping_host: u32,
    pub inode_mode: u32,
    pub inode_ino: u32,
    pub inode_sb: u32,
    pub sb_dev: u32,
    /// Depth of the traced cgroups below the cgroup2 root: a task counts when its ancestor at
    /// this level is one of `TRACED_CGROUPS`.
    pub cgroup_level: u32,
    pub _pad: u32,
}

/// Counters of the access programs (a per-CPU value: the loader sums the CPUs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AccessStats {
    /// Records written to the ring buffer.
    pub records: u64,
    /// Records lost because the ring buffer was full (the consumer fell behind).
    pub dropped: u64,
    /// Accesses of traced tasks skipped because a kernel struct could not be read.
    pub unreadable: u64,
}

/// Ring buffer size in the object: one page, so that the loads of other programs (which
/// create every map of the object) cost nothing; a trace session sets the size it wants.
pub const ACCESS_LOG_DEFAULT_BYTES: u32 = 4096;

pub const MAX_DEVICES: u32 = 256;
pub const MAX_ADDRS: u32 = 64;
pub const MAX_CONTEXTS: u32 = 4096;

// Map names as they appear in the object (and, cut to 15 bytes, in the kernel).
pub const MAP_DEVICES: &str = "DEVICES";
pub const MAP_ADDRS4: &str = "ADDRS4";
pub const MAP_ADDRS6: &str = "ADDRS6";
pub const MAP_NET_CONFIG: &str = "NET_CONFIG";
pub const MAP_PROC_COUNTERS: &str = "PROC_COUNTERS";
pub const MAP_ACCESS_LOG: &str = "ACCESS_LOG";
pub const MAP_TRACED_CGROUPS: &str = "TRACED_CGROUPS";
pub const MAP_ACCESS_CONFIG: &str = "ACCESS_CONFIG";
pub const MAP_ACCESS_STATS: &str = "ACCESS_STATS";

// Program names (function names in the object; at most 15 bytes so the kernel keeps them whole).
pub const PROG_DEVICE: &str = "cowfs_device";
pub const PROG_BIND4: &str = "cowfs_bind4";
pub const PROG_BIND6: &str = "cowfs_bind6";
pub const PROG_CONNECT4: &str = "cowfs_connect4";
pub const PROG_CONNECT6: &str = "cowfs_connect6";
pub const PROG_SYSCTL: &str = "cowfs_sysctl";
pub const PROG_FORK: &str = "cowfs_fork";
pub const PROG_EXEC: &str = "cowfs_exec";
pub const PROG_PC_ADD: &str = "cowfs_pc_add";
pub const PROG_PC_READ: &str = "cowfs_pc_read";
pub const PROG_PC_FAULT: &str = "cowfs_pc_fault";
pub const PROG_PC_MAP: &str = "cowfs_pc_map";
pub const PROG_PC_DIRTY: &str = "cowfs_pc_dirty";

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
/// Tracepoints of the access programs (raw_tp: no tracefs needed).
pub const TP_PC_ADD: &str = "mm_filemap_add_to_page_cache";
pub const TP_PC_READ: &str = "mm_filemap_get_pages";
pub const TP_PC_FAULT: &str = "mm_filemap_fault";
pub const TP_PC_MAP: &str = "mm_filemap_map_pages";
pub const TP_PC_DIRTY: &str = "writeback_dirty_folio";
