//! The IPv6 maps the agent fills (`bpf/lib/maps6.h`) and what they should hold for a
//! [`Desired`] state: the IPv6 half of [`super::maps`], written in the same order (additions
//! before the config switches IPv6 on, deletions after), so a packet never meets a partial
//! table. Their config flags (`CFG_IPV6` and friends) live in the shared `masq_config`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv6Addr};

use std::os::fd::AsFd;

use aya::maps::{HashMap, MapData};
use ipnet::{IpNet, Ipv6Net};
use masq_decision::{FamilyPolicy, Reason as Why};

use super::contents::{render_policy, render_pools, snat_pools};
use super::maps::{name, Maps, TrieChange};
use super::snat_pools::SnatPool6;
use super::types::{AllocFailure6, NatEntry6, NatTuple6};
use super::{batch, kernel_err, policy, tries};
use crate::{Desired, Error, Family};

type Trie6 = tries::Trie<Ipv6Net>;

/// Typed handles on the IPv6 maps the agent fills.
pub struct AgentMaps6 {
    pub(crate) snat_pools: HashMap<MapData, u32, SnatPool6>,
    pub(crate) local_addrs: HashMap<MapData, [u8; 16], u8>,
    pub(crate) dst_policy: Trie6,
    pub(crate) nonmasq_src: Trie6,
    pub(crate) pod_cidrs: Trie6,
}

impl AgentMaps6 {
    /// Takes the maps by name from `get` (a loaded object or pins).
    pub(crate) fn build(
        mut get: impl FnMut(&str) -> Result<aya::maps::Map, Error>,
    ) -> Result<AgentMaps6, Error> {
        macro_rules! typed {
            ($name:expr) => {{
                get($name)?.try_into().map_err(kernel_err(format!(
                    "map {} has an unexpected layout",
                    $name
                )))?
            }};
        }
        Ok(AgentMaps6 {
            snat_pools: typed!(name::SNAT_POOLS6),
            local_addrs: typed!(name::LOCAL_ADDRS6),
            dst_policy: typed!(name::DST_POLICY6),
            nonmasq_src: typed!(name::NONMASQ_SRC6),
            pod_cidrs: typed!(name::POD_CIDRS6),
        })
    }

    /// What the maps hold now.
    pub fn read(&self) -> Result<Contents6, Error> {
        let mut snat_pools = BTreeMap::new();
        for item in self.snat_pools.iter() {
            let (ifindex, pool) =
                item.map_err(kernel_err(format!("reading {}", name::SNAT_POOLS6)))?;
            snat_pools.insert(ifindex, pool.addresses());
        }
        let mut local_addrs = BTreeSet::new();
        for key in self.local_addrs.keys() {
            let key = key.map_err(kernel_err(format!("reading {}", name::LOCAL_ADDRS6)))?;
            local_addrs.insert(Ipv6Addr::from(key));
        }
        Ok(Contents6 {
            snat_pools,
            local_addrs,
            dst_policy: policy::decode(
                tries::read(&self.dst_policy, name::DST_POLICY6)?,
                name::DST_POLICY6,
            )?,
            nonmasq_src: tries::read_set(&self.nonmasq_src, name::NONMASQ_SRC6)?,
            pod_cidrs: tries::read_set(&self.pod_cidrs, name::POD_CIDRS6)?,
        })
    }

    /// The additions from `have` to `want`: before the config is written.
    pub(crate) fn add_missing(
        &mut self,
        have: &Contents6,
        want: &Contents6,
    ) -> Result<usize, Error> {
        let mut writes = 0;
        for (trie, have, want, map) in self.tries(have, want) {
            writes += tries::add(trie, &have, &want, map)?;
        }
        for addr in want.local_addrs.difference(&have.local_addrs) {
            self.local_addrs
                .insert(addr.octets(), 1, 0)
                .map_err(kernel_err(format!(
                    "adding {addr} to {}",
                    name::LOCAL_ADDRS6
                )))?;
            writes += 1;
        }
        for (ifindex, pool) in &want.snat_pools {
            if have.snat_pools.get(ifindex) != Some(pool) {
                self.snat_pools
                    .insert(ifindex, SnatPool6::new(pool), 0)
                    .map_err(kernel_err(format!(
                        "setting the IPv6 SNAT pool of ifindex {ifindex}"
                    )))?;
                writes += 1;
            }
        }
        Ok(writes)
    }

