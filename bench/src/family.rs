//! The address family of a data-plane sample. An IPv6 sample runs on a dual-stack topology
//! (masq-testbed's `ipv6(true)`: the IPv4 addresses plus those of `addr6`), from the pod's IPv6
//! address to the IPv6 "internet" host 2001:db8::10, with IPv6 non-masquerade CIDRs; masq's
//! agents get `--enable-ipv6` and the IPv6 pod CIDR, as a dual-stack node would run them.

use std::net::IpAddr;

use anyhow::Result;
use masq_testbed::{addr, addr6, Topology};

use crate::cidrs;

/// IPv4 or IPv6.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// The IPv4 topology, as every part of the benchmark uses.
    V4,
    /// The dual-stack topology, traffic over IPv6.
    V6,
}

impl Family {
    /// The name in results (`ipv4`, `ipv6`), as masq's own outputs spell families.
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }

    /// Parses `4`, `6`, `ipv4` or `ipv6` (the `--families` values).
    pub fn parse(text: &str) -> Result<Family, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "4" | "ipv4" | "v4" => Ok(Family::V4),
            "6" | "ipv6" | "v6" => Ok(Family::V6),
            other => Err(format!("{other:?} is not an address family (4 or 6)")),
        }
    }

    /// A fresh topology that carries this family (IPv6 needs the dual-stack one).
    pub fn topology(self) -> Result<Topology> {
        Topology::builder().ipv6(self == Family::V6).build()
    }

    /// The "internet" host the load goes to (TEST-NET-3 or 2001:db8::/32).
    pub fn internet(self) -> IpAddr {
        match self {
            Family::V4 => addr::INTERNET.into(),
            Family::V6 => addr6::INTERNET.into(),
        }
    }

    /// The node's uplink address: the source the external side sees after masquerading.
    pub fn node(self) -> IpAddr {
        match self {
            Family::V4 => addr::NODE.into(),
            Family::V6 => addr6::NODE.into(),
        }
    }

    /// The first pod's address: the source the external side sees without NAT.
    pub fn pod(self) -> IpAddr {
        match self {
            Family::V4 => addr::POD.into(),
            Family::V6 => addr6::POD.into(),
        }
    }

    /// `count` non-masquerade CIDRs of this family, none covering a host of the topology.
    pub fn fillers(self, count: usize) -> Vec<String> {
        match self {
            Family::V4 => cidrs::fillers(0, count),
            Family::V6 => cidrs::fillers6(count),
        }
    }

    /// The `masq agent` flags a node of this family needs on top of the IPv4 ones: IPv6 is
    /// masqueraded only with `--enable-ipv6`, and only from the pod CIDRs given.
    pub fn agent_args(self) -> Vec<String> {
        match self {
            Family::V4 => Vec::new(),
            Family::V6 => ["--enable-ipv6", "--pod-cidr", addr6::POD_CIDR]
                .map(String::from)
                .to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_numbers() {
        assert_eq!(Family::parse("4"), Ok(Family::V4));
        assert_eq!(Family::parse("IPv6"), Ok(Family::V6));
        assert!(Family::parse("5").is_err());
        assert_eq!(Family::V6.name(), "ipv6");
    }

    #[test]
    fn ipv6_addresses_and_fillers_are_ipv6() {
        let v6 = Family::V6;
        assert!(v6.internet().is_ipv6() && v6.node().is_ipv6() && v6.pod().is_ipv6());
        assert!(v6.fillers(3).iter().all(|c| c.contains(':')));
        assert_eq!(Family::V4.fillers(2), cidrs::fillers(0, 2));
        assert!(v6.agent_args().contains(&"--enable-ipv6".to_string()));
        assert!(Family::V4.agent_args().is_empty());
    }
}
