//! Loads the embedded eBPF object with aya and attaches it.
//!
//! Enforcement (devices, bind/connect, sysctl) is one program set *per context*: each load gets
//! its own maps holding only that context's policy, and the programs are attached to the context's
//! cgroup with `BPF_PROG_ATTACH`, so the cgroup itself keeps them alive — no pinning, no daemon —
//! and removing the cgroup drops them. A lookup can never find another context's policy, and
//! destroying one context cannot disturb another.
//!
//! Accounting (forks/execs for `vps`) is one set *shared* by every context of a registry: a
//! tracepoint fires for every task of the machine, so one program per context would make every
//! fork pay once per context. Its links and its counters map are pinned in bpffs so that they
//! outlive the `vcontext run` that loaded them; the map is keyed by cgroup id.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use aya::Ebpf;
use aya::maps::{Array, HashMap, MapData, PerCpuHashMap, PerCpuValues};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{Program, ProgramError, ProgramFd, RawTracePoint};
use aya_obj::generated::{BPF_F_ALLOW_MULTI, bpf_attach_type, bpf_cmd};
use serde::Serialize;

use crate::abi::{self, ProcCounters};
use crate::cgroup::ContextCgroup;
use crate::devices::{self, DeviceRule};
use crate::net::NetMaps;
use crate::object::OBJECT;
use crate::{Error, Result, mounts};

/// The cgroup hooks of the enforcement set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Device,
    Bind4,
    Bind6,
    Connect4,
    Connect6,
    Sysctl,
}

impl Hook {
    pub const ALL: [Hook; 6] = [
        Hook::Device,
        Hook::Bind4,
        Hook::Bind6,
        Hook::Connect4,
        Hook::Connect6,
        Hook::Sysctl,
    ];

    pub fn program(self) -> &'static str {
        match self {
            Hook::Device => abi::PROG_DEVICE,
            Hook::Bind4 => abi::PROG_BIND4,
            Hook::Bind6 => abi::PROG_BIND6,
            Hook::Connect4 => abi::PROG_CONNECT4,
            Hook::Connect6 => abi::PROG_CONNECT6,
            Hook::Sysctl => abi::PROG_SYSCTL,
        }
    }

    fn attach_type(self) -> u32 {
        (match self {
            Hook::Device => bpf_attach_type::BPF_CGROUP_DEVICE,
            Hook::Bind4 => bpf_attach_type::BPF_CGROUP_INET4_BIND,
            Hook::Bind6 => bpf_attach_type::BPF_CGROUP_INET6_BIND,
            Hook::Connect4 => bpf_attach_type::BPF_CGROUP_INET4_CONNECT,
            Hook::Connect6 => bpf_attach_type::BPF_CGROUP_INET6_CONNECT,
            Hook::Sysctl => bpf_attach_type::BPF_CGROUP_SYSCTL,
        }) as u32
    }
}

/// The isolation layers the enforcement set provides, each all-or-nothing.
pub const LAYERS: [(&str, &[Hook]); 3] = [
    ("devices", &[Hook::Device]),
    (
        "network",
        &[Hook::Bind4, Hook::Bind6, Hook::Connect4, Hook::Connect6],
    ),
    ("sysctl", &[Hook::Sysctl]),
];

/// Whether one isolation layer is in force, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayerReport {
    pub layer: String,
    pub enforced: bool,
    pub detail: String,
}

impl LayerReport {
    pub fn enforced(layer: &str, detail: impl Into<String>) -> Self {
        LayerReport {
            layer: layer.into(),
            enforced: true,
            detail: detail.into(),
        }
    }

    pub fn missing(layer: &str, detail: impl Into<String>) -> Self {
        LayerReport {
            layer: layer.into(),
            enforced: false,
            detail: detail.into(),
        }
    }
}

/// The policy the enforcement maps are filled with.
pub struct Policy<'a> {
    pub devices: &'a [DeviceRule],
    pub net: &'a NetMaps,
}

