//! cgroup v2: where the hierarchy is mounted, and the cgroups cowfs creates for its contexts.
//!
//! Every context cgroup lives at `<cgroup2>/cowfs/<instance>/x<xid>`, where `<instance>` names one
//! registry (state directory). cowfs only ever creates, restricts, kills and removes cgroups of
//! that shape: [`ContextCgroup::new`] refuses any other path, so a bug cannot attach a policy to
//! the root cgroup or to the cgroup of the process that runs cowfs.

use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{Error, Result, mounts};

/// Top-level directory of every cowfs cgroup, below the cgroup2 mount.
pub const TOP: &str = "cowfs";

/// The cgroup v2 hierarchy of this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub mount: PathBuf,
}

impl Hierarchy {
    /// Finds the cgroup2 mount in /proc/self/mountinfo (`/sys/fs/cgroup` on a unified system,
    /// `/sys/fs/cgroup/unified` on a hybrid one like this).
    pub fn detect() -> Result<Self> {
        mounts::find_fs("cgroup2")?
            .map(|mount| Hierarchy { mount })
            .ok_or(Error::NoCgroup2)
    }

    /// The cgroup v2 path of a process relative to the hierarchy root (`/` for the root).
    pub fn cgroup_of(pid: i32) -> Result<String> {
        let path = format!("/proc/{pid}/cgroup");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        text.lines()
            .find_map(|l| l.strip_prefix("0::"))
            .map(str::to_string)
            .ok_or_else(|| Error::io(&path, std::io::Error::other("no cgroup v2 entry")))
    }

    /// Directory of all contexts of one registry instance.
    pub fn instance_dir(&self, instance: &str) -> PathBuf {
        self.mount.join(TOP).join(instance)
    }

    /// The cgroup of context `xid` of registry `instance`.
    pub fn context(&self, instance: &str, xid: u32) -> ContextCgroup {
        ContextCgroup {
            path: self.instance_dir(instance).join(format!("x{xid}")),
            hierarchy: self.clone(),
        }
    }
}

/// The cgroup of one context.
#[derive(Debug, Clone)]
pub struct ContextCgroup {
    path: PathBuf,
    hierarchy: Hierarchy,
}

