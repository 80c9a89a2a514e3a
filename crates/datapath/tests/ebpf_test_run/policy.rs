//! The programs decide what `Policy` decides (issue 15): random configs and nodes rendered by
//! `Contents::for_desired` into one loaded instance, random first packets of flows of both
//! families through the egress program, and for each the verdict (translated or not, seen on
//! the packet) and the counter it landed in compared with `Policy::decide`.
//!
//! Addresses come from a small universe (the node's address, a /24 of pods, private ranges,
//! TEST-NET, the link-local ranges) so that random CIDRs hold random packets often; every step
//! of docs/decision.md is reached in every run (checked at the end).

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use masq_config::Config;
use masq_datapath::ebpf::policy::counter_of;
use masq_datapath::ebpf::types::Reason;
use masq_datapath::ebpf::Contents;
use masq_datapath::{Desired, Interface, NodeSettings};
use masq_decision::{Action, Policy, Reason as Why};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};

use crate::harness::*;
use crate::harness6::*;

/// Where random addresses come from: each a network and how many of its low bits vary.
const UNIVERSE4: [(Ipv4Addr, u32); 6] = [
    (NODE, 0),
    (Ipv4Addr::new(10, 244, 1, 0), 8),    // pods
    (Ipv4Addr::new(10, 0, 0, 0), 24),     // private
    (Ipv4Addr::new(169, 254, 169, 0), 9), // link-local
    (Ipv4Addr::new(203, 0, 113, 0), 8),   // TEST-NET-3
    (Ipv4Addr::new(198, 51, 100, 0), 8),  // TEST-NET-2
];
const UNIVERSE6: [(Ipv6Addr, u32); 5] = [
    (NODE6, 0),
    (Ipv6Addr::new(0xfd00, 0x10, 0x244, 1, 0, 0, 0, 0), 8), // pods
    (Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0), 40),       // unique local
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 8),        // link-local
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 12),   // documentation
];

fn addr4() -> impl Strategy<Value = Ipv4Addr> {
    (0..UNIVERSE4.len(), any::<u32>()).prop_map(|(i, bits)| {
        let (net, vary) = UNIVERSE4[i];
        Ipv4Addr::from(u32::from(net) | (bits & ((1u32 << vary) - 1)))
    })
}

fn addr6() -> impl Strategy<Value = Ipv6Addr> {
    (0..UNIVERSE6.len(), any::<u64>()).prop_map(|(i, bits)| {
        let (net, vary) = UNIVERSE6[i];
        Ipv6Addr::from(u128::from(net) | u128::from(bits & ((1u64 << vary) - 1)))
    })
}

fn addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![addr4().prop_map(IpAddr::V4), addr6().prop_map(IpAddr::V6)]
}

/// A CIDR around a universe address, host bits cleared.
fn cidr() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        (addr4(), 0u8..=32).prop_map(|(a, len)| IpNet::V4(Ipv4Net::new(a, len).unwrap().trunc())),
        (addr6(), 0u8..=128).prop_map(|(a, len)| IpNet::V6(Ipv6Net::new(a, len).unwrap().trunc())),
    ]
}

fn cidrs(max: usize) -> impl Strategy<Value = Vec<IpNet>> {
    prop::collection::vec(cidr(), 0..=max)
}

/// A config and node: random CIDR lists, flags, pod CIDRs or none, local addresses and a
/// native-routing CIDR. The same prefix in both destination lists is a config error, so
/// masqueradeCIDRs lose what nonMasqueradeCIDRs already hold.
fn desired() -> impl Strategy<Value = Desired> {
    (
        (cidrs(6), cidrs(3), cidrs(3), any::<bool>(), any::<bool>()),
        (
            cidrs(2),
            prop::collection::vec(addr(), 0..4),
            prop::option::of(cidr()),
        ),
    )
        .prop_map(|((keep, forced, src, ll4, ll6), (pods, local, native))| {
            let forced = forced.into_iter().filter(|f| !keep.contains(f)).collect();
            Desired {
                config: Config {
                    non_masquerade_cidrs: keep,
                    masquerade_cidrs: forced,
                    non_masquerade_src_cidrs: src,
                    masq_link_local: ll4,
                    masq_link_local_ipv6: ll6,
                    resync_interval: Duration::from_secs(60),
                    cidr_limit: 16384,
                },
                node: NodeSettings {
                    pod_cidrs: pods,
                    local_addrs: local,
                    native_routing_cidr: native,
                    enable_ipv6: true,
                    interfaces: vec![Interface {
                        name: "eth0".into(),
                        index: 1,
                        addrs: vec![IpAddr::V4(NODE), IpAddr::V6(NODE6)],
                    }],
                    ..NodeSettings::default()
                },
            }
        })
}

