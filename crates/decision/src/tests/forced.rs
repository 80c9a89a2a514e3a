//! `masqueradeCIDRs`: the longest prefix across both destination lists decides, link-local
//! gives way to a forced entry, the native-routing CIDR and the node's own addresses do not;
//! and the flattened sets and the LPM table agree with a linear scan.

use ipnet::IpNet;
use masq_config::Config;
use proptest::prelude::*;

use super::properties::{addr, config, linear_longest, node, oracle};
use super::{ip, net, verdict};
use crate::*;

fn forced(keep: &[&str], masquerade: &[&str]) -> Config {
    Config {
        non_masquerade_cidrs: keep.iter().map(|c| net(c)).collect(),
        masquerade_cidrs: masquerade.iter().map(|c| net(c)).collect(),
        ..Config::default()
    }
}

#[test]
fn a_forced_range_inside_an_exempt_one_masquerades_and_a_longer_exempt_one_keeps_again() {
    // The issue's example.
    let policy = Policy::new(
        &forced(&["10.0.0.0/8", "10.5.3.0/24"], &["10.5.0.0/16"]),
        &NodeContext::default(),
    );
    assert_eq!(
        policy.decide(None, ip("10.5.3.1")),
        verdict(Action::Keep, Reason::NonMasqueradeCidr, Some("10.5.3.0/24"))
    );
    assert_eq!(
        policy.decide(None, ip("10.5.4.1")),
        verdict(
            Action::Masquerade,
            Reason::MasqueradeCidr,
            Some("10.5.0.0/16")
        )
    );
    assert_eq!(
        policy.decide(None, ip("10.6.0.1")),
        verdict(Action::Keep, Reason::NonMasqueradeCidr, Some("10.0.0.0/8"))
    );
    // Outside every exempt range a forced entry still names itself.
    let policy = Policy::new(&forced(&[], &["8.8.8.0/24"]), &NodeContext::default());
    assert_eq!(
        policy.decide(None, ip("8.8.8.8")),
        verdict(
            Action::Masquerade,
            Reason::MasqueradeCidr,
            Some("8.8.8.0/24")
        )
    );
    assert_eq!(policy.decide(None, ip("8.8.4.4")).reason, Reason::Default);
}

#[test]
fn link_local_gives_way_to_a_forced_entry_holding_the_destination() {
    let metadata = Policy::new(
        &forced(&[], &["169.254.169.254/32"]),
        &NodeContext::default(),
    );
    assert_eq!(
        metadata.decide(None, ip("169.254.169.254")),
        verdict(
            Action::Masquerade,
            Reason::MasqueradeCidr,
            Some("169.254.169.254/32")
        )
    );
    assert_eq!(
        metadata.decide(None, ip("169.254.1.1")).reason,
        Reason::LinkLocal
    );
    // A forced range holding all of link-local masquerades it, except where a longer exempt
    // entry keeps.
    let all = Policy::new(
        &forced(&["169.254.7.0/24"], &["128.0.0.0/1"]),
        &NodeContext::default(),
    );
    assert_eq!(
        all.decide(None, ip("169.254.1.1")).action,
        Action::Masquerade
    );
    assert_eq!(
        all.decide(None, ip("169.254.7.1")),
        verdict(Action::Keep, Reason::LinkLocal, Some("169.254.0.0/16"))
    );
}

#[test]
fn the_native_routing_cidr_and_the_node_stay_untranslated() {
    let node = NodeContext {
        native_routing_cidr: Some(net("10.96.0.0/12")),
        local_addrs: vec![ip("10.5.0.1")],
        ..NodeContext::default()
    };
    let policy = Policy::new(&forced(&[], &["10.0.0.0/8", "10.100.0.0/16"]), &node);
    assert_eq!(
        policy.decide(None, ip("10.100.1.1")),
        verdict(
            Action::Keep,
            Reason::NonMasqueradeCidr,
            Some("10.96.0.0/12")
        )
    );
    assert_eq!(
        policy.decide(None, ip("10.5.0.1")),
        verdict(Action::Keep, Reason::Local, Some("10.5.0.1/32"))
    );
    let compiled = policy.compiled();
    assert_eq!(
        compiled.v4.destinations.masquerade.as_written(),
        [net("10.0.0.0/8")]
    );
}

