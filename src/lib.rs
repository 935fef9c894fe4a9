//! Support code shared by the end-to-end tests (`tests/`) and scenario benchmarks (`benches/`):
//! locating the built binaries, restoring the guest-root corpus, and benchmark reports.

pub mod report;

use std::path::{Path, PathBuf};
use std::process::Command;

pub mod listing;

/// Where the corpus lives (built by `scripts/install-deps.sh`); `COWFS_CORPUS` overrides.
pub fn corpus_base() -> PathBuf {
    std::env::var_os("COWFS_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/cowfs-corpus"))
}

/// The tarball of corpus guest `name` (g1, g2 or g3), if the corpus has been built.
pub fn corpus_tarball(name: &str) -> Option<PathBuf> {
    let tar = corpus_base().join("tarballs").join(format!("{name}.tar"));
    tar.is_file().then_some(tar)
}

/// Restores corpus guest `name` into `dest` (created), keeping owners, modes and xattrs.
pub fn restore_guest(name: &str, dest: &Path) -> std::io::Result<()> {
    let tar = corpus_tarball(name).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "corpus guest {name} not built: run scripts/install-deps.sh (looked in {})",
                corpus_base().display()
            ),
        )
    })?;
    std::fs::create_dir_all(dest)?;
    let status = Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf"])
        .arg(&tar)
        .arg("-C")
        .arg(dest)
        .status()?;
    if !status.success() {
        return Err(std::io::Error::other(format!(
            "tar -xpf {} failed: {status}",
            tar.display()
        )));
    }
    Ok(())
}

/// Path of a binary built from this workspace (`cowfs`, `vhashify`, …), next to the test executable.
///
/// Integration tests of the root package cannot use `CARGO_BIN_EXE_*` for binaries of other
/// workspace members, so they find them in the same target directory; `scripts/test.sh` builds
/// them first (`cargo build --workspace --bins`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    // target/<profile>/deps/<test-binary> → target/<profile>/<name>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "{} is not built: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Does by hand what `vhashify` does to a group of identical files (until the tests can call
/// vhashify itself): the first file's inode becomes the store object — linked into
/// `STORE/objects/ab/cdef…` and marked with [`hashstore::MARK_XATTR`] — and every other file is
/// replaced by a hard link to it (link to a temp name, then rename: the path never goes
/// missing). The stand-in key is BLAKE3 over the inode's mode, owner and mtime followed by the
/// content, so files that differ in metadata never share an object (as with the real keys).
/// The caller groups only files identical in all of that. All files must be on the store's
/// filesystem. Returns the object's path.
pub fn unify_by_hand(store: &Path, files: &[&Path]) -> std::io::Result<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let first = files
        .first()
        .ok_or_else(|| std::io::Error::other("unify_by_hand needs at least one file"))?;
    let meta = std::fs::symlink_metadata(first)?;
    let mut hasher = blake3::Hasher::new();
    for field in [
        meta.mode() as i64,
        meta.uid() as i64,
        meta.gid() as i64,
        meta.mtime(),
        meta.mtime_nsec(),
    ] {
        hasher.update(&field.to_le_bytes());
    }
    hasher.update(&std::fs::read(first)?);
    let key = hasher.finalize();
    let hex = key.to_hex();
    let dir = store.join("objects").join(&hex[..2]);
    std::fs::create_dir_all(&dir)?;
    let object = dir.join(&hex[2..]);
    if !object.exists() {
        std::fs::hard_link(first, &object)?;
    }
    let path =
        std::ffi::CString::new(object.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let name = std::ffi::CString::new(hashstore::MARK_XATTR).map_err(std::io::Error::other)?;
    // SAFETY: NUL-terminated strings and a 32-byte buffer that outlives the call.
    let r = unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            key.as_bytes().as_ptr().cast(),
            32,
            0,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    for file in files {
        if std::fs::symlink_metadata(file)?.ino() == std::fs::symlink_metadata(&object)?.ino() {
            continue;
        }
        let tmp = file.with_file_name(format!(
            ".cowfs.tmp.unify.{}",
            file.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ));
        std::fs::hard_link(&object, &tmp)?;
        std::fs::rename(&tmp, file)?;
    }
    Ok(object)
}