/// An errno and a one-line reason from an aya error (the verifier log goes to the debug log).
pub fn describe(err: &(dyn std::error::Error + 'static)) -> (Option<i32>, String) {
    let mut errno = None;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>()
            && let Some(code) = io.raw_os_error()
        {
            errno = Some(code);
            break;
        }
        cur = e.source();
    }
    if let Some(ProgramError::LoadError { verifier_log, .. }) = err.downcast_ref::<ProgramError>() {
        tracing::debug!("verifier log:\n{verifier_log}");
    }
    let text = match errno {
        Some(code) => {
            let name = nix::errno::Errno::from_raw(code);
            let text = io::Error::from_raw_os_error(code).to_string();
            let text = text.split(" (os error").next().unwrap_or(&text).to_string();
            format!("{name:?}: {text}")
        }
        None => err.to_string(),
    };
    (errno, text)
}

fn load_object() -> Result<Ebpf> {
    Ebpf::load(OBJECT).map_err(|e| Error::bpf("loading the embedded object", e))
}

fn map_err(what: &str) -> impl Fn(aya::maps::MapError) -> Error + '_ {
    move |e| Error::bpf(format!("map {what}"), e)
}

fn fill_maps(ebpf: &mut Ebpf, policy: &Policy<'_>) -> Result<()> {
    let missing = |name: &str| Error::BadValue {
        what: "eBPF object",
        value: name.into(),
        why: "map missing from the embedded object".into(),
    };
    {
        let map = ebpf
            .map_mut(abi::MAP_DEVICES)
            .ok_or_else(|| missing(abi::MAP_DEVICES))?;
        let mut devices: HashMap<_, abi::DevKey, u32> =
            HashMap::try_from(map).map_err(map_err(abi::MAP_DEVICES))?;
        for (key, access) in devices::merge(policy.devices) {
            devices
                .insert(key, access, 0)
                .map_err(map_err(abi::MAP_DEVICES))?;
        }
    }
    {
        let map = ebpf
            .map_mut(abi::MAP_ADDRS4)
            .ok_or_else(|| missing(abi::MAP_ADDRS4))?;
        let mut addrs: HashMap<_, u32, u8> =
            HashMap::try_from(map).map_err(map_err(abi::MAP_ADDRS4))?;
        for a in &policy.net.v4 {
            addrs.insert(a, 1, 0).map_err(map_err(abi::MAP_ADDRS4))?;
        }
    }
    {
        let map = ebpf
            .map_mut(abi::MAP_ADDRS6)
            .ok_or_else(|| missing(abi::MAP_ADDRS6))?;
        let mut addrs: HashMap<_, [u32; 4], u8> =
            HashMap::try_from(map).map_err(map_err(abi::MAP_ADDRS6))?;
        for a in &policy.net.v6 {
            addrs.insert(a, 1, 0).map_err(map_err(abi::MAP_ADDRS6))?;
        }
    }
    let map = ebpf
        .map_mut(abi::MAP_NET_CONFIG)
        .ok_or_else(|| missing(abi::MAP_NET_CONFIG))?;
    let mut config: Array<_, abi::NetConfig> =
        Array::try_from(map).map_err(map_err(abi::MAP_NET_CONFIG))?;
    config
        .set(0, policy.net.config, 0)
        .map_err(map_err(abi::MAP_NET_CONFIG))
}

/// Loads one cgroup program of the object (verifier included) and returns its fd.
fn load_cgroup_program(ebpf: &mut Ebpf, name: &str) -> Result<ProgramFd, String> {
    let program = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("program {name} missing from the embedded object"))?;
    let loaded = match program {
        Program::CgroupDevice(p) => p
            .load()
            .and_then(|()| p.fd()?.try_clone().map_err(Into::into)),
        Program::CgroupSockAddr(p) => p
            .load()
            .and_then(|()| p.fd()?.try_clone().map_err(Into::into)),
        Program::CgroupSysctl(p) => p
            .load()
            .and_then(|()| p.fd()?.try_clone().map_err(Into::into)),
        other => return Err(format!("{name} is a {:?} program", other.prog_type())),
    };
    loaded.map_err(|e| format!("the kernel refused to load {name}: {}", describe(&e).1))
}

