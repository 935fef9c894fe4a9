//! Directory listings as the kernel reads them: in pieces, each continuing at the offset the
//! previous one ended with.
//!
//! The offset of an entry is a cookie derived from its name (as ext4's hash order does), not
//! its position: a directory changing between two reads then moves no other entry, so every
//! entry that did not change is listed exactly once even without a per-open snapshot. That
//! lets the mount run without OPENDIR/RELEASEDIR round trips (the kernel reads with file
//! handle 0) and lets any reader continue from a listing another reader refreshed.

use std::ffi::{OsStr, OsString};
use std::hash::{Hash, Hasher};
use std::os::unix::ffi::OsStrExt;

use crate::attr::FileKind;

/// One entry of a directory listing as handed to the kernel.
#[derive(Clone, Debug)]
pub struct DirItem {
    pub name: OsString,
    pub kind: FileKind,
}

/// Offsets of `.` and `..`; entries' cookies are above them.
const DOT: u64 = 1;
const DOTDOT: u64 = 2;

/// A directory's merged entries in cookie order.
#[derive(Debug, Default)]
pub struct Listing {
    entries: Vec<(u64, DirItem)>,
}

/// The cookie of a name: stable for the life of the daemon, above `..`'s, and below 2^63 (the
/// kernel passes offsets back as a signed `loff_t`).
fn cookie(name: &OsStr) -> u64 {
    // SipHash with fixed keys: deterministic, unlike `RandomState`.
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new();
    name.as_bytes().hash(&mut h);
    DOTDOT + 1 + h.finish() % (i64::MAX as u64 - DOTDOT - 1)
}

impl Listing {
    pub fn new(items: impl IntoIterator<Item = DirItem>) -> Listing {
        let mut entries: Vec<(u64, DirItem)> =
            items.into_iter().map(|i| (cookie(&i.name), i)).collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.name.cmp(&b.1.name)));
        // Two names with one cookie (about one chance in 2^63 per pair): the later one moves
        // up until its cookie is free, so no offset can skip it.
        for i in 1..entries.len() {
            if entries[i].0 <= entries[i - 1].0 {
                entries[i].0 = entries[i - 1].0 + 1;
            }
        }
        let dots = [(DOT, "."), (DOTDOT, "..")].map(|(c, n)| {
            let item = DirItem {
                name: OsString::from(n),
                kind: FileKind::Dir,
            };
            (c, item)
        });
        Listing {
            entries: dots.into_iter().chain(entries).collect(),
        }
    }

    /// Entries other than `.` and `..`.
    pub fn len(&self) -> usize {
        self.entries.len() - 2
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What follows `offset` (`.` and `..` first), each entry with the offset that continues
    /// after it.
    pub fn after(&self, offset: u64) -> impl Iterator<Item = (u64, &DirItem)> + '_ {
        let start = self.entries.partition_point(|(c, _)| *c <= offset);
        self.entries[start..].iter().map(|(c, i)| (*c, i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(names: &[&str]) -> Vec<DirItem> {
        names
            .iter()
            .map(|n| DirItem {
                name: OsString::from(n),
                kind: FileKind::File,
            })
            .collect()
    }

    fn read_all(l: &Listing, from: u64, max: usize) -> (Vec<String>, u64) {
        let mut names = Vec::new();
        let mut next = from;
        for (off, item) in l.after(from).take(max) {
            names.push(item.name.to_string_lossy().into_owned());
            next = off;
        }
        (names, next)
    }

    #[test]
    fn dots_come_first_and_offsets_continue() {
        let l = Listing::new(items(&["a", "b", "c"]));
        let (first, next) = read_all(&l, 0, 3);
        assert_eq!(&first[..2], &[".", ".."]);
        let (rest, _) = read_all(&l, next, 10);
        let mut all: Vec<String> = first[2..].iter().chain(&rest).cloned().collect();
        all.sort();
        assert_eq!(all, vec!["a", "b", "c"]);
    }

    #[test]
    fn unchanged_entries_are_listed_once_across_changes() {
        let names: Vec<String> = (0..200).map(|i| format!("f{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let before = Listing::new(items(&refs));
        let (part, next) = read_all(&before, 0, 50);
        // Between two reads, half the names go and new ones come.
        let mut changed: Vec<&str> = refs.iter().copied().filter(|n| n.len() % 2 == 0).collect();
        let added: Vec<String> = (0..100).map(|i| format!("new{i}")).collect();
        changed.extend(added.iter().map(String::as_str));
        let after = Listing::new(items(&changed));
        let (rest, _) = read_all(&after, next, usize::MAX);
        let mut seen = std::collections::HashMap::new();
        for n in part.iter().chain(&rest) {
            *seen.entry(n.clone()).or_insert(0) += 1;
        }
        for n in refs.iter().filter(|n| n.len() % 2 == 0) {
            assert_eq!(seen.get(*n), Some(&1), "{n} must be listed exactly once");
        }
        assert!(seen.values().all(|&c| c == 1), "no name twice: {seen:?}");
    }

    #[test]
    fn cookies_stay_below_the_signed_range_and_above_the_dots() {
        for n in ["", "x", "a-long-name-with-bytes-\u{ff}"] {
            let c = cookie(OsStr::new(n));
            assert!(c > DOTDOT && c < i64::MAX as u64, "{c}");
        }
    }
}
