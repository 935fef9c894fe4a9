//! Capability profiles, in the spirit of Apache's mod_privileges: a secure default that drops
//! what guests rarely need, and an explicit, audited way to grant more.
//!
//! A spec is a comma-separated list: an optional profile first (`secure`, the default; `none`;
//! `all`), then edits `+cap` / `-cap` with the names of capabilities(7), with or without `CAP_`,
//! in any case: `secure,+net_raw,-kill` or just `+net_raw`.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use caps::{CapSet as Set, Capability};

use crate::{Error, Result};

/// What the secure profile keeps: what a root guest needs to run a distribution's services
/// (own files, switch users, bind low ports, chroot), and nothing that reaches the machine:
/// no SYS_ADMIN, SYS_MODULE, SYS_RAWIO, SYS_PTRACE, SYS_TIME, SYS_BOOT, MKNOD, NET_ADMIN,
/// NET_RAW, DAC_READ_SEARCH (open_by_handle_at escapes), BPF, PERFMON, SYSLOG, MAC_*, …
/// Being an allowlist, a capability added by a future kernel is dropped by default.
pub const SECURE: &[Capability] = &[
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FOWNER,
    Capability::CAP_FSETID,
    Capability::CAP_KILL,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_AUDIT_WRITE,
    Capability::CAP_SETFCAP,
];

/// A set of capabilities, kept in capability-number order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CapSet(Vec<Capability>);

impl CapSet {
    fn from_iter(caps: impl IntoIterator<Item = Capability>) -> Self {
        let mut v: Vec<Capability> = caps
            .into_iter()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        v.sort_by_key(Capability::index);
        CapSet(v)
    }

    pub fn secure() -> Self {
        Self::from_iter(SECURE.iter().copied())
    }

    pub fn all() -> Self {
        Self::from_iter(caps::all())
    }

    pub fn contains(&self, c: Capability) -> bool {
        self.0.contains(&c)
    }

    pub fn iter(&self) -> impl Iterator<Item = Capability> + '_ {
        self.0.iter().copied()
    }

    /// Parses a spec (see the module documentation).
    pub fn parse(spec: &str) -> Result<Self> {
        let bad = |why: String| Error::BadCapSpec {
            spec: spec.into(),
            why,
        };
        let mut set: HashSet<Capability> = SECURE.iter().copied().collect();
        for (i, token) in spec.split(',').map(str::trim).enumerate() {
            match token {
                "" => return Err(bad("empty element".into())),
                "secure" | "none" | "all" if i == 0 => {
                    set = match token {
                        "secure" => SECURE.iter().copied().collect(),
                        "none" => HashSet::new(),
                        _ => caps::all(),
                    };
                }
                "secure" | "none" | "all" => {
                    return Err(bad(format!("the profile {token:?} must come first")));
                }
                _ => {
                    let (add, name) = match (token.strip_prefix('+'), token.strip_prefix('-')) {
                        (Some(n), _) => (true, n),
                        (_, Some(n)) => (false, n),
                        _ => {
                            return Err(bad(format!(
                                "{token:?} is neither a profile (secure, none, all) nor +cap/-cap"
                            )));
                        }
                    };
                    let cap = parse_cap(name)?;
                    if add {
                        set.insert(cap);
                    } else {
                        set.remove(&cap);
                    }
                }
            }
        }
        Ok(Self::from_iter(set))
    }

    /// The capabilities beyond the secure profile: what an audit line must name.
    pub fn beyond_secure(&self) -> Vec<Capability> {
        self.iter().filter(|c| !SECURE.contains(c)).collect()
    }

    /// The set relative to the secure profile: `secure`, `secure,+net_raw,-kill`, `all`, `none`.
    pub fn describe(&self) -> String {
        if *self == Self::all() {
            return "all".into();
        }
        if self.0.is_empty() {
            return "none".into();
        }
        let mut out = vec!["secure".to_string()];
        out.extend(
            self.beyond_secure()
                .iter()
                .map(|c| format!("+{}", short(*c))),
        );
        out.extend(
            SECURE
                .iter()
                .filter(|c| !self.contains(**c))
                .map(|c| format!("-{}", short(*c))),
        );
        out.join(",")
    }

    /// The canonical stored form: `CAP_CHOWN,CAP_KILL,…` (explicit, so a later change of the
    /// secure profile never changes an existing context silently).
    pub fn to_canonical(&self) -> String {
        self.iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn from_canonical(text: &str) -> Result<Self> {
        if text.is_empty() {
            return Ok(CapSet::default());
        }
        text.split(',')
            .map(parse_cap)
            .collect::<Result<Vec<_>>>()
            .map(Self::from_iter)
    }

    /// Drops every capability not in the set from the bounding set and clears the ambient
    /// set: no later exec (setuid binary, file capabilities) can bring one back.
    /// Needs CAP_SETPCAP; the effective set is left alone so the caller can still switch users.
    pub fn restrict_bounding(&self) -> Result<()> {
        for c in caps::runtime::thread_all_supported() {
            if !self.contains(c) {
                caps::drop(None, Set::Bounding, c)
                    .map_err(|e| caps_err("dropping from the bounding set", e))?;
            }
        }
        caps::clear(None, Set::Ambient).map_err(|e| caps_err("clearing the ambient set", e))?;
        caps::clear(None, Set::Inheritable).map_err(|e| caps_err("clearing the inheritable set", e))
    }

    /// Reduces the effective and permitted sets to this set (for a root guest; a non-root uid
    /// has lost them all at setuid already).
    pub fn restrict_current(&self) -> Result<()> {
        let keep: caps::CapsHashSet = self.iter().collect();
        let permitted =
            caps::read(None, Set::Permitted).map_err(|e| caps_err("reading capabilities", e))?;
        let keep: caps::CapsHashSet = keep.intersection(&permitted).copied().collect();
        caps::set(None, Set::Effective, &keep)
            .map_err(|e| caps_err("setting the effective set", e))?;
        caps::set(None, Set::Permitted, &keep).map_err(|e| caps_err("setting the permitted set", e))
    }
}

