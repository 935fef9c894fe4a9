//! In-kernel parts of cowfs and the contexts built on them.
//!
//! - [`object`]: the committed eBPF object (built from `kmod/ebpf/`) and its provenance.
//! - [`bpf`]: loads it with aya — one enforcement set per context cgroup (devices, bind/connect,
//!   sysctl) and one shared accounting set (forks/execs per cgroup for `vps`).
//! - [`access`]: the per-context access log (`cowfs trace`); [`hotset`] and [`prewarm`]: the
//!   ranges worth preloading and loading them into the page cache.
//! - [`probe`]: what this kernel allows (`cowfs kernel probe`).
//! - [`landlock`], [`caps`], [`devices`], [`net`]: the policies a context is confined by.
//! - [`registry`]: contexts in SQLite; [`lifecycle`]: start/stop/destroy of their kernel state;
//!   [`run`]: the process side of `vcontext run`; [`ps`]: processes per context (`vps`).
//!
//! See docs/architecture/kmod.md for why it is built this way.

pub mod abi;
pub mod access;
pub mod beneath;
pub mod bpf;
pub mod caps;
pub mod cgroup;
pub mod context;
pub mod devices;
mod error;
pub mod hotset;
pub mod landlock;
pub mod lifecycle;
pub mod mounts;
pub mod net;
pub mod object;
pub mod prewarm;
pub mod probe;
pub mod ps;
pub mod registry;
pub mod run;

pub use context::{ContextSpec, XID_HOST, XID_SPECTATOR};
pub use error::{Error, Result};
pub use lifecycle::{RootMounter, StateDir};
