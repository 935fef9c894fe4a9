//! The cowfs union filesystem: union semantics as a plain library, and the FUSE adapter on top.