impl ContextCgroup {
    /// The cgroup at `path`, which must be a context cgroup of the cowfs shape.
    pub fn new(hierarchy: &Hierarchy, path: PathBuf) -> Result<Self> {
        let rel = path.strip_prefix(&hierarchy.mount).ok();
        let shape_ok = rel.is_some_and(|rel| {
            let parts: Vec<_> = rel.components().collect();
            parts.len() == 3
                && parts[0].as_os_str() == TOP
                && parts[2].as_os_str().to_string_lossy().starts_with('x')
        });
        if !shape_ok {
            return Err(Error::BadValue {
                what: "context cgroup",
                value: path.display().to_string(),
                why: format!(
                    "not of the form {}/{TOP}/<instance>/x<xid>",
                    hierarchy.mount.display()
                ),
            });
        }
        Ok(ContextCgroup {
            path,
            hierarchy: hierarchy.clone(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path as processes see it in /proc/PID/cgroup (`/cowfs/<instance>/x<xid>`).
    pub fn relative(&self) -> String {
        let rel = self
            .path
            .strip_prefix(&self.hierarchy.mount)
            .unwrap_or(&self.path);
        format!("/{}", rel.display())
    }

    pub fn exists(&self) -> bool {
        self.path.is_dir()
    }

    /// Creates the cgroup and its parents. Returns false if it already existed.
    ///
    /// A concurrent [`ContextCgroup::remove`] of another context may remove an empty parent
    /// between our mkdirs; that shows as ENOENT and is retried.
    pub fn create(&self) -> Result<bool> {
        for _ in 0..10 {
            match std::fs::create_dir(&self.path) {
                Ok(()) => return Ok(true),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(false),
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    let parent = self.path.parent().unwrap_or(&self.path);
                    std::fs::create_dir_all(parent).map_err(|e| {
                        Error::io(format!("creating cgroup {}", parent.display()), e)
                    })?;
                }
                Err(e) => {
                    return Err(Error::io(
                        format!("creating cgroup {}", self.path.display()),
                        e,
                    ));
                }
            }
        }
        Err(Error::io(
            format!("creating cgroup {}", self.path.display()),
            std::io::Error::other("its parent kept disappearing"),
        ))
    }

    /// An fd on the cgroup directory, the handle BPF programs are attached to.
    pub fn open(&self) -> Result<File> {
        File::open(&self.path).map_err(|e| Error::io(format!("opening {}", self.path.display()), e))
    }

    /// The cgroup id, as `bpf_get_current_cgroup_id()` returns it: the inode number of its
    /// directory in cgroupfs.
    pub fn id(&self) -> Result<u64> {
        std::fs::metadata(&self.path)
            .map(|m| m.ino())
            .map_err(|e| Error::io(format!("stat {}", self.path.display()), e))
    }

    fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Moves process `pid` into this cgroup.
    pub fn add(&self, pid: i32) -> Result<()> {
        let f = self.file("cgroup.procs");
        std::fs::write(&f, pid.to_string())
            .map_err(|e| Error::io(format!("moving pid {pid} into {}", f.display()), e))
    }

    /// The processes in this cgroup (none if it does not exist).
    pub fn procs(&self) -> Result<Vec<i32>> {
        let f = self.file("cgroup.procs");
        match std::fs::read_to_string(&f) {
            Ok(text) => Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(Error::io(format!("reading {}", f.display()), e)),
        }
    }

    /// Whether any process is in the cgroup (cgroup.events `populated`).
    pub fn populated(&self) -> Result<bool> {
        let f = self.file("cgroup.events");
        match std::fs::read_to_string(&f) {
            Ok(text) => Ok(text.lines().any(|l| l.trim() == "populated 1")),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(format!("reading {}", f.display()), e)),
        }
    }

    /// SIGKILLs every process in the cgroup and waits until it is empty.
    pub fn kill_all(&self, name: &str, timeout: Duration) -> Result<()> {
        if !self.exists() {
            return Ok(());
        }
        let kill = self.file("cgroup.kill");
        let deadline = Instant::now() + timeout;
        loop {
            if !self.populated()? {
                return Ok(());
            }
            if kill.exists() {
                std::fs::write(&kill, "1")
                    .map_err(|e| Error::io(format!("writing {}", kill.display()), e))?;
            } else {
                // Kernels before 5.14: kill what is there, again until nothing is left (a
                // process may fork between the read and the kill).
                for pid in self.procs()? {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            if Instant::now() > deadline {
                return Err(Error::StillRunning {
                    name: name.to_string(),
                    secs: timeout.as_secs(),
                    pids: self.procs()?,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Removes the cgroup (it must be empty), then its instance and top directories if nothing
    /// else is in them. A missing cgroup is not an error.
    pub fn remove(&self) -> Result<()> {
        match std::fs::remove_dir(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::io(
                    format!("removing cgroup {}", self.path.display()),
                    e,
                ));
            }
        }
        // Parents go only when empty: rmdir refuses otherwise (EBUSY/ENOTEMPTY), which is the
        // atomic check we want against other contexts being created concurrently.
        let mut dir = self.path.parent();
        while let Some(d) = dir {
            if d == self.hierarchy.mount || std::fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_cowfs_shaped_cgroups_are_accepted() {
        let h = Hierarchy {
            mount: PathBuf::from("/sys/fs/cgroup/unified"),
        };
        let good = h.context("ab12", 42);
        assert_eq!(
            good.path(),
            Path::new("/sys/fs/cgroup/unified/cowfs/ab12/x42")
        );
        assert_eq!(good.relative(), "/cowfs/ab12/x42");
        assert!(ContextCgroup::new(&h, good.path().to_path_buf()).is_ok());
        for bad in [
            "/sys/fs/cgroup/unified",
            "/sys/fs/cgroup/unified/cowfs",
            "/sys/fs/cgroup/unified/user.slice/x1",
            "/sys/fs/cgroup/unified/cowfs/ab12/x42/sub",
            "/sys/fs/cgroup/unified/cowfs/ab12/42",
            "/tmp/cowfs/ab12/x42",
        ] {
            assert!(
                ContextCgroup::new(&h, PathBuf::from(bad)).is_err(),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn detects_the_cgroup2_mount() {
        let h = Hierarchy::detect().expect("cgroup2 is mounted on the test machines");
        assert!(h.mount.join("cgroup.procs").is_file(), "{h:?}");
        let own = Hierarchy::cgroup_of(std::process::id() as i32).expect("own cgroup");
        assert!(own.starts_with('/'), "{own}");
    }
}
