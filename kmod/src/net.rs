//! A context's network identity: its own addresses and what loopback means for it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::abi::{NET_HAS_V4, NET_HAS_V6, NET_LOOPBACK_HOST, NET_LOOPBACK_REMAP, NetConfig};
use crate::{Error, Result};

/// What 127.0.0.1 / ::1 mean inside a context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Loopback {
    /// VServer's "lback": 127.0.0.1 is the context's own first 127.x.y.z address, so services
    /// on loopback stay private to the context. Without such an address, like `deny`.
    #[default]
    Remap,
    /// The host's loopback addresses may not be used (only the context's own).
    Deny,
    /// The context may connect to the host's loopback (binding stays limited to its own addresses).
    Host,
}

impl FromStr for Loopback {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "remap" => Ok(Loopback::Remap),
            "deny" => Ok(Loopback::Deny),
            "host" => Ok(Loopback::Host),
            _ => Err(Error::BadValue {
                what: "loopback mode",
                value: s.into(),
                why: "expected remap, deny or host".into(),
            }),
        }
    }
}

impl fmt::Display for Loopback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Loopback::Remap => "remap",
            Loopback::Deny => "deny",
            Loopback::Host => "host",
        })
    }
}

/// Parses one of a context's addresses: a unicast IPv4 or IPv6 address.
pub fn parse_addr(spec: &str) -> Result<IpAddr> {
    let bad = |why: &str| Error::BadAddress {
        spec: spec.into(),
        why: why.into(),
    };
    let addr: IpAddr = spec
        .trim()
        .parse()
        .map_err(|_| bad("not an IPv4 or IPv6 address"))?;
    if addr.is_unspecified() {
        return Err(bad("the wildcard address cannot belong to a context"));
    }
    if addr.is_multicast() {
        return Err(bad(
            "a multicast address cannot be bound as a context's own",
        ));
    }
    if addr == IpAddr::V4(Ipv4Addr::BROADCAST) {
        return Err(bad("the broadcast address cannot belong to a context"));
    }
    Ok(addr)
}

/// The words of an IPv4 address as the kernel stores it in `bpf_sock_addr.user_ip4`.
pub fn word4(a: Ipv4Addr) -> u32 {
    u32::from_le_bytes(a.octets())
}

/// The words of an IPv6 address as in `bpf_sock_addr.user_ip6`.
pub fn words6(a: Ipv6Addr) -> [u32; 4] {
    let o = a.octets();
    std::array::from_fn(|i| {
        u32::from_le_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]])
    })
}

/// What goes into the maps of the sock_addr programs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetMaps {
    pub config: NetConfig,
    pub v4: Vec<u32>,
    pub v6: Vec<[u32; 4]>,
}

/// Builds the maps for `addrs` (the first of each family is the primary) and `loopback`.
pub fn maps(addrs: &[IpAddr], loopback: Loopback) -> NetMaps {
    let v4: Vec<Ipv4Addr> = addrs
        .iter()
        .filter_map(|a| match a {
            IpAddr::V4(a) => Some(*a),
            IpAddr::V6(_) => None,
        })
        .collect();
    let v6: Vec<Ipv6Addr> = addrs
        .iter()
        .filter_map(|a| match a {
            IpAddr::V6(a) => Some(*a),
            IpAddr::V4(_) => None,
        })
        .collect();
    let mut config = NetConfig::default();
    if let Some(first) = v4.first() {
        config.flags |= NET_HAS_V4;
        config.primary4 = word4(*first);
    }
    if let Some(first) = v6.first() {
        config.flags |= NET_HAS_V6;
        config.primary6 = words6(*first);
    }
    config.lback4 = v4.iter().find(|a| a.is_loopback()).map_or(0, |a| word4(*a));
    config.flags |= match loopback {
        Loopback::Remap => NET_LOOPBACK_REMAP,
        Loopback::Deny => 0,
        Loopback::Host => NET_LOOPBACK_HOST,
    };
    NetMaps {
        config,
        v4: v4.into_iter().map(word4).collect(),
        v6: v6.into_iter().map(words6).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked() {
        assert_eq!(
            parse_addr("127.0.0.2").expect("valid"),
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))
        );
        assert!(parse_addr("fd00::7").is_ok());
        for bad in [
            "",
            "127.0.0.256",
            "0.0.0.0",
            "::",
            "224.0.0.1",
            "ff02::1",
            "255.255.255.255",
            "10.0.0.1/8",
            "host",
        ] {
            let err = parse_addr(bad).expect_err(bad).to_string();
            assert!(err.starts_with("invalid address"), "{bad}: {err}");
        }
    }

    #[test]
    fn words_match_the_kernel_layout() {
        // user_ip4 holds the address in network order: 127.0.0.1 is 7f 00 00 01 in memory.
        assert_eq!(
            word4(Ipv4Addr::new(127, 0, 0, 1)).to_le_bytes(),
            [127, 0, 0, 1]
        );
        let w = words6(Ipv6Addr::LOCALHOST);
        assert_eq!(w[..3], [0, 0, 0]);
        assert_eq!(w[3].to_le_bytes(), [0, 0, 0, 1]);
    }

    #[test]
    fn maps_pick_primaries_and_loopback() {
        let addrs = [
            parse_addr("10.1.2.3").expect("valid"),
            parse_addr("127.0.0.5").expect("valid"),
            parse_addr("fd00::1").expect("valid"),
        ];
        let m = maps(&addrs, Loopback::Remap);
        assert_eq!(m.config.primary4, word4(Ipv4Addr::new(10, 1, 2, 3)));
        assert_eq!(m.config.lback4, word4(Ipv4Addr::new(127, 0, 0, 5)));
        assert_eq!(m.config.flags, NET_HAS_V4 | NET_HAS_V6 | NET_LOOPBACK_REMAP);
        assert_eq!(m.v4.len(), 2);
        assert_eq!(m.v6.len(), 1);
        let none = maps(&[], Loopback::Deny);
        assert_eq!(none.config, NetConfig::default());
        assert_eq!("host".parse::<Loopback>().expect("valid"), Loopback::Host);
        assert!("local".parse::<Loopback>().is_err());
    }
}
