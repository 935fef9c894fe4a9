pub mod abi;
pub mod bpf;
pub mod cgroup;
pub mod devices;
mod error;
pub mod mounts;
pub mod net;
pub mod object;
pub use error::{Error, Result};
