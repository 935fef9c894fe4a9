//! cgroup_sock_addr: Linux-VServer's chbind with cgroup hooks.
//!
//! A context binds only to its own addresses; a wildcard bind (0.0.0.0, ::) becomes a bind to its
//! primary address; connections leave from its own address (bound with `bpf_bind` before the
//! kernel picks a source); loopback is what the operator configured: refused, shared with the
//! host, or remapped (127.0.0.1 means the context's own loopback address, VServer's "lback").

use core::ptr::{addr_of_mut, read_volatile, write_volatile};

use aya_ebpf::{
    bindings::{bpf_sock_addr, sockaddr},
    helpers::bpf_bind,
    macros::{cgroup_sock_addr, map},
    maps::{Array, HashMap},
    programs::SockAddrContext,
};

use crate::abi::{
    MAX_ADDRS, NET_HAS_V4, NET_HAS_V6, NET_LOOPBACK_HOST, NET_LOOPBACK_REMAP, NetConfig,
};
use crate::{ALLOW, DENY};

/// The context's IPv4 addresses (as stored in `user_ip4`); the value is unused.
#[map]
static ADDRS4: HashMap<u32, u8> = HashMap::with_max_entries(MAX_ADDRS, 0);
/// The context's IPv6 addresses (as stored in `user_ip6`).
#[map]
static ADDRS6: HashMap<[u32; 4], u8> = HashMap::with_max_entries(MAX_ADDRS, 0);
#[map]
static NET_CONFIG: Array<NetConfig> = Array::with_max_entries(1, 0);

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const LOCALHOST4: u32 = u32::from_le_bytes([127, 0, 0, 1]);
const LOCALHOST6: [u32; 4] = [0, 0, 0, u32::from_le_bytes([0, 0, 0, 1])];
const V4MAPPED: u32 = u32::from_le_bytes([0, 0, 0xff, 0xff]);

enum Verdict<A> {
    Allow,
    Rewrite(A),
    Deny,
}

impl<A> Verdict<A> {
    fn map<B>(self, f: impl FnOnce(A) -> B) -> Verdict<B> {
        match self {
            Verdict::Allow => Verdict::Allow,
            Verdict::Rewrite(a) => Verdict::Rewrite(f(a)),
            Verdict::Deny => Verdict::Deny,
        }
    }
}

fn config() -> NetConfig {
    // An unconfigured array slot reads as zero: no addresses, loopback refused.
    NET_CONFIG.get(0).copied().unwrap_or_default()
}

fn is_loopback4(a: u32) -> bool {
    // The first octet is the lowest byte of the little-endian word.
    a & 0xff == 127
}

fn own4(a: u32) -> bool {
    // SAFETY: only the presence of the key is used.
    unsafe { ADDRS4.get(&a).is_some() }
}

fn own6(a: &[u32; 4]) -> bool {
    // SAFETY: only the presence of the key is used.
    unsafe { ADDRS6.get(a).is_some() }
}

fn remaps_loopback(cfg: &NetConfig) -> bool {
    cfg.flags & NET_LOOPBACK_REMAP != 0 && cfg.lback4 != 0
}

fn mapped(a: u32) -> [u32; 4] {
    [0, 0, V4MAPPED, a]
}

fn bind4(cfg: &NetConfig, a: u32) -> Verdict<u32> {
    if a == 0 {
        if cfg.flags & NET_HAS_V4 != 0 {
            Verdict::Rewrite(cfg.primary4)
        } else {
            Verdict::Deny
        }
    } else if own4(a) {
        Verdict::Allow
    } else if a == LOCALHOST4 && remaps_loopback(cfg) {
        Verdict::Rewrite(cfg.lback4)
    } else {
        Verdict::Deny
    }
}

/// The verdict on a destination, and the source address to bind first (0: let the kernel pick).
fn connect4(cfg: &NetConfig, a: u32) -> (Verdict<u32>, u32) {
    // connect(0.0.0.0) reaches the local host, so it is judged as 127.0.0.1.
    let dst = if a == 0 { LOCALHOST4 } else { a };
    if is_loopback4(dst) {
        let verdict = if own4(dst) {
            Verdict::Allow
        } else if dst == LOCALHOST4 && remaps_loopback(cfg) {
            Verdict::Rewrite(cfg.lback4)
        } else if cfg.flags & NET_LOOPBACK_HOST != 0 {
            Verdict::Allow
        } else {
            Verdict::Deny
        };
        (verdict, cfg.lback4)
    } else if cfg.flags & NET_HAS_V4 != 0 {
        (Verdict::Allow, cfg.primary4)
    } else {
        (Verdict::Deny, 0)
    }
}

fn is_v4mapped(a: &[u32; 4]) -> bool {
    a[0] == 0 && a[1] == 0 && a[2] == V4MAPPED
}

fn bind6(cfg: &NetConfig, a: &[u32; 4]) -> Verdict<[u32; 4]> {
    if is_v4mapped(a) {
        bind4(cfg, a[3]).map(mapped)
    } else if *a == [0; 4] {
        if cfg.flags & NET_HAS_V6 != 0 {
            Verdict::Rewrite(cfg.primary6)
        } else if cfg.flags & NET_HAS_V4 != 0 {
            // A dual-stack listener on [::] keeps working on the context's IPv4 address.
            Verdict::Rewrite(mapped(cfg.primary4))
        } else {
            Verdict::Deny
        }
    } else if own6(a) {
        Verdict::Allow
    } else if *a == LOCALHOST6 && remaps_loopback(cfg) {
        Verdict::Rewrite(mapped(cfg.lback4))
    } else {
        Verdict::Deny
    }
}

