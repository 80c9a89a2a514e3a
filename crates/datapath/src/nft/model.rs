//! The ruleset masq wants, as plain data. [`Ruleset::build`] turns a [`Desired`] into sets and
//! rules once; `render` prints that model as nft syntax and `json` turns the very same model
//! into the transaction, so what `masq render` shows is what `sync` installs.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::{Desired, PortRange};

/// The base chain that does the work. The table is masq's own, so names need no prefix.
pub const CHAIN: &str = "postrouting";

/// `srcnat`: the standard priority of source NAT on the postrouting hook.
pub const SRCNAT_PRIORITY: i32 = 100;

/// The base chain that marks connections for egress routing (only with an egress interface).
pub const MARK_CHAIN: &str = "prerouting";

/// `dstnat + 10`: after conntrack (-200), so `ct state` and `ct mark` are known, and after
/// destination NAT (-100, kube-proxy's service DNAT), so the decision sees the destination the
/// postrouting chain will see; still before the routing decision, which the mark must steer
/// (the kernel routes only once the whole prerouting hook has run).
pub const MARK_PRIORITY: i32 = -90;

/// The one comment per decision step, named like the reasons of `masq explain`, so status can
/// label each rule's counter with the reason it counts.
pub mod reason {
    /// Source in `nonMasqueradeSrcCIDRs`.
    pub const NON_MASQUERADE_SRC: &str = "non-masquerade-src";
    /// Source outside the pod CIDRs.
    pub const NOT_A_POD: &str = "not-a-pod";
    /// Link-local destination, kept.
    pub const LINK_LOCAL: &str = "link-local";
    /// Destination in `nonMasqueradeCIDRs` or the native-routing CIDR.
    pub const NON_MASQUERADE_CIDR: &str = "non-masquerade-cidr";
    /// Destination is an address of the node.
    pub const LOCAL: &str = "local";
    /// Nothing exempted the packet: it is translated.
    pub const MASQUERADE: &str = "masquerade";
    /// A later packet or a reply of a marked connection gets the mark back from conntrack.
    pub const EGRESS_RESTORE: &str = "egress-restore";
    /// Only the first packet of a connection is decided on.
    pub const ESTABLISHED: &str = "established";
    /// The first packet of a connection that will be masqueraded: marked for egress routing.
    pub const EGRESS_MARK: &str = "egress-mark";
}

/// An address family of the `inet` table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4 (`ip`).
    V4,
    /// IPv6 (`ip6`).
    V6,
}

impl Family {
    /// The payload protocol in a match (`ip saddr`, `ip6 saddr`).
    pub fn payload(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }

    /// The value of `meta nfproto`.
    pub fn nfproto(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }

    /// The element type of an address set.
    pub fn set_type(self) -> &'static str {
        match self {
            Family::V4 => "ipv4_addr",
            Family::V6 => "ipv6_addr",
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Family::V4 => "v4",
            Family::V6 => "v6",
        }
    }

    fn of(net: &IpNet) -> Family {
        match net {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }

    fn link_local(self) -> IpNet {
        match self {
            Family::V4 => IpNet::V4(Ipv4Net::new([169, 254, 0, 0].into(), 16).expect("valid")),
            Family::V6 => {
                IpNet::V6(Ipv6Net::new([0xfe80, 0, 0, 0, 0, 0, 0, 0].into(), 10).expect("valid"))
            }
        }
    }
}

/// A named interval set of addresses of one family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetSpec {
    /// Name inside the table.
    pub name: String,
    /// Element family.
    pub family: Family,
    /// Non-overlapping prefixes, sorted (overlaps and duplicates merged first, because an
    /// interval set rejects overlapping elements).
    pub elements: Vec<IpNet>,
}

/// One match of a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cond {
    /// `ip saddr @set`, or `ip saddr != @set` when `negate`.
    SaddrInSet {
        /// Address family of the match.
        family: Family,
        /// Set name.
        set: String,
        /// Match sources outside the set instead.
        negate: bool,
    },
    /// `ip daddr @set`.
    DaddrInSet {
        /// Address family of the match.
        family: Family,
        /// Set name.
        set: String,
    },
    /// `ip daddr 169.254.0.0/16`.
    DaddrIn(IpNet),
    /// `fib daddr type local`: the destination is an address of this node.
    DaddrLocal,
    /// `meta nfproto ipv4`.
    Nfproto(Family),
    /// `meta l4proto { tcp, udp }`: only these carry ports a port range can apply to.
    TcpOrUdp,
    /// `ct mark & MARK == MARK`: the connection was marked for egress routing.
    CtMarkHas(u32),
    /// `ct state != new`: not the first packet of its connection.
    CtStateNotNew,
}

