//! The iptables rules `masq render` prints make the same decision as `masq_decision::Policy`
//! for arbitrary packets and configs: a walk through the rendered `IP-MASQ-AGENT` chain (from
//! the POSTROUTING jump) translates exactly the packets the policy masquerades, and with egress
//! routing the `mangle` chain marks exactly those. Pure: no kernel (the kernel tests in
//! `iptables/` show the kernel runs the same text the same way).
//!
//! Known, intended difference: without `--pod-cidr` the netfilter datapaths are destination-only
//! like kubernetes-sigs/ip-masq-agent, so the node's own addresses are not generated as sources.
//!
//! The property is shown able to fail: `dropping_any_exemption_fails_the_property` runs it
//! against renderings with one exemption removed, from either chain, and expects a
//! counterexample for each.

#[path = "../decision_support/mod.rs"]
mod decision_support;
mod walk;

use std::net::IpAddr;

use decision_support::{assert_caught, cidrs, config, packet, v4, v4_cidr, v6};
use masq_config::Config;
use masq_datapath::ipt::render::{FORCED_MASQ_COMMENT, FORCED_SNAT_COMMENT};
use masq_datapath::ipt::{Backend, Iptables};
use masq_datapath::names::{IPT_CHAIN, IPT_EGRESS_CHAIN};
use masq_datapath::{pool, Datapath, Desired, Family, Interface, Kind, NodeSettings, PortRange};
use masq_decision::{Action, NodeContext, Policy};
use proptest::prelude::*;
use walk::{Packet, Rules};

/// One config, node and packet.
#[derive(Clone, Debug)]
struct Case {
    config: Config,
    node: NodeSettings,
    local: Vec<IpAddr>,
    src: IpAddr,
    dst: IpAddr,
    protocol: &'static str,
}

fn case() -> impl Strategy<Value = Case> {
    let ports = prop_oneof![
        Just(Vec::new()),
        Just(vec![PortRange {
            first: 32768,
            last: 65535
        }]),
        Just(vec![
            PortRange {
                first: 1024,
                last: 29999
            },
            PortRange {
                first: 32768,
                last: 65535
            },
        ]),
    ];
    // A pool of 0 to 3 addresses of one family (several: a `cluster` match per address).
    let pool = prop_oneof![
        prop::collection::vec(v4(), 0..4),
        prop::collection::vec(v6(), 1..3),
    ]
    .prop_map(|mut pool| {
        let mut seen = Vec::new();
        pool.retain(|addr| {
            !seen.contains(addr) && {
                seen.push(*addr);
                true
            }
        });
        pool
    });
    let reserved = prop::collection::btree_set(1024u16..65535, 0..3);
    let node = (
        cidrs(),
        prop::option::of(v4_cidr()),
        pool,
        any::<bool>(),
        ports,
        reserved,
    )
        .prop_map(
            |(pod_cidrs, native_routing_cidr, snat_ips, egress, port_ranges, reserved_ports)| {
                NodeSettings {
                    pod_cidrs,
                    native_routing_cidr,
                    snat_ips,
                    port_ranges,
                    reserved_ports,
                    enable_ipv6: true,
                    interfaces: vec![Interface {
                        name: "eth0".into(),
                        index: 2,
                        addrs: Vec::new(),
                    }],
                    egress_interface: egress.then(|| "eth0".to_string()),
                    egress_routing: egress.then(masq_datapath::EgressRouting::default),
                    // A VPC-native node's ENI: egress routing needs a secondary uplink.
                    uplinks: vec![masq_datapath::Uplink {
                        name: "eth1".into(),
                        tables: vec![2],
                    }],
                    ..NodeSettings::default()
                }
            },
        );
    (
        config(),
        node,
        packet(),
        prop::sample::select(vec!["tcp", "udp", "icmp"]),
    )
        .prop_map(|(config, node, (src, dst, local), protocol)| Case {
            config,
            node,
            local,
            src,
            dst,
            protocol,
        })
}

/// The rendering with one exemption taken out, to show the property notices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Drop {
    /// The `nonMasqueradeSrcCIDRs` RETURN rules.
    SourceExemptions,
    /// The `-s POD` of the translation rules, which leaves other sources untranslated.
    PodSources,
    /// The link-local RETURN rule.
    LinkLocal,
    /// Every `nonMasqueradeCIDRs` RETURN rule.
    DestinationExemptions,
    /// The first `nonMasqueradeCIDRs` RETURN rule only.
    OneDestination,
    /// `addrtype ! --dst-type LOCAL` of the POSTROUTING jump, or the egress chain's
    /// `addrtype --dst-type LOCAL` RETURN.
    LocalDestinations,
    /// The rules of the `masqueradeCIDRs` ranges, which precede the RETURN rules.
    ForcedRanges,
}

impl Drop {
    const ALL: [Drop; 7] = [
        Drop::SourceExemptions,
        Drop::PodSources,
        Drop::LinkLocal,
        Drop::DestinationExemptions,
        Drop::OneDestination,
        Drop::LocalDestinations,
        Drop::ForcedRanges,
    ];

