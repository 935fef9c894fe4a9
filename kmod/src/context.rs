//! A context (Linux-VServer's "security context"): a guest at run time, and its validation.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::caps::CapSet;
use crate::devices::DeviceRule;
use crate::net::{self, Loopback};
use crate::{Error, Result};

/// xid of the host: processes outside every context.
pub const XID_HOST: u32 = 0;
/// xid of the spectator: sees every context's processes.
pub const XID_SPECTATOR: u32 = 1;
/// Largest xid (VServer's were 16-bit; contexts here are cgroups and need no such limit, but a
/// bound keeps ids readable and out of the sign bit).
pub const XID_MAX: u32 = 1 << 30;

/// Everything the registry knows about a context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContextSpec {
    pub xid: u32,
    pub name: String,
    /// Where the guest's root is (a directory, or the mount point of its union).
    pub root: PathBuf,
    /// The union branches mounted on `root` when the context runs (`cowfs mount -o dirs=…`).
    pub branches: Option<String>,
    pub uid: u32,
    pub gid: u32,
    #[serde(serialize_with = "ser_caps")]
    pub caps: CapSet,
    pub addrs: Vec<IpAddr>,
    pub loopback: Loopback,
    /// Devices beyond the minimal /dev.
    pub devices: Vec<DeviceRule>,
    pub hostname: String,
    /// Refuse to run when a kernel isolation layer is unavailable (instead of degrading).
    pub require_isolation: bool,
}

fn ser_caps<S: serde::Serializer>(caps: &CapSet, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&caps.describe())
}

/// What `vcontext create` was asked for, unparsed.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    pub xid: u32,
    pub name: String,
    pub root: PathBuf,
    pub branches: Option<String>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub caps: Option<String>,
    pub addrs: Vec<String>,
    pub loopback: Option<String>,
    pub devices: Vec<String>,
    pub hostname: Option<String>,
    pub require_isolation: bool,
}

