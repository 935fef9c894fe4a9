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

/// Unifies exactly `files` (identical in content and metadata, on the store's filesystem) the
/// way `vhashify` does, through the hashstore library: the first file's inode becomes the store
/// object (real key, mark and index row; an existing object of that key is reused), and every
/// file is replaced by a hard link to it (link to a temp name, then rename: the path never goes
/// missing). For tests that need chosen groups unified; whole guests go through `vhashify`.
/// Open the store once (`hashstore::Store::init`) for many groups. Returns the object's path.
pub fn unify_files(store: &hashstore::Store, files: &[&Path]) -> std::io::Result<PathBuf> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;

    use hashstore::{FileMeta, InsertSource, Inserted, KeyPolicy};

    let err = |e: hashstore::Error| std::io::Error::other(e.to_string());
    let first = files
        .first()
        .ok_or_else(|| std::io::Error::other("unify_files needs at least one file"))?;
    let file = std::fs::File::open(first)?;
    let (meta, stat) = FileMeta::from_fd(file.as_fd())?;
    let content = hashstore::key::hash_fd(file.as_fd(), meta.size, &mut vec![0; 1 << 16])?
        .ok_or_else(|| {
            std::io::Error::other(format!("{} changed while hashed", first.display()))
        })?;
    let src = InsertSource {
        fd: file.as_fd(),
        path: first,
        stat: &stat,
        meta: &meta,
        content,
        policy: KeyPolicy::default(),
    };
    let id = match store.insert_by_link(&src, 0).map_err(err)? {
        Inserted::New(row) => {
            store.record(std::slice::from_ref(&row)).map_err(err)?;
            row.id
        }
        Inserted::Exists(id) => id,
    };
    let object = store.object_path(&id);
    let object_ino = std::fs::symlink_metadata(&object)?.ino();
    for path in files {
        if std::fs::symlink_metadata(path)?.ino() == object_ino {
            continue;
        }
        let dir = std::fs::File::open(path.parent().unwrap_or(Path::new(".")))?;
        let tmp = hashstore::store::unique_tmp_name(hashstore::unify::apply::TMP_PREFIX);
        store
            .link_object(&id, object_ino, dir.as_fd(), std::ffi::OsStr::new(&tmp))
            .map_err(|e| std::io::Error::other(format!("linking {}: {e:?}", path.display())))?;
        std::fs::rename(path.with_file_name(&tmp), path)?;
    }
    Ok(object)
}