    fn apply(self, text: &str, chain: &str) -> String {
        let prefix = format!("-A {chain} ");
        let link_local =
            |line: &str| line.contains(" -d 169.254.0.0/16 ") || line.contains(" -d fe80::/10 ");
        let mut dropped_one = false;
        let mut out = String::new();
        for line in text.lines() {
            let ours = line.starts_with(&prefix);
            let returns = ours && line.ends_with("-j RETURN");
            let forced = |line: &str| {
                line.contains(&format!("\"{FORCED_MASQ_COMMENT}\""))
                    || line.contains(&format!("\"{FORCED_SNAT_COMMENT}\""))
                    || (chain == IPT_EGRESS_CHAIN && line.contains(" -d ") && !returns)
            };
            let kept = match self {
                Drop::ForcedRanges => !(ours && forced(line)),
                Drop::LocalDestinations => !(returns && line.contains(" --dst-type LOCAL ")),
                Drop::SourceExemptions => !(returns && line.contains(" -s ")),
                Drop::LinkLocal => !(returns && link_local(line)),
                Drop::DestinationExemptions => {
                    !(returns && line.contains(" -d ") && !link_local(line))
                }
                Drop::OneDestination => {
                    let hit = !dropped_one && returns && line.contains(" -d ") && !link_local(line);
                    dropped_one |= hit;
                    !hit
                }
                Drop::PodSources => true,
            };
            if !kept {
                continue;
            }
            let line = match self {
                Drop::PodSources if ours && !returns => {
                    let words: Vec<&str> = line.split(' ').collect();
                    match words.iter().position(|w| *w == "-s") {
                        Some(at) => [&words[..at], &words[at + 2..]].concat().join(" "),
                        None => line.to_string(),
                    }
                }
                Drop::LocalDestinations
                    if line.starts_with("# -A POSTROUTING ") && chain == IPT_CHAIN =>
                {
                    line.replace(" -m addrtype ! --dst-type LOCAL", "")
                }
                _ => line.to_string(),
            };
            out.push_str(&line);
            out.push('\n');
        }
        out
    }
}

/// The property: the walk through the rendered rules agrees with the policy.
fn check(case: &Case, drop: Option<(Drop, &str)>) -> Result<(), TestCaseError> {
    // Destination-only without pod CIDRs: the node's own sources are out of scope (see top).
    prop_assume!(!case.node.pod_cidrs.is_empty() || !case.local.contains(&case.src));
    let desired = Desired {
        config: case.config.clone(),
        node: case.node.clone(),
    };
    let mut text = Iptables::new(Backend::Nft).render(&desired);
    if let Some((drop, chain)) = drop {
        text = drop.apply(&text, chain);
    }
    let rules = Rules::parse(&text);
    let policy = Policy::new(
        &case.config,
        &NodeContext {
            local_addrs: case.local.clone(),
            ..case.node.decision_context()
        },
    );
    let want = policy.decide(Some(case.src), case.dst);
    let masquerade = want.action == Action::Masquerade;
    let packet = Packet {
        src: case.src,
        dst: case.dst,
        protocol: case.protocol,
        local: &case.local,
    };
    let nat = rules.walk("nat", "POSTROUTING", &packet);
    prop_assert_eq!(
        nat.len(),
        1,
        "disagreement: draws end differently: {:?}",
        nat
    );
    prop_assert_eq!(
        nat[0].translated,
        masquerade,
        "disagreement: {} -> {}: the nat chain {} it, the policy says {:?}",
        case.src,
        case.dst,
        if nat[0].translated {
            "translates"
        } else {
            "keeps"
        },
        want
    );
    // The pod's address of the pool: the one `masq explain` names (`pool::address_for`), in
    // the pool iptables installs (an IPv6 one is its first address: `snat_pool_on`).
    let pool = case
        .node
        .snat_pool_on(Kind::Iptables, Family::of_addr(&case.dst));
    let want_source = masquerade
        .then(|| pool::address_for(&pool, case.src))
        .flatten();
    prop_assert_eq!(
        nat[0].to_source,
        want_source,
        "disagreement: {} -> {}: SNAT to {:?}, the pool {:?} says {:?}",
        case.src,
        case.dst,
        nat[0].to_source,
        pool,
        want_source
    );
    let mangle = rules.walk("mangle", "PREROUTING", &packet);
    prop_assert_eq!(
        mangle.len(),
        1,
        "disagreement: draws end differently: {:?}",
        mangle
    );
    let mark = case.node.active_egress_routing().map_or(0, |r| r.mark);
    let marked = mark != 0 && mangle[0].mark & mark == mark;
    prop_assert_eq!(
        marked,
        masquerade && mark != 0,
        "disagreement: {} -> {}: the egress chain {} it, the policy says {:?}",
        case.src,
        case.dst,
        if marked { "marks" } else { "does not mark" },
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

/// Each exemption dropped from the nat chain, then from the egress chain, makes the property
/// find a counterexample.
#[test]
fn dropping_any_exemption_fails_the_property() {
    let chains = [IPT_CHAIN, IPT_EGRESS_CHAIN];
    for (chain, drop) in chains.iter().flat_map(|c| Drop::ALL.map(|d| (*c, d))) {
        let what = format!("{chain} without {drop:?}");
        assert_caught(&what, case(), |case| check(&case, Some((drop, chain))));
    }
}

#[test]
fn the_walk_refuses_a_rule_it_cannot_read() {
    // A rule the walk does not know must stop it, not be skipped.
    let text = "# iptables-restore --noflush\n*nat\n-A X -m physdev --physdev-in eth0 -j RETURN\n";
    let parsed = std::panic::catch_unwind(|| Rules::parse(text));
    assert!(parsed.is_err(), "an unknown match module was accepted");
}