/// What a rule does with a packet that matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Leave the chain: no translation.
    Return,
    /// Translate to the egress interface's address.
    Masquerade {
        /// Translated source ports.
        ports: Option<PortRange>,
    },
    /// Translate to a fixed address (`--snat-ip`).
    Snat {
        /// The address.
        addr: IpAddr,
        /// Translated source ports.
        ports: Option<PortRange>,
    },
    /// `meta mark set meta mark | MARK`, and the next rule: the packet is routed by masq's
    /// `ip rule`.
    RestoreMark(u32),
    /// `meta mark set meta mark | MARK ct mark set ct mark | MARK`: this packet and, through
    /// conntrack, the rest of its connection.
    SetMark(u32),
}

/// One rule of the chain; every rule counts its packets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSpec {
    /// All must match.
    pub conds: Vec<Cond>,
    /// What to do then.
    pub verdict: Verdict,
    /// The decision step this rule implements (one of [`reason`]).
    pub comment: &'static str,
}

/// Everything masq installs in its table: the sets, then the rules of [`CHAIN`] in order, and
/// with egress routing the rules of [`MARK_CHAIN`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ruleset {
    /// Interval sets, in a stable order.
    pub sets: Vec<SetSpec>,
    /// Rules of the postrouting chain, in evaluation order (SPEC section 3).
    pub rules: Vec<RuleSpec>,
    /// Rules of the prerouting chain that marks connections for egress routing; empty (and
    /// the chain absent) without an egress interface or with `--egress-mark 0`.
    pub mark_rules: Vec<RuleSpec>,
}

impl Ruleset {
    /// The ruleset for `desired`.
    pub fn build(desired: &Desired) -> Ruleset {
        let config = &desired.config;
        let node = &desired.node;
        let families: &[Family] = if node.enable_ipv6 {
            &[Family::V4, Family::V6]
        } else {
            &[Family::V4]
        };
        let mut sets = Vec::new();
        let mut rules = Vec::new();
        let rule = |conds: Vec<Cond>, verdict: Verdict, comment: &'static str| RuleSpec {
            conds,
            verdict,
            comment,
        };

        let mut destinations = config.non_masquerade_cidrs.clone();
        destinations.extend(node.native_routing_cidr);

