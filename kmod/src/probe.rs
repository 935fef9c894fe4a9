//! `cowfs kernel probe`: what this kernel allows, asked of the kernel itself.
//!
//! Nothing here is inferred from version numbers when it can be tried: each BPF program type is
//! loaded (a minimal program of that type from the embedded object), FUSE is mounted once in a
//! private mount namespace to read the INIT request the kernel sends (its flags say whether it
//! offers passthrough), each namespace type is unshared in a child process.

use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use aya::programs::{
    BtfTracePoint, CgroupDevice, CgroupSockAddr, CgroupSysctl, FEntry, FExit, Lsm, Program,
    ProgramError, RawTracePoint, TracePoint,
};
use aya::{Btf, Ebpf};
use serde::Serialize;

use crate::access::tracer::HookReport;
use crate::{abi, access, bpf, cgroup, landlock, mounts, object};

/// Everything `cowfs kernel probe` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub kernel: String,
    pub fuse: Fuse,
    /// One minimal program per type.
    pub program_types: Vec<ProgramLoad>,
    /// The programs contexts actually use, verified by this kernel.
    pub cowfs_programs: Vec<ProgramLoad>,
    pub landlock: Landlock,
    pub cgroup2: Option<PathBuf>,
    /// This process's cgroup v2 path.
    pub own_cgroup: Option<String>,
    pub bpffs: Option<PathBuf>,
    pub tracefs: Option<PathBuf>,
    pub kernel_btf: bool,
    pub namespaces: Vec<Namespace>,
    /// BLAKE3 of the eBPF sources the embedded object was built from.
    pub ebpf_source_blake3: Option<String>,
    /// The access-log programs (`cowfs trace`), attached for a moment to their tracepoints.
    pub access_log: AccessProbe,
}

#[derive(Debug, Clone, Serialize)]
pub struct AccessProbe {
    /// The kernel struct offsets the programs read, from BTF (`None`: see `error`).
    pub layout: Option<std::collections::BTreeMap<&'static str, u32>>,
    /// Each hook, attached and detached again (nothing is traced: no cgroup is registered).
    pub hooks: Vec<HookReport>,
    pub error: Option<String>,
}