/// Loads one enforcement set for a context, fills its maps with `policy` and attaches it to
/// `cgroup`, layer by layer. A layer the kernel refuses is reported, never half-attached.
pub fn attach_enforcement(cgroup: &ContextCgroup, policy: &Policy<'_>) -> Result<Vec<LayerReport>> {
    let mut ebpf = match load_object() {
        Ok(ebpf) => ebpf,
        Err(e) => {
            let why = e.to_string();
            return Ok(LAYERS
                .iter()
                .map(|(layer, _)| LayerReport::missing(layer, why.clone()))
                .collect());
        }
    };
    fill_maps(&mut ebpf, policy)?;
    let dir = cgroup.open()?;
    let mut reports = Vec::new();
    for (layer, hooks) in LAYERS {
        let mut attached = Vec::new();
        let mut failure = None;
        for hook in hooks {
            let fd = match load_cgroup_program(&mut ebpf, hook.program()) {
                Ok(fd) => fd,
                Err(why) => {
                    failure = Some(why);
                    break;
                }
            };
            match sys::prog_attach(dir.as_fd(), fd.as_fd(), hook.attach_type()) {
                Ok(()) => attached.push((*hook, fd)),
                Err(e) => {
                    failure = Some(format!(
                        "attaching {} to {}: {}",
                        hook.program(),
                        cgroup.path().display(),
                        describe(&e).1
                    ));
                    break;
                }
            }
        }
        match failure {
            None => {
                let names: Vec<_> = hooks.iter().map(|h| h.program()).collect();
                reports.push(LayerReport::enforced(layer, names.join(", ")));
            }
            Some(why) => {
                for (hook, fd) in attached {
                    if let Err(e) = sys::prog_detach(dir.as_fd(), fd.as_fd(), hook.attach_type()) {
                        tracing::warn!("detaching {} after a failed layer: {e}", hook.program());
                    }
                }
                reports.push(LayerReport::missing(layer, why));
            }
        }
    }
    Ok(reports)
}

/// A program attached to a context cgroup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attached {
    pub id: u32,
    pub name: String,
    pub hook: String,
}