        // Step 2: sources never masqueraded. The set exists even when empty so that a config
        // change only ever edits elements, never the chain.
        for &family in families {
            let set = set_spec("nonmasq-src", family, &config.non_masquerade_src_cidrs);
            rules.push(rule(
                vec![Cond::SaddrInSet {
                    family,
                    set: set.name.clone(),
                    negate: false,
                }],
                Verdict::Return,
                reason::NON_MASQUERADE_SRC,
            ));
            sets.push(set);
        }
        // Step 3: without pod CIDRs every source counts as a pod, like kubernetes-sigs/ip-masq-agent.
        if !node.pod_cidrs.is_empty() {
            for &family in families {
                let set = set_spec("pod", family, &node.pod_cidrs);
                rules.push(rule(
                    vec![Cond::SaddrInSet {
                        family,
                        set: set.name.clone(),
                        negate: true,
                    }],
                    Verdict::Return,
                    reason::NOT_A_POD,
                ));
                sets.push(set);
            }
        }
        // Step 4.
        for &family in families {
            let masquerade_link_local = match family {
                Family::V4 => config.masq_link_local,
                Family::V6 => config.masq_link_local_ipv6,
            };
            if !masquerade_link_local {
                rules.push(rule(
                    vec![Cond::DaddrIn(family.link_local())],
                    Verdict::Return,
                    reason::LINK_LOCAL,
                ));
            }
        }
        // Step 5.
        for &family in families {
            let set = set_spec("nonmasq-dst", family, &destinations);
            rules.push(rule(
                vec![Cond::DaddrInSet {
                    family,
                    set: set.name.clone(),
                }],
                Verdict::Return,
                reason::NON_MASQUERADE_CIDR,
            ));
            sets.push(set);
        }
        // Step 6.
        rules.push(rule(vec![Cond::DaddrLocal], Verdict::Return, reason::LOCAL));
        // The same exemptions decide, before routing, which new connections get the egress
        // mark: exactly those the postrouting chain will translate.
        let mut mark_rules = Vec::new();
        if let Some(routing) = node.active_egress_routing() {
            let mark = routing.mark;
            mark_rules.push(rule(
                vec![Cond::CtMarkHas(mark)],
                Verdict::RestoreMark(mark),
                reason::EGRESS_RESTORE,
            ));
            mark_rules.push(rule(
                vec![Cond::CtStateNotNew],
                Verdict::Return,
                reason::ESTABLISHED,
            ));
            mark_rules.extend(rules.iter().cloned());
            for &family in families {
                mark_rules.push(rule(
                    vec![Cond::Nfproto(family)],
                    Verdict::SetMark(mark),
                    reason::EGRESS_MARK,
                ));
            }
        }
        // Step 7, per family: the SNAT address (if any) belongs to one family only, and the
        // other family still masquerades.
        for &family in families {
            let snat_ip = node
                .snat_ip
                .filter(|ip| Family::of(&IpNet::from(*ip)) == family);
            let translate = |ports| match snat_ip {
                Some(addr) => Verdict::Snat { addr, ports },
                None => Verdict::Masquerade { ports },
            };
            if let Some(ports) = node.port_range {
                // nft accepts a port range only after a transport protocol match; ICMP and
                // the rest fall through to the rule below.
                rules.push(rule(
                    vec![Cond::Nfproto(family), Cond::TcpOrUdp],
                    translate(Some(ports)),
                    reason::MASQUERADE,
                ));
            }
            rules.push(rule(
                vec![Cond::Nfproto(family)],
                translate(None),
                reason::MASQUERADE,
            ));
        }
        Ruleset {
            sets,
            rules,
            mark_rules,
        }
    }

    /// Walks the chain for one packet the way the kernel would and returns the first rule that
    /// matches (None: no rule matched and the packet leaves untouched). `local` are the node's
    /// addresses, what `fib daddr type local` answers from. Lets tests check the generated
    /// rules against the decision crate for arbitrary packets.
    pub fn evaluate(&self, src: IpAddr, dst: IpAddr, local: &[IpAddr]) -> Option<&RuleSpec> {
        let family = Family::of(&IpNet::from(dst));
        let in_set = |name: &str, addr: IpAddr| {
            self.sets
                .iter()
                .find(|s| s.name == name)
                .is_some_and(|s| s.elements.iter().any(|net| net.contains(&addr)))
        };
        let holds = |cond: &Cond| match cond {
            Cond::SaddrInSet {
                family: f,
                set,
                negate,
            } => *f == family && in_set(set, src) != *negate,
            Cond::DaddrInSet { family: f, set } => *f == family && in_set(set, dst),
            Cond::DaddrIn(net) => net.contains(&dst),
            Cond::DaddrLocal => local.contains(&dst),
            Cond::Nfproto(f) => *f == family,
            // The walk is for TCP and UDP packets.
            Cond::TcpOrUdp => true,
            // … that open a connection.
            Cond::CtMarkHas(_) | Cond::CtStateNotNew => false,
        };
        self.rules.iter().find(|rule| rule.conds.iter().all(holds))
    }

    /// Set elements plus rules: the size of the ruleset, for metrics and status.
    pub fn entries(&self) -> usize {
        self.rules.len()
            + self.mark_rules.len()
            + self.sets.iter().map(|s| s.elements.len()).sum::<usize>()
    }
}

