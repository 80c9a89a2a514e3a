//! Random configs and packets for the tests that hold a datapath's rendering against
//! `masq_decision::Policy` (`nft_follows_decision`, `ipt_follows_decision`).
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use masq_config::Config;
use proptest::prelude::*;
use proptest::test_runner::{TestError, TestRunner};

/// An IPv4 address from a small universe, so CIDRs and packets collide often.
pub fn v4() -> impl Strategy<Value = IpAddr> {
    (0u8..4, 0u8..4, any::<u8>()).prop_map(|(a, b, c)| {
        let first = [10, 169, 192, 203][a as usize];
        let second = [0, 254, 168, 1][b as usize];
        IpAddr::V4(Ipv4Addr::new(first, second, c % 4, c))
    })
}

/// An IPv6 address from a small universe (ULA, link-local, global).
pub fn v6() -> impl Strategy<Value = IpAddr> {
    (0u16..3, any::<u8>()).prop_map(|(a, c)| {
        let first = [0xfd00, 0xfe80, 0x2001][a as usize];
        let (group, last) = (u16::from(c % 4), u16::from(c));
        IpAddr::V6(Ipv6Addr::new(first, 0, 0, group, 0, 0, 0, last))
    })
}

/// The CIDR of `len` bits around `addr` (at most the address's length).
pub fn net(addr: IpAddr, len: u8) -> IpNet {
    let max = if addr.is_ipv4() { 32 } else { 128 };
    IpNet::new(addr, len.min(max)).unwrap().trunc()
}

/// Up to five CIDRs of either family.
pub fn cidrs() -> impl Strategy<Value = Vec<IpNet>> {
    let len = prop::sample::select(vec![8u8, 16, 24, 30, 32, 64, 128]);
    prop::collection::vec(
        (prop_oneof![v4(), v6()], len).prop_map(|(a, l)| net(a, l)),
        0..6,
    )
}

/// An IPv4 CIDR of 8 to 31 bits (`--native-routing-cidr`).
pub fn v4_cidr() -> impl Strategy<Value = IpNet> {
    (v4(), 8u8..32).prop_map(|(a, l)| net(a, l))
}

/// A config with random CIDR lists and link-local flags, every other key at its default. Half
/// of the configs force ranges, some of them random and some inside an exempt entry (or
/// link-local), so a longer forced prefix and a yet longer exempt one are common.
pub fn config() -> impl Strategy<Value = Config> {
    let inner = prop::collection::vec((prop_oneof![v4(), v6()], 4u8..=16), 0..4);
    let forced = prop_oneof![Just((Vec::new(), Vec::new())), (cidrs(), inner)];
    (cidrs(), cidrs(), forced, any::<bool>(), any::<bool>()).prop_map(
        |(keep, sources, (mut forced, inner), masq_link_local, masq_link_local_ipv6)| {
            let link_local: [IpNet; 2] =
                ["169.254.0.0/16", "fe80::/10"].map(|n| n.parse().unwrap());
            for (addr, longer) in inner {
                let around = keep
                    .iter()
                    .chain(&link_local)
                    .find(|k| k.contains(&addr) && k.prefix_len() + longer <= k.max_prefix_len());
                if let Some(outer) = around {
                    forced.push(net(addr, outer.prefix_len() + longer));
                }
            }
            Config {
                non_masquerade_cidrs: keep,
                non_masquerade_src_cidrs: sources,
                masquerade_cidrs: forced,
                masq_link_local,
                masq_link_local_ipv6,
                ..Config::default()
            }
        },
    )
}

/// A packet's (source, destination, node addresses): both addresses of one family, and a
/// quarter of the packets addressed to the node.
pub fn packet() -> impl Strategy<Value = (IpAddr, IpAddr, Vec<IpAddr>)> {
    (
        any::<bool>(),
        (v4(), v4(), v6(), v6()),
        prop::collection::vec(prop_oneof![v4(), v6()], 0..3),
        prop::bool::weighted(0.25),
    )
        .prop_map(|(ipv6, (s4, d4, s6, d6), mut local, to_node)| {
            let (src, dst) = if ipv6 { (s6, d6) } else { (s4, d4) };
            if to_node {
                local.push(dst);
            }
            (src, dst, local)
        })
}

/// Runs a property over `strategy` and requires it to find a disagreement (a failure whose
/// message says `disagreement: `, not a panic): how a test shows a mutated rendering is caught.
pub fn assert_caught<S: Strategy>(
    what: &str,
    strategy: S,
    check: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 4000,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    match runner.run(&strategy, check) {
        Err(TestError::Fail(why, _)) if why.message().contains("disagreement: ") => {
            let line = why.message().lines().find(|l| l.contains("disagreement: "));
            println!("{what}: {}", line.unwrap_or_default().trim());
        }
        other => panic!("{what} passed the property: {other:?}"),
    }
}
