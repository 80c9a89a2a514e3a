//! The generated nftables rules make the same decision as `masq_decision::Policy` for arbitrary
//! packets and configs (STYLE: "render is apply", and a tracer walks the rules). Pure: no kernel.
//!
//! Known, intended difference: without `--pod-cidr` the netfilter datapaths are destination-only
//! like kubernetes-sigs/ip-masq-agent, so the node's own addresses are not generated as sources.
//!
//! The property is shown able to fail: `dropping_any_exemption_fails_the_property` runs it
//! against rulesets with one exemption removed and expects a counterexample for each.

mod decision_support;

use std::net::IpAddr;

use decision_support::{assert_caught, cidrs, config, packet, v4, v4_cidr, v6};
use masq_config::Config;
use masq_datapath::nft::{reason, Cond, Ruleset, Verdict};
use masq_datapath::{ports, Desired, Family, NodeSettings, PortRange};
use masq_decision::{Action, NodeContext, Policy, Reason};
use proptest::prelude::*;

/// One config, node and packet.
#[derive(Clone, Debug)]
struct Case {
    config: Config,
    node: NodeSettings,
    local: Vec<IpAddr>,
    src: IpAddr,
    dst: IpAddr,
}

fn case() -> impl Strategy<Value = Case> {
    // A pool of one family (or none), a port list (or the default) and reserved ports.
    let pool = prop_oneof![
        prop::collection::vec(v4(), 0..4),
        prop::collection::vec(v6(), 1..3),
    ];
    let ports = prop::collection::vec((1024u16..60000, 0u16..3000), 0..4).prop_map(|list| {
        let ranges: Vec<PortRange> = list
            .iter()
            .map(|&(first, len)| PortRange {
                first,
                last: first + len,
            })
            .collect();
        // Disjoint, as the flag requires.
        ports::subtract(&ranges, &Default::default())
    });
    let reserved = prop::collection::btree_set(1024u16..65535, 0..4);
    let node = (cidrs(), prop::option::of(v4_cidr()), pool, ports, reserved).prop_map(
        |(pod_cidrs, native_routing_cidr, mut snat_ips, port_ranges, reserved_ports)| {
            let mut seen = Vec::new();
            snat_ips.retain(|a| {
                !seen.contains(a) && {
                    seen.push(*a);
                    true
                }
            });
            NodeSettings {
                pod_cidrs,
                native_routing_cidr,
                snat_ips,
                port_ranges,
                reserved_ports,
                enable_ipv6: true,
                ..NodeSettings::default()
            }
        },
    );
    (config(), node, packet()).prop_map(|(config, node, (src, dst, local))| Case {
        config,
        node,
        local,
        src,
        dst,
    })
}

fn reason_of(comment: &str) -> Reason {
    match comment {
        c if c == reason::NON_MASQUERADE_SRC => Reason::NonMasqueradeSrc,
        c if c == reason::NOT_A_POD => Reason::NotAPod,
        c if c == reason::LINK_LOCAL => Reason::LinkLocal,
        c if c == reason::NON_MASQUERADE_CIDR => Reason::NonMasqueradeCidr,
        c if c == reason::LOCAL => Reason::Local,
        c if c == reason::MASQUERADE_CIDR => Reason::MasqueradeCidr,
        c if c == reason::MASQUERADE => Reason::Default,
        other => panic!("rule with unknown comment {other:?}"),
    }
}

/// A ruleset with one exemption taken out, to show the property notices.
#[derive(Clone, Copy, Debug)]
enum Drop {
    /// Every rule of one decision step (by its comment).
    Step(&'static str),
    /// The first element of the IPv4 `nonMasqueradeCIDRs` set.
    OneDestination,
    /// Every element of the sets of destinations `masqueradeCIDRs` decide.
    ForcedSets,
}

impl Drop {
    const ALL: [Drop; 8] = [
        Drop::Step(reason::NON_MASQUERADE_SRC),
        Drop::Step(reason::NOT_A_POD),
        Drop::Step(reason::LINK_LOCAL),
        Drop::Step(reason::NON_MASQUERADE_CIDR),
        Drop::Step(reason::LOCAL),
        Drop::Step(reason::MASQUERADE_CIDR),
        Drop::OneDestination,
        Drop::ForcedSets,
    ];