    /// The deletions from `have` to `want`: after the config is written.
    pub(crate) fn remove_stale(
        &mut self,
        have: &Contents6,
        want: &Contents6,
    ) -> Result<usize, Error> {
        let mut writes = 0;
        for ifindex in have
            .snat_pools
            .keys()
            .filter(|k| !want.snat_pools.contains_key(k))
        {
            self.snat_pools.remove(ifindex).map_err(kernel_err(format!(
                "removing the IPv6 SNAT pool of ifindex {ifindex}"
            )))?;
            writes += 1;
        }
        for addr in have.local_addrs.difference(&want.local_addrs) {
            self.local_addrs
                .remove(&addr.octets())
                .map_err(kernel_err(format!(
                    "removing {addr} from {}",
                    name::LOCAL_ADDRS6
                )))?;
            writes += 1;
        }
        for (trie, have, want, map) in self.tries(have, want) {
            writes += tries::remove(trie, &have, &want, map)?;
        }
        Ok(writes)
    }

    /// Each IPv6 trie with what it holds and what it should hold, as raw entries.
    fn tries(&mut self, have: &Contents6, want: &Contents6) -> [TrieChange<'_, Ipv6Net>; 3] {
        [
            (
                &mut self.dst_policy,
                policy::encode(&have.dst_policy),
                policy::encode(&want.dst_policy),
                name::DST_POLICY6,
            ),
            (
                &mut self.nonmasq_src,
                tries::set_entries(&have.nonmasq_src),
                tries::set_entries(&want.nonmasq_src),
                name::NONMASQ_SRC6,
            ),
            (
                &mut self.pod_cidrs,
                tries::set_entries(&have.pod_cidrs),
                tries::set_entries(&want.pod_cidrs),
                name::POD_CIDRS6,
            ),
        ]
    }
}

/// The IPv6 flow table's halves (the programs fill them; the GC, `masq nat list` and tests read
/// them).
impl Maps {
    /// The pool of the last IPv6 flow refused for want of a port, if one was.
    pub fn last_alloc_failure6(&self) -> Result<Option<AllocFailure6>, Error> {
        let last = self
            .alloc_failure6
            .get(&0, 0)
            .map_err(kernel_err("reading masq_alloc_failure6"))?;
        Ok((last.when != 0).then_some(last))
    }

    /// Every IPv6 forward NAT half, read in batches.
    pub fn nat6_egress_entries(&self) -> Result<Vec<(NatTuple6, NatEntry6)>, Error> {
        batch::read_all(self.nat6_egress_fd.as_fd()).map_err(kernel_err("reading masq_nat6_egress"))
    }

    /// Every IPv6 reverse NAT half, read in batches.
    pub fn nat6_ingress_entries(&self) -> Result<Vec<(NatTuple6, NatEntry6)>, Error> {
        batch::read_all(self.nat6_ingress_fd.as_fd())
            .map_err(kernel_err("reading masq_nat6_ingress"))
    }

    /// Raw access to the IPv6 forward NAT halves, for tests that stage or remove entries.
    pub fn nat6_egress_mut(&mut self) -> &mut HashMap<MapData, NatTuple6, NatEntry6> {
        &mut self.nat6_egress
    }

    /// Raw access to the IPv6 reverse NAT halves, for tests that stage or remove entries.
    pub fn nat6_ingress_mut(&mut self) -> &mut HashMap<MapData, NatTuple6, NatEntry6> {
        &mut self.nat6_ingress
    }
}

/// What the IPv6 maps hold (or should hold). All empty without `--enable-ipv6`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Contents6 {
    /// ifindex → IPv6 SNAT address pool, in order; 0 means every interface (an IPv6
    /// `--snat-ip` pool, `--snat-ips-from-interface`), else each interface's primary address.
    pub snat_pools: BTreeMap<u32, Vec<Ipv6Addr>>,
    /// The node's IPv6 addresses.
    pub local_addrs: BTreeSet<Ipv6Addr>,
    /// Steps 4 and 5, IPv6 (see [`super::Contents::dst_policy`]).
    pub dst_policy: BTreeMap<Ipv6Net, Why>,
    /// nonMasqueradeSrcCIDRs, IPv6 only.
    pub nonmasq_src: BTreeSet<Ipv6Net>,
    /// --pod-cidr, IPv6 only.
    pub pod_cidrs: BTreeSet<Ipv6Net>,
}

