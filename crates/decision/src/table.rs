//! A longest-prefix-match table over IPv4 and IPv6 CIDRs (two prefix tries, one per family).

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use prefix_trie::PrefixSet;

/// A set of CIDRs answering "which is the most specific one containing this address?".
#[derive(Clone, Debug, Default)]
pub(crate) struct CidrTable {
    v4: PrefixSet<Ipv4Net>,
    v6: PrefixSet<Ipv6Net>,
}

impl CidrTable {
    pub(crate) fn new<'a>(cidrs: impl IntoIterator<Item = &'a IpNet>) -> Self {
        let mut table = CidrTable::default();
        for cidr in cidrs {
            // Host bits never reach here from a validated config; trunc() keeps the trie exact
            // for callers that build a NodeContext by hand.
            match cidr.trunc() {
                IpNet::V4(net) => table.v4.insert(net),
                IpNet::V6(net) => table.v6.insert(net),
            };
        }
        table
    }

    /// The longest CIDR containing `addr`, if any.
    pub(crate) fn longest_match(&self, addr: IpAddr) -> Option<IpNet> {
        match addr {
            IpAddr::V4(addr) => self.v4.get_lpm(&Ipv4Net::from(addr)).map(IpNet::V4),
            IpAddr::V6(addr) => self.v6.get_lpm(&Ipv6Net::from(addr)).map(IpNet::V6),
        }
    }
}
