//! One test (at least) per row and per parsing rule of docs/config.md, plus the compatibility
//! cases of issue 2's "Done when": the keys table and `masqueradeCIDRs` here, the parsing
//! rules in `parsing.rs`.

use std::time::Duration;

use super::*;

fn opts() -> ParseOptions {
    ParseOptions::default()
}

fn ipv6_opts() -> ParseOptions {
    ParseOptions {
        enable_ipv6: true,
        ..ParseOptions::default()
    }
}

fn ok(text: &str) -> Config {
    match parse(text.as_bytes(), &opts()) {
        Ok(loaded) => loaded.config,
        Err(e) => panic!("{text:?} should be valid, got:\n{e}"),
    }
}

fn err(text: &str) -> ConfigError {
    match parse(text.as_bytes(), &opts()) {
        Ok(loaded) => panic!("{text:?} should be invalid, got {:?}", loaded.config),
        Err(e) => e,
    }
}

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

// === the keys table of docs/config.md ===

#[test]
fn defaults_match_the_spec_table() {
    let config = Config::default();
    assert_eq!(
        config.non_masquerade_cidrs,
        nets(&[
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "100.64.0.0/10",
            "192.0.0.0/24",
            "192.0.2.0/24",
            "192.88.99.0/24",
            "198.18.0.0/15",
            "198.51.100.0/24",
            "203.0.113.0/24",
            "240.0.0.0/4",
        ])
    );
    assert!(!config.masq_link_local);
    assert!(!config.masq_link_local_ipv6);
    assert_eq!(config.resync_interval, Duration::from_secs(60));
    assert_eq!(config.cidr_limit, 16384);
    assert!(config.non_masquerade_src_cidrs.is_empty());
    assert_eq!(LINK_LOCAL_V4.to_string(), "169.254.0.0/16");
    assert_eq!(LINK_LOCAL_V6.to_string(), "fe80::/10");
}

#[test]
fn non_masquerade_cidrs_are_read_in_order_v4_and_v6() {
    let loaded = parse(
        b"nonMasqueradeCIDRs:\n  - 192.168.0.0/16\n  - fd00::/8\n  - 10.0.0.0/8\n",
        &ipv6_opts(),
    )
    .unwrap();
    assert_eq!(
        loaded.config.non_masquerade_cidrs,
        nets(&["192.168.0.0/16", "fd00::/8", "10.0.0.0/8"])
    );
    assert!(loaded.warnings.is_empty());
}

#[test]
fn masq_link_local_flags() {
    let config = ok("masqLinkLocal: true\nmasqLinkLocalIPv6: true\n");
    assert!(config.masq_link_local);
    assert!(config.masq_link_local_ipv6);
    let config = ok("masqLinkLocal: false\n");
    assert!(!config.masq_link_local);
}

#[test]
fn resync_interval_takes_go_durations() {
    assert_eq!(
        ok("resyncInterval: 60s").resync_interval,
        Duration::from_secs(60)
    );
    assert_eq!(
        ok("resyncInterval: 1h30m").resync_interval,
        Duration::from_secs(5400)
    );
    assert_eq!(
        ok("resyncInterval: 1s").resync_interval,
        Duration::from_secs(1)
    );
    assert_eq!(
        ok("resyncInterval: 1.5s").resync_interval,
        Duration::from_millis(1500)
    );
}

#[test]
fn cidr_limit_bounds_the_entries() {
    let config = ok("cidrLimit: 2\nnonMasqueradeCIDRs: [10.0.0.0/8, 172.16.0.0/12]\n");
    assert_eq!(config.cidr_limit, 2);
    let e = err("cidrLimit: 2\nnonMasqueradeCIDRs: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16]");
    assert_eq!(
        e.problems(),
        [Problem::OverCidrLimit {
            keys: "nonMasqueradeCIDRs",
            count: 3,
            limit: 2
        }]
    );
    assert_eq!(
        e.to_string(),
        "nonMasqueradeCIDRs: 3 entries, over the cidrLimit of 2"
    );
}

// === masqueradeCIDRs ===

