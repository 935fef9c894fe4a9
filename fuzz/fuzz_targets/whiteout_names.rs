//! Whiteout and name handling: for any name, the `.wh.` form round-trips or is refused for
//! length, a whiteout is always hidden, and every name a guest may create is neither hidden
//! nor a whiteout of something.
#![no_main]

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use cowfs_fs::whiteout::{
    NAME_MAX, OPAQUE_MARKER, is_hidden, is_private_xattr, is_reserved, whiteout_name,
    whiteout_target,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Only names a directory entry can have (the union refuses the others before this code).
    if data.is_empty()
        || data.len() > NAME_MAX
        || data == b"."
        || data == b".."
        || data.contains(&b'/')
        || data.contains(&0)
    {
        return;
    }
    let name = OsStr::from_bytes(data);
    match whiteout_name(name) {
        Some(wh) => {
            assert!(wh.len() <= NAME_MAX, "whiteout name too long");
            assert!(is_hidden(&wh), "a whiteout must be hidden");
            assert!(is_reserved(&wh), "a guest must not create a whiteout");
            if wh != OPAQUE_MARKER {
                assert_eq!(whiteout_target(&wh), Some(name), "round trip");
            }
        }
        None => assert!(data.len() + 4 > NAME_MAX, "refused a short name"),
    }
    if let Some(target) = whiteout_target(name) {
        assert!(is_hidden(name));
        assert!(!target.is_empty());
        assert_eq!(whiteout_name(target).as_deref(), Some(name));
    }
    if !is_reserved(name) {
        assert!(!is_hidden(name));
        assert!(whiteout_target(name).is_none());
    }
    let _ = is_private_xattr(name);
});