fn program_name(id: u32) -> String {
    aya::programs::loaded_programs()
        .filter_map(|p| p.ok())
        .find(|p| p.id() == id)
        .and_then(|p| p.name_as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The programs attached to `cgroup` on the enforcement hooks.
pub fn attached(cgroup: &ContextCgroup) -> Result<Vec<Attached>> {
    if !cgroup.exists() {
        return Ok(Vec::new());
    }
    let dir = cgroup.open()?;
    let mut out = Vec::new();
    for hook in Hook::ALL {
        let ids = sys::prog_query(dir.as_fd(), hook.attach_type())
            .map_err(|e| Error::io(format!("querying {}", cgroup.path().display()), e))?;
        out.extend(ids.into_iter().map(|id| Attached {
            id,
            name: program_name(id),
            hook: format!("{hook:?}").to_lowercase(),
        }));
    }
    Ok(out)
}

/// Detaches every program from the enforcement hooks of `cgroup`; returns how many. The
/// programs (and their maps) are freed as soon as nothing else holds them.
pub fn detach_all(cgroup: &ContextCgroup) -> Result<usize> {
    if !cgroup.exists() {
        return Ok(0);
    }
    let dir = cgroup.open()?;
    let mut n = 0;
    for hook in Hook::ALL {
        let what = |e| Error::io(format!("detaching from {}", cgroup.path().display()), e);
        for id in sys::prog_query(dir.as_fd(), hook.attach_type()).map_err(what)? {
            let prog = match sys::prog_fd_by_id(id) {
                Ok(fd) => fd,
                // Freed since the query: nothing to detach.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => return Err(what(e)),
            };
            sys::prog_detach(dir.as_fd(), prog.as_fd(), hook.attach_type()).map_err(what)?;
            n += 1;
        }
    }
    Ok(n)
}

/// Ids of every BPF program loaded in the kernel (to check that nothing leaked).
pub fn loaded_program_ids() -> Vec<u32> {
    aya::programs::loaded_programs()
        .filter_map(|p| p.ok())
        .map(|p| p.id())
        .collect()
}

/// Attaches an allow-all program to the cgroup directory `dir` on `hook` *exclusively* (without
/// BPF_F_ALLOW_MULTI), as some other tool might: the kernel then refuses every program on that
/// hook below it. Returns the program's id. This is how the tests make the kernel refuse a
/// layer for real; [`detach_all_from`] undoes it.
pub fn attach_exclusive(dir: &Path, hook: Hook) -> Result<u32> {
    let name = match hook {
        Hook::Device => abi::PROBE_CGROUP_DEVICE,
        Hook::Sysctl => abi::PROBE_SYSCTL,
        _ => abi::PROBE_SOCK_ADDR,
    };
    let mut ebpf = load_object()?;
    let fd = load_cgroup_program(&mut ebpf, name)
        .map_err(|why| Error::bpf(name, io::Error::other(why)))?;
    let cgroup =
        std::fs::File::open(dir).map_err(|e| Error::io(format!("opening {}", dir.display()), e))?;
    sys::prog_attach_flags(cgroup.as_fd(), fd.as_fd(), hook.attach_type(), 0)
        .map_err(|e| Error::io(format!("attaching {name} to {}", dir.display()), e))?;
    let ids = sys::prog_query(cgroup.as_fd(), hook.attach_type())
        .map_err(|e| Error::io(format!("querying {}", dir.display()), e))?;
    Ok(ids.first().copied().unwrap_or(0))
}

/// Detaches every program of `hook` from the cgroup directory `dir` (see [`attach_exclusive`]).
pub fn detach_all_from(dir: &Path, hook: Hook) -> Result<()> {
    let cgroup =
        std::fs::File::open(dir).map_err(|e| Error::io(format!("opening {}", dir.display()), e))?;
    let what = |e| Error::io(format!("detaching from {}", dir.display()), e);
    for id in sys::prog_query(cgroup.as_fd(), hook.attach_type()).map_err(what)? {
        let prog = sys::prog_fd_by_id(id).map_err(what)?;
        sys::prog_detach(cgroup.as_fd(), prog.as_fd(), hook.attach_type()).map_err(what)?;
    }
    Ok(())
}

/// The bpffs where cowfs pins, mounting one on /sys/fs/bpf if none is mounted (as systemd does
/// at boot on most distributions; this machine boots without it).
pub fn bpffs() -> Result<PathBuf> {
    if let Some(path) = mounts::find_fs("bpf")? {
        return Ok(path);
    }
    let path = PathBuf::from("/sys/fs/bpf");
    nix::mount::mount(
        Some("bpf"),
        &path,
        Some("bpf"),
        nix::mount::MsFlags::MS_NOSUID
            | nix::mount::MsFlags::MS_NODEV
            | nix::mount::MsFlags::MS_NOEXEC,
        Some("mode=0700"),
    )
    .map_err(|e| Error::sys(format!("mounting bpffs on {}", path.display()), e))?;
    tracing::info!("mounted bpffs on {} (it was not mounted)", path.display());
    Ok(path)
}

/// The shared accounting set of one registry instance, pinned under `dir`.
pub struct Accounting {
    dir: PathBuf,
}

const PIN_FORK: &str = "acct_fork";
const PIN_EXEC: &str = "acct_exec";
const PIN_COUNTERS: &str = "acct_counters";

impl Accounting {
    /// Where the set of registry `instance` is pinned.
    pub fn dir(bpffs: &Path, instance: &str) -> PathBuf {
        bpffs.join("cowfs").join(instance)
    }

    /// The set pinned in `dir`, if it is loaded.
    pub fn open(dir: &Path) -> Option<Self> {
        dir.join(PIN_COUNTERS).exists().then(|| Accounting {
            dir: dir.to_path_buf(),
        })
    }

    /// The set pinned in `dir`, loading, attaching and pinning it if it is not there.
    pub fn ensure(dir: &Path) -> Result<Self> {
        if let Some(acct) = Self::open(dir) {
            return Ok(acct);
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let mut ebpf = load_object()?;
        let acct = Accounting {
            dir: dir.to_path_buf(),
        };
        // Pin the map first: once a link is pinned the program runs and must find its map.
        let result = (|| {
            let map = ebpf
                .map(abi::MAP_PROC_COUNTERS)
                .ok_or_else(|| Error::BadValue {
                    what: "eBPF object",
                    value: abi::MAP_PROC_COUNTERS.into(),
                    why: "map missing from the embedded object".into(),
                })?;
            map.pin(dir.join(PIN_COUNTERS))
                .map_err(|e| Error::bpf("pinning the accounting map", e))?;
            for (prog, tp, pin) in [
                (abi::PROG_FORK, abi::TP_FORK, PIN_FORK),
                (abi::PROG_EXEC, abi::TP_EXEC, PIN_EXEC),
            ] {
                let p: &mut RawTracePoint = ebpf
                    .program_mut(prog)
                    .ok_or_else(|| Error::BadValue {
                        what: "eBPF object",
                        value: prog.into(),
                        why: "program missing from the embedded object".into(),
                    })?
                    .try_into()
                    .map_err(|e| Error::bpf(prog, e))?;
                p.load()
                    .map_err(|e| Error::bpf(format!("loading {prog}"), e))?;
                let id = p
                    .attach(tp)
                    .map_err(|e| Error::bpf(format!("attaching {prog} to {tp}"), e))?;
                let link: FdLink = p
                    .take_link(id)
                    .map_err(|e| Error::bpf(format!("taking the link of {prog}"), e))?
                    .into();
                link.pin(dir.join(pin))
                    .map_err(|e| Error::bpf(format!("pinning {prog}"), e))?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok(acct),
            Err(e) => {
                let _ = acct.unload();
                Err(e)
            }
        }
    }

    fn counters(&self) -> Result<PerCpuHashMap<MapData, u64, ProcCounters>> {
        let path = self.dir.join(PIN_COUNTERS);
        let data = MapData::from_pin(&path)
            .map_err(|e| Error::bpf(format!("opening {}", path.display()), e))?;
        let map = aya::maps::Map::PerCpuHashMap(data);
        PerCpuHashMap::try_from(map).map_err(|e| Error::bpf("the accounting map", e))
    }

    /// Starts counting for the cgroup with id `cgroup_id` (from zero).
    pub fn register(&self, cgroup_id: u64) -> Result<()> {
        let mut map = self.counters()?;
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| Error::io(what, e))?;
        let zero = PerCpuValues::try_from(vec![ProcCounters::default(); cpus])
            .map_err(|e| Error::io("per-CPU values", e))?;
        map.insert(cgroup_id, zero, 0)
            .map_err(|e| Error::bpf("registering a cgroup for accounting", e))
    }

    /// Stops counting for `cgroup_id` (not an error if it was not counted).
    pub fn unregister(&self, cgroup_id: u64) -> Result<()> {
        let mut map = self.counters()?;
        match map.remove(&cgroup_id) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(Error::bpf("unregistering a cgroup from accounting", e)),
        }
    }

    /// Forks and execs counted for `cgroup_id`, summed over the CPUs.
    pub fn read(&self, cgroup_id: u64) -> Result<Option<ProcCounters>> {
        let map = self.counters()?;
        match map.get(&cgroup_id, 0) {
            Ok(values) => Ok(Some(values.iter().fold(ProcCounters::default(), |a, v| {
                ProcCounters {
                    forks: a.forks + v.forks,
                    execs: a.execs + v.execs,
                }
            }))),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(Error::bpf("reading the accounting map", e)),
        }
    }

    /// How many cgroups are being counted.
    pub fn registered(&self) -> Result<usize> {
        Ok(self.counters()?.keys().filter(|k| k.is_ok()).count())
    }

    /// The ids of the programs of this set (for listings and leak checks).
    pub fn program_ids(&self) -> Vec<u32> {
        [PIN_FORK, PIN_EXEC]
            .iter()
            .filter_map(|pin| PinnedLink::from_pin(self.dir.join(pin)).ok())
            .filter_map(|link| FdLink::from(link).info().ok())
            .map(|info| info.program_id())
            .collect()
    }

    /// Unpins everything: the tracepoints detach and the programs and map are freed.
    pub fn unload(self) -> Result<()> {
        for pin in [PIN_FORK, PIN_EXEC, PIN_COUNTERS] {
            match std::fs::remove_file(self.dir.join(pin)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("unpinning {pin}"), e)),
            }
        }
        // Remove the instance directory and the cowfs one when empty; another instance may
        // still use the latter, which rmdir refuses.
        let _ = std::fs::remove_dir(&self.dir);
        if let Some(parent) = self.dir.parent() {
            let _ = std::fs::remove_dir(parent);
        }
        Ok(())
    }
}

/// The few bpf(2) commands aya does not wrap for us: legacy cgroup attach (the cgroup then owns
/// the program), query and detach. Attribute layouts are those of `union bpf_attr` in
/// linux/bpf.h; the kernel accepts a shorter attr as long as it is the prefix it expects.
mod sys {
    use super::*;

    fn bpf<T>(cmd: bpf_cmd, attr: &mut T) -> io::Result<i64> {
        // SAFETY: `attr` is a #[repr(C)] prefix of union bpf_attr for `cmd`, valid for the call.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd as libc::c_long,
                (attr as *mut T).cast::<libc::c_void>(),
                size_of::<T>() as libc::c_long,
            )
        };
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(ret)
        }
    }

    #[repr(C)]
    #[derive(Default)]
    struct AttachAttr {
        target_fd: u32,
        attach_bpf_fd: u32,
        attach_type: u32,
        attach_flags: u32,
        replace_bpf_fd: u32,
    }

    fn raw(fd: BorrowedFd<'_>) -> u32 {
        fd.as_raw_fd() as u32
    }

    /// BPF_PROG_ATTACH with BPF_F_ALLOW_MULTI: composes with programs on ancestor cgroups.
    pub fn prog_attach(
        cgroup: BorrowedFd<'_>,
        prog: BorrowedFd<'_>,
        attach_type: u32,
    ) -> io::Result<()> {
        prog_attach_flags(cgroup, prog, attach_type, BPF_F_ALLOW_MULTI)
    }

    pub fn prog_attach_flags(
        cgroup: BorrowedFd<'_>,
        prog: BorrowedFd<'_>,
        attach_type: u32,
        attach_flags: u32,
    ) -> io::Result<()> {
        let mut attr = AttachAttr {
            target_fd: raw(cgroup),
            attach_bpf_fd: raw(prog),
            attach_type,
            attach_flags,
            ..Default::default()
        };
        bpf(bpf_cmd::BPF_PROG_ATTACH, &mut attr).map(drop)
    }

    pub fn prog_detach(
        cgroup: BorrowedFd<'_>,
        prog: BorrowedFd<'_>,
        attach_type: u32,
    ) -> io::Result<()> {
        let mut attr = AttachAttr {
            target_fd: raw(cgroup),
            attach_bpf_fd: raw(prog),
            attach_type,
            ..Default::default()
        };
        bpf(bpf_cmd::BPF_PROG_DETACH, &mut attr).map(drop)
    }

    #[repr(C)]
    #[derive(Default)]
    struct QueryAttr {
        target_fd: u32,
        attach_type: u32,
        query_flags: u32,
        attach_flags: u32,
        prog_ids: u64,
        prog_cnt: u32,
        _pad: u32,
    }

    /// Ids of the programs attached directly to `cgroup` on `attach_type`.
    pub fn prog_query(cgroup: BorrowedFd<'_>, attach_type: u32) -> io::Result<Vec<u32>> {
        let mut ids = vec![0u32; 64];
        let mut attr = QueryAttr {
            target_fd: raw(cgroup),
            attach_type,
            prog_ids: ids.as_mut_ptr() as u64,
            prog_cnt: ids.len() as u32,
            ..Default::default()
        };
        bpf(bpf_cmd::BPF_PROG_QUERY, &mut attr)?;
        ids.truncate(attr.prog_cnt as usize);
        Ok(ids)
    }

    #[repr(C)]
    #[derive(Default)]
    struct GetFdAttr {
        id: u32,
        next_id: u32,
        open_flags: u32,
    }

    pub fn prog_fd_by_id(id: u32) -> io::Result<OwnedFd> {
        let mut attr = GetFdAttr {
            id,
            ..Default::default()
        };
        let fd = bpf(bpf_cmd::BPF_PROG_GET_FD_BY_ID, &mut attr)?;
        // SAFETY: the kernel just returned this fd to us.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::Hierarchy;
    use crate::net;

    /// A context cgroup created for one test and removed (programs detached) even on failure.
    struct TestCgroup(ContextCgroup);

    impl TestCgroup {
        fn new() -> Self {
            let h = Hierarchy::detect().expect("cgroup2 is mounted on the test machines");
            let instance = format!("test-{}-{:x}", std::process::id(), rand_u32());
            let cg = h.context(&instance, 7);
            cg.create().expect("create the test cgroup");
            TestCgroup(cg)
        }
    }

    impl Drop for TestCgroup {
        fn drop(&mut self) {
            let _ = self.0.kill_all("test", std::time::Duration::from_secs(5));
            let _ = detach_all(&self.0);
            let _ = self.0.remove();
        }
    }

    fn rand_u32() -> u32 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    }

    #[test]
    fn enforcement_set_loads_attaches_and_detaches() {
        let cg = TestCgroup::new();
        let addrs = [net::parse_addr("127.0.0.2").expect("valid")];
        let maps = net::maps(&addrs, net::Loopback::Remap);
        let rules = devices::minimal();
        let reports = attach_enforcement(
            &cg.0,
            &Policy {
                devices: &rules,
                net: &maps,
            },
        )
        .expect("attach");
        assert!(reports.iter().all(|r| r.enforced), "{reports:?}");
        let programs = attached(&cg.0).expect("query");
        let mut names: Vec<_> = programs.iter().map(|a| a.name.as_str()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                abi::PROG_BIND4,
                abi::PROG_BIND6,
                abi::PROG_CONNECT4,
                abi::PROG_CONNECT6,
                abi::PROG_DEVICE,
                abi::PROG_SYSCTL
            ]
        );
        assert_eq!(detach_all(&cg.0).expect("detach"), 6);
        assert!(attached(&cg.0).expect("query").is_empty());
        let ids: Vec<u32> = programs.iter().map(|a| a.id).collect();
        // Nothing holds the programs any more: the kernel frees them.
        let still: Vec<u32> = aya::programs::loaded_programs()
            .filter_map(|p| p.ok())
            .map(|p| p.id())
            .filter(|id| ids.contains(id))
            .collect();
        assert!(still.is_empty(), "programs {still:?} survived their detach");
    }

    #[test]
    fn a_layer_the_kernel_refuses_is_reported_and_not_half_attached() {
        let cg = TestCgroup::new();
        let parent = cg.0.path().parent().expect("instance dir").to_path_buf();
        let exclusive = attach_exclusive(&parent, Hook::Sysctl).expect("exclusive attach");
        let maps = net::maps(&[], net::Loopback::Deny);
        let reports = attach_enforcement(
            &cg.0,
            &Policy {
                devices: &devices::minimal(),
                net: &maps,
            },
        )
        .expect("attach");
        detach_all_from(&parent, Hook::Sysctl).expect("detach the exclusive program");
        let sysctl = reports
            .iter()
            .find(|r| r.layer == "sysctl")
            .expect("sysctl layer");
        assert!(
            !sysctl.enforced && sysctl.detail.contains("EPERM"),
            "{sysctl:?}"
        );
        assert!(
            reports
                .iter()
                .filter(|r| r.layer != "sysctl")
                .all(|r| r.enforced),
            "{reports:?}"
        );
        assert!(exclusive > 0);
        let names: Vec<String> = attached(&cg.0)
            .expect("query")
            .into_iter()
            .map(|a| a.name)
            .collect();
        assert!(!names.iter().any(|n| n == abi::PROG_SYSCTL), "{names:?}");
    }
}
