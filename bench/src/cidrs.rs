//! The non-masquerade CIDRs the benchmark installs, and the config file that lists them.
//!
//! Fillers are /32s taken every other address of 100.64.0.0/10 (4M addresses, room for 2M
//! fillers), so no two of them are adjacent: a datapath that merges adjacent prefixes cannot
//! shrink the set, and every one of them is really installed. None of them covers a host of the
//! topology, so traffic to the "internet" host walks the whole set (or chain) and is
//! masqueraded. IPv6 fillers are /128s taken every other address of 2001:db8:6440::/48, for the
//! same reasons, away from the IPv6 "internet" host (2001:db8::10).

use std::fmt::Write;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Start of the filler range (100.64.0.0, RFC 6598 shared address space).
const FILLER_BASE: u32 = 0x6440_0000;
/// Most fillers available with a stride of two inside 100.64.0.0/10.
pub const MAX_FILLERS: usize = 1 << 21;

/// The CIDR that, added to a config, exempts the "internet" host (203.0.113.10): the marker
/// whose arrival or departure the control-plane measurements watch for in traffic.
pub const MARKER: &str = "203.0.113.0/24";

/// The VPC range that keeps pod sources (10.200.0.10, the topology's private host, is in it).
pub const VPC: &str = "10.0.0.0/8";

/// Filler number `index` as a /32 CIDR string.
pub fn filler(index: usize) -> String {
    assert!(
        index < MAX_FILLERS,
        "filler {index} is outside 100.64.0.0/10"
    );
    let offset = u32::try_from(index * 2).expect("below 2^22");
    format!("{}/32", Ipv4Addr::from(FILLER_BASE + offset))
}

/// `count` fillers, starting at `first`.
pub fn fillers(first: usize, count: usize) -> Vec<String> {
    (first..first + count).map(filler).collect()
}

/// Start of the IPv6 filler range (2001:db8:6440::, inside the documentation prefix).
const FILLER6_BASE: u128 = 0x2001_0db8_6440_u128 << 80;

/// IPv6 filler number `index` as a /128 CIDR string (`index` below 2^79: the /48 is never
/// left).
pub fn filler6(index: usize) -> String {
    let offset = u128::try_from(index).expect("usize fits in u128") * 2;
    format!("{}/128", Ipv6Addr::from(FILLER6_BASE + offset))
}

/// `count` IPv6 fillers, from the first.
pub fn fillers6(count: usize) -> Vec<String> {
    (0..count).map(filler6).collect()
}

/// A /32 outside the filler range (198.18.0.0/15, RFC 2544 benchmarking), `index` < 65536.
pub fn other(index: u16) -> String {
    format!("198.18.{}.{}/32", index >> 8, index & 0xff)
}

/// The largest config file masq accepts: 1 MiB, what a ConfigMap can hold.
pub const CONFIG_LIMIT_BYTES: usize = 1 << 20;

/// An ip-masq-agent config (YAML) listing exactly `cidrs`, with a `cidrLimit` that admits them
/// and a resync interval long enough that no periodic resync falls inside a measurement. The
/// list is written in flow style (`[a,b]`), the most compact form, so that as many CIDRs as
/// possible fit in [`CONFIG_LIMIT_BYTES`].
pub fn config_yaml(cidrs: &[String]) -> String {
    let mut yaml = String::with_capacity(cidrs.len() * 16 + 96);
    let limit = cidrs.len().max(16384) + 16;
    let _ = writeln!(yaml, "resyncInterval: 1h\ncidrLimit: {limit}");
    let _ = writeln!(yaml, "nonMasqueradeCIDRs: [{}]", cidrs.join(","));
    yaml
}

/// Whether the agent accepts a config this big.
pub fn fits_in_configmap(yaml: &str) -> bool {
    yaml.len() <= CONFIG_LIMIT_BYTES
}

/// The most fillers (plus one extra CIDR) whose config fits in [`CONFIG_LIMIT_BYTES`].
pub fn most_that_fit() -> usize {
    let fits = |n: usize| fits_in_configmap(&config_yaml(&with(n, &[MARKER])));
    let (mut low, mut high) = (0, 200_000);
    while low + 1 < high {
        let mid = (low + high) / 2;
        if fits(mid) {
            low = mid;
        } else {
            high = mid;
        }
    }
    low
}

/// `count` fillers plus `extra`.
pub fn with(count: usize, extra: &[&str]) -> Vec<String> {
    let mut cidrs = fillers(0, count);
    cidrs.extend(extra.iter().map(|s| s.to_string()));
    cidrs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fillers_are_distinct_non_adjacent_and_inside_the_range() {
        assert_eq!(filler(0), "100.64.0.0/32");
        assert_eq!(filler(1), "100.64.0.2/32");
        assert_eq!(filler(128), "100.64.1.0/32");
        assert_eq!(filler(MAX_FILLERS - 1), "100.127.255.254/32");
        let all = fillers(0, 100_000);
        let unique: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(unique.len(), 100_000);
    }

    #[test]
    fn ipv6_fillers_are_distinct_non_adjacent_and_miss_the_internet_host() {
        assert_eq!(filler6(0), "2001:db8:6440::/128");
        assert_eq!(filler6(1), "2001:db8:6440::2/128");
        assert_eq!(filler6(0x8000), "2001:db8:6440::1:0/128");
        let internet: ipnet::IpNet = "2001:db8::10/128".parse().unwrap();
        for cidr in fillers6(1000) {
            let net: ipnet::IpNet = cidr.parse().unwrap();
            assert!(!net.contains(&internet.addr()), "{cidr}");
        }
    }

    #[test]
    fn the_config_lists_every_cidr_and_admits_them() {
        let yaml = config_yaml(&with(20_000, &[MARKER]));
        assert!(yaml.contains("cidrLimit: 20017\n"));
        assert_eq!(yaml.matches(',').count(), 20_000);
        assert!(yaml.contains("[100.64.0.0/32,100.64.0.2/32,"));
        assert!(yaml.ends_with(",203.0.113.0/24]\n"));
        assert!(config_yaml(&[]).contains("nonMasqueradeCIDRs: []"));
    }

    #[test]
    fn a_hundred_thousand_cidrs_do_not_fit_in_a_configmap() {
        let most = most_that_fit();
        assert!((10_000..100_000).contains(&most), "{most}");
        assert!(fits_in_configmap(&config_yaml(&with(most, &[MARKER]))));
        assert!(!fits_in_configmap(&config_yaml(&with(most + 1, &[MARKER]))));
    }
}
