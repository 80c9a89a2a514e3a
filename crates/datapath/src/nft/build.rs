//! [`Ruleset::build`]: the compiled policy of each family the node masquerades, as interval
//! sets and the rules of the chains, in decision order (docs/decision.md).

use ipnet::IpNet;
use masq_decision::{Exemption, FamilyPolicy, Pods};

use super::model::{reason, Cond, Family, RuleSpec, Ruleset, SetSpec, Verdict};
use crate::{ports, Desired};

impl Ruleset {
    /// The ruleset for `desired`.
    pub fn build(desired: &Desired) -> Ruleset {
        let node = &desired.node;
        let policy = desired.policy();
        let families: Vec<&FamilyPolicy> = node
            .families()
            .iter()
            .map(|family| policy.family(*family))
            .collect();
        let rule = |conds: Vec<Cond>, verdict: Verdict, comment: &'static str| RuleSpec {
            conds,
            verdict,
            comment,
        };
        let mut sets = Vec::new();
        let mut rules = Vec::new();
        // With `masqueradeCIDRs`, every family gets a set of the destinations they decide
        // (empty for a family without any); without, the ruleset is what it always was.
        let forced = families
            .iter()
            .any(|f| !f.destinations.masquerade.is_empty());
        let forced_set = |family: Family| set_name("masq-dst", family);

        // Step by step, and within a step one rule per family: steps 2 to 6.
        let steps: Vec<_> = families.iter().map(|f| f.exemptions()).collect();
        for step in 0..steps[0].len() {
            for (index, family_steps) in steps.iter().enumerate() {
                let exemption = family_steps[step];
                let family = families[index].family;
                let comment = exemption.reason().as_str();
                // A set of the step's prefixes and the rule that returns what it (or, with
                // `negate`, what outside it) holds. The set exists even when empty so that a
                // config change only ever edits elements, never the chain.
                let mut exempt_by_set = |prefix: &str, elements: &[IpNet], source, negate| {
                    let set = set_spec(prefix, family, elements);
                    let name = set.name.clone();
                    let cond = match source {
                        true => Cond::SaddrInSet {
                            family,
                            set: name,
                            negate,
                        },
                        false => Cond::DaddrInSet {
                            family,
                            set: name,
                            negate,
                        },
                    };
                    rules.push(rule(vec![cond], Verdict::Return, comment));
                    sets.push(set);
                };
                match exemption {
                    Exemption::Sources(cidrs) => {
                        exempt_by_set("nonmasq-src", cidrs.collapsed(), true, false)
                    }
                    Exemption::NotAPod(Pods::Cidrs(cidrs)) => {
                        exempt_by_set("pod", cidrs.collapsed(), true, true)
                    }
                    // Without pod CIDRs every source counts as a pod, like
                    // kubernetes-sigs/ip-masq-agent (destination-only).
                    Exemption::NotAPod(Pods::AllButTheNode) => {}
                    Exemption::LinkLocal(link_local) => {
                        if link_local.exempt {
                            let mut conds = vec![Cond::DaddrIn(link_local.range)];
                            // A forced entry deciding the destination overrides link-local.
                            if forced {
                                conds.push(Cond::DaddrInSet {
                                    family,
                                    set: forced_set(family),
                                    negate: true,
                                });
                            }
                            rules.push(rule(conds, Verdict::Return, comment));
                        }
                    }
                    // The sets hold the outcome of the longest match across both lists: where
                    // a keeping prefix wins, and where a forced one does.
                    Exemption::Destinations(destinations) => {
                        exempt_by_set("nonmasq-dst", destinations.kept(), false, false);
                        if forced {
                            sets.push(set_spec("masq-dst", family, destinations.masqueraded()));
                        }
                    }
                    // `fib daddr type local` answers for both families: one rule.
                    Exemption::Local(_) if index == 0 => {
                        rules.push(rule(vec![Cond::DaddrLocal], Verdict::Return, comment));
                    }
                    Exemption::Local(_) => {}
                }
            }
        }
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
            for family in &families {
                mark_rules.push(rule(
                    vec![Cond::Nfproto(family.family)],
                    Verdict::SetMark(mark),
                    reason::EGRESS_MARK,
                ));
            }
        }
        // Step 7, per family: each family has its own pool (or none: the egress interface's
        // address). The forced destinations first, to count them apart.
        let port_ranges = node.source_port_ranges();
        for family in families.iter().map(|f| f.family) {
            let pool = node.snat_pool(family);
            let translate = |ports| match pool.is_empty() {
                true => Verdict::Masquerade { ports },
                false => Verdict::Snat {
                    pool: pool.clone(),
                    ports,
                },
            };
            // `ip daddr @set` implies the family (nft lists the rule without `meta nfproto`).
            let mut kinds = vec![(Cond::Nfproto(family), reason::MASQUERADE)];
            if forced {
                let to_forced = Cond::DaddrInSet {
                    family,
                    set: forced_set(family),
                    negate: false,
                };
                kinds.insert(0, (to_forced, reason::MASQUERADE_CIDR));
            }
            for (destination, comment) in kinds {
                let conds = |more: &[Cond]| {
                    let mut conds = vec![destination.clone()];
                    conds.extend_from_slice(more);
                    conds
                };
                // nft accepts a port range only after a transport protocol match; ICMP and the
                // rest fall through to the rule below. One rule per range, each drawing its
                // share of what the rules before it left; the last one draws no number.
                let mut remaining = ports::count(&port_ranges);
                for range in &port_ranges {
                    let mut more = vec![Cond::TcpOrUdp];
                    if range.len() < remaining {
                        more.push(Cond::PortShare {
                            size: range.len(),
                            of: remaining,
                        });
                    }
                    remaining -= range.len();
                    rules.push(rule(conds(&more), translate(Some(*range)), comment));
                }
                rules.push(rule(conds(&[]), translate(None), comment));
            }
        }
        Ruleset {
            sets,
            rules,
            mark_rules,
        }
    }
}

/// A set of one family, named `PREFIX-v4` or `PREFIX-v6`, holding non-overlapping prefixes.
fn set_spec(prefix: &str, family: Family, collapsed: &[IpNet]) -> SetSpec {
    SetSpec {
        name: set_name(prefix, family),
        family,
        elements: collapsed.to_vec(),
    }
}

fn set_name(prefix: &str, family: Family) -> String {
    format!("{prefix}-{}", family.suffix())
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use ipnet::IpNet;

    use super::*;
    use crate::NodeSettings;

    fn desired(cidrs: &[&str], node: NodeSettings) -> Desired {
        Desired {
            config: masq_config::Config {
                non_masquerade_cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
                non_masquerade_src_cidrs: vec!["10.244.1.9/32".parse().unwrap()],
                ..masq_config::Config::default()
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
            let nets: Vec<String> = cidrs
                .iter()
                .map(|&(n, len)| ipnet::Ipv4Net::new(addr(n), len).unwrap().trunc().to_string())
                .collect();
            let names: Vec<&str> = nets.iter().map(String::as_str).collect();
            let rules = Ruleset::build(&desired(&names, NodeSettings::default()));
            let set = rules.sets.iter().find(|s| s.name == "nonmasq-dst-v4").unwrap();
            for pair in set.elements.windows(2) {
                proptest::prop_assert!(!pair[0].contains(&pair[1].network()), "{:?}", pair);
            }
            for probe in probes {
                let probe = IpAddr::from(addr(probe));
                proptest::prop_assert_eq!(
                    nets.iter().any(|n| n.parse::<IpNet>().unwrap().contains(&probe)),
                    set.elements.iter().any(|n| n.contains(&probe))
                );
            }
        }
    }
}
