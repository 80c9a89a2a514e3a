//! What the agent-filled maps should hold for a [`Desired`] state ([`Contents`]), with no
//! kernel handle: `masq render --datapath ebpf` prints it, [`super::Maps`] reads and applies it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{Display, Write as _};
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};

use masq_decision::Reason as Why;

use super::maps::name;
use super::maps6::Contents6;
use super::policy;
use super::types::{MasqConfig, MasqSteer, CFG_IPV6, CFG_POD_CIDRS, CFG_SRC_CIDRS, CFG_SRC_CIDRS6};
use super::PortRange;
use crate::{Desired, Family, NodeSettings};

/// The ports translated flows get without `--port-range`: netfilter's for a fully-random
/// masquerade (1024–65535), less the Kubernetes NodePort range, which replies must never meet.
pub const DEFAULT_PORT_RANGES: [PortRange; 2] = [
    PortRange {
        first: 1024,
        last: 29999,
    },
    PortRange {
        first: 32768,
        last: 65535,
    },
];

/// Entries of the port table (`MASQ_PORTS_MAX`): every port.
pub const PORTS_MAX: u32 = 65536;

/// The port table for `ranges`, in order, each port once.
pub fn port_table(ranges: &[PortRange]) -> Vec<u16> {
    let ports: BTreeSet<u16> = ranges.iter().flat_map(|r| r.first..=r.last).collect();
    ports.into_iter().collect()
}

/// A port table as the ranges it covers: `1024-29999,32768-65535`.
fn ranges_text(ports: &[u16]) -> String {
    let mut ranges: Vec<(u16, u16)> = Vec::new();
    for &port in ports {
        match ranges.last_mut() {
            Some((_, last)) if u32::from(*last) + 1 == u32::from(port) => *last = port,
            _ => ranges.push((port, port)),
        }
    }
    let text: Vec<String> = ranges
        .iter()
        .map(|(first, last)| format!("{first}-{last}"))
        .collect();
    text.join(",")
}

/// What the agent-filled maps hold (or should hold).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Contents {
    /// `masq_config[0]`.
    pub config: MasqConfig,
    /// `masq_steer_cfg[0]`: egress routing, all zero when it is off.
    pub steer: MasqSteer,
    /// `masq_ports`: the ports translated flows are given (`config.port_count` of them).
    pub ports: Vec<u16>,
    /// ifindex → SNAT address pool, in order; 0 means every interface (`--snat-ip`,
    /// `--snat-ips-from-interface`), else each interface's primary address.
    pub snat_pools: BTreeMap<u32, Vec<Ipv4Addr>>,
    /// The node's addresses.
    pub local_addrs: BTreeSet<Ipv4Addr>,
    /// Steps 4 and 5 ([`policy::destinations`]): prefix → the reason its longest match
    /// decides (link-local, nonMasqueradeCIDRs and the native-routing CIDR keep,
    /// masqueradeCIDRs masquerade), IPv4 only.
    pub dst_policy: BTreeMap<Ipv4Net, Why>,
    /// nonMasqueradeSrcCIDRs, IPv4 only.
    pub nonmasq_src: BTreeSet<Ipv4Net>,
    /// --pod-cidr, IPv4 only.
    pub pod_cidrs: BTreeSet<Ipv4Net>,
    /// The IPv6 maps (empty without `--enable-ipv6`).
    pub v6: Contents6,
}

/// One family's `masq_snat_pools(6)` contents: the node's SNAT pool of `family` under key 0,
/// for every interface ([`NodeSettings::snat_pool`], as netfilter's one `snat` rule applies it
/// whatever the output interface); without one, each interface's primary address under its
/// ifindex. `usable` takes an address of the family that may be a source (IPv6: the agent
/// lists the primary first, but a link-local one never is).
pub(crate) fn snat_pools<A>(
    node: &NodeSettings,
    family: Family,
    usable: impl Fn(&IpAddr) -> Option<A>,
) -> BTreeMap<u32, Vec<A>> {
    let pool: Vec<A> = node.snat_pool(family).iter().filter_map(&usable).collect();
    if !pool.is_empty() {
        return BTreeMap::from([(0, pool)]);
    }
    node.interfaces
        .iter()
        .filter_map(|iface| {
            let primary = iface.addrs.iter().find_map(&usable)?;
            Some((iface.index, vec![primary]))
        })
        .collect()
}

