//! Per-context file access log: which pages of which files the tasks of traced cgroups use.
//!
//! Five raw tracepoints of the page cache, each filtered first by cgroup (one helper call and
//! one hash lookup for every task that is not traced), then turned into an [`AccessRecord`]
//! `{dev, ino, first page, pages, kind}` appended to the `ACCESS_LOG` ring buffer. When the
//! buffer is full the record is dropped and counted, never waited for: the guest is not slowed
//! down by a consumer that falls behind.
//!
//! The programs are built without CO-RE relocations (aya-ebpf cannot emit them), so the
//! offsets of the few fields they read (`folio->mapping`, `mapping->host`, `inode->i_ino`, …)
//! come from the loader, which finds them in the running kernel's BTF, through
//! `ACCESS_CONFIG`. Every read goes through `bpf_probe_read_kernel`: a wrong offset yields a
//! skipped (and counted) access, never a crash.

use aya_ebpf::{
    helpers::{bpf_get_current_ancestor_cgroup_id, bpf_probe_read_kernel},
    macros::{map, raw_tracepoint},
    maps::{Array, HashMap, PerCpuArray, RingBuf},
    programs::RawTracePointContext,
};

use crate::abi::{
    ACCESS_CACHE_ADD, ACCESS_FAULT, ACCESS_LOG_DEFAULT_BYTES, ACCESS_MAP, ACCESS_READ,
    ACCESS_WRITE, AccessConfig, AccessRecord, AccessStats, MAX_CONTEXTS, OFFSET_NONE,
};

#[map]
static ACCESS_LOG: RingBuf = RingBuf::with_byte_size(ACCESS_LOG_DEFAULT_BYTES, 0);
/// cgroup id → unused: the cgroups whose tasks are traced.
#[map]
static TRACED_CGROUPS: HashMap<u64, u8> = HashMap::with_max_entries(MAX_CONTEXTS, 0);
#[map]
static ACCESS_CONFIG: Array<AccessConfig> = Array::with_max_entries(1, 0);
#[map]
static ACCESS_STATS: PerCpuArray<AccessStats> = PerCpuArray::with_max_entries(1, 0);

const S_IFMT: u16 = 0o170000;
const S_IFREG: u16 = 0o100000;
/// Largest folio order believed (a larger value means a misread field).
const MAX_ORDER: u8 = 20;

#[inline(always)]
fn config() -> Option<&'static AccessConfig> {
    ACCESS_CONFIG.get(0)
}

/// The traced cgroup the current task belongs to, if any.
#[inline(always)]
fn traced(cfg: &AccessConfig) -> Option<u64> {
    // SAFETY: a helper with an integer argument.
    let id = unsafe { bpf_get_current_ancestor_cgroup_id(cfg.cgroup_level as i32) };
    // SAFETY: only the presence of the key is used.
    unsafe { TRACED_CGROUPS.get(&id) }.map(|_| id)
}

#[inline(always)]
fn stats() -> Option<*mut AccessStats> {
    ACCESS_STATS.get_ptr_mut(0)
}

#[inline(always)]
fn count_unreadable() -> i32 {
    if let Some(s) = stats() {
        // SAFETY: this CPU's value, valid while the program runs.
        unsafe { (*s).unreadable += 1 };
    }
    0
}

/// Reads a `T` at `base + off` in kernel memory.
#[inline(always)]
fn read<T>(base: u64, off: u32) -> Option<T> {
    if base == 0 || off == OFFSET_NONE {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel copies safely from any address, failing on a bad one.
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T) }.ok()
}

/// What an `address_space` belongs to.
enum Owner {
    /// A regular file: (ino, dev).
    File(u64, u32),
    /// A block device's or a directory's cache (file system metadata): not a file access.
    Other,
    /// A kernel struct could not be read.
    Unreadable,
}

#[inline(always)]
fn owner(cfg: &AccessConfig, mapping: u64) -> Owner {
    let file = || -> Option<Owner> {
        let host: u64 = read(mapping, cfg.mapping_host)?;
        let mode: u16 = read(host, cfg.inode_mode)?;
        if mode & S_IFMT != S_IFREG {
            return Some(Owner::Other);
        }
        let ino: u64 = read(host, cfg.inode_ino)?;
        let sb: u64 = read(host, cfg.inode_sb)?;
        let dev: u32 = read(sb, cfg.sb_dev)?;
        Some(Owner::File(ino, dev))
    };
    file().unwrap_or(Owner::Unreadable)
}

