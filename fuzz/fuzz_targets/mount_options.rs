//! The mount option parser (UnionFS, overlayfs and FUSE dialects): any source and option
//! strings parse or give a clear error; what parses is coherent.
#![no_main]

use cowfs_fs::options::{OptionsError, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // NUL separates the source and the `-o` strings, as mount(8) passes several.
    let mut parts = text.split('\0');
    let source = parts.next().unwrap_or_default();
    let options: Vec<&str> = parts.collect();
    match parse(source, &options) {
        Ok(o) => {
            assert!(!o.branches.is_empty(), "a union without branches parsed");
            for (i, b) in o.branches.iter().enumerate() {
                assert!(!b.path.as_os_str().is_empty(), "an empty branch path parsed");
                assert!(
                    !o.branches[..i].iter().any(|p| p.path == b.path),
                    "a duplicate branch parsed"
                );
            }
            assert!((1..=256).contains(&o.threads));
            assert!(o.entry_timeout.as_secs() <= 86_400 * 365);
            assert!(o.attr_timeout.as_secs() <= 86_400 * 365);
        }
        Err(e) => {
            // Every error has something to say.
            assert!(!e.to_string().is_empty());
            if let OptionsError::Unknown(opt) = &e {
                assert!(!opt.is_empty());
            }
        }
    }
});