fn v6_nets<'a>(nets: impl IntoIterator<Item = &'a IpNet>) -> BTreeSet<Ipv6Net> {
    nets.into_iter()
        .filter_map(|net| match net {
            IpNet::V6(v6) => Some(v6.trunc()),
            IpNet::V4(_) => None,
        })
        .collect()
}

/// Can `addr` be the source a masqueraded packet leaves with? A global unicast address (unique
/// local ones included), never link-local, loopback, multicast or unspecified. The agent also
/// leaves out tentative, deprecated and temporary addresses (it knows their flags).
pub fn usable_snat6(addr: &Ipv6Addr) -> bool {
    !(addr.is_unspecified()
        || addr.is_loopback()
        || addr.is_multicast()
        || addr.is_unicast_link_local())
}

impl Contents6 {
    /// The IPv6 map contents for `desired`, whose compiled IPv6 policy is `v6` (empty without
    /// `--enable-ipv6`).
    pub fn for_desired(desired: &Desired, v6: &FamilyPolicy) -> Contents6 {
        let node = &desired.node;
        if !node.enable_ipv6 {
            return Contents6::default();
        }
        // Without a pool, the first usable address: the agent lists the primary one first.
        let snat_pools = snat_pools(node, Family::V6, |a| match a {
            IpAddr::V6(v6) if usable_snat6(v6) => Some(*v6),
            _ => None,
        });
        let local_addrs = v6
            .local_addrs
            .iter()
            .filter_map(|a| match a {
                IpAddr::V6(v6) => Some(*v6),
                IpAddr::V4(_) => None,
            })
            .collect();
        let dst_policy = policy::destinations(v6)
            .filter_map(|(net, why)| match net {
                IpNet::V6(net) => Some((net, why)),
                IpNet::V4(_) => None,
            })
            .collect();
        Contents6 {
            snat_pools,
            local_addrs,
            dst_policy,
            nonmasq_src: v6_nets(v6.source_exemptions.as_written()),
            pod_cidrs: v6_nets(policy::pod_cidrs(v6).unwrap_or_default()),
        }
    }

    /// Entries across the IPv6 maps.
    pub fn len(&self) -> usize {
        self.snat_pools.len()
            + self.local_addrs.len()
            + self.dst_policy.len()
            + self.nonmasq_src.len()
            + self.pod_cidrs.len()
    }

