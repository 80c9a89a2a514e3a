//! The SNAT part of `/status` and `masq status`: each family's address pool, the source ports
//! in effect and the reserved ports left out of them (docs/snat-pools.md).

use masq_datapath::{ports, Family, Kind, NodeSettings};
use serde::{Deserialize, Serialize};

/// What translated flows leave with. Field names are part of `masq status -o json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnatSummary {
    /// One entry per family masqueraded.
    pub pools: Vec<PoolSummary>,
    /// The source port ranges every datapath hands out, after the reserved ports are left out.
    pub port_ranges: String,
    /// How many ports that is.
    pub ports: u32,
    /// `--nodeport-range`.
    pub nodeport_range: String,
    /// Reserved ports inside the configured ranges (node sockets and hostPorts), left out.
    pub reserved_ports: Vec<u16>,
    /// Something the operator should know (every port of the ranges reserved, an IPv6 pool
    /// iptables cannot spread).
    pub warning: Option<String>,
}

/// The pool of one family.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolSummary {
    /// `ipv4` or `ipv6`.
    pub family: String,
    /// The addresses in order; empty: the egress interface's primary address (`masquerade`).
    pub addresses: Vec<String>,
    /// `--snat-ip`, `--snat-ips-from-interface`, or `egress-interface`.
    pub source: String,
}

impl SnatSummary {
    /// The summary of what `node` makes the `kind` datapath install.
    pub fn of(node: &NodeSettings, kind: Kind) -> SnatSummary {
        let pools = node
            .families()
            .iter()
            .map(|&family| {
                let addresses: Vec<String> = node
                    .snat_pool_on(kind, family)
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                let source = if !node.snat_ips.is_empty() && !addresses.is_empty() {
                    "--snat-ip"
                } else if node.snat_ips_from_interface {
                    "--snat-ips-from-interface"
                } else {
                    "egress-interface"
                };
                PoolSummary {
                    family: match family {
                        Family::V4 => "ipv4",
                        Family::V6 => "ipv6",
                    }
                    .to_string(),
                    addresses,
                    source: source.to_string(),
                }
            })
            .collect();
        let base = node.base_port_ranges();
        let in_effect = node.source_port_ranges();
        let reserved: Vec<u16> = node
            .reserved_ports
            .iter()
            .copied()
            .filter(|p| base.iter().any(|r| r.contains(*p)))
            .collect();
        let every_port_reserved = (!reserved.is_empty() && in_effect == base).then(|| {
            format!(
                "every port of {} is reserved by the node (sockets or hostPorts); they are handed \
                 out anyway rather than no translation at all",
                ports::list_text(&base)
            )
        });
        let unspread = node.snat_pool(Family::V6).len() > node.snat_pool_on(kind, Family::V6).len();
        let warning = every_port_reserved.or_else(|| {
            unspread.then(|| {
                "iptables cannot spread IPv6 pods over a pool (its cluster match hashes only the \
                 first 32 bits of an IPv6 address): every IPv6 flow leaves with the pool's first \
                 address"
                    .to_string()
            })
        });
        SnatSummary {
            pools,
            port_ranges: ports::list_text(&in_effect),
            ports: ports::count(&in_effect),
            nodeport_range: node.nodeport_range.to_string(),
            reserved_ports: reserved,
            warning,
        }
    }

    /// The lines of `masq status`.
    pub fn text(&self) -> String {
        let mut s = String::new();
        for pool in &self.pools {
            let addresses = match pool.addresses.as_slice() {
                [] => "the egress interface's primary address".to_string(),
                [one] => one.clone(),
                many => format!("{} (each pod's by a hash of its address)", many.join(", ")),
            };
            s.push_str(&format!(
                "snat {}:       {addresses} [{}]\n",
                pool.family, pool.source
            ));
        }
        s.push_str(&format!(
            "source ports:    {} ({} ports; NodePorts {} left out unless listed)\n",
            self.port_ranges, self.ports, self.nodeport_range
        ));
        let reserved: Vec<String> = self.reserved_ports.iter().map(u16::to_string).collect();
        s.push_str(&format!(
            "reserved ports:  {}\n",
            if reserved.is_empty() {
                "none in the ranges".to_string()
            } else {
                format!("{} (node sockets and hostPorts)", reserved.join(","))
            }
        ));
        if let Some(w) = &self.warning {
            s.push_str(&format!("snat warning:    {w}\n"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_and_reserved_ports_are_shown() {
        let mut node = NodeSettings {
            snat_ips: vec!["192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap()],
            ..NodeSettings::default()
        };
        node.reserved_ports = [22, 8443].into();
        let summary = SnatSummary::of(&node, Kind::Nftables);
        assert_eq!(summary.pools[0].addresses, ["192.0.2.1", "192.0.2.2"]);
        assert_eq!(summary.port_ranges, "1024-8442,8444-29999,32768-65535");
        assert_eq!(summary.ports, 61743);
        assert_eq!(summary.reserved_ports, [8443], "22 is outside the ranges");
        let text = summary.text();
        assert!(
            text.contains("snat ipv4:       192.0.2.1, 192.0.2.2 (each pod's"),
            "{text}"
        );
        assert!(text.contains("reserved ports:  8443 "), "{text}");
        assert!(summary.warning.is_none());
    }

    #[test]
    fn every_port_reserved_is_a_warning() {
        let node = NodeSettings {
            port_ranges: vec![masq_datapath::PortRange {
                first: 8443,
                last: 8443,
            }],
            reserved_ports: [8443].into(),
            ..NodeSettings::default()
        };
        let summary = SnatSummary::of(&node, Kind::Nftables);
        assert_eq!(summary.port_ranges, "8443-8443");
        assert!(summary.warning.is_some());
        let plain = SnatSummary::of(&NodeSettings::default(), Kind::Nftables);
        assert!(plain
            .text()
            .contains("the egress interface's primary address [egress-interface]"));
    }

    #[test]
    fn iptables_shows_the_one_ipv6_address_it_uses() {
        let node = NodeSettings {
            enable_ipv6: true,
            snat_ips: vec![
                "2001:db8::1".parse().unwrap(),
                "2001:db8::2".parse().unwrap(),
            ],
            ..NodeSettings::default()
        };
        let on_nft = SnatSummary::of(&node, Kind::Nftables);
        assert_eq!(on_nft.pools[1].addresses, ["2001:db8::1", "2001:db8::2"]);
        assert!(on_nft.warning.is_none());
        let on_ipt = SnatSummary::of(&node, Kind::Iptables);
        assert_eq!(on_ipt.pools[1].family, "ipv6");
        assert_eq!(on_ipt.pools[1].addresses, ["2001:db8::1"]);
        assert!(on_ipt.warning.unwrap().contains("first 32 bits"));
    }
}