fn caps_err(what: &str, e: caps::errors::CapsError) -> Error {
    Error::io(what, std::io::Error::other(e.to_string()))
}

/// The lower-case name without `cap_`, as users type it.
pub fn short(c: Capability) -> String {
    c.to_string().trim_start_matches("CAP_").to_lowercase()
}

fn parse_cap(name: &str) -> Result<Capability> {
    Capability::from_str(&caps::to_canonical(name.trim()))
        .map_err(|_| Error::UnknownCapability(name.trim().to_string()))
}

impl fmt::Display for CapSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_drops_what_the_issue_names() {
        let s = CapSet::secure();
        for c in [
            Capability::CAP_SYS_ADMIN,
            Capability::CAP_SYS_MODULE,
            Capability::CAP_SYS_RAWIO,
            Capability::CAP_SYS_PTRACE,
            Capability::CAP_SYS_TIME,
            Capability::CAP_SYS_BOOT,
            Capability::CAP_MKNOD,
            Capability::CAP_NET_ADMIN,
            Capability::CAP_DAC_READ_SEARCH,
            Capability::CAP_BPF,
        ] {
            assert!(!s.contains(c), "{c}");
        }
        assert_eq!(s.describe(), "secure");
        assert!(s.beyond_secure().is_empty());
    }

    #[test]
    fn edits_apply_to_the_secure_profile_or_the_named_one() {
        let s = CapSet::parse("+NET_RAW,-kill").expect("valid");
        assert!(s.contains(Capability::CAP_NET_RAW));
        assert!(!s.contains(Capability::CAP_KILL));
        assert_eq!(s.describe(), "secure,+net_raw,-kill");
        assert_eq!(s.beyond_secure(), vec![Capability::CAP_NET_RAW]);
        assert_eq!(
            CapSet::parse("none,+cap_chown")
                .expect("valid")
                .to_canonical(),
            "CAP_CHOWN"
        );
        assert_eq!(CapSet::parse("all").expect("valid").describe(), "all");
        assert_eq!(CapSet::parse("none").expect("valid").describe(), "none");
        let round = CapSet::from_canonical(&s.to_canonical()).expect("round trip");
        assert_eq!(round, s);
    }

    #[test]
    fn unknown_capabilities_and_bad_specs_are_refused() {
        let e = CapSet::parse("+sys_fly").expect_err("unknown").to_string();
        assert!(e.contains("unknown capability \"sys_fly\""), "{e}");
        for bad in ["net_raw", "+net_raw,secure", "", "+net_raw,,-kill", "sudo"] {
            assert!(CapSet::parse(bad).is_err(), "{bad}");
        }
    }
}
