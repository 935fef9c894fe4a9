//! Putting a store object's link in place of a guest file without ever losing a newer file.
//!
//! A plain `rename(tmp, path)` replaces whatever `path` holds at that instant: if a package
//! manager renamed a new file onto `path` after vhashify checked it, the new file would be
//! silently replaced by the old content. Instead the link is *exchanged* with the path
//! (`RENAME_EXCHANGE`, atomic): what comes out is inspected, and only the inode vhashify checked
//! is discarded. Anything else is somebody's newer file and goes back in, repeatedly if others
//! keep writing, until what comes out is something vhashify itself put there.
//!
//! A run killed between the exchange and the removal of what came out leaves that under the
//! temporary name: the checked inode (its content and metadata are the object's, which now
//! sits at the path) or, if another writer raced the give-back at that very moment, a stale
//! file. Recovery removes both kinds (see `recover.rs`).

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::fcntl::{OFlag, RenameFlags};
use nix::sys::stat::Mode;

/// What happened to the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Swapped {
    /// The path now links to the object; the checked inode was taken out (the caller unlinks
    /// `tmp`, which holds it).
    Linked,
    /// The path had been replaced by a newer file, which is back in place; what `tmp` holds is
    /// stale (the object link or an older file) and the caller unlinks it.
    Replaced,
    /// The filesystem cannot exchange names: the link was renamed over the path (what it held
    /// is gone, `tmp` too).
    Renamed,
}

fn exchange(dir: BorrowedFd<'_>, a: &OsStr, b: &OsStr) -> io::Result<()> {
    nix::fcntl::renameat2(dir, a, dir, b, RenameFlags::RENAME_EXCHANGE).map_err(io::Error::from)
}

fn ino_of(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<(u64, u64)> {
    let st = crate::sys::lstat_at(dir, name)?;
    Ok((st.st_dev, st.st_ino))
}

/// Holds the inode `name` refers to, so that its number cannot be reused by a new file while we
/// compare numbers; returns the hold and the number.
pub(crate) fn hold(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<(OwnedFd, (u64, u64))> {
    let fd = nix::fcntl::openat(
        dir,
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let st = crate::sys::fstat(fd.as_fd())?;
    Ok((fd, (st.st_dev, st.st_ino)))
}

/// Exchanges `tmp` (a link to the object, `placed`) with `name`, which vhashify found to be the
/// inode `checked`. The caller holds `checked` open (an inode number is only an identity while
/// the inode lives), and the store holds the object. `between` runs before every exchange
/// (tests make other writers act there).
pub fn swap_in(
    dir: BorrowedFd<'_>,
    tmp: &OsStr,
    name: &OsStr,
    checked: (u64, u64),
    placed: (u64, u64),
    mut between: impl FnMut(usize),
) -> io::Result<Swapped> {
    between(0);
    match exchange(dir, tmp, name) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            crate::sys::rename_at(dir, tmp, dir, name)?;
            return Ok(Swapped::Renamed);
        }
        Err(e) => return Err(e),
    }
    if ino_of(dir, tmp)? == checked {
        return Ok(Swapped::Linked);
    }
    // Somebody's file came out: it goes back. Every inode vhashify put at the path is older
    // than whatever others put there since, so the loop ends when one of ours comes out.
    let mut ours = vec![(None, placed)];
    for step in 1..=16 {
        let (fd, ino) = hold(dir, tmp)?;
        ours.push((Some(fd), ino));
        between(step);
        exchange(dir, tmp, name)?;
        let out = ino_of(dir, tmp)?;
        if ours.iter().any(|(_, o)| *o == out) {
            return Ok(Swapped::Replaced);
        }
    }
    Err(io::Error::other(
        "the path keeps being replaced by other processes",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    struct Dir {
        tmp: tempfile::TempDir,
        fd: std::fs::File,
    }

    impl Dir {
        fn new() -> Dir {
            let tmp = tempfile::tempdir().expect("tempdir");
            let fd = std::fs::File::open(tmp.path()).expect("open dir");
            Dir { tmp, fd }
        }

        /// A path holding "old" (checked) and the object's link next to it (placed).
        fn checked_and_placed() -> (Dir, (u64, u64), (u64, u64)) {
            let d = Dir::new();
            let checked = d.write("path", b"old");
            let placed = d.link_object(b"old (object)");
            (d, checked, placed)
        }
        fn write(&self, name: &str, data: &[u8]) -> (u64, u64) {
            let p = self.tmp.path().join(name);
            std::fs::write(&p, data).expect("write");
            let m = std::fs::metadata(&p).expect("stat");
            (m.dev(), m.ino())
        }
        /// The object's link: a second name of an inode the store keeps.
        fn link_object(&self, data: &[u8]) -> (u64, u64) {
            let ino = self.write("object", data);
            std::fs::hard_link(self.tmp.path().join("object"), self.tmp.path().join("link"))
                .expect("link");
            ino
        }
        fn read(&self, name: &str) -> Vec<u8> {
            std::fs::read(self.tmp.path().join(name)).expect("read")
        }
        /// Another writer: a new file renamed onto `name`.
        fn replace(&self, name: &str, data: &[u8]) {
            self.write("writer.tmp", data);
            std::fs::rename(
                self.tmp.path().join("writer.tmp"),
                self.tmp.path().join(name),
            )
            .expect("rename");
        }
    }

    fn swap(
        d: &Dir,
        checked: (u64, u64),
        placed: (u64, u64),
        between: impl FnMut(usize),
    ) -> Swapped {
        // As vhashify does: the checked inode is held while numbers are compared.
        let _held = hold(d.fd.as_fd(), OsStr::new("path")).expect("hold");
        swap_in(
            d.fd.as_fd(),
            OsStr::new("link"),
            OsStr::new("path"),
            checked,
            placed,
            between,
        )
        .expect("swap")
    }

    #[test]
    fn an_unchanged_path_gets_the_link() {
        let (d, checked, placed) = Dir::checked_and_placed();
        assert_eq!(swap(&d, checked, placed, |_| {}), Swapped::Linked);
        assert_eq!(d.read("path"), b"old (object)");
        assert_eq!(
            d.read("link"),
            b"old",
            "the checked file is left for the caller"
        );
    }

    #[test]
    fn a_file_renamed_onto_the_path_just_before_is_kept() {
        let (d, checked, placed) = Dir::checked_and_placed();
        let r = swap(&d, checked, placed, |step| {
            if step == 0 {
                d.replace("path", b"new");
            }
        });
        assert_eq!(r, Swapped::Replaced);
        assert_eq!(d.read("path"), b"new", "the newer file wins");
        assert_eq!(
            d.read("link"),
            b"old (object)",
            "only our link is left over"
        );
    }

    #[test]
    fn writers_racing_the_give_back_keep_the_newest() {
        let (d, checked, placed) = Dir::checked_and_placed();
        let r = swap(&d, checked, placed, |step| match step {
            0 => d.replace("path", b"first"),
            1 => d.replace("path", b"second"),
            2 => d.replace("path", b"third"),
            _ => {}
        });
        assert_eq!(r, Swapped::Replaced);
        assert_eq!(d.read("path"), b"third", "the newest file wins");
        let left = d.read("link");
        assert!(left != b"third", "what is left over is stale: {left:?}");
    }
}
