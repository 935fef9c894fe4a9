//! Opening guest files as root without letting the guest redirect us.
//!
//! Every path of a log or hot set is resolved relative to a root fd with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS)` and `O_NOFOLLOW`:
//! a symlink anywhere on the way, `..` out of the root, or a magic link is refused by the
//! kernel, so a guest that swaps a traced file for a symlink to a host file gets an error, not
//! our read. `O_NONBLOCK` keeps a FIFO planted under a traced name from blocking the open.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::Mode;

/// Opens `root` as the anchor of later [`open_file`] calls.
pub fn open_root(root: &Path) -> nix::Result<OwnedFd> {
    nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// Opens `rel` beneath `root` read-only, following no symlink. Tries `O_NOATIME` first (a
/// preload should not look like a guest's access), without it where that is not permitted.
pub fn open_file(root: impl AsFd, rel: &Path) -> nix::Result<OwnedFd> {
    open_beneath(root, rel, OFlag::empty())
}

/// Opens the directory `rel` beneath `root` for listing, as [`open_file`] opens a file.
pub fn open_dir(root: impl AsFd, rel: &Path) -> nix::Result<OwnedFd> {
    open_beneath(root, rel, OFlag::O_DIRECTORY)
}

fn open_beneath(root: impl AsFd, rel: &Path, extra: OFlag) -> nix::Result<OwnedFd> {
    let base = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | extra;
    let how = |flags: OFlag| {
        OpenHow::new().flags(flags).resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_MAGICLINKS
                | ResolveFlag::RESOLVE_NO_SYMLINKS,
        )
    };
    match openat2(root.as_fd(), rel, how(base | OFlag::O_NOATIME)) {
        Err(nix::errno::Errno::EPERM) => openat2(root.as_fd(), rel, how(base)),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_and_dotdot_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("d")).expect("mkdir");
        std::fs::write(root.join("d/f"), b"x").expect("write");
        std::fs::write(dir.path().join("host"), b"secret").expect("write");
        std::os::unix::fs::symlink(dir.path().join("host"), root.join("link")).expect("ln");
        std::os::unix::fs::symlink("d", root.join("dlink")).expect("ln");
        let fd = open_root(&root).expect("root");
        assert!(open_file(&fd, Path::new("d/f")).is_ok());
        assert!(open_dir(&fd, Path::new("d")).is_ok());
        assert!(
            open_dir(&fd, Path::new("d/f")).is_err(),
            "a file opened as a directory"
        );
        assert!(
            open_dir(&fd, Path::new("dlink")).is_err(),
            "a symlink followed"
        );
        for bad in ["link", "dlink/f", "../host", "/etc/passwd"] {
            assert!(open_file(&fd, Path::new(bad)).is_err(), "{bad} opened");
        }
    }
}
