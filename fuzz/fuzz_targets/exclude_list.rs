//! The exclude-list parser (util-vserver format): any text either parses or gives a syntax
//! error naming a line of it, and a parsed list answers for any path without panicking.
#![no_main]

use std::path::Path;

use hashstore::unify::exclude::{ExcludeList, Rule};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The list is UTF-8 (append_file refuses anything else); the first line doubles as paths.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match ExcludeList::parse(text, Path::new("fuzz.list")) {
        Ok(list) => {
            for path in text.lines().take(8) {
                let rel = path.trim_start_matches(['+', '-', '~', '/']);
                let rule = list.rule_for(Path::new(rel));
                assert!(matches!(rule, Rule::Include | Rule::Exclude | Rule::Skip));
            }
            assert!(list.len() <= text.lines().count());
        }
        Err(hashstore::Error::ExcludeSyntax { line, .. }) => {
            assert!(line <= text.lines().count(), "error line {line} beyond the text");
        }
        Err(e) => panic!("unexpected error kind: {e}"),
    }
});
