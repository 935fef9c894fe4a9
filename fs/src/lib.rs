//! The cowfs union filesystem: union semantics as a plain library, and the FUSE adapter on top.

pub mod attr;
pub mod branch;
pub mod control;
pub mod copyup;
pub mod fileops;
pub mod fuse;
pub mod handles;
pub mod inode;
pub mod listing;
pub mod mount;
pub mod namespace;
pub mod options;
pub mod passthrough;
mod shard;
pub mod stats;
pub mod sys;
pub mod union;
pub mod unionfs;
pub mod watchdog;
pub mod whiteout;
