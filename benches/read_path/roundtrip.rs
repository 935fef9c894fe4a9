//! What one FUSE round trip costs on this machine, measured on a cowfs mount: GETATTR of one
//! file with attribute caching off (each `stat` is one request and its reply), and an
//! open+close (one OPEN round trip; RELEASE is sent asynchronously) against a native one.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::data::DataSet;

#[derive(Clone, Copy, Debug)]
pub struct RoundTrip {
    pub calls: u32,
    pub getattr_us: f64,
    pub open_close_us: f64,
    pub native_open_close_us: f64,
}

const CALLS: u32 = 20_000;

pub fn measure(data: &DataSet) -> Result<RoundTrip> {
    let mnt = data.scratch.join("roundtrip-mnt");
    std::fs::create_dir_all(&mnt)?;
    let status = Command::new(cowfs::bin("cowfs"))
        .args(["mount", "-o"])
        .arg(format!("dirs={}=ro,attr_timeout=0", data.lower.display()))
        .arg("none")
        .arg(&mnt)
        .status()
        .context("running cowfs mount")?;
    if !status.success() {
        bail!("cowfs mount for the round-trip measurement failed: {status}");
    }
    let result = (|| {
        let file = mnt.join("big.bin");
        Ok(RoundTrip {
            calls: CALLS,
            getattr_us: per_call(&file, stat_once)?,
            open_close_us: per_call(&file, open_close_once)?,
            native_open_close_us: per_call(&data.lower.join("big.bin"), open_close_once)?,
        })
    })();
    let _ = Command::new("umount").arg(&mnt).status();
    result
}

/// Microseconds per call of `f`, after a warm-up.
fn per_call(path: &Path, f: fn(&CString) -> Result<()>) -> Result<f64> {
    let c = CString::new(path.as_os_str().as_bytes())?;
    for _ in 0..1000 {
        f(&c)?;
    }
    let start = Instant::now();
    for _ in 0..CALLS {
        f(&c)?;
    }
    Ok(start.elapsed().as_secs_f64() * 1e6 / f64::from(CALLS))
}

fn stat_once(path: &CString) -> Result<()> {
    nix::sys::stat::stat(path.as_c_str()).context("stat")?;
    Ok(())
}

fn open_close_once(path: &CString) -> Result<()> {
    let fd = nix::fcntl::open(
        path.as_c_str(),
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .context("open")?;
    drop(fd);
    Ok(())
}
