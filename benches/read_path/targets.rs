//! The filesystems under test, each mounted over the same `lower/` with a fresh upper layer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::data::DataSet;

#[derive(Debug, Clone, Copy)]
enum Kind {
    Native,
    Overlayfs,
    FuseOverlayfs,
    /// cowfs with these mount options on top of the defaults.
    Cowfs(&'static str),
    /// cowfs over the lower layer alone (no writable branch), with these options: for modes
    /// only a read-only union allows. Workloads that write are not run on it.
    CowfsReadOnly(&'static str),
}

#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub name: &'static str,
    kind: Kind,
}

pub fn all() -> Vec<Target> {
    vec![
        Target {
            name: "native",
            kind: Kind::Native,
        },
        Target {
            name: "overlayfs",
            kind: Kind::Overlayfs,
        },
        Target {
            name: "fuse-overlayfs",
            kind: Kind::FuseOverlayfs,
        },
        // Each shortcut of the fast path turned off in turn, to measure what it brings.
        Target {
            name: "cowfs-nopt",
            kind: Kind::Cowfs("nopassthrough"),
        },
        Target {
            name: "cowfs-ptall",
            kind: Kind::Cowfs("passthrough_min=0"),
        },
        Target {
            name: "cowfs-opendir",
            kind: Kind::Cowfs("opendir"),
        },
        Target {
            name: "cowfs-ttl1s",
            kind: Kind::Cowfs("entry_timeout=1,attr_timeout=1"),
        },
        Target {
            name: "cowfs-noopen-ro",
            kind: Kind::CowfsReadOnly("noopen"),
        },
        Target {
            name: "cowfs",
            kind: Kind::Cowfs(""),
        },
    ]
}

/// The options of a cowfs target (for the report).
pub fn cowfs_options(t: &Target) -> Option<&'static str> {
    match t.kind {
        Kind::Cowfs(o) | Kind::CowfsReadOnly(o) => Some(o),
        _ => None,
    }
}

/// A target ready to serve: `root` shows `lower/`, `write_dir` takes new files.
pub struct Mounted {
    pub root: PathBuf,
    pub write_dir: PathBuf,
    /// The FUSE daemon serving the mount, if any.
    pub daemon: Option<u32>,
    is_cowfs: bool,
    mountpoint: Option<PathBuf>,
    base: PathBuf,
}

impl Target {
    pub fn is_native(&self) -> bool {
        matches!(self.kind, Kind::Native)
    }

    /// Whether the target can take writes (has a writable layer).
    pub fn is_writable(&self) -> bool {
        !matches!(self.kind, Kind::CowfsReadOnly(_))
    }

    pub fn mount(&self, data: &DataSet) -> Result<Mounted> {
        let base = data.scratch.join(self.name);
        if base.exists() {
            std::fs::remove_dir_all(&base)
                .with_context(|| format!("cleaning {}", base.display()))?;
        }
        let (upper, work, mnt) = (base.join("upper"), base.join("work"), base.join("mnt"));
        for d in [&upper, &work, &mnt] {
            std::fs::create_dir_all(d)?;
        }
        let lower = data.lower.display();
        let layers = format!(
            "lowerdir={lower},upperdir={},workdir={}",
            upper.display(),
            work.display()
        );
        match self.kind {
            Kind::Native => {
                return Ok(Mounted {
                    root: data.lower.clone(),
                    write_dir: upper,
                    daemon: None,
                    is_cowfs: false,
                    mountpoint: None,
                    base,
                });
            }
            Kind::Overlayfs => run(Command::new("mount")
                .args(["-t", "overlay", "overlay", "-o", &layers])
                .arg(&mnt))?,
            Kind::FuseOverlayfs => run(Command::new("fuse-overlayfs")
                .args(["-o", &layers])
                .arg(&mnt))?,
            Kind::Cowfs(extra) | Kind::CowfsReadOnly(extra) => {
                let mut opts = match self.kind {
                    Kind::CowfsReadOnly(_) => format!("dirs={lower}=ro"),
                    _ => layers.clone(),
                };
                if !extra.is_empty() {
                    opts = format!("{opts},{extra}");
                }
                run(Command::new(cowfs::bin("cowfs"))
                    .args(["mount", "-o", &opts, "none"])
                    .arg(&mnt))?
            }
        }
        let daemon = match self.kind {
            Kind::FuseOverlayfs => Some(daemon_of(&mnt, "fuse-overlayfs")?),
            Kind::Cowfs(_) | Kind::CowfsReadOnly(_) => Some(daemon_of(&mnt, "cowfs")?),
            _ => None,
        };
        Ok(Mounted {
            write_dir: mnt.join("w"),
            root: mnt.clone(),
            daemon,
            is_cowfs: matches!(self.kind, Kind::Cowfs(_) | Kind::CowfsReadOnly(_)),
            mountpoint: Some(mnt),
            base,
        })
    }
}

impl Mounted {
    /// The requests the cowfs daemon has received so far, per kind (None for other targets).
    pub fn requests(&self) -> Result<Option<BTreeMap<String, u64>>> {
        if self.daemon.is_none() || !self.is_cowfs {
            return Ok(None);
        }
        let Some(mnt) = &self.mountpoint else {
            return Ok(None);
        };
        let stats = cowfs_fs::control::Client::connect(mnt)
            .and_then(|mut c| c.stats())
            .with_context(|| format!("asking {} for its counters", mnt.display()))?;
        Ok(Some(stats))
    }

    /// Peak resident set of the serving daemon, in bytes (VmHWM).
    pub fn daemon_peak_rss(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.daemon?)).ok()?;
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib * 1024)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(mnt) = &self.mountpoint {
            let ok = Command::new("umount")
                .arg(mnt)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(mnt).status();
            }
        }
        if let Some(pid) = self.daemon {
            // A FUSE daemon exits once unmounted; wait so its RSS and CPU do not leak into the next run.
            for _ in 0..200 {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Finds the daemon serving `mnt` by its command line.
fn daemon_of(mnt: &Path, program: &str) -> Result<u32> {
    let want = mnt.to_string_lossy().into_owned();
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        // cowfs' watchdog shares the daemon's command line.
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if args.first().is_some_and(|a| a.ends_with(program))
            && args.iter().any(|a| a == &want)
            && comm.trim() != "cowfs-watchdog"
        {
            return Ok(pid);
        }
    }
    bail!("no {program} process serves {}", mnt.display())
}