/// The `masq render` section of a pool map: `any A,B` (key 0) or `ifindex N A`.
pub(crate) fn render_pools<A: Display>(out: &mut String, map: &str, pools: &BTreeMap<u32, Vec<A>>) {
    let _ = writeln!(out, "# map {map}");
    for (ifindex, pool) in pools {
        let addrs: Vec<String> = pool.iter().map(ToString::to_string).collect();
        let addrs = addrs.join(",");
        let _ = match ifindex {
            0 => writeln!(out, "any {addrs}"),
            n => writeln!(out, "ifindex {n} {addrs}"),
        };
    }
}

fn v4_nets<'a>(nets: impl IntoIterator<Item = &'a IpNet>) -> BTreeSet<Ipv4Net> {
    nets.into_iter()
        .filter_map(|net| match net {
            IpNet::V4(v4) => Some(v4.trunc()),
            IpNet::V6(_) => None,
        })
        .collect()
}

impl Contents {
    /// Makes the port table hold `ranges` (tests and benchmarks staging contents by hand).
    pub fn set_ports(&mut self, ranges: &[PortRange]) {
        self.ports = port_table(ranges);
        self.config.port_count = u32::try_from(self.ports.len()).expect("at most 65536 ports");
    }

    /// The map contents for `desired`: its compiled policy ([`Desired::policy`], rendered by
    /// [`policy`]), the SNAT addresses, the port table and egress routing.
    pub fn for_desired(desired: &Desired) -> Contents {
        let node = &desired.node;
        let compiled = desired.policy();
        let v4 = &compiled.v4;
        let ports = port_table(&node.source_port_ranges());
        let mut flags = 0;
        let v6 = Contents6::for_desired(desired, &compiled.v6);
        if node.enable_ipv6 {
            flags |= CFG_IPV6;
            if !v6.nonmasq_src.is_empty() {
                flags |= CFG_SRC_CIDRS6;
            }
        }
        // docs/decision.md: with --pod-cidr of either family, a pod is a source inside one.
        if policy::pod_cidrs(v4).is_some() {
            flags |= CFG_POD_CIDRS;
        }
        let pod_cidrs = v4_nets(policy::pod_cidrs(v4).unwrap_or_default());
        let nonmasq_src = v4_nets(v4.source_exemptions.as_written());
        if !nonmasq_src.is_empty() {
            flags |= CFG_SRC_CIDRS;
        }
        let snat_pools = snat_pools(node, Family::V4, |a| match a {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        });
        let local_addrs = v4
            .local_addrs
            .iter()
            .filter_map(|a| match a {
                IpAddr::V4(v4) => Some(*v4),
                IpAddr::V6(_) => None,
            })
            .collect();
        let dst_policy = policy::destinations(v4)
            .filter_map(|(net, why)| match net {
                IpNet::V4(net) => Some((net, why)),
                IpNet::V6(_) => None,
            })
            .collect();
        Contents {
            config: MasqConfig {
                port_count: u32::try_from(ports.len()).expect("at most 65536 ports"),
                flags,
            },
            ports,
            steer: node
                .active_egress_routing()
                .map(|routing| MasqSteer {
                    mark: routing.mark,
                    table: routing.table,
                })
                .unwrap_or_default(),
            snat_pools,
            local_addrs,
            dst_policy,
            nonmasq_src,
            pod_cidrs,
            v6,
        }
    }

    /// Entries across every map (a gauge for metrics and status).
    pub fn len(&self) -> usize {
        1 + self.snat_pools.len()
            + self.local_addrs.len()
            + self.dst_policy.len()
            + self.nonmasq_src.len()
            + self.pod_cidrs.len()
            + self.v6.len()
    }

