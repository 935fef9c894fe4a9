//! The union semantics as pure functions: which branch answers a lookup, which branches a
//! directory merges, what a merged listing shows, when a directory is empty.
//!
//! Everything here works over [`BranchFs`], a deliberately small view of "a set of directory
//! trees", so that the rules are unit-tested against an in-memory fake and the real
//! implementation (`branch::RealBranches`) only has to answer syscalls.
//!
//! Vocabulary: a directory's *layers* are the branches, left to right, whose copy of that
//! directory contributes entries to the merged view. The root's layers are all branches (unless a
//! branch root is opaque); a subdirectory's layers are computed by [`lookup`] from its parent's.
//!
//! Rules (UnionFS semantics, plus overlayfs' whiteout dialect):
//! - the leftmost branch holding a name answers for it;
//! - in branch `b`, `.wh.NAME` hides `NAME` in the branches after `b` (not in `b` itself, so a
//!   name re-created over a whiteout simply coexists with it);
//! - a whiteout device (see [`BranchFs::is_device_whiteout`]) named `NAME` hides `NAME` in its
//!   own branch and after;
//! - a directory merges with same-named directories further right until a non-directory, a
//!   whiteout or an opaque copy ends the merge; a non-directory never merges.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::Path;

use crate::attr::{FileKind, Stat};
use crate::whiteout;

/// A read-only view of the branches, by index (0 = leftmost = highest priority).
pub trait BranchFs {
    /// An opened directory of one branch.
    type Dir;

    /// Opens directory `path` (relative to the branch root, empty for the root) of `branch`;
    /// `Ok(None)` when it does not exist there or is not a directory.
    fn open_dir(&self, branch: usize, path: &Path) -> io::Result<Option<Self::Dir>>;

    /// Attributes of entry `name` of `dir`, not following symlinks; `Ok(None)` when absent.
    fn stat_at(&self, dir: &Self::Dir, name: &OsStr) -> io::Result<Option<Stat>>;

    /// Whether `dir` hides the same directory of the branches after it.
    fn is_opaque(&self, dir: &Self::Dir) -> io::Result<bool>;

    /// Whether entry `name` of `dir`, a character device 0/0 with attributes `st`, is an
    /// overlayfs-style whiteout rather than a device someone made.
    fn is_device_whiteout(&self, dir: &Self::Dir, name: &OsStr, st: &Stat) -> io::Result<bool>;

    /// The raw entries of `dir` except `.` and `..`, with their kind when the listing knows it.
    fn read_dir(&self, dir: &Self::Dir) -> io::Result<Vec<(OsString, Option<FileKind>)>>;
}

/// The outcome of a successful lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The branch that answers (the leftmost holding the name).
    pub branch: usize,
    /// The entry's attributes in that branch.
    pub stat: Stat,
    /// For a directory, its layers (starting with `branch`); for anything else, `[branch]`.
    pub layers: Vec<usize>,
}

/// One entry of a merged directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MergedEntry {
    pub name: OsString,
    pub kind: FileKind,
    /// The branch whose entry is shown.
    pub branch: usize,
}

/// The layers of the union's root directory among `branch_count` branches.
pub fn root_layers<F: BranchFs>(fs: &F, branch_count: usize) -> io::Result<Vec<usize>> {
    let mut layers = Vec::with_capacity(branch_count);
    for b in 0..branch_count {
        let Some(dir) = fs.open_dir(b, Path::new(""))? else {
            continue;
        };
        layers.push(b);
        if b + 1 < branch_count && fs.is_opaque(&dir)? {
            break;
        }
    }
    Ok(layers)
}

