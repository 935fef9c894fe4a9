//! What each run does and how it is timed.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::data::DataSet;
use crate::targets::{Mounted, Target};

#[derive(Debug, Clone, Copy)]
pub enum Metric {
    Seconds,
    MegabytesPerSecond,
    Iops,
}

impl Metric {
    pub fn format(self, v: f64) -> String {
        match self {
            Metric::Seconds => format!("{v:.3} s"),
            Metric::MegabytesPerSecond => format!("{v:.0} MB/s"),
            Metric::Iops => format!("{v:.0} IOPS"),
        }
    }
}

type Step = fn(&Target, &Mounted, &DataSet) -> Result<f64>;

pub struct Workload {
    pub name: &'static str,
    pub metric: Metric,
    /// Writes into the target: every run gets a fresh mount (fresh upper layer).
    writes: bool,
    /// Brings the caches to the "warm" state without being measured.
    warm_up: Step,
    run: Step,
}

impl Workload {
    pub fn writes(&self) -> bool {
        self.writes
    }
}

pub fn all() -> Vec<Workload> {
    vec![
        Workload {
            name: "seqread",
            metric: Metric::MegabytesPerSecond,
            writes: false,
            warm_up: read_big_file,
            run: seqread,
        },
        Workload {
            name: "randread",
            metric: Metric::Iops,
            writes: false,
            warm_up: read_big_file,
            run: randread,
        },
        Workload {
            name: "walk",
            metric: Metric::Seconds,
            writes: false,
            warm_up: walk,
            run: walk,
        },
        Workload {
            name: "smallread",
            metric: Metric::Seconds,
            writes: false,
            warm_up: smallread,
            run: smallread,
        },
        Workload {
            name: "untar",
            metric: Metric::Seconds,
            writes: true,
            warm_up: read_tarball,
            run: untar,
        },
        Workload {
            name: "copyup",
            metric: Metric::Seconds,
            writes: true,
            warm_up: read_big_file,
            run: copyup,
        },
        Workload {
            name: "dpkg",
            metric: Metric::Seconds,
            writes: false,
            warm_up: dpkg,
            run: dpkg,
        },
    ]
}

/// What `measure` found: one sample per run, and (for cowfs) the requests its daemon received
/// during the last run, per kind.
pub struct Measured {
    pub samples: Vec<f64>,
    pub requests: Option<BTreeMap<String, u64>>,
}

/// Runs `workload` `runs` times on `target`: cold runs remount and drop every cache first;
/// warm runs follow an unmeasured warm-up.
pub fn measure(
    target: &Target,
    w: &Workload,
    data: &DataSet,
    cold: bool,
    runs: usize,
) -> Result<Measured> {
    let mut samples = Vec::with_capacity(runs);
    let mut requests = None;
    let mut one_run = |m: &Mounted| -> Result<()> {
        let before = m.requests()?;
        samples.push((w.run)(target, m, data)?);
        requests = match (before, m.requests()?) {
            (Some(b), Some(a)) => Some(
                a.iter()
                    .map(|(k, v)| (k.clone(), v.saturating_sub(b.get(k).copied().unwrap_or(0))))
                    .collect(),
            ),
            _ => None,
        };
        Ok(())
    };
    if cold || w.writes {
        for _ in 0..runs {
            let m = target.mount(data)?;
            if cold {
                drop_caches()?;
            } else {
                (w.warm_up)(target, &m, data)?;
            }
            one_run(&m)?;
            drop(m);
            // What a run wrote and its cleanup removed is flushed (and discarded) now, not
            // during the next run.
            nix::unistd::sync();
        }
    } else {
        let m = target.mount(data)?;
        (w.warm_up)(target, &m, data)?;
        for _ in 0..runs {
            one_run(&m)?;
        }
    }
    Ok(Measured { samples, requests })
}

pub fn drop_caches() -> Result<()> {
    nix::unistd::sync();
    std::fs::write("/proc/sys/vm/drop_caches", "3").context("dropping caches (needs root)")
}

fn timed(f: impl FnOnce() -> Result<()>) -> Result<f64> {
    let start = Instant::now();
    f()?;
    Ok(start.elapsed().as_secs_f64())
}