    /// Always false: the config entry is always there.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The text `masq render --datapath ebpf` prints: one section per map, sorted.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let c = &self.config;
        let _ = writeln!(out, "# map {}", name::CONFIG);
        let _ = writeln!(out, "ports {} ({})", ranges_text(&self.ports), c.port_count);
        let _ = writeln!(out, "pod_cidrs_only {}", c.flags & CFG_POD_CIDRS != 0);
        let _ = writeln!(out, "src_cidrs {}", c.flags & CFG_SRC_CIDRS != 0);
        if c.flags & CFG_IPV6 != 0 {
            let _ = writeln!(out, "ipv6 true");
            let _ = writeln!(out, "src_cidrs_ipv6 {}", c.flags & CFG_SRC_CIDRS6 != 0);
        }
        let _ = writeln!(out, "# map {}", name::STEER);
        let _ = writeln!(
            out,
            "egress_mark {:#x} table {}",
            self.steer.mark, self.steer.table
        );
        render_pools(&mut out, name::SNAT_POOLS, &self.snat_pools);
        let _ = writeln!(out, "# map {}", name::LOCAL_ADDRS);
        for addr in &self.local_addrs {
            let _ = writeln!(out, "{addr}");
        }
        render_policy(&mut out, name::DST_POLICY, &self.dst_policy);
        for (map, nets) in [
            (name::NONMASQ_SRC, &self.nonmasq_src),
            (name::POD_CIDRS, &self.pod_cidrs),
        ] {
            let _ = writeln!(out, "# map {map}");
            for net in nets {
                let _ = writeln!(out, "{net}");
            }
        }
        // IPv6 only where it is on: an IPv4-only node's output stays as it was.
        if c.flags & CFG_IPV6 != 0 {
            self.v6.render(&mut out);
        }
        out
    }
}

/// A destination-policy trie's section of `masq render`: `PREFIX ACTION REASON` per entry.
pub(crate) fn render_policy<N: std::fmt::Display>(
    out: &mut String,
    map: &str,
    entries: &BTreeMap<N, Why>,
) {
    let _ = writeln!(out, "# map {map}");
    for (net, why) in entries {
        let action = policy::action_of(*why).as_str();
        let _ = writeln!(out, "{net} {action} {}", why.as_str());
    }
}

#[cfg(test)]
mod tests {
    use masq_config::Config;

    use super::*;
    use crate::{Interface, NodeSettings};

    fn desired(cidrs: &[&str]) -> Desired {
        Desired {
            config: Config {
                non_masquerade_cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
                non_masquerade_src_cidrs: vec!["10.9.0.0/16".parse().unwrap()],
                ..Config::default()
            },
            node: NodeSettings {
                interfaces: vec![Interface {
                    name: "eth0".into(),
                    index: 4,
                    addrs: vec!["fe80::1".parse().unwrap(), "172.18.0.2".parse().unwrap()],
                }],
                native_routing_cidr: Some("10.244.0.0/16".parse().unwrap()),
                ..NodeSettings::default()
            },
        }
    }

    #[test]
    fn contents_collapse_duplicates_and_skip_ipv6() {
        let c = Contents::for_desired(&desired(&["10.0.0.0/8", "10.0.0.0/8", "fd00::/8"]));
        let dst: Vec<String> = c
            .dst_policy
            .iter()
            .map(|(n, why)| format!("{n} {}", why.as_str()))
            .collect();
        assert_eq!(
            dst,
            [
                "10.0.0.0/8 non-masquerade-cidr",
                "10.244.0.0/16 non-masquerade-cidr",
                "169.254.0.0/16 link-local"
            ]
        );
        assert_eq!(
            c.snat_pools.get(&4),
            Some(&vec![Ipv4Addr::new(172, 18, 0, 2)])
        );
        assert_eq!(c.config.flags, CFG_SRC_CIDRS);
        assert_eq!(c.config.port_count, 65535 - 1024 + 1 - (32767 - 30000 + 1));
        assert_eq!(c.ports.len(), c.config.port_count as usize);
        assert!(
            !c.ports.contains(&30000) && !c.ports.contains(&32767),
            "a NodePort"
        );
        assert_eq!((c.ports[0], *c.ports.last().unwrap()), (1024, 65535));
    }