/// A source and destination of one family.
fn flow() -> impl Strategy<Value = (IpAddr, IpAddr)> {
    prop_oneof![
        (addr4(), addr4()).prop_map(|(s, d)| (IpAddr::V4(s), IpAddr::V4(d))),
        (addr6(), addr6()).prop_map(|(s, d)| (IpAddr::V6(s), IpAddr::V6(d))),
    ]
}

/// Runs the first packet of a new UDP flow through the egress program: whether it left
/// translated to the node's address, and the counter that moved.
fn run(h: &Harness, src: IpAddr, dst: IpAddr, sport: u16) -> (Action, Option<Reason>) {
    let before = h.counters();
    // Translated: the packet changed, and what changed is the source, to the node's address.
    let translated = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let frame = udp(s, sport, d, 53, b"q");
            let (rc, out) = h.egress(&frame);
            assert_eq!(rc, CONTINUE, "{src} -> {dst}");
            let seen = inspect(&out);
            assert_eq!((seen.dst, seen.dport), (d, 53), "{src} -> {dst}");
            (out != frame).then_some(IpAddr::V4(seen.src))
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let frame = udp6(s, sport, d, 53, b"q");
            let (rc, out) = h.egress(&frame);
            assert_eq!(rc, CONTINUE, "{src} -> {dst}");
            let seen = inspect6(&out);
            assert_eq!((seen.dst, seen.dport), (d, 53), "{src} -> {dst}");
            (out != frame).then_some(IpAddr::V6(seen.src))
        }
        _ => unreachable!("one family"),
    };
    if let Some(to) = translated {
        let node = if src.is_ipv4() {
            IpAddr::V4(NODE)
        } else {
            IpAddr::V6(NODE6)
        };
        assert_eq!(to, node, "{src} -> {dst}: translated to another address");
    }
    let after = h.counters();
    let decision = [
        Reason::TranslatedEgress,
        Reason::KeepNonMasqSrc,
        Reason::KeepNotAPod,
        Reason::KeepLinkLocal,
        Reason::KeepNonMasqDst,
        Reason::KeepLocal,
    ];
    let moved = decision.into_iter().find(|r| after[r] > before[r]);
    let action = if translated.is_some() {
        Action::Masquerade
    } else {
        Action::Keep
    };
    (action, moved)
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn the_programs_decide_what_the_policy_decides() {
    // The runner takes a `Fn`: the one loaded instance and the tallies are shared cells.
    let h = RefCell::new(Harness::new(&base_contents()));
    let sport = Cell::new(1024u16);
    let reached = RefCell::new(BTreeSet::new());
    let mut runner = TestRunner::new(RunnerConfig {
        cases: 200,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    let strategy = (desired(), prop::collection::vec(flow(), 1..24));
    runner
        .run(&strategy, |(desired, flows)| {
            let contents = Contents::for_desired(&desired);
            let mut h = h.borrow_mut();
            h.maps.apply(&contents).unwrap();
            let policy = Policy::new(&desired.config, &desired.node.decision_context());
            for (src, dst) in flows {
                // The node's own flows leave with the node's address whatever the decision
                // says (masquerading them changes nothing but the port): the programs reserve
                // their ports instead (cases/translate.rs), and count them as not from a pod.
                if src == IpAddr::V4(NODE) || src == IpAddr::V6(NODE6) {
                    continue;
                }
                // Every packet a new flow: a kept flow's entry would decide its next packets.
                sport.set(sport.get().checked_add(1).unwrap_or(1024).max(1024));
                let want = policy.decide(Some(src), dst);
                let (action, counted) = run(&h, src, dst, sport.get());
                prop_assert_eq!(action, want.action, "{} -> {}: {:?}", src, dst, want);
                prop_assert_eq!(counted, Some(counter_of(want.reason)), "{} -> {}", src, dst);
                reached.borrow_mut().insert(want.reason.as_str());
            }
            Ok(())
        })
        .unwrap();
    let every: BTreeSet<&str> = Why::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(
        reached.into_inner(),
        every,
        "a step the random cases never reached"
    );
}
