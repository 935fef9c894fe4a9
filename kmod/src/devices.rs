//! Device allowlists: which device nodes a context may open (and, rarely, create).
//!
//! Specs use the cgroup v1 `devices.allow` syntax (`c 1:3 rw`, `b 8:* r`, `c *:* m`) or a name
//! for a common device (`null`, `fuse`, `tun`, …). Every context gets [`minimal`] (the nodes of
//! its minimal /dev) with read and write access; nobody gets `m` (mknod) unless it is asked for.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::abi::{ACC_MKNOD, ACC_READ, ACC_WRITE, DEV_ANY, DEV_BLOCK, DEV_CHAR, DevKey};
use crate::{Error, Result};

/// One allowlist entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRule {
    /// 'c' or 'b'.
    pub kind: char,
    /// None = any.
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// `ACC_*` bits.
    pub access: u32,
}

/// Named devices: (name, kind, major, minor). `None` minor = all minors.
const NAMED: &[(&str, char, u32, Option<u32>)] = &[
    ("null", 'c', 1, Some(3)),
    ("zero", 'c', 1, Some(5)),
    ("full", 'c', 1, Some(7)),
    ("random", 'c', 1, Some(8)),
    ("urandom", 'c', 1, Some(9)),
    ("tty", 'c', 5, Some(0)),
    ("ptmx", 'c', 5, Some(2)),
    ("pts", 'c', 136, None),
    ("fuse", 'c', 10, Some(229)),
    ("tun", 'c', 10, Some(200)),
    ("kvm", 'c', 10, Some(232)),
];

/// The devices of the minimal /dev every context gets.
pub const MINIMAL_NAMES: &[&str] = &[
    "null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts",
];

fn named(name: &str) -> Option<DeviceRule> {
    NAMED
        .iter()
        .find(|(n, ..)| *n == name)
        .map(|&(_, kind, major, minor)| DeviceRule {
            kind,
            major: Some(major),
            minor,
            access: ACC_READ | ACC_WRITE,
        })
}

/// The allowlist of the minimal /dev: read and write, no mknod.
pub fn minimal() -> Vec<DeviceRule> {
    MINIMAL_NAMES.iter().filter_map(|n| named(n)).collect()
}

impl DeviceRule {
    /// Parses `c 1:3 rw`, `b 8:* r`, `c *:* m` or a device name (read+write).
    pub fn parse(spec: &str) -> Result<Self> {
        let bad = |why: &str| Error::BadDevice {
            spec: spec.to_string(),
            why: why.to_string(),
            names: NAMED.iter().map(|n| n.0).collect::<Vec<_>>().join(", "),
        };
        let words: Vec<&str> = spec.split_whitespace().collect();
        match words.as_slice() {
            [name] => named(name).ok_or_else(|| bad("unknown device name")),
            [kind, numbers, access] => {
                let kind = match *kind {
                    "c" => 'c',
                    "b" => 'b',
                    _ => return Err(bad("the type must be c (character) or b (block)")),
                };
                let (major, minor) = numbers
                    .split_once(':')
                    .ok_or_else(|| bad("expected MAJOR:MINOR"))?;
                let number = |s: &str| -> Result<Option<u32>> {
                    if s == "*" {
                        return Ok(None);
                    }
                    match s.parse::<u32>() {
                        Ok(n) if n < DEV_ANY => Ok(Some(n)),
                        _ => Err(bad("device numbers are decimal numbers or *")),
                    }
                };
                let (major, minor) = (number(major)?, number(minor)?);
                if major.is_none() && minor.is_some() {
                    return Err(bad("a wildcard major needs a wildcard minor"));
                }
                let mut bits = 0;
                for c in access.chars() {
                    bits |= match c {
                        'r' => ACC_READ,
                        'w' => ACC_WRITE,
                        'm' => ACC_MKNOD,
                        _ => return Err(bad("access is a combination of r, w and m")),
                    };
                }
                Ok(DeviceRule {
                    kind,
                    major,
                    minor,
                    access: bits,
                })
            }
            _ => Err(bad("expected TYPE MAJOR:MINOR ACCESS or a device name")),
        }
    }