    #[test]
    fn a_fixed_snat_ip_applies_to_every_interface_and_is_local() {
        let mut d = desired(&[]);
        d.node.snat_ips = vec!["192.0.2.7".parse().unwrap()];
        d.node.port_ranges = vec![PortRange {
            first: 40000,
            last: 40999,
        }];
        let c = Contents::for_desired(&d);
        let fixed = Ipv4Addr::new(192, 0, 2, 7);
        assert_eq!(c.snat_pools, BTreeMap::from([(0, vec![fixed])]));
        assert!(c.local_addrs.contains(&fixed));
        assert_eq!(c.ports, (40000..=40999).collect::<Vec<u16>>());
        assert_eq!(c.config.port_count, 1000);
    }

    /// The pool the programs get is `NodeSettings::snat_pool`, what `masq status` and
    /// `masq explain` show: every `--snat-ip` in order, or every global address of the egress
    /// interface, for every interface (key 0).
    #[test]
    fn the_whole_pool_goes_to_every_interface_in_order() {
        let mut d = desired(&[]);
        let pool: Vec<IpAddr> = ["192.0.2.9", "192.0.2.7", "192.0.2.8"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        d.node.snat_ips = pool.clone();
        let c = Contents::for_desired(&d);
        let want: Vec<Ipv4Addr> = d
            .node
            .snat_pool(Family::V4)
            .iter()
            .map(|a| match a {
                IpAddr::V4(v4) => *v4,
                IpAddr::V6(_) => unreachable!(),
            })
            .collect();
        assert_eq!(want.len(), 3);
        assert_eq!(c.snat_pools, BTreeMap::from([(0, want)]));
        assert!(c
            .render()
            .contains("# map masq_snat_pools\nany 192.0.2.9,192.0.2.7,192.0.2.8\n"));

        let mut d = desired(&[]);
        d.node.snat_ips_from_interface = true;
        d.node.interfaces[0]
            .addrs
            .extend(["172.18.0.3", "169.254.1.1"].map(|a| a.parse::<IpAddr>().unwrap()));
        let c = Contents::for_desired(&d);
        let global = ["172.18.0.2", "172.18.0.3"].map(|a| a.parse().unwrap());
        assert_eq!(c.snat_pools, BTreeMap::from([(0, global.to_vec())]));
    }

    /// masqueradeCIDRs are entries that masquerade; masqLinkLocal takes the link-local entry
    /// out; nothing else of the decision is left to the programs.
    #[test]
    fn render_lists_every_map_sorted() {
        let mut d = desired(&["192.168.0.0/16", "10.0.0.0/8"]);
        d.config.masq_link_local = true;
        d.config.masquerade_cidrs = vec!["10.5.0.0/16".parse().unwrap()];
        d.node.uplinks = vec![crate::Uplink::eni()];
        let text = Contents::for_desired(&d).render();
        let expected = "\
# map masq_config
ports 1024-29999,32768-65535 (61744)
pod_cidrs_only false
src_cidrs true
# map masq_steer_cfg
egress_mark 0x1000 table 254
# map masq_snat_pools
ifindex 4 172.18.0.2
# map masq_local_addrs
172.18.0.2
# map masq_dst_policy
10.0.0.0/8 keep non-masquerade-cidr
10.5.0.0/16 masquerade masquerade-cidr
10.244.0.0/16 keep non-masquerade-cidr
192.168.0.0/16 keep non-masquerade-cidr
# map masq_nonmasq_src
10.9.0.0/16
# map masq_pod_cidrs
";
        assert_eq!(text, expected);
    }
}