fn fio(file: &Path, extra: &[&str]) -> Result<serde_json::Value> {
    let out = Command::new("fio")
        .args([
            "--name=bench",
            "--ioengine=psync",
            "--invalidate=0",
            "--readonly",
            "--output-format=json",
            "--size=1G",
        ])
        .arg(format!("--filename={}", file.display()))
        .args(extra)
        .output()
        .context("running fio (scripts/install-deps.sh --bench installs it)")?;
    if !out.status.success() {
        bail!(
            "fio failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing fio's JSON")?;
    Ok(json["jobs"][0]["read"].clone())
}

fn seqread(_: &Target, m: &Mounted, _: &DataSet) -> Result<f64> {
    let read = fio(&m.root.join("big.bin"), &["--rw=read", "--bs=1M"])?;
    read["bw_bytes"]
        .as_f64()
        .map(|b| b / 1e6)
        .context("fio reported no bandwidth")
}

fn randread(_: &Target, m: &Mounted, _: &DataSet) -> Result<f64> {
    let read = fio(
        &m.root.join("big.bin"),
        &[
            "--rw=randread",
            "--bs=4k",
            "--iodepth=1",
            "--runtime=5",
            "--time_based",
            "--randrepeat=1",
        ],
    )?;
    read["iops"].as_f64().context("fio reported no IOPS")
}

fn read_big_file(_: &Target, m: &Mounted, _: &DataSet) -> Result<f64> {
    timed(|| read_whole(&m.root.join("big.bin"), &mut vec![0; 1 << 20]).map(drop))
}

fn read_tarball(_: &Target, _: &Mounted, data: &DataSet) -> Result<f64> {
    timed(|| read_whole(&data.guest_tar, &mut vec![0; 1 << 20]).map(drop))
}

fn read_whole(path: &Path, buf: &mut [u8]) -> Result<u64> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut total = 0;
    loop {
        let n = f
            .read(buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
    }
}

/// Visits every entry below `dir` (without following symlinks), calling `f` on each.
fn visit(dir: &Path, f: &mut dyn FnMut(&Path, &std::fs::Metadata) -> Result<()>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        let meta =
            std::fs::symlink_metadata(&path).with_context(|| format!("stat {}", path.display()))?;
        f(&path, &meta)?;
        if meta.is_dir() {
            visit(&path, f)?;
        }
    }
    Ok(())
}

fn walk(_: &Target, m: &Mounted, data: &DataSet) -> Result<f64> {
    timed(|| walk_tree(&data.guest(&m.root)))
}

/// lstat()s every entry below `dir`.
pub fn walk_tree(dir: &Path) -> Result<()> {
    visit(dir, &mut |_, _| Ok(()))
}

fn smallread(_: &Target, m: &Mounted, data: &DataSet) -> Result<f64> {
    let mut buf = vec![0; 256 << 10];
    timed(|| {
        visit(&data.guest(&m.root), &mut |path, meta| {
            if meta.is_file() {
                read_whole(path, &mut buf)?;
            }
            Ok(())
        })
    })
}

fn untar(_: &Target, m: &Mounted, data: &DataSet) -> Result<f64> {
    let dest = m.write_dir.join("untar");
    std::fs::create_dir_all(&dest)?;
    timed(|| {
        let status = Command::new("tar")
            .args(["--numeric-owner", "-xpf"])
            .arg(&data.guest_tar)
            .arg("-C")
            .arg(&dest)
            .status()?;
        anyhow::ensure!(status.success(), "tar failed: {status}");
        Ok(())
    })
}

/// The first write to a file that lives only in the lower layer copies it up; natively the
/// equivalent work is a full copy of the file.
fn copyup(target: &Target, m: &Mounted, _: &DataSet) -> Result<f64> {
    let big = m.root.join("big.bin");
    if target.is_native() {
        let copy = m.write_dir.join("big.bin");
        return timed(|| {
            std::fs::copy(&big, &copy)
                .map(drop)
                .context("copying the big file")
        });
    }
    timed(|| {
        let mut f = std::fs::OpenOptions::new().append(true).open(&big)?;
        f.write_all(b"x")?;
        Ok(())
    })
}

fn dpkg(_: &Target, m: &Mounted, data: &DataSet) -> Result<f64> {
    let guest = data.guest(&m.root);
    timed(|| {
        let status = Command::new("chroot")
            .arg(&guest)
            .args(["dpkg", "-l"])
            .stdout(Stdio::null())
            .status()?;
        anyhow::ensure!(
            status.success(),
            "dpkg -l in {} failed: {status}",
            guest.display()
        );
        Ok(())
    })
}