    /// No entry in any IPv6 map.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The IPv6 maps' sections of `masq render --datapath ebpf`.
    pub fn render(&self, out: &mut String) {
        render_pools(out, name::SNAT_POOLS6, &self.snat_pools);
        let _ = writeln!(out, "# map {}", name::LOCAL_ADDRS6);
        for addr in &self.local_addrs {
            let _ = writeln!(out, "{addr}");
        }
        render_policy(out, name::DST_POLICY6, &self.dst_policy);
        for (map, nets) in [
            (name::NONMASQ_SRC6, &self.nonmasq_src),
            (name::POD_CIDRS6, &self.pod_cidrs),
        ] {
            let _ = writeln!(out, "# map {map}");
            for net in nets {
                let _ = writeln!(out, "{net}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use masq_config::Config;

    use super::*;
    use crate::{Interface, NodeSettings};

    fn desired(ipv6: bool) -> Desired {
        Desired {
            config: Config {
                non_masquerade_cidrs: ["10.0.0.0/8", "fd00::/8", "fd00::/8"]
                    .iter()
                    .map(|c| c.parse().unwrap())
                    .collect(),
                masq_link_local: false,
                masq_link_local_ipv6: true,
                resync_interval: Duration::from_secs(60),
                cidr_limit: 16384,
                non_masquerade_src_cidrs: vec!["fd00:9::/64".parse().unwrap()],
                masquerade_cidrs: Vec::new(),
            },
            node: NodeSettings {
                interfaces: vec![Interface {
                    name: "eth0".into(),
                    index: 4,
                    addrs: ["172.18.0.2", "fe80::1", "2001:db8::2", "2001:db8::3"]
                        .iter()
                        .map(|a| a.parse().unwrap())
                        .collect(),
                }],
                pod_cidrs: vec![
                    "10.244.0.0/16".parse().unwrap(),
                    "fd00:10:244::/56".parse().unwrap(),
                ],
                local_addrs: vec!["fd00:1::9".parse().unwrap()],
                enable_ipv6: ipv6,
                ..NodeSettings::default()
            },
        }
    }

    #[test]
    fn ipv6_contents_take_the_first_global_address_and_the_ipv6_cidrs() {
        let d = desired(true);
        let c = Contents6::for_desired(&d, &d.policy().v6);
        let v6 = |a: &str| a.parse::<Ipv6Addr>().unwrap();
        assert_eq!(c.snat_pools, BTreeMap::from([(4, vec![v6("2001:db8::2")])]));
        let local: Vec<String> = c.local_addrs.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            local,
            ["2001:db8::2", "2001:db8::3", "fd00:1::9", "fe80::1"]
        );
        let dst: Vec<String> = c.dst_policy.keys().map(|n| n.to_string()).collect();
        assert_eq!(dst, ["fd00::/8"], "masqLinkLocalIPv6: no link-local entry");
        assert_eq!(c.pod_cidrs.len(), 1);
        assert_eq!(c.nonmasq_src.len(), 1);
        assert!(
            Contents6::for_desired(&desired(false), &d.policy().v6).is_empty(),
            "IPv6 off: nothing"
        );
    }

    /// An IPv6 --snat-ip replaces the IPv6 address only; an IPv4 one leaves IPv6 alone.
    #[test]
    fn a_snat_ip_belongs_to_its_own_family() {
        let mut d = desired(true);
        d.node.snat_ips = vec!["2001:db8:ff::7".parse().unwrap()];
        let both = super::super::contents::Contents::for_desired(&d);
        assert_eq!(
            both.v6.snat_pools,
            BTreeMap::from([(0, vec!["2001:db8:ff::7".parse().unwrap()])])
        );
        assert!(both
            .v6
            .local_addrs
            .contains(&"2001:db8:ff::7".parse().unwrap()));
        assert_eq!(
            both.snat_pools.get(&4),
            Some(&vec!["172.18.0.2".parse().unwrap()])
        );
        d.node.snat_ips = vec!["192.0.2.7".parse().unwrap()];
        let both = super::super::contents::Contents::for_desired(&d);
        assert_eq!(
            both.v6.snat_pools.get(&4),
            Some(&vec!["2001:db8::2".parse().unwrap()])
        );
        assert_eq!(
            both.snat_pools.get(&0),
            Some(&vec!["192.0.2.7".parse().unwrap()])
        );
    }

    #[test]
    fn render_shows_the_ipv6_maps_only_with_ipv6() {
        use super::super::contents::Contents;
        let on = Contents::for_desired(&desired(true)).render();
        assert!(on.contains("ipv6 true\nsrc_cidrs_ipv6 true\n"), "{on}");
        assert!(
            on.contains("# map masq_snat_pools6\nifindex 4 2001:db8::2\n"),
            "{on}"
        );
        assert!(
            on.contains("# map masq_dst_policy6\nfd00::/8 keep non-masquerade-cidr\n"),
            "{on}"
        );
        let off = Contents::for_desired(&desired(false)).render();
        assert!(
            !off.contains("ipv6") && !off.contains("masq_snat_pools6"),
            "{off}"
        );
    }

    #[test]
    fn only_global_unicast_addresses_are_snat_sources() {
        for (addr, usable) in [
            ("2001:db8::1", true),
            ("fd00:172:30::1", true),
            ("fe80::1", false),
            ("::1", false),
            ("ff02::1", false),
            ("::", false),
        ] {
            assert_eq!(usable_snat6(&addr.parse().unwrap()), usable, "{addr}");
        }
    }
}
