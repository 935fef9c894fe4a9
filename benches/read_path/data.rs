//! The data set every target serves: the three corpus guests and a 1 GiB file, in `lower/`.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub const BIG_FILE_BYTES: u64 = 1 << 30;

pub struct DataSet {
    /// The read-only data every target serves: `g1/ g2/ g3/ big.bin`.
    pub lower: PathBuf,
    /// Scratch space for per-target upper/work directories and mountpoints.
    pub scratch: PathBuf,
    /// The guest tarball used by the untar workload.
    pub guest_tar: PathBuf,
}

impl DataSet {
    pub fn prepare(dir: &Path) -> Result<Self> {
        let lower = dir.join("lower");
        std::fs::create_dir_all(&lower)?;
        for guest in ["g1", "g2", "g3"] {
            let dest = lower.join(guest);
            let done = dir.join(format!(".{guest}.restored"));
            if !done.exists() {
                if dest.exists() {
                    std::fs::remove_dir_all(&dest)?;
                }
                cowfs::restore_guest(guest, &dest)?;
                File::create(&done)?;
            }
        }
        let big = lower.join("big.bin");
        if std::fs::metadata(&big).map(|m| m.len()).ok() != Some(BIG_FILE_BYTES) {
            write_incompressible(&big, BIG_FILE_BYTES).context("writing the 1 GiB file")?;
        }
        let scratch = dir.join("scratch");
        std::fs::create_dir_all(&scratch)?;
        let guest_tar = cowfs::corpus_tarball("g3").context("corpus g3 tarball missing")?;
        Ok(Self {
            lower,
            scratch,
            guest_tar,
        })
    }

    /// The guest every per-guest workload uses, relative to a target's root.
    pub fn guest(&self, root: &Path) -> PathBuf {
        root.join("g3")
    }
}

/// Pseudo-random bytes (xorshift), so no filesystem or cache can shortcut zeros.
fn write_incompressible(path: &Path, len: u64) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..len / block.len() as u64 {
        for chunk in block.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes());
        }
        f.write_all(&block)?;
    }
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
