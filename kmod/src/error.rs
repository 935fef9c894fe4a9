//! The errors of cowfs-kmod: bad input named precisely, system failures with what was attempted.

use std::net::IpAddr;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("xid {0} is reserved for the {1}: guests use xids from 2 up")]
    ReservedXid(u32, &'static str),
    #[error("xid {xid} is already used by context {name:?}")]
    DuplicateXid { xid: u32, name: String },
    #[error("a context named {0:?} already exists")]
    DuplicateName(String),
    #[error("address {addr} already belongs to context {name:?}")]
    AddressTaken { addr: IpAddr, name: String },
    #[error("invalid context name {name:?}: {why}")]
    InvalidName { name: String, why: &'static str },
    #[error("no context named {0:?}")]
    NotFound(String),
    #[error("root {path}: {why}")]
    BadRoot { path: PathBuf, why: String },
    #[error("unknown capability {0:?} (use the names of capabilities(7): net_raw or CAP_NET_RAW)")]
    UnknownCapability(String),
    #[error("invalid capability spec {spec:?}: {why}")]
    BadCapSpec { spec: String, why: String },
    #[error(
        "invalid device spec {spec:?}: {why} (expected \"c 1:3 rw\", \"b 8:* r\", or one of: {names})"
    )]
    BadDevice {
        spec: String,
        why: String,
        names: String,
    },
    #[error("invalid address {spec:?}: {why}")]
    BadAddress { spec: String, why: String },
    #[error("invalid {what} {value:?}: {why}")]
    BadValue {
        what: &'static str,
        value: String,
        why: String,
    },
    #[error("context registry {path}: {source}")]
    Registry {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("eBPF: {what}: {source}")]
    Bpf {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "no cgroup v2 hierarchy is mounted (looked for a cgroup2 entry in /proc/self/mountinfo)"
    )]
    NoCgroup2,
    #[error("kernel isolation is required but unavailable here: {0}")]
    IsolationUnavailable(String),
    #[error("mounting the root of context {name} on {root}: {why}")]
    Mount {
        name: String,
        root: PathBuf,
        why: String,
    },
    #[error("context {name}: {stage}: {message}")]
    Setup {
        name: String,
        stage: String,
        message: String,
    },
    #[error("context {name} still has processes after {secs} s: {pids:?}")]
    StillRunning {
        name: String,
        secs: u64,
        pids: Vec<i32>,
    },
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn sys(what: impl Into<String>, errno: nix::Error) -> Self {
        Error::io(what, std::io::Error::from(errno))
    }

    pub(crate) fn bpf(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Bpf {
            what: what.into(),
            source: Box::new(source),
        }
    }
}