/// Looks `name` up in the directory `dir_path` whose layers are `dir_layers`.
pub fn lookup<F: BranchFs>(
    fs: &F,
    dir_path: &Path,
    dir_layers: &[usize],
    name: &OsStr,
) -> io::Result<Option<Found>> {
    let mut found: Option<Found> = None;
    for (i, &b) in dir_layers.iter().enumerate() {
        let more_below = i + 1 < dir_layers.len();
        let Some(dir) = fs.open_dir(b, dir_path)? else {
            continue;
        };
        if let Some(st) = fs.stat_at(&dir, name)? {
            if st.is_overlay_whiteout() && fs.is_device_whiteout(&dir, name, &st)? {
                break;
            }
            match &mut found {
                None => {
                    found = Some(Found {
                        branch: b,
                        stat: st,
                        layers: vec![b],
                    });
                    if !st.is_dir() {
                        break;
                    }
                }
                Some(top) => {
                    if !st.is_dir() {
                        break;
                    }
                    top.layers.push(b);
                }
            }
            if more_below {
                let child = fs.open_dir(b, &dir_path.join(name))?;
                if let Some(child) = child
                    && fs.is_opaque(&child)?
                {
                    break;
                }
            }
        }
        if more_below && has_whiteout(fs, &dir, name)? {
            break;
        }
    }
    Ok(found)
}

/// Whether `dir` holds a `.wh.` whiteout for `name` (names too long for one have none).
pub fn has_whiteout<F: BranchFs>(fs: &F, dir: &F::Dir, name: &OsStr) -> io::Result<bool> {
    match whiteout::whiteout_name(name) {
        Some(wh) => Ok(fs.stat_at(dir, &wh)?.is_some()),
        None => Ok(false),
    }
}

/// The merged listing of directory `dir_path` with layers `dir_layers`: every visible name
/// once, shown from its leftmost branch, without whiteouts, markers or temp files.
pub fn read_dir<F: BranchFs>(
    fs: &F,
    dir_path: &Path,
    dir_layers: &[usize],
) -> io::Result<Vec<MergedEntry>> {
    let mut seen: HashSet<OsString> = HashSet::new();
    let mut out = Vec::new();
    for &b in dir_layers {
        let Some(dir) = fs.open_dir(b, dir_path)? else {
            continue;
        };
        let mut hidden_below = Vec::new();
        for (name, kind) in fs.read_dir(&dir)? {
            if let Some(target) = whiteout::whiteout_target(&name) {
                hidden_below.push(target.to_os_string());
                continue;
            }
            if whiteout::is_hidden(&name) || seen.contains(&name) {
                continue;
            }
            let kind = match kind {
                Some(FileKind::CharDev) | None => {
                    let Some(st) = fs.stat_at(&dir, &name)? else {
                        continue; // vanished since the listing
                    };
                    if st.is_overlay_whiteout() && fs.is_device_whiteout(&dir, &name, &st)? {
                        seen.insert(name);
                        continue;
                    }
                    match st.kind() {
                        Some(kind) => kind,
                        None => continue,
                    }
                }
                Some(kind) => kind,
            };
            seen.insert(name.clone());
            out.push(MergedEntry {
                name,
                kind,
                branch: b,
            });
        }
        seen.extend(hidden_below);
    }
    Ok(out)
}

/// Whether the merged directory shows no entry at all (whiteouts and markers do not count).
pub fn is_empty_dir<F: BranchFs>(
    fs: &F,
    dir_path: &Path,
    dir_layers: &[usize],
) -> io::Result<bool> {
    Ok(read_dir(fs, dir_path, dir_layers)?.is_empty())
}

/// Whether removing `name` from the writable branch `write_branch` would uncover a copy in a
/// branch after it, i.e. whether the removal needs a whiteout.
pub fn needs_whiteout<F: BranchFs>(
    fs: &F,
    dir_path: &Path,
    dir_layers: &[usize],
    write_branch: usize,
    name: &OsStr,
) -> io::Result<bool> {
    let below: Vec<usize> = dir_layers
        .iter()
        .copied()
        .filter(|&b| b > write_branch)
        .collect();
    Ok(lookup(fs, dir_path, &below, name)?.is_some())
}

#[cfg(test)]
pub(crate) mod fake {
    //! An in-memory set of branches for unit tests of the union rules.

    use std::collections::BTreeMap;
    use std::ffi::{OsStr, OsString};
    use std::io;
    use std::path::{Path, PathBuf};

    use super::BranchFs;
    use crate::attr::{FileKind, Stat};

    #[derive(Clone, Debug)]
    struct Entry {
        stat: Stat,
        opaque_xattr: bool,
    }

    /// Branches as maps from relative path to entry; the root of every branch exists. A 0/0
    /// device is a whiteout in a read-only branch, and in a writable one only when marked.
    #[derive(Default)]
    pub struct FakeBranches {
        branches: Vec<BTreeMap<PathBuf, Entry>>,
        writable: Vec<bool>,
        marked_whiteouts: std::collections::BTreeSet<(usize, PathBuf)>,
        next_ino: std::cell::Cell<u64>,
    }