#[test]
fn a_forced_entry_equal_to_a_default_range_replaces_it() {
    let config = Config {
        masquerade_cidrs: vec![net("10.0.0.0/8")],
        ..Config::default()
    };
    let policy = Policy::new(&config, &NodeContext::default());
    assert_eq!(
        policy.decide(None, ip("10.1.1.1")),
        verdict(
            Action::Masquerade,
            Reason::MasqueradeCidr,
            Some("10.0.0.0/8")
        )
    );
    assert_eq!(
        policy.compiled().v4.destinations.keep.as_written().len(),
        10
    );
}

#[test]
fn the_compiled_sets_and_table_for_the_issue_example() {
    let compiled = CompiledPolicy::compile(
        &forced(&["10.0.0.0/8", "10.5.3.0/24"], &["10.5.0.0/16"]),
        &NodeContext::default(),
    );
    let d = &compiled.v4.destinations;
    assert!(d.kept().contains(&net("10.5.3.0/24")));
    assert!(d.kept().contains(&net("10.0.0.0/14")));
    assert!(d.masqueraded().contains(&net("10.5.128.0/17")));
    assert_eq!(
        compiled.v4.destination_entries(),
        [
            (net("10.0.0.0/8"), Action::Keep),
            (net("10.5.0.0/16"), Action::Masquerade),
            (net("10.5.3.0/24"), Action::Keep),
            (net("169.254.0.0/16"), Action::Keep),
        ]
    );
    // Without forced entries the kept set is the collapsed list, as before.
    let plain = CompiledPolicy::compile(
        &forced(&["10.0.0.0/8", "10.1.0.0/16"], &[]),
        &NodeContext::default(),
    );
    assert_eq!(plain.v4.destinations.kept(), [net("10.0.0.0/8")]);
    assert!(plain.v4.destinations.masqueraded().is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// The flattened sets (nftables) and the LPM table (eBPF) say for every address what the
    /// policy says: kept by step 4 or 5, forced, or neither.
    #[test]
    fn flattened_sets_and_the_lpm_table_agree_with_the_policy(
        config in config(),
        node in node(),
        probes in prop::collection::vec(addr(), 1..24),
    ) {
        let compiled = CompiledPolicy::compile(&config, &node);
        for dst in probes {
            let family = compiled.family(Family::of_addr(&dst));
            let want = oracle(&config, &NodeContext { local_addrs: vec![], ..node.clone() }, None, dst);
            let d = &family.destinations;
            let in_set = |set: &[IpNet]| set.iter().any(|n| n.contains(&dst));
            prop_assert_eq!(in_set(d.kept()), want.reason == Reason::NonMasqueradeCidr || (want.reason == Reason::LinkLocal && linear_longest(d.keep.as_written(), dst).is_some()), "kept {}", dst);
            prop_assert_eq!(in_set(d.masqueraded()), want.reason == Reason::MasqueradeCidr, "forced {}", dst);
            prop_assert!(!(in_set(d.kept()) && in_set(d.masqueraded())), "both sets hold {}", dst);
            let entries = family.destination_entries();
            let longest = entries
                .iter()
                .filter(|(n, _)| n.contains(&dst))
                .max_by_key(|(n, _)| n.prefix_len());
            let table = longest.map(|(_, action)| *action);
            let expected = match want.reason {
                Reason::LinkLocal | Reason::NonMasqueradeCidr => Some(Action::Keep),
                Reason::MasqueradeCidr => Some(Action::Masquerade),
                _ => None,
            };
            prop_assert_eq!(table, expected, "table {}", dst);
            // The reason the table's value carries (eBPF counts kept flows by it).
            if let Some((net, action)) = longest {
                prop_assert_eq!(family.destination_reason(net, *action), want.reason, "reason {}", dst);
            }
            for set in [d.kept(), d.masqueraded()] {
                for (i, a) in set.iter().enumerate() {
                    for b in &set[i + 1..] {
                        prop_assert!(!a.contains(b) && !b.contains(a), "{} overlaps {}", a, b);
                    }
                }
            }
        }
    }
}