fn access_log() -> AccessProbe {
    let layout = match access::layout::from_btf(std::path::Path::new(access::layout::VMLINUX_BTF)) {
        Ok(l) => l,
        Err(e) => {
            return AccessProbe {
                layout: None,
                hooks: Vec::new(),
                error: Some(e.to_string()),
            };
        }
    };
    // Level 0 and no registered cgroup: the programs run and record nothing.
    match access::Tracer::start(access::tracer::MIN_BUFFER, 0) {
        Ok(t) => AccessProbe {
            layout: Some(access::layout::fields(&layout)),
            hooks: t.hooks().to_vec(),
            error: None,
        },
        Err(e) => AccessProbe {
            layout: Some(access::layout::fields(&layout)),
            hooks: Vec::new(),
            error: Some(e.to_string()),
        },
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Fuse {
    pub dev_fuse: bool,
    /// FUSE protocol version of the kernel (from its INIT request), e.g. "7.45".
    pub protocol: Option<String>,
    /// The kernel offers FUSE_PASSTHROUGH in INIT.
    pub passthrough: Option<bool>,
    /// The kernel offers FUSE_OVER_IO_URING in INIT (only when enabled at run time).
    pub io_uring: Option<bool>,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProgramLoad {
    /// The kernel's name for the type (e.g. `cgroup_device`, `lsm`).
    pub program_type: String,
    pub program: String,
    pub loaded: bool,
    pub errno: Option<i32>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Landlock {
    pub abi: Option<i32>,
    pub filesystem: bool,
    pub network: bool,
    pub scopes: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Namespace {
    pub kind: String,
    pub available: bool,
    pub error: Option<String>,
}

/// Runs every probe. Needs root for the BPF and FUSE parts (reported as refused otherwise).
pub fn run() -> Report {
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let (program_types, cowfs_programs) = programs();
    let landlock = match landlock::kernel_abi() {
        Ok(abi) => Landlock {
            abi: Some(abi),
            filesystem: abi >= 1,
            network: abi >= 4,
            scopes: abi >= landlock::SCOPES_ABI,
            detail: format!("ABI {abi}"),
        },
        Err(errno) => Landlock {
            abi: None,
            filesystem: false,
            network: false,
            scopes: false,
            detail: match errno {
                libc::EOPNOTSUPP => {
                    "built in but not enabled (add landlock to lsm= at boot)".into()
                }
                _ => "not built into this kernel".into(),
            },
        },
    };
    let find = |fs: &str| mounts::find_fs(fs).ok().flatten();
    Report {
        kernel,
        fuse: fuse(),
        program_types,
        cowfs_programs,
        landlock,
        cgroup2: cgroup::Hierarchy::detect().ok().map(|h| h.mount),
        own_cgroup: cgroup::Hierarchy::cgroup_of(std::process::id() as i32).ok(),
        bpffs: find("bpf"),
        tracefs: find("tracefs"),
        kernel_btf: std::path::Path::new("/sys/kernel/btf/vmlinux").exists(),
        namespaces: namespaces(),
        ebpf_source_blake3: object::manifest().ok().map(|m| m.source_blake3),
        access_log: access_log(),
    }
}

fn outcome(program_type: &str, program: &str, result: Result<(), ProgramError>) -> ProgramLoad {
    match result {
        Ok(()) => ProgramLoad {
            program_type: program_type.into(),
            program: program.into(),
            loaded: true,
            errno: None,
            error: None,
        },
        Err(e) => {
            let (errno, text) = bpf::describe(&e);
            ProgramLoad {
                program_type: program_type.into(),
                program: program.into(),
                loaded: false,
                errno,
                error: Some(text),
            }
        }
    }
}

fn refused(program_type: &str, program: &str, why: String) -> ProgramLoad {
    ProgramLoad {
        program_type: program_type.into(),
        program: program.into(),
        loaded: false,
        errno: None,
        error: Some(why),
    }
}

/// Loads one program of the object by name, with the loader its type needs.
fn load(ebpf: &mut Ebpf, btf: Option<&Btf>, name: &str) -> ProgramLoad {
    let Some(program) = ebpf.program_mut(name) else {
        return refused("?", name, "not in the embedded object".into());
    };
    let no_btf = || "no kernel BTF (/sys/kernel/btf/vmlinux)".to_string();
    match program {
        Program::CgroupDevice(p) => outcome("cgroup_device", name, CgroupDevice::load(p)),
        Program::CgroupSockAddr(p) => outcome("cgroup_sock_addr", name, CgroupSockAddr::load(p)),
        Program::CgroupSysctl(p) => outcome("cgroup_sysctl", name, CgroupSysctl::load(p)),
        Program::TracePoint(p) => outcome("tracepoint", name, TracePoint::load(p)),
        Program::RawTracePoint(p) => outcome("raw_tp", name, RawTracePoint::load(p)),
        Program::BtfTracePoint(p) => match btf {
            Some(btf) => outcome("tp_btf", name, BtfTracePoint::load(p, abi::TP_FORK, btf)),
            None => refused("tp_btf", name, no_btf()),
        },
        Program::Lsm(p) => match btf {
            Some(btf) => outcome("lsm", name, Lsm::load(p, abi::PROBE_LSM_HOOK, btf)),
            None => refused("lsm", name, no_btf()),
        },
        Program::FEntry(p) => match btf {
            Some(btf) => outcome(
                "fentry",
                name,
                FEntry::load(p, abi::PROBE_FENTRY_TARGET, btf),
            ),
            None => refused("fentry", name, no_btf()),
        },
        Program::FExit(p) => match btf {
            Some(btf) => outcome("fexit", name, FExit::load(p, abi::PROBE_FENTRY_TARGET, btf)),
            None => refused("fexit", name, no_btf()),
        },
        other => refused(
            "?",
            name,
            format!("unexpected program type {:?}", other.prog_type()),
        ),
    }
}

fn programs() -> (Vec<ProgramLoad>, Vec<ProgramLoad>) {
    let probes = [
        abi::PROBE_CGROUP_DEVICE,
        abi::PROBE_SOCK_ADDR,
        abi::PROBE_SYSCTL,
        abi::PROBE_TRACEPOINT,
        abi::PROBE_TP_BTF,
        abi::PROBE_RAW_TP,
        abi::PROBE_LSM,
        abi::PROBE_FENTRY,
        abi::PROBE_FEXIT,
    ];
    let real = [
        abi::PROG_DEVICE,
        abi::PROG_BIND4,
        abi::PROG_BIND6,
        abi::PROG_CONNECT4,
        abi::PROG_CONNECT6,
        abi::PROG_SYSCTL,
        abi::PROG_FORK,
        abi::PROG_EXEC,
        abi::PROG_PC_READ,
        abi::PROG_PC_FAULT,
        abi::PROG_PC_MAP,
        abi::PROG_PC_ADD,
        abi::PROG_PC_DIRTY,
    ];
    let mut ebpf = match Ebpf::load(object::OBJECT) {
        Ok(e) => e,
        Err(e) => {
            let why = format!("the embedded object did not load: {}", bpf::describe(&e).1);
            let all = |names: &[&str]| names.iter().map(|n| refused("?", n, why.clone())).collect();
            return (all(&probes), all(&real));
        }
    };
    let btf = Btf::from_sys_fs().ok();
    let types = probes
        .iter()
        .map(|n| load(&mut ebpf, btf.as_ref(), n))
        .collect();
    let ours = real
        .iter()
        .map(|n| load(&mut ebpf, btf.as_ref(), n))
        .collect();
    (types, ours)
}

fn namespaces() -> Vec<Namespace> {
    use nix::sched::CloneFlags as F;
    [
        ("user", F::CLONE_NEWUSER),
        ("pid", F::CLONE_NEWPID),
        ("mount", F::CLONE_NEWNS),
        ("uts", F::CLONE_NEWUTS),
        ("ipc", F::CLONE_NEWIPC),
        ("net", F::CLONE_NEWNET),
        ("cgroup", F::CLONE_NEWCGROUP),
    ]
    .into_iter()
    .map(|(kind, flag)| {
        let mut cmd = std::process::Command::new("true");
        // SAFETY: unshare(2) is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(move || nix::sched::unshare(flag).map_err(std::io::Error::from));
        }
        let result = cmd.status();
        Namespace {
            kind: kind.into(),
            available: matches!(&result, Ok(s) if s.success()),
            error: match result {
                Ok(s) if s.success() => None,
                Ok(s) => Some(format!("`true` exited with {s}")),
                Err(e) => Some(e.to_string()),
            },
        }
    })
    .collect()
}

// FUSE_INIT as the kernel sends it (linux/fuse.h).
const FUSE_INIT: u32 = 26;
const FUSE_PASSTHROUGH_BIT2: u32 = 1 << (37 - 32);
const FUSE_OVER_IO_URING_BIT2: u32 = 1 << (41 - 32);

/// Mounts a FUSE filesystem in a private mount namespace (on a thread of its own, so nothing
/// is ever visible elsewhere), reads the INIT request and lets the mount die unanswered.
fn fuse() -> Fuse {
    let dev_fuse = std::path::Path::new("/dev/fuse").exists();
    let mut report = Fuse {
        dev_fuse,
        protocol: None,
        passthrough: None,
        io_uring: None,
        detail: String::new(),
    };
    if !dev_fuse {
        report.detail = "/dev/fuse is missing".into();
        return report;
    }
    match std::thread::spawn(fuse_init).join() {
        Ok(Ok((major, minor, flags2))) => {
            report.protocol = Some(format!("{major}.{minor}"));
            report.passthrough = Some(flags2 & FUSE_PASSTHROUGH_BIT2 != 0);
            report.io_uring = Some(flags2 & FUSE_OVER_IO_URING_BIT2 != 0);
            report.detail = "from the kernel's FUSE_INIT request".into();
        }
        Ok(Err(why)) => report.detail = format!("FUSE_INIT probe failed: {why}"),
        Err(_) => report.detail = "FUSE_INIT probe panicked".into(),
    }
    report
}

fn fuse_init() -> Result<(u32, u32, u32), String> {
    use nix::mount::{MntFlags, MsFlags, mount, umount2};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("unshare: {e}"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("making / private: {e}"))?;
    let dir = nix::unistd::mkdtemp(&std::env::temp_dir().join("cowfs-probe-XXXXXX"))
        .map_err(|e| format!("mkdtemp: {e}"))?;
    let result = (|| {
        let dev = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .map_err(|e| format!("/dev/fuse: {e}"))?;
        let opts = format!("fd={},rootmode=40000,user_id=0,group_id=0", dev.as_raw_fd());
        mount(
            Some("cowfs-probe"),
            &dir,
            Some("fuse.cowfs-probe"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(opts.as_str()),
        )
        .map_err(|e| format!("mount: {e}"))?;
        let mut fds = [nix::poll::PollFd::new(
            dev.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let ready = nix::poll::poll(&mut fds, 2000u16).map_err(|e| format!("poll: {e}"));
        let mut buf = vec![0u8; 64 * 1024];
        let read = match ready {
            Ok(n) if n > 0 => nix::unistd::read(&dev, &mut buf).map_err(|e| format!("read: {e}")),
            Ok(_) => Err("no INIT request within 2 s".into()),
            Err(e) => Err(e),
        };
        let _ = umount2(&dir, MntFlags::MNT_DETACH);
        let n = read?;
        let word = |off: usize| {
            buf.get(off..off + 4)
                .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                .unwrap_or(0)
        };
        // fuse_in_header is 40 bytes; fuse_init_in follows: major, minor, max_readahead,
        // flags, flags2.
        if n < 40 + 20 || word(4) != FUSE_INIT {
            return Err(format!(
                "unexpected first request (opcode {}, {n} bytes)",
                word(4)
            ));
        }
        Ok((word(40), word(44), word(56)))
    })();
    let _ = std::fs::remove_dir(&dir);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_reports_this_machine_as_the_brief_describes_it() {
        let r = run();
        let by_type = |t: &str| {
            r.program_types
                .iter()
                .find(|p| p.program_type == t)
                .unwrap_or_else(|| panic!("{t} missing from {:?}", r.program_types))
                .clone()
        };
        for t in [
            "cgroup_device",
            "cgroup_sock_addr",
            "cgroup_sysctl",
            "tracepoint",
            "tp_btf",
            "raw_tp",
        ] {
            assert!(by_type(t).loaded, "{t}: {:?}", by_type(t));
        }
        // The kernel of these machines refuses BPF LSM, fentry and fexit with EPERM. If a
        // kernel accepts them, this test must be updated along with the docs that say so.
        for t in ["lsm", "fentry", "fexit"] {
            let p = by_type(t);
            assert_eq!(
                (p.loaded, p.errno),
                (false, Some(libc::EPERM)),
                "{t}: {p:?}"
            );
        }
        assert!(
            r.cowfs_programs.iter().all(|p| p.loaded),
            "{:?}",
            r.cowfs_programs
        );
        assert_eq!(r.fuse.passthrough, Some(true), "{:?}", r.fuse);
        let a = &r.access_log;
        assert!(a.error.is_none() && a.layout.is_some(), "{a:?}");
        assert_eq!(a.hooks.len(), 5, "{a:?}");
        assert!(a.hooks.iter().all(|h| h.attached), "{a:?}");
        assert!(r.landlock.scopes, "{:?}", r.landlock);
        assert!(r.cgroup2.is_some());
        for ns in &r.namespaces {
            assert!(ns.available, "{ns:?}");
        }
    }
}
