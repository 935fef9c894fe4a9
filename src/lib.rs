//! Support code shared by the end-to-end tests (`tests/`) and scenario benchmarks (`benches/`):
//! locating the built binaries and restoring the guest-root corpus.

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