/// Pages in a folio: 1, or 2^order for a large (head) folio.
#[inline(always)]
fn folio_pages(cfg: &AccessConfig, folio: u64) -> u32 {
    if cfg.pg_head == OFFSET_NONE || cfg.pg_head >= 64 {
        return 1;
    }
    let Some(flags) = read::<u64>(folio, cfg.folio_flags) else {
        return 1;
    };
    if flags & (1u64 << cfg.pg_head) == 0 {
        return 1;
    }
    match read::<u8>(folio, cfg.folio_flags_1) {
        Some(order) if order <= MAX_ORDER => 1u32 << order,
        _ => 1,
    }
}

// BPF calls take at most five arguments in registers: the record is passed whole, and the
// small helpers are inlined.
#[inline(always)]
fn emit(rec: AccessRecord) {
    let Some(s) = stats() else { return };
    match ACCESS_LOG.reserve::<AccessRecord>(0) {
        Some(mut entry) => {
            entry.write(rec);
            entry.submit(0);
            // SAFETY: this CPU's value, valid while the program runs.
            unsafe { (*s).records += 1 };
        }
        // SAFETY: as above.
        None => unsafe { (*s).dropped += 1 },
    }
}

/// An access to `mapping` pages `first..=last`.
#[inline(always)]
fn range(ctx: &RawTracePointContext, kind: u32, with_last: bool) -> i32 {
    let Some(cfg) = config() else { return 0 };
    let Some(cgroup) = traced(cfg) else { return 0 };
    let mapping: u64 = ctx.arg(0);
    let first: u64 = ctx.arg(1);
    let last: u64 = if with_last { ctx.arg(2) } else { first };
    let (ino, dev) = match owner(cfg, mapping) {
        Owner::File(ino, dev) => (ino, dev),
        Owner::Other => return 0,
        Owner::Unreadable => return count_unreadable(),
    };
    let pages = if last >= first {
        (last - first + 1).min(u32::MAX as u64) as u32
    } else {
        1
    };
    emit(AccessRecord {
        ino,
        cgroup,
        index: first,
        pages,
        dev,
        kind,
        _pad: 0,
    });
    0
}

/// A folio entered the page cache or was dirtied.
#[inline(always)]
fn folio(ctx: &RawTracePointContext, kind: u32) -> i32 {
    let Some(cfg) = config() else { return 0 };
    let Some(cgroup) = traced(cfg) else { return 0 };
    let folio: u64 = ctx.arg(0);
    let Some(mapping) = read::<u64>(folio, cfg.folio_mapping) else {
        return count_unreadable();
    };
    let (ino, dev) = match owner(cfg, mapping) {
        Owner::File(ino, dev) => (ino, dev),
        Owner::Other => return 0,
        Owner::Unreadable => return count_unreadable(),
    };
    let Some(index) = read::<u64>(folio, cfg.folio_index) else {
        return count_unreadable();
    };
    emit(AccessRecord {
        ino,
        cgroup,
        index,
        pages: folio_pages(cfg, folio),
        dev,
        kind,
        _pad: 0,
    });
    0
}

/// `TP_PROTO(struct folio *folio)`: after a folio was inserted (read from disk or readahead).
#[raw_tracepoint(tracepoint = "mm_filemap_add_to_page_cache")]
pub fn cowfs_pc_add(ctx: RawTracePointContext) -> i32 {
    folio(&ctx, ACCESS_CACHE_ADD)
}

/// `TP_PROTO(struct address_space *mapping, pgoff_t index, pgoff_t last_index)`: a buffered
/// read of pages `index..=last_index`, whether they are cached or not.
#[raw_tracepoint(tracepoint = "mm_filemap_get_pages")]
pub fn cowfs_pc_read(ctx: RawTracePointContext) -> i32 {
    range(&ctx, ACCESS_READ, true)
}

/// `TP_PROTO(struct address_space *mapping, pgoff_t index)`: a page fault on a file mapping.
#[raw_tracepoint(tracepoint = "mm_filemap_fault")]
pub fn cowfs_pc_fault(ctx: RawTracePointContext) -> i32 {
    range(&ctx, ACCESS_FAULT, false)
}

/// `TP_PROTO(struct address_space *mapping, pgoff_t start, pgoff_t end)`: fault-around maps
/// the cached pages of `start..=end` without faulting on each.
#[raw_tracepoint(tracepoint = "mm_filemap_map_pages")]
pub fn cowfs_pc_map(ctx: RawTracePointContext) -> i32 {
    range(&ctx, ACCESS_MAP, true)
}

/// `TP_PROTO(struct folio *folio, struct address_space *mapping)`: a folio became dirty.
#[raw_tracepoint(tracepoint = "writeback_dirty_folio")]
pub fn cowfs_pc_dirty(ctx: RawTracePointContext) -> i32 {
    folio(&ctx, ACCESS_WRITE)
}