    impl FakeBranches {
        pub fn new(count: usize) -> FakeBranches {
            let mut fake = FakeBranches {
                branches: vec![BTreeMap::new(); count],
                writable: vec![false; count],
                marked_whiteouts: Default::default(),
                next_ino: std::cell::Cell::new(1),
            };
            for b in 0..count {
                fake.insert(b, "", libc::S_IFDIR | 0o755, 0);
            }
            fake
        }

        fn insert(&mut self, b: usize, path: &str, mode: u32, rdev: u64) -> &mut FakeBranches {
            let ino = self.next_ino.get();
            self.next_ino.set(ino + 1);
            let stat = Stat {
                dev: b as u64,
                ino,
                mode,
                nlink: 1,
                rdev,
                ..Stat::default()
            };
            self.branches[b].insert(
                PathBuf::from(path),
                Entry {
                    stat,
                    opaque_xattr: false,
                },
            );
            self
        }

        pub fn count(&self) -> usize {
            self.branches.len()
        }

        pub fn dir(&mut self, b: usize, path: &str) -> &mut FakeBranches {
            self.insert(b, path, libc::S_IFDIR | 0o755, 0)
        }

        pub fn file(&mut self, b: usize, path: &str) -> &mut FakeBranches {
            self.insert(b, path, libc::S_IFREG | 0o644, 0)
        }

        pub fn symlink(&mut self, b: usize, path: &str) -> &mut FakeBranches {
            self.insert(b, path, libc::S_IFLNK | 0o777, 0)
        }

        pub fn chardev(&mut self, b: usize, path: &str, rdev: u64) -> &mut FakeBranches {
            self.insert(b, path, libc::S_IFCHR | 0o600, rdev)
        }

        pub fn writable(&mut self, b: usize) -> &mut FakeBranches {
            self.writable[b] = true;
            self
        }

        /// A 0/0 device marked as a whiteout by cowfs.
        pub fn marked_whiteout(&mut self, b: usize, path: &str) -> &mut FakeBranches {
            self.marked_whiteouts.insert((b, PathBuf::from(path)));
            self.chardev(b, path, 0)
        }

        pub fn opaque_xattr(&mut self, b: usize, path: &str) -> &mut FakeBranches {
            if let Some(e) = self.branches[b].get_mut(Path::new(path)) {
                e.opaque_xattr = true;
            }
            self
        }
    }

    impl BranchFs for FakeBranches {
        type Dir = (usize, PathBuf);

        fn open_dir(&self, branch: usize, path: &Path) -> io::Result<Option<Self::Dir>> {
            Ok(self.branches[branch]
                .get(path)
                .filter(|e| e.stat.is_dir())
                .map(|_| (branch, path.to_path_buf())))
        }

        fn stat_at(&self, dir: &Self::Dir, name: &OsStr) -> io::Result<Option<Stat>> {
            Ok(self.branches[dir.0].get(&dir.1.join(name)).map(|e| e.stat))
        }

        fn is_opaque(&self, dir: &Self::Dir) -> io::Result<bool> {
            let map = &self.branches[dir.0];
            let xattr = map.get(&dir.1).is_some_and(|e| e.opaque_xattr);
            let marker = map.contains_key(&dir.1.join(crate::whiteout::OPAQUE_MARKER));
            Ok(xattr || marker)
        }

        fn is_device_whiteout(
            &self,
            dir: &Self::Dir,
            name: &OsStr,
            _st: &Stat,
        ) -> io::Result<bool> {
            Ok(!self.writable[dir.0] || self.marked_whiteouts.contains(&(dir.0, dir.1.join(name))))
        }