fn set_spec(prefix: &str, family: Family, cidrs: &[IpNet]) -> SetSpec {
    let of_family: Vec<IpNet> = cidrs
        .iter()
        .filter(|net| Family::of(net) == family)
        .map(IpNet::trunc)
        .collect();
    let mut elements = IpNet::aggregate(&of_family);
    elements.sort();
    SetSpec {
        name: format!("{prefix}-{}", family.suffix()),
        family,
        elements,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::NodeSettings;

    fn desired(cidrs: &[&str], node: NodeSettings) -> Desired {
        Desired {
            config: masq_config::Config {
                non_masquerade_cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
                masq_link_local: false,
                masq_link_local_ipv6: false,
                resync_interval: Duration::from_secs(60),
                cidr_limit: 16384,
                non_masquerade_src_cidrs: vec!["10.244.1.9/32".parse().unwrap()],
            },
            node,
        }
    }

    fn reason_of(ruleset: &Ruleset, src: &str, dst: &str) -> Option<&'static str> {
        let local: IpAddr = "172.30.0.1".parse().unwrap();
        ruleset
            .evaluate(src.parse().unwrap(), dst.parse().unwrap(), &[local])
            .map(|rule| rule.comment)
    }

    #[test]
    fn rules_follow_the_decision_order() {
        let node = NodeSettings {
            pod_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
            native_routing_cidr: Some("10.96.0.0/12".parse().unwrap()),
            ..NodeSettings::default()
        };
        let rules = Ruleset::build(&desired(&["10.0.0.0/8"], node));
        let pod = "10.244.1.2";
        assert_eq!(
            reason_of(&rules, "10.244.1.9", "8.8.8.8"),
            Some(reason::NON_MASQUERADE_SRC)
        );
        assert_eq!(
            reason_of(&rules, "192.168.1.1", "8.8.8.8"),
            Some(reason::NOT_A_POD)
        );
        assert_eq!(
            reason_of(&rules, pod, "169.254.169.254"),
            Some(reason::LINK_LOCAL)
        );
        assert_eq!(
            reason_of(&rules, pod, "10.1.2.3"),
            Some(reason::NON_MASQUERADE_CIDR)
        );
        assert_eq!(reason_of(&rules, pod, "172.30.0.1"), Some(reason::LOCAL));
        assert_eq!(reason_of(&rules, pod, "8.8.8.8"), Some(reason::MASQUERADE));
        // IPv6 is not touched without --enable-ipv6.
        assert_eq!(reason_of(&rules, "fd00::1", "2001:db8::1"), None);
    }

    #[test]
    fn overlapping_cidrs_collapse_and_families_split() {
        let node = NodeSettings {
            enable_ipv6: true,
            ..NodeSettings::default()
        };
        let rules = Ruleset::build(&desired(
            &["10.0.0.0/8", "10.1.0.0/16", "10.0.0.0/8", "fd00::/8"],
            node,
        ));
        let dst = |name: &str| rules.sets.iter().find(|s| s.name == name).unwrap();
        assert_eq!(
            dst("nonmasq-dst-v4").elements,
            vec!["10.0.0.0/8".parse::<IpNet>().unwrap()]
        );
        assert_eq!(
            dst("nonmasq-dst-v6").elements,
            vec!["fd00::/8".parse::<IpNet>().unwrap()]
        );
        assert_eq!(
            reason_of(&rules, "fd10::2", "2001:db8::1"),
            Some(reason::MASQUERADE)
        );
        assert_eq!(
            reason_of(&rules, "fd10::2", "fe80::1"),
            Some(reason::LINK_LOCAL)
        );
    }

    proptest::proptest! {
        /// Merging overlaps never changes which addresses a set covers, and leaves no overlap
        /// (the kernel would refuse it).
        #[test]
        fn merged_sets_cover_exactly_the_configured_cidrs(
            cidrs in proptest::collection::vec((0u32..4096, 4u8..=32), 0..40),
            probes in proptest::collection::vec(0u32..4096, 32),
        ) {
            // Addresses drawn from a small space so that overlaps are common.
            let addr = |n: u32| std::net::Ipv4Addr::from(0x0a00_0000 | (n << 12));
            let nets: Vec<IpNet> = cidrs
                .iter()
                .map(|&(n, len)| IpNet::V4(Ipv4Net::new(addr(n), len).unwrap().trunc()))
                .collect();
            let set = set_spec("s", Family::V4, &nets);
            for pair in set.elements.windows(2) {
                proptest::prop_assert!(!pair[0].contains(&pair[1].network()), "{:?}", pair);
            }
            for probe in probes {
                let probe = IpAddr::from(addr(probe));
                proptest::prop_assert_eq!(
                    nets.iter().any(|n| n.contains(&probe)),
                    set.elements.iter().any(|n| n.contains(&probe))
                );
            }
        }
    }
}
