//! The cowfs union filesystem: union semantics as a plain library, and the FUSE adapter on top.

pub mod attr;
pub mod union;
pub mod whiteout;