    /// The map key of this rule.
    pub fn key(&self) -> DevKey {
        DevKey {
            kind: if self.kind == 'b' {
                DEV_BLOCK
            } else {
                DEV_CHAR
            },
            major: self.major.unwrap_or(DEV_ANY),
            minor: self.minor.unwrap_or(DEV_ANY),
        }
    }

    /// Whether the rule lets `kind major:minor` be opened for reading.
    pub fn allows_read(&self, kind: char, major: u32, minor: u32) -> bool {
        self.kind == kind
            && self.major.is_none_or(|m| m == major)
            && self.minor.is_none_or(|m| m == minor)
            && self.access & ACC_READ != 0
    }
}

impl fmt::Display for DeviceRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = |x: Option<u32>| x.map_or("*".to_string(), |v| v.to_string());
        let mut access = String::new();
        for (bit, c) in [(ACC_READ, 'r'), (ACC_WRITE, 'w'), (ACC_MKNOD, 'm')] {
            if self.access & bit != 0 {
                access.push(c);
            }
        }
        write!(
            f,
            "{} {}:{} {access}",
            self.kind,
            n(self.major),
            n(self.minor)
        )
    }
}

/// Merges rules that share a key (their access bits add up), so the map gets one entry each.
pub fn merge(rules: &[DeviceRule]) -> Vec<(DevKey, u32)> {
    let mut out: Vec<(DevKey, u32)> = Vec::new();
    for r in rules {
        let key = r.key();
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some((_, bits)) => *bits |= r.access,
            None => out.push((key, r.access)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v1_syntax_and_names() {
        let r = DeviceRule::parse("c 1:3 rw").expect("valid");
        assert_eq!(
            r.key(),
            DevKey {
                kind: DEV_CHAR,
                major: 1,
                minor: 3
            }
        );
        assert_eq!(r.access, ACC_READ | ACC_WRITE);
        let r = DeviceRule::parse("b 8:* rwm").expect("valid");
        assert_eq!(
            r.key(),
            DevKey {
                kind: DEV_BLOCK,
                major: 8,
                minor: DEV_ANY
            }
        );
        assert_eq!(r.access, ACC_READ | ACC_WRITE | ACC_MKNOD);
        assert_eq!(r.to_string(), "b 8:* rwm");
        let r = DeviceRule::parse("fuse").expect("valid");
        assert_eq!(r.to_string(), "c 10:229 rw");
        assert_eq!(
            DeviceRule::parse("c *:* m").expect("valid").key().major,
            DEV_ANY
        );
    }

    #[test]
    fn rejects_bad_specs_with_a_reason() {
        for bad in [
            "",
            "floppy",
            "x 1:3 rw",
            "c 1 rw",
            "c 1:3 rx",
            "c a:3 r",
            "c *:3 r",
            "c 1:3",
            "c 1:4294967295 r",
        ] {
            let err = DeviceRule::parse(bad).expect_err(bad).to_string();
            assert!(err.contains("invalid device spec"), "{bad}: {err}");
        }
    }

    #[test]
    fn minimal_dev_is_read_write_without_mknod() {
        let m = minimal();
        assert_eq!(m.len(), MINIMAL_NAMES.len());
        assert!(m.iter().all(|r| r.access == ACC_READ | ACC_WRITE));
        assert!(m.iter().any(|r| r.allows_read('c', 136, 7)), "pts/N");
        assert!(!m.iter().any(|r| r.allows_read('b', 254, 0)));
    }

    #[test]
    fn merge_adds_access_of_the_same_device() {
        let rules = [
            DeviceRule::parse("c 1:3 r").expect("valid"),
            DeviceRule::parse("c 1:3 m").expect("valid"),
            DeviceRule::parse("c 1:5 w").expect("valid"),
        ];
        let merged = merge(&rules);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].1, ACC_READ | ACC_MKNOD);
    }
}