        fn read_dir(&self, dir: &Self::Dir) -> io::Result<Vec<(OsString, Option<FileKind>)>> {
            let map = &self.branches[dir.0];
            Ok(map
                .iter()
                .filter(|(p, _)| p.parent() == Some(dir.1.as_path()) && !p.as_os_str().is_empty())
                .filter_map(|(p, e)| {
                    // Report character devices as getdents does: by type, not by number.
                    p.file_name().map(|n| (n.to_os_string(), e.stat.kind()))
                })
                .collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeBranches;
    use super::*;

    fn names(entries: &[MergedEntry]) -> Vec<(String, usize)> {
        let mut v: Vec<(String, usize)> = entries
            .iter()
            .map(|e| (e.name.to_string_lossy().into_owned(), e.branch))
            .collect();
        v.sort();
        v
    }

    fn find(fs: &FakeBranches, path: &str) -> Option<Found> {
        let mut layers = root_layers(fs, fs.count()).expect("root");
        let path = Path::new(path);
        let mut dir = std::path::PathBuf::new();
        let mut comps = path.iter().peekable();
        while let Some(name) = comps.next() {
            let found = lookup(fs, &dir, &layers, name).expect("lookup")?;
            if comps.peek().is_none() {
                return Some(found);
            }
            if !found.stat.is_dir() {
                return None;
            }
            layers = found.layers;
            dir.push(name);
        }
        None
    }

    #[test]
    fn leftmost_branch_answers() {
        let mut fs = FakeBranches::new(3);
        fs.file(1, "a").file(2, "a").file(2, "b");
        assert_eq!(find(&fs, "a").map(|f| f.branch), Some(1));
        assert_eq!(find(&fs, "b").map(|f| f.branch), Some(2));
        assert_eq!(find(&fs, "c"), None);
    }

    #[test]
    fn unionfs_whiteout_hides_lower_branches_only() {
        let mut fs = FakeBranches::new(3);
        fs.file(0, ".wh.a").file(1, "a").file(2, "a");
        assert_eq!(find(&fs, "a"), None);
        // A name re-created over its whiteout in the same branch is visible.
        fs.file(0, "a");
        assert_eq!(find(&fs, "a").map(|f| f.branch), Some(0));
        // A whiteout in the middle hides only what is below it.
        let mut fs = FakeBranches::new(3);
        fs.file(1, "b").file(1, ".wh.b").file(2, "b");
        assert_eq!(find(&fs, "b").map(|f| f.branch), Some(1));
    }

    #[test]
    fn whiteout_hides_a_whole_lower_subtree() {
        let mut fs = FakeBranches::new(3);
        fs.dir(0, "etc").file(0, "etc/.wh.ssh");
        fs.dir(2, "etc")
            .dir(2, "etc/ssh")
            .file(2, "etc/ssh/sshd_config");
        assert_eq!(find(&fs, "etc/ssh"), None);
        assert_eq!(find(&fs, "etc/ssh/sshd_config"), None);
        assert!(find(&fs, "etc").is_some());
    }

    #[test]
    fn overlay_whiteout_hides_its_own_branch_and_below() {
        let mut fs = FakeBranches::new(3);
        fs.chardev(1, "a", 0).file(2, "a");
        assert_eq!(find(&fs, "a"), None);
        // A real character device is an ordinary entry.
        let mut fs = FakeBranches::new(3);
        fs.chardev(1, "null", 0x103).file(2, "null");
        let found = find(&fs, "null").expect("device");
        assert_eq!(found.branch, 1);
        assert_eq!(found.stat.kind(), Some(FileKind::CharDev));
    }

    #[test]
    fn devices_made_in_a_writable_branch_are_not_whiteouts() {
        let mut fs = FakeBranches::new(2);
        fs.writable(0).chardev(0, "dev00", 0).file(1, "dev00");
        let found = find(&fs, "dev00").expect("a real 0/0 device");
        assert_eq!(
            (found.branch, found.stat.kind()),
            (0, Some(FileKind::CharDev))
        );
        fs.marked_whiteout(0, "gone").file(1, "gone");
        assert_eq!(find(&fs, "gone"), None);
        let listing = read_dir(&fs, Path::new(""), &[0, 1]).expect("readdir");
        assert_eq!(names(&listing), vec![("dev00".to_string(), 0)]);
    }

    #[test]
    fn directories_merge_until_opaque() {
        let mut fs = FakeBranches::new(3);
        fs.dir(0, "d").dir(1, "d").dir(2, "d");
        assert_eq!(find(&fs, "d").map(|f| f.layers), Some(vec![0, 1, 2]));

        fs.file(1, "d/.wh..wh..opq");
        assert_eq!(find(&fs, "d").map(|f| f.layers), Some(vec![0, 1]));

        let mut fs = FakeBranches::new(3);
        fs.dir(0, "d").dir(1, "d").dir(2, "d").opaque_xattr(0, "d");
        assert_eq!(find(&fs, "d").map(|f| f.layers), Some(vec![0]));
    }

    #[test]
    fn non_directories_end_the_merge() {
        let mut fs = FakeBranches::new(3);
        fs.dir(0, "d").file(1, "d").dir(2, "d").file(2, "d/x");
        assert_eq!(find(&fs, "d").map(|f| f.layers), Some(vec![0]));
        assert_eq!(find(&fs, "d/x"), None);

        // A file on top hides a directory below entirely.
        let mut fs = FakeBranches::new(3);
        fs.file(0, "d").dir(1, "d").file(1, "d/x");
        let found = find(&fs, "d").expect("file");
        assert_eq!((found.branch, found.layers), (0, vec![0]));
        assert_eq!(find(&fs, "d/x"), None);
    }

    #[test]
    fn symlinks_in_lower_branches_never_merge_as_directories() {
        let mut fs = FakeBranches::new(3);
        fs.dir(0, "d").symlink(1, "d").dir(2, "d").file(2, "d/x");
        assert_eq!(find(&fs, "d").map(|f| f.layers), Some(vec![0]));
        assert_eq!(find(&fs, "d/x"), None);
    }

    #[test]
    fn root_layers_stop_at_an_opaque_root() {
        let mut fs = FakeBranches::new(3);
        assert_eq!(root_layers(&fs, 3).expect("root"), vec![0, 1, 2]);
        fs.file(1, ".wh..wh..opq");
        assert_eq!(root_layers(&fs, 3).expect("root"), vec![0, 1]);
    }

    #[test]
    fn merged_listing_hides_whiteouts_markers_and_duplicates() {
        let mut fs = FakeBranches::new(3);
        fs.dir(0, "d")
            .file(0, "d/a")
            .file(0, "d/.wh.b")
            .file(0, "d/.cowfs.tmp.123");
        fs.dir(1, "d")
            .file(1, "d/a")
            .file(1, "d/b")
            .chardev(1, "d/c", 0)
            .file(1, "d/e");
        fs.file(1, "d/.wh..wh..opq");
        fs.dir(2, "d").file(2, "d/c").file(2, "d/f");
        let d = find(&fs, "d").expect("d");
        assert_eq!(d.layers, vec![0, 1]);
        let listing = read_dir(&fs, Path::new("d"), &d.layers).expect("readdir");
        assert_eq!(
            names(&listing),
            vec![("a".to_string(), 0), ("e".to_string(), 1)]
        );
    }

    #[test]
    fn listing_reports_the_top_kind() {
        let mut fs = FakeBranches::new(2);
        fs.file(0, "x").dir(1, "x").file(1, "x/inner");
        let listing = read_dir(&fs, Path::new(""), &[0, 1]).expect("readdir");
        assert_eq!(listing.len(), 1);
        assert_eq!(listing[0].kind, FileKind::File);
    }

    #[test]
    fn emptiness_honours_whiteouts() {
        let mut fs = FakeBranches::new(2);
        fs.dir(0, "d").file(0, "d/.wh.x").dir(1, "d").file(1, "d/x");
        let d = find(&fs, "d").expect("d");
        assert!(is_empty_dir(&fs, Path::new("d"), &d.layers).expect("empty"));
        fs.file(1, "d/y");
        assert!(!is_empty_dir(&fs, Path::new("d"), &d.layers).expect("empty"));
    }

    #[test]
    fn whiteout_needed_only_when_something_lies_below() {
        let mut fs = FakeBranches::new(3);
        fs.file(0, "only-top").file(0, "both").file(2, "both");
        let root = root_layers(&fs, 3).expect("root");
        assert!(!needs_whiteout(&fs, Path::new(""), &root, 0, OsStr::new("only-top")).expect("wh"));
        assert!(needs_whiteout(&fs, Path::new(""), &root, 0, OsStr::new("both")).expect("wh"));
        fs.file(1, ".wh.both");
        assert!(!needs_whiteout(&fs, Path::new(""), &root, 0, OsStr::new("both")).expect("wh"));
    }
}
