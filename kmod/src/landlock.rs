//! Landlock: a context's processes may touch files only beneath its root, and may signal and
//! reach abstract unix sockets only within their own domain.
//!
//! The ruleset is applied after `pivot_root`, so "beneath the root" is "beneath /" of the
//! context — which still excludes everything it could reach by other means: a descriptor
//! inherited from the host, a path through /proc of a process it should not see, a bind mount
//! leaked in later. Landlock checks the path walk of every open, whatever the mount namespace.

use std::path::Path;

use ::landlock::{
    ABI, Access, AccessFs, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope,
};
use serde::Serialize;

use crate::{Error, Result};

/// The newest ABI whose rights we ask for: V6 brings signal and abstract-socket scoping.
pub const TARGET: ABI = ABI::V6;
/// First ABI with scopes.
pub const SCOPES_ABI: i32 = 6;

/// The Landlock ABI of the running kernel, or the errno that says why there is none
/// (ENOSYS: not built in; EOPNOTSUPP: built in but disabled at boot).
pub fn kernel_abi() -> std::result::Result<i32, i32> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_long = 1;
    // SAFETY: the documented version query: no attr, size 0, the VERSION flag.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if v < 0 {
        Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::ENOSYS))
    } else {
        Ok(v as i32)
    }
}

/// What a confinement achieved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// The kernel's ABI (0 if it has none).
    pub abi: i32,
    /// File access limited to the root, with every right of [`TARGET`] the kernel knows.
    pub filesystem_full: bool,
    /// Signals and abstract unix sockets scoped to the domain.
    pub scoped: bool,
    /// One line for the operator.
    pub detail: String,
}

/// Confines the calling thread (and every process it starts) to `root`.
///
/// `required`: any right or scope the kernel cannot enforce is an error (nothing applied);
/// otherwise enforce what the kernel can and report the rest.
pub fn confine_beneath(root: &Path, required: bool) -> Result<Outcome> {
    let abi = kernel_abi().unwrap_or(0);
    let level = if required {
        CompatLevel::HardRequirement
    } else {
        CompatLevel::BestEffort
    };
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        Error::io(
            format!("Landlock: {what}"),
            std::io::Error::other(format!("{e} (kernel ABI {abi})")),
        )
    };
    let access = AccessFs::from_all(TARGET);
    let root_fd =
        PathFd::new(root).map_err(|e| fail(&format!("opening {}", root.display()), &e))?;
    let status = Ruleset::default()
        .set_compatibility(level)
        .handle_access(access)
        .map_err(|e| fail("file access rights", &e))?
        .scope(Scope::Signal | Scope::AbstractUnixSocket)
        .map_err(|e| fail("scopes", &e))?
        .create()
        .map_err(|e| fail("creating the ruleset", &e))?
        .add_rule(PathBeneath::new(root_fd, access))
        .map_err(|e| fail("adding the root", &e))?
        .restrict_self()
        .map_err(|e| fail("restricting", &e))?;
    let scoped = abi >= SCOPES_ABI && status.ruleset != RulesetStatus::NotEnforced;
    let (filesystem_full, detail) = match status.ruleset {
        RulesetStatus::FullyEnforced => (
            true,
            format!("ABI {abi}: files beneath the root only; signals and abstract sockets scoped"),
        ),
        RulesetStatus::PartiallyEnforced => (
            false,
            format!(
                "ABI {abi}: partially enforced (the kernel lacks some rights of ABI {}{})",
                TARGET as i32,
                if scoped {
                    ""
                } else {
                    "; signals and abstract sockets NOT scoped"
                }
            ),
        ),
        RulesetStatus::NotEnforced => (
            false,
            "not enforced: the kernel has no usable Landlock".into(),
        ),
    };
    Ok(Outcome {
        abi,
        filesystem_full,
        scoped,
        detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind;

    #[test]
    fn kernel_has_landlock_with_scopes() {
        let abi = kernel_abi().expect("Landlock is enabled on the test machines");
        assert!(abi >= SCOPES_ABI, "ABI {abi}");
    }

    /// Landlock confines a thread: run the checks on one, so the test harness stays free.
    #[test]
    fn confined_thread_sees_only_beneath_its_root() {
        let inside = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(inside.path().join("f"), b"in").expect("write");
        std::fs::write(outside.path().join("g"), b"out").expect("write");
        // A process outside the domain, to try to signal.
        let mut sleeper = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let pid = nix::unistd::Pid::from_raw(sleeper.id() as i32);
        let (inside_p, outside_p) = (inside.path().to_path_buf(), outside.path().to_path_buf());
        let result = std::thread::spawn(move || {
            let outcome = confine_beneath(&inside_p, true).expect("confine");
            let read_in = std::fs::read(inside_p.join("f")).map(|_| ());
            let read_out = std::fs::read(outside_p.join("g")).map(|_| ());
            let write_out = std::fs::write(outside_p.join("h"), b"x");
            let signal = nix::sys::signal::kill(pid, None);
            (outcome, read_in, read_out, write_out, signal)
        })
        .join()
        .expect("thread");
        let _ = sleeper.kill();
        let _ = sleeper.wait();
        let (outcome, read_in, read_out, write_out, signal) = result;
        assert!(outcome.filesystem_full && outcome.scoped, "{outcome:?}");
        assert!(read_in.is_ok(), "{read_in:?}");
        assert_eq!(
            read_out.expect_err("outside").kind(),
            ErrorKind::PermissionDenied
        );
        assert_eq!(
            write_out.expect_err("outside").kind(),
            ErrorKind::PermissionDenied
        );
        assert_eq!(signal, Err(nix::errno::Errno::EPERM), "signal scoping");
        // The rest of the process is not confined.
        assert!(std::fs::read(outside.path().join("g")).is_ok());
    }
}