    fn apply(self, ruleset: &mut Ruleset) {
        match self {
            Drop::Step(comment) => ruleset.rules.retain(|rule| rule.comment != comment),
            Drop::ForcedSets => {
                for set in &mut ruleset.sets {
                    if set.name.starts_with("masq-dst-") {
                        set.elements.clear();
                    }
                }
            }
            Drop::OneDestination => {
                if let Some(set) = ruleset.sets.iter_mut().find(|s| s.name == "nonmasq-dst-v4") {
                    if !set.elements.is_empty() {
                        set.elements.remove(0);
                    }
                }
            }
        }
    }
}

/// The property: the first rule the packet matches gives the policy's action and reason.
fn check(case: &Case, drop: Option<Drop>) -> Result<(), TestCaseError> {
    let (src, dst) = (case.src, case.dst);
    // Destination-only without pod CIDRs: the node's own sources are out of scope (see top).
    prop_assume!(!case.node.pod_cidrs.is_empty() || !case.local.contains(&src));
    let policy = Policy::new(
        &case.config,
        &NodeContext {
            local_addrs: case.local.clone(),
            ..case.node.decision_context()
        },
    );
    let want = policy.decide(Some(src), dst);
    let mut rules = Ruleset::build(&Desired {
        config: case.config.clone(),
        node: case.node.clone(),
    });
    if let Some(drop) = drop {
        drop.apply(&mut rules);
    }
    if let Some(rule) = rules.evaluate(src, dst, &case.local) {
        if let Verdict::Snat { pool, .. } = &rule.verdict {
            prop_assert_eq!(pool, &case.node.snat_pool(Family::of_addr(&dst)));
        }
    }
    let (action, why) = match rules.evaluate(src, dst, &case.local) {
        Some(rule) => (
            match rule.verdict {
                Verdict::Return => Action::Keep,
                Verdict::Masquerade { .. } | Verdict::Snat { .. } => Action::Masquerade,
                Verdict::RestoreMark(_) | Verdict::SetMark(_) => {
                    panic!("a mark verdict in the postrouting chain: {rule:?}")
                }
            },
            reason_of(rule.comment),
        ),
        None => (Action::Keep, Reason::NotAPod),
    };
    prop_assert_eq!(
        (action, why),
        (want.action, want.reason),
        "disagreement: {} -> {}: the rules say {:?}, the policy {:?}",
        src,
        dst,
        (action, why),
        want
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn rules_and_policy_agree(case in case()) {
        check(&case, None)?;
    }
}

#[test]
fn dropping_any_exemption_fails_the_property() {
    for drop in Drop::ALL {
        let what = format!("without {drop:?}");
        assert_caught(&what, case(), |case| check(&case, Some(drop)));
    }
}

/// The chance that a new TCP or UDP connection reaches each translation rule of one family,
/// given each rule's `numgen` draw: what the chain hands out.
fn port_shares(rules: &Ruleset, family: Family) -> Vec<(PortRange, f64)> {
    let mut reach = 1.0;
    let mut shares = Vec::new();
    for rule in &rules.rules {
        let ports = match &rule.verdict {
            Verdict::Masquerade { ports: Some(p) } | Verdict::Snat { ports: Some(p), .. } => *p,
            _ => continue,
        };
        if !rule.conds.contains(&Cond::Nfproto(family)) {
            continue;
        }
        let draw = rule.conds.iter().find_map(|c| match c {
            Cond::PortShare { size, of } => Some(f64::from(*size) / f64::from(*of)),
            _ => None,
        });
        let p = draw.unwrap_or(1.0);
        shares.push((ports, reach * p));
        reach *= 1.0 - p;
    }
    shares
}

proptest! {
    /// Every port in effect is as likely as any other: each range's rule is reached in
    /// proportion to its size, the ranges are exactly the ports in effect, and no reserved
    /// port is among them.
    #[test]
    fn port_rules_share_the_ports_evenly(case in case()) {
        let rules = Ruleset::build(&Desired { config: case.config.clone(), node: case.node.clone() });
        let want = case.node.source_port_ranges();
        let total = f64::from(ports::count(&want));
        for family in [Family::V4, Family::V6] {
            let shares = port_shares(&rules, family);
            let ranges: Vec<PortRange> = shares.iter().map(|(r, _)| *r).collect();
            prop_assert_eq!(&ranges, &want);
            for (range, share) in &shares {
                let fair = f64::from(range.len()) / total;
                prop_assert!((share - fair).abs() < 1e-9, "{range}: {share} vs {fair}");
            }
        }
        let free_reserved = case.node.reserved_ports.iter()
            .any(|p| want.iter().any(|r| r.contains(*p)));
        prop_assert!(!free_reserved || want == case.node.base_port_ranges());
    }
}
