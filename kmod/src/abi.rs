//! The data layout shared with the eBPF programs: the very file the programs are built from,
//! plus what aya needs to copy these values in and out of maps.

#[path = "../ebpf/src/abi.rs"]
mod shared;

pub use shared::*;

// SAFETY: plain #[repr(C)] structs of u32/u64 fields with no implicit padding, valid for any
// bit pattern.
unsafe impl aya::Pod for DevKey {}
unsafe impl aya::Pod for NetConfig {}
unsafe impl aya::Pod for ProcCounters {}
unsafe impl aya::Pod for AccessConfig {}
unsafe impl aya::Pod for AccessStats {}