/// Checks a context name: it names cgroups, files and hostnames, and must not look like an xid.
pub fn check_name(name: &str) -> Result<()> {
    let bad = |why| Error::InvalidName {
        name: name.into(),
        why,
    };
    if name.is_empty() || name.len() > 63 {
        return Err(bad("must have 1 to 63 characters"));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(bad("must start with a letter"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(bad("may contain only letters, digits, '-', '_' and '.'"));
    }
    Ok(())
}

/// Checks a guest xid.
pub fn check_xid(xid: u32) -> Result<()> {
    match xid {
        XID_HOST => Err(Error::ReservedXid(xid, "host")),
        XID_SPECTATOR => Err(Error::ReservedXid(xid, "spectator")),
        x if x > XID_MAX => Err(Error::BadValue {
            what: "xid",
            value: x.to_string(),
            why: format!("must be at most {XID_MAX}"),
        }),
        _ => Ok(()),
    }
}

fn check_root(root: &Path) -> Result<PathBuf> {
    let bad = |why: String| Error::BadRoot {
        path: root.to_path_buf(),
        why,
    };
    let canon = root.canonicalize().map_err(|e| bad(e.to_string()))?;
    if !canon.is_dir() {
        return Err(bad("not a directory".into()));
    }
    if canon == Path::new("/") {
        return Err(bad("the host's root cannot be a guest's root".into()));
    }
    Ok(canon)
}

fn check_id(what: &'static str, id: u32) -> Result<u32> {
    if id == u32::MAX {
        return Err(Error::BadValue {
            what,
            value: id.to_string(),
            why: "-1 is not an id".into(),
        });
    }
    Ok(id)
}

impl CreateRequest {
    /// Validates every field; nothing is created until all of them are valid.
    pub fn validate(&self) -> Result<ContextSpec> {
        check_xid(self.xid)?;
        check_name(&self.name)?;
        let root = check_root(&self.root)?;
        if let Some(b) = &self.branches
            && b.trim().is_empty()
        {
            return Err(Error::BadValue {
                what: "branches",
                value: b.clone(),
                why: "empty".into(),
            });
        }
        let caps = match &self.caps {
            Some(spec) => CapSet::parse(spec)?,
            None => CapSet::secure(),
        };
        let mut addrs: Vec<IpAddr> = Vec::new();
        for a in &self.addrs {
            let addr = net::parse_addr(a)?;
            if !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
        let loopback = match &self.loopback {
            Some(l) => l.parse()?,
            None => Loopback::default(),
        };
        let devices = self
            .devices
            .iter()
            .map(|d| DeviceRule::parse(d))
            .collect::<Result<Vec<_>>>()?;
        let hostname = self.hostname.clone().unwrap_or_else(|| self.name.clone());
        if hostname.is_empty() || hostname.len() > 64 {
            return Err(Error::BadValue {
                what: "hostname",
                value: hostname,
                why: "must have 1 to 64 characters".into(),
            });
        }
        Ok(ContextSpec {
            xid: self.xid,
            name: self.name.clone(),
            root,
            branches: self.branches.clone(),
            uid: check_id("uid", self.uid.unwrap_or(0))?,
            gid: check_id("gid", self.gid.unwrap_or(0))?,
            caps,
            addrs,
            loopback,
            devices,
            hostname,
            require_isolation: self.require_isolation,
        })
    }
}

impl ContextSpec {
    /// The device allowlist in force: the minimal /dev plus what was granted.
    pub fn device_rules(&self) -> Vec<DeviceRule> {
        let mut rules = crate::devices::minimal();
        rules.extend(self.devices.iter().copied());
        rules
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(root: &Path) -> CreateRequest {
        CreateRequest {
            xid: 100,
            name: "vs01".into(),
            root: root.to_path_buf(),
            ..Default::default()
        }
    }

    #[test]
    fn a_plain_request_gets_secure_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = request(dir.path()).validate().expect("valid");
        assert_eq!(spec.caps, CapSet::secure());
        assert_eq!((spec.uid, spec.gid), (0, 0));
        assert_eq!(spec.hostname, "vs01");
        assert_eq!(spec.loopback, Loopback::Remap);
        assert_eq!(
            spec.device_rules().len(),
            crate::devices::MINIMAL_NAMES.len()
        );
    }

    #[test]
    fn bad_requests_are_refused_precisely() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cases: Vec<(CreateRequest, &str)> = vec![
            (
                CreateRequest {
                    xid: 0,
                    ..request(dir.path())
                },
                "reserved for the host",
            ),
            (
                CreateRequest {
                    xid: 1,
                    ..request(dir.path())
                },
                "reserved for the spectator",
            ),
            (
                CreateRequest {
                    name: "9lives".into(),
                    ..request(dir.path())
                },
                "start with a letter",
            ),
            (
                CreateRequest {
                    name: "a/b".into(),
                    ..request(dir.path())
                },
                "may contain only",
            ),
            (
                CreateRequest {
                    root: dir.path().join("missing"),
                    ..request(dir.path())
                },
                "No such file",
            ),
            (
                CreateRequest {
                    root: "/".into(),
                    ..request(dir.path())
                },
                "host's root",
            ),
            (
                CreateRequest {
                    caps: Some("+sys_fly".into()),
                    ..request(dir.path())
                },
                "unknown capability",
            ),
            (
                CreateRequest {
                    addrs: vec!["300.1.1.1".into()],
                    ..request(dir.path())
                },
                "invalid address",
            ),
            (
                CreateRequest {
                    devices: vec!["c 1:x r".into()],
                    ..request(dir.path())
                },
                "invalid device spec",
            ),
            (
                CreateRequest {
                    loopback: Some("open".into()),
                    ..request(dir.path())
                },
                "loopback mode",
            ),
            (
                CreateRequest {
                    uid: Some(u32::MAX),
                    ..request(dir.path())
                },
                "not an id",
            ),
        ];
        for (req, want) in cases {
            let err = req.validate().expect_err(want).to_string();
            assert!(err.contains(want), "{err:?} lacks {want:?}");
        }
    }
}