fn connect6(cfg: &NetConfig, a: &[u32; 4]) -> (Verdict<[u32; 4]>, Option<[u32; 4]>) {
    if is_v4mapped(a) {
        let (verdict, source) = connect4(cfg, a[3]);
        return (verdict.map(mapped), (source != 0).then(|| mapped(source)));
    }
    let dst = if *a == [0; 4] { LOCALHOST6 } else { *a };
    if dst == LOCALHOST6 {
        if own6(&dst) || cfg.flags & NET_LOOPBACK_HOST != 0 {
            (Verdict::Allow, None)
        } else if remaps_loopback(cfg) {
            (
                Verdict::Rewrite(mapped(cfg.lback4)),
                Some(mapped(cfg.lback4)),
            )
        } else {
            (Verdict::Deny, None)
        }
    } else if cfg.flags & NET_HAS_V6 != 0 {
        (Verdict::Allow, Some(cfg.primary6))
    } else {
        (Verdict::Deny, None)
    }
}

// The context fields are read and written as single 32-bit words: the verifier only accepts
// accesses of the size the kernel declares for them.
fn read_ip4(sa: *mut bpf_sock_addr) -> u32 {
    // SAFETY: `sa` is the program's context pointer.
    unsafe { read_volatile(addr_of_mut!((*sa).user_ip4)) }
}

fn write_ip4(sa: *mut bpf_sock_addr, a: u32) {
    // SAFETY: as in read_ip4; bind4/connect4 programs may write user_ip4.
    unsafe { write_volatile(addr_of_mut!((*sa).user_ip4), a) }
}

fn read_ip6(sa: *mut bpf_sock_addr) -> [u32; 4] {
    // SAFETY: as in read_ip4.
    unsafe {
        let p = addr_of_mut!((*sa).user_ip6);
        [
            read_volatile(addr_of_mut!((*p)[0])),
            read_volatile(addr_of_mut!((*p)[1])),
            read_volatile(addr_of_mut!((*p)[2])),
            read_volatile(addr_of_mut!((*p)[3])),
        ]
    }
}

fn write_ip6(sa: *mut bpf_sock_addr, a: [u32; 4]) {
    // SAFETY: as in read_ip4; bind6/connect6 programs may write user_ip6.
    unsafe {
        let p = addr_of_mut!((*sa).user_ip6);
        write_volatile(addr_of_mut!((*p)[0]), a[0]);
        write_volatile(addr_of_mut!((*p)[1]), a[1]);
        write_volatile(addr_of_mut!((*p)[2]), a[2]);
        write_volatile(addr_of_mut!((*p)[3]), a[3]);
    }
}

#[repr(C)]
struct SockaddrIn {
    family: u16,
    port: u16,
    addr: u32,
    zero: [u8; 8],
}

#[repr(C)]
struct SockaddrIn6 {
    family: u16,
    port: u16,
    flowinfo: u32,
    addr: [u32; 4],
    scope_id: u32,
}

/// Binds the socket's source address before the kernel picks one. A socket that is already bound
/// (to one of the context's addresses: bind4/bind6 saw to it) makes this fail with EINVAL, which
/// is what we want: it keeps its address.
fn bind_source<T>(ctx: &SockAddrContext, addr: &mut T) {
    // SAFETY: `addr` is a sockaddr of its declared size on our stack.
    unsafe {
        bpf_bind(
            ctx.sock_addr,
            (addr as *mut T).cast::<sockaddr>(),
            core::mem::size_of::<T>() as i32,
        )
    };
}

#[cgroup_sock_addr(bind4)]
pub fn cowfs_bind4(ctx: SockAddrContext) -> i32 {
    match bind4(&config(), read_ip4(ctx.sock_addr)) {
        Verdict::Allow => ALLOW,
        Verdict::Rewrite(a) => {
            write_ip4(ctx.sock_addr, a);
            ALLOW
        }
        Verdict::Deny => DENY,
    }
}

#[cgroup_sock_addr(bind6)]
pub fn cowfs_bind6(ctx: SockAddrContext) -> i32 {
    match bind6(&config(), &read_ip6(ctx.sock_addr)) {
        Verdict::Allow => ALLOW,
        Verdict::Rewrite(a) => {
            write_ip6(ctx.sock_addr, a);
            ALLOW
        }
        Verdict::Deny => DENY,
    }
}

#[cgroup_sock_addr(connect4)]
pub fn cowfs_connect4(ctx: SockAddrContext) -> i32 {
    let (verdict, source) = connect4(&config(), read_ip4(ctx.sock_addr));
    match verdict {
        Verdict::Deny => return DENY,
        Verdict::Rewrite(a) => write_ip4(ctx.sock_addr, a),
        Verdict::Allow => {}
    }
    if source != 0 {
        let mut sin = SockaddrIn {
            family: AF_INET,
            port: 0,
            addr: source,
            zero: [0; 8],
        };
        bind_source(&ctx, &mut sin);
    }
    ALLOW
}

#[cgroup_sock_addr(connect6)]
pub fn cowfs_connect6(ctx: SockAddrContext) -> i32 {
    let (verdict, source) = connect6(&config(), &read_ip6(ctx.sock_addr));
    match verdict {
        Verdict::Deny => return DENY,
        Verdict::Rewrite(a) => write_ip6(ctx.sock_addr, a),
        Verdict::Allow => {}
    }
    if let Some(addr) = source {
        let mut sin6 = SockaddrIn6 {
            family: AF_INET6,
            port: 0,
            flowinfo: 0,
            addr,
            scope_id: 0,
        };
        bind_source(&ctx, &mut sin6);
    }
    ALLOW
}
