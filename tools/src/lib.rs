//! Command-line front ends of cowfs.
//!
//! Each command lives in its own module with a clap `Args` struct and a `run` function, so that
//! `cowfs <cmd>` and the familiar standalone name (`vhashify`, `vdu`, …) share one code path.
//! The business logic lives in the library crates; these modules parse, call and report.

pub mod branch;
pub mod common;
pub mod demo;
pub mod du;
pub mod hashify;
pub mod hotset;
pub mod kernel;
pub mod mount;
pub mod prewarm;
pub mod progress;
pub mod store;
pub mod trace;
pub mod umount;
pub mod vcontext;
pub mod vps;
