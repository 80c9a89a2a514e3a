//! The generated nftables rules make the same decision as `masq_decision::Policy` for arbitrary
//! packets and configs (STYLE: "render is apply", and a tracer walks the rules). Pure: no kernel.
//!
//! Known, intended difference: without `--pod-cidr` the netfilter datapaths are destination-only
//! like kubernetes-sigs/ip-masq-agent, so the node's own addresses are not generated as sources.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use masq_config::Config;
use masq_datapath::nft::{reason, Ruleset, Verdict};
use masq_datapath::{Desired, NodeSettings};
use masq_decision::{Action, NodeContext, Policy, Reason};
use proptest::prelude::*;

/// Addresses drawn from a small universe so CIDRs and packets collide often.
fn v4() -> impl Strategy<Value = IpAddr> {
    (0u8..4, 0u8..4, any::<u8>()).prop_map(|(a, b, c)| {
        let first = [10, 169, 192, 203][a as usize];
        let second = [0, 254, 168, 1][b as usize];
        IpAddr::V4(Ipv4Addr::new(first, second, c % 4, c))
    })
}

fn v6() -> impl Strategy<Value = IpAddr> {
    (0u16..3, any::<u8>()).prop_map(|(a, c)| {
        let first = [0xfd00, 0xfe80, 0x2001][a as usize];
        IpAddr::V6(Ipv6Addr::new(
            first,
            0,
            0,
            u16::from(c % 4),
            0,
            0,
            0,
            u16::from(c),
        ))
    })
}

fn net(addr: IpAddr, len: u8) -> IpNet {
    let max = if addr.is_ipv4() { 32 } else { 128 };
    IpNet::new(addr, len.min(max)).unwrap().trunc()
}

fn cidrs() -> impl Strategy<Value = Vec<IpNet>> {
    prop::collection::vec(
        (
            prop_oneof![v4(), v6()],
            prop_oneof![
                Just(8u8),
                Just(16),
                Just(24),
                Just(30),
                Just(32),
                Just(64),
                Just(128)
            ],
        )
            .prop_map(|(a, l)| net(a, l)),
        0..6,
    )
}

fn reason_of(comment: &str) -> Reason {
    match comment {
        c if c == reason::NON_MASQUERADE_SRC => Reason::NonMasqueradeSrc,
        c if c == reason::NOT_A_POD => Reason::NotAPod,
        c if c == reason::LINK_LOCAL => Reason::LinkLocal,
        c if c == reason::NON_MASQUERADE_CIDR => Reason::NonMasqueradeCidr,
        c if c == reason::LOCAL => Reason::Local,
        c if c == reason::MASQUERADE => Reason::Default,
        other => panic!("rule with unknown comment {other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn rules_and_policy_agree(
        non_masquerade in cidrs(),
        non_masquerade_src in cidrs(),
        pod_cidrs in cidrs(),
        native in prop::option::of((v4(), 8u8..32).prop_map(|(a, l)| net(a, l))),
        masq_link_local in any::<bool>(),
        masq_link_local_ipv6 in any::<bool>(),
        local in prop::collection::vec(prop_oneof![v4(), v6()], 0..3),
        ipv6_packet in any::<bool>(),
        (src4, dst4, src6, dst6) in (v4(), v4(), v6(), v6()),
    ) {
        let (src, dst) = if ipv6_packet { (src6, dst6) } else { (src4, dst4) };
        // Destination-only without pod CIDRs: the node's own sources are out of scope (see top).
        prop_assume!(!pod_cidrs.is_empty() || !local.contains(&src));
        let config = Config {
            non_masquerade_cidrs: non_masquerade,
            non_masquerade_src_cidrs: non_masquerade_src,
            masq_link_local,
            masq_link_local_ipv6,
            ..Config::default()
        };
        let node = NodeSettings {
            pod_cidrs: pod_cidrs.clone(),
            native_routing_cidr: native,
            enable_ipv6: true,
            ..NodeSettings::default()
        };
        let policy = Policy::new(
            &config,
            &NodeContext { pod_cidrs, local_addrs: local.clone(), native_routing_cidr: native },
        );
        let want = policy.decide(Some(src), dst);
        let rules = Ruleset::build(&Desired { config, node });
        let (action, why) = match rules.evaluate(src, dst, &local) {
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
        prop_assert_eq!(action, want.action, "{} -> {}: rules say {:?}, policy {:?}", src, dst, why, want);
        prop_assert_eq!(why, want.reason, "{} -> {}", src, dst);
    }
}
