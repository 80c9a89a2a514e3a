//! Property tests of [`Policy::decide`] and [`merge_cidrs`] against linear scans, IPv4 and
//! IPv6: an oracle written the slow, obvious way from docs/decision.md.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use masq_config::Config;
use proptest::prelude::*;

use super::*;

/// The most specific CIDR of `cidrs` containing `addr`, by looking at every one.
pub(super) fn linear_longest<'a>(
    cidrs: impl IntoIterator<Item = &'a IpNet>,
    addr: IpAddr,
) -> Option<IpNet> {
    cidrs
        .into_iter()
        .filter(|c| c.contains(&addr))
        .max_by_key(|c| c.prefix_len())
        .copied()
}

/// docs/decision.md written as plainly as possible, from the config rather than the compiled
/// policy, with its own link-local literals: an oracle that shares nothing it could share a
/// mistake with.
pub(super) fn oracle(
    config: &Config,
    node: &NodeContext,
    src: Option<IpAddr>,
    dst: IpAddr,
) -> Verdict {
    if let Some(src) = src {
        if let Some(m) = linear_longest(&config.non_masquerade_src_cidrs, src) {
            return Verdict {
                action: Action::Keep,
                reason: Reason::NonMasqueradeSrc,
                matched: Some(m),
            };
        }
        if node.pod_cidrs.is_empty() && node.local_addrs.contains(&src) {
            return Verdict {
                action: Action::Keep,
                reason: Reason::NotAPod,
                matched: Some(IpNet::from(src)),
            };
        }
        if !node.pod_cidrs.is_empty() && !node.pod_cidrs.iter().any(|c| c.contains(&src)) {
            return Verdict {
                action: Action::Keep,
                reason: Reason::NotAPod,
                matched: None,
            };
        }
    }
    let link_local_v4: IpNet = "169.254.0.0/16".parse().unwrap();
    let link_local_v6: IpNet = "fe80::/10".parse().unwrap();
    // Forced entries inside the native-routing CIDR do nothing; a keeping entry equal to a
    // forced one gives way to it (only the default set can hold one).
    let forced: Vec<IpNet> = config
        .masquerade_cidrs
        .iter()
        .filter(|f| !node.native_routing_cidr.is_some_and(|n| n.contains(*f)))
        .copied()
        .collect();
    let keep: Vec<IpNet> = config
        .non_masquerade_cidrs
        .iter()
        .filter(|k| !forced.contains(k))
        .chain(node.native_routing_cidr.as_ref())
        .copied()
        .collect();
    let deciding_forced = linear_longest(&forced, dst)
        .filter(|f| linear_longest(&keep, dst).is_none_or(|k| k.prefix_len() <= f.prefix_len()));
    for (flag, range) in [
        (config.masq_link_local, link_local_v4),
        (config.masq_link_local_ipv6, link_local_v6),
    ] {
        if !flag && range.contains(&dst) && deciding_forced.is_none() {
            return Verdict {
                action: Action::Keep,
                reason: Reason::LinkLocal,
                matched: Some(range),
            };
        }
    }
    if deciding_forced.is_none() {
        if let Some(m) = linear_longest(&keep, dst) {
            return Verdict {
                action: Action::Keep,
                reason: Reason::NonMasqueradeCidr,
                matched: Some(m),
            };
        }
    }
    if node.local_addrs.contains(&dst) {
        return Verdict {
            action: Action::Keep,
            reason: Reason::Local,
            matched: Some(IpNet::from(dst)),
        };
    }
    Verdict {
        action: Action::Masquerade,
        reason: deciding_forced.map_or(Reason::Default, |_| Reason::MasqueradeCidr),
        matched: deciding_forced,
    }
}

/// Addresses clustered in a few regions (private, link-local, public; ULA, link-local, global)
/// so random CIDRs and random addresses overlap often.
pub(super) fn addr() -> impl Strategy<Value = IpAddr> {
    let v4 = (
        prop::sample::select(vec![10u8, 169, 172, 192, 8, 100]),
        0u8..4,
        any::<u16>(),
    )
        .prop_map(|(a, b, low)| {
            let b = if a == 169 { 254 } else { b };
            IpAddr::V4(Ipv4Addr::from(
                u32::from_be_bytes([a, b, 0, 0]) | u32::from(low),
            ))
        });
    let v6 = (
        prop::sample::select(vec![0xfd00u16, 0xfe80, 0x2001]),
        0u16..4,
        any::<u64>(),
    )
        .prop_map(|(a, b, low)| {
            IpAddr::V6(Ipv6Addr::from(
                (u128::from(a) << 112) | (u128::from(b) << 96) | u128::from(low),
            ))
        });
    prop_oneof![3 => v4, 2 => v6]
}

/// An aligned CIDR around one of those addresses.
pub(super) fn cidr() -> impl Strategy<Value = IpNet> {
    (addr(), any::<u8>()).prop_map(|(addr, len)| {
        let max = if addr.is_ipv4() { 33 } else { 129 };
        IpNet::new(addr, len % max).unwrap().trunc()
    })
}

pub(super) fn config() -> impl Strategy<Value = Config> {
    (
        prop::collection::vec(cidr(), 0..12),
        prop::collection::vec(cidr(), 0..3),
        prop::collection::vec(cidr(), 0..4),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(dst, src, forced, masq_link_local, masq_link_local_ipv6)| Config {
                non_masquerade_cidrs: dst,
                non_masquerade_src_cidrs: src,
                masquerade_cidrs: forced,
                masq_link_local,
                masq_link_local_ipv6,
                ..Config::default()
            },
        )
}

pub(super) fn node() -> impl Strategy<Value = NodeContext> {
    (
        prop::collection::vec(cidr(), 0..3),
        prop::collection::vec(addr(), 0..3),
        prop::option::of(cidr()),
    )
        .prop_map(
            |(pod_cidrs, local_addrs, native_routing_cidr)| NodeContext {
                pod_cidrs,
                local_addrs,
                native_routing_cidr,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decide_matches_the_linear_oracle(
        config in config(),
        node in node(),
        src in prop::option::of(addr()),
        dsts in prop::collection::vec(addr(), 1..8),
    ) {
        let policy = Policy::new(&config, &node);
        for dst in dsts {
            prop_assert_eq!(policy.decide(src, dst), oracle(&config, &node, src, dst), "dst {}", dst);
        }
    }

    #[test]
    fn merged_cidrs_cover_the_same_addresses(
        cidrs in prop::collection::vec(cidr(), 0..16),
        probes in prop::collection::vec(addr(), 1..32),
    ) {
        let merged = merge_cidrs(&cidrs);
        for probe in probes {
            prop_assert_eq!(
                cidrs.iter().any(|c| c.contains(&probe)),
                merged.iter().any(|c| c.contains(&probe)),
                "probe {}", probe
            );
        }
        // No element overlaps another, as nftables interval sets require.
        for (i, a) in merged.iter().enumerate() {
            for b in &merged[i + 1..] {
                prop_assert!(!a.contains(b) && !b.contains(a), "{} overlaps {}", a, b);
            }
        }
        prop_assert!(merged.len() <= cidrs.len());
    }
}