#[test]
fn masquerade_cidrs_are_read_in_order_and_default_to_none() {
    assert!(Config::default().masquerade_cidrs.is_empty());
    let config =
        ok("nonMasqueradeCIDRs: [10.0.0.0/8]\nmasqueradeCIDRs: [10.5.0.0/16, 8.8.8.0/24]\n");
    assert_eq!(
        config.masquerade_cidrs,
        nets(&["10.5.0.0/16", "8.8.8.0/24"])
    );
    // The other list keeps its default when absent.
    assert_eq!(
        ok("masqueradeCIDRs: [10.5.0.0/16]")
            .non_masquerade_cidrs
            .len(),
        11
    );
    assert!(ok("masqueradeCIDRs:").masquerade_cidrs.is_empty());
}

#[test]
fn the_same_prefix_in_both_lists_names_both_keys_and_the_prefix() {
    let e = err(
        "nonMasqueradeCIDRs: [10.0.0.0/8, 10.5.0.0/16]\nmasqueradeCIDRs: [8.8.8.0/24, 10.5.0.0/16]",
    );
    assert_eq!(
        e.to_string(),
        "masqueradeCIDRs[1]: 10.5.0.0/16 is also nonMasqueradeCIDRs[1]; a destination cannot \
         both keep the pod address and be masqueraded, remove it from one of the lists"
    );
    // Nested prefixes are what the list is for: the longest decides.
    ok("nonMasqueradeCIDRs: [10.0.0.0/8, 10.5.3.0/24]\nmasqueradeCIDRs: [10.5.0.0/16]");
}

#[test]
fn masquerade_cidrs_are_checked_like_the_other_lists() {
    let e = err("masqueradeCIDRs: [10.5.0.1/16, fd00::/8, nope]");
    let lines: Vec<String> = e.to_string().lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(lines[0].starts_with(
        "masqueradeCIDRs[0]: \"10.5.0.1/16\" has host bits set; did you mean 10.5.0.0/16?"
    ));
    assert!(lines[1].starts_with("masqueradeCIDRs[1]: \"fd00::/8\" is an IPv6 CIDR"));
    assert!(lines[2].starts_with("masqueradeCIDRs[2]: \"nope\" is not a CIDR"));
    let v6 = parse(b"masqueradeCIDRs: [fd00:5::/32]", &ipv6_opts()).unwrap();
    assert_eq!(v6.config.masquerade_cidrs, nets(&["fd00:5::/32"]));
}

#[test]
fn cidr_limit_counts_both_destination_lists() {
    ok("cidrLimit: 3\nnonMasqueradeCIDRs: [10.0.0.0/8, 172.16.0.0/12]\nmasqueradeCIDRs: [10.5.0.0/16]");
    let e = err("cidrLimit: 2\nnonMasqueradeCIDRs: [10.0.0.0/8, 172.16.0.0/12]\nmasqueradeCIDRs: [10.5.0.0/16]");
    assert_eq!(
        e.to_string(),
        "nonMasqueradeCIDRs and masqueradeCIDRs: 3 entries, over the cidrLimit of 2"
    );
    // With the default set, only the written list counts.
    ok("cidrLimit: 1\nmasqueradeCIDRs: [10.5.0.0/16]");
}

#[test]
fn cidr_limit_does_not_count_link_local_or_the_default_set() {
    // Absent key: the 11 default ranges are not the file's entries.
    let config = ok("cidrLimit: 1\nmasqLinkLocal: false\n");
    assert_eq!(config.non_masquerade_cidrs.len(), 11);
    assert_eq!(ok("cidrLimit: 0\nnonMasqueradeCIDRs: []").cidr_limit, 0);
}

#[test]
fn non_masquerade_src_cidrs() {
    let config = ok("nonMasqueradeSrcCIDRs: [10.244.5.0/24]");
    assert_eq!(config.non_masquerade_src_cidrs, nets(&["10.244.5.0/24"]));
    // It does not touch the destination list.
    assert_eq!(config.non_masquerade_cidrs, RESERVED_CIDRS.to_vec());
    let e = err("nonMasqueradeSrcCIDRs: [10.244.5.1/24]");
    assert!(e.to_string().contains("nonMasqueradeSrcCIDRs[0]"), "{e}");
    assert!(e.to_string().contains("10.244.5.0/24"), "{e}");
}

mod parsing;
