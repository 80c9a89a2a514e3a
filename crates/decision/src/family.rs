//! [`Family`]: IPv4 or IPv6, the one split every datapath makes (nftables `ip`/`ip6`,
//! `iptables`/`ip6tables`, one LPM trie per family). The datapaths add their own spellings.

use std::net::IpAddr;

use ipnet::IpNet;
use masq_config::{LINK_LOCAL_V4, LINK_LOCAL_V6};

/// An address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// Both families, IPv4 first (the order every rendering lists them in).
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// The family of a CIDR.
    pub fn of_net(net: &IpNet) -> Family {
        match net {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }

    /// The family of an address.
    pub fn of_addr(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// Whether `net` is of this family.
    pub fn holds_net(self, net: &IpNet) -> bool {
        Family::of_net(net) == self
    }

    /// Whether `addr` is of this family.
    pub fn holds_addr(self, addr: &IpAddr) -> bool {
        Family::of_addr(addr) == self
    }

    /// The link-local range of the family (169.254.0.0/16, fe80::/10), which the matching
    /// `masqLinkLocal*` flag governs.
    pub fn link_local(self) -> IpNet {
        match self {
            Family::V4 => LINK_LOCAL_V4,
            Family::V6 => LINK_LOCAL_V6,
        }
    }

    /// `v4` or `v6`: the suffix of per-family names (nftables sets, eBPF maps).
    pub fn suffix(self) -> &'static str {
        match self {
            Family::V4 => "v4",
            Family::V6 => "v6",
        }
    }
}
