//! The in-kernel programs of cowfs contexts (see docs/architecture/kmod.md).
//!
//! Built for `bpfel-unknown-none` by `scripts/build-ebpf.sh`; the object is committed under
//! `kmod/ebpf-obj/` and embedded by the loader, which loads one enforcement set per context
//! (device, sock_addr, sysctl: their maps hold that context's policy) and one shared accounting
//! set (raw tracepoints keyed by cgroup id). The access programs (`access`) are loaded once per
//! trace session and write what traced cgroups read to a ring buffer. The `probe_*` programs exist only so that
//! `cowfs kernel probe` can ask the kernel whether it accepts each program type.
#![no_std]
#![no_main]

#[allow(dead_code)] // the loader uses the names; the programs only the layouts
mod abi;
mod access;
mod acct;
mod device;
mod net;
mod probe;
mod sysctl;

/// Allow / deny as cgroup programs return them.
const ALLOW: i32 = 1;
const DENY: i32 = 0;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach this: it is never executed.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
