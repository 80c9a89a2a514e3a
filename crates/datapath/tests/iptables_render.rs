//! Golden tests: `render` of the iptables datapath, compared byte for byte with
//! `tests/golden/iptables-*.txt`. Run with `MASQ_UPDATE_GOLDEN=1` to rewrite them after an
//! intended change, then review the diff.

mod ipt_support;

use std::path::PathBuf;

use ipt_support::{config, desired, nets, RFC1918};
use masq_datapath::ipt::{Backend, Iptables};
use masq_datapath::{Datapath, Desired, PortRange, Routed};

/// As `masq render --datapath iptables` prints it: masq's `ip rule`s follow as comments.
fn rendered(iptables: Iptables, desired: &Desired) -> String {
    Routed::new(iptables).render(desired)
}

fn check_golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("iptables-{name}.txt"));
    if std::env::var_os("MASQ_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    assert_eq!(
        actual,
        expected,
        "render differs from {}; rerun with MASQ_UPDATE_GOLDEN=1 if intended",
        path.display()
    );
}

#[test]
fn default_config() {
    let text = rendered(
        Iptables::new(Backend::Nft),
        &desired(masq_config::Config::default()),
    );
    check_golden("default", &text);
}

#[test]
fn upstream_default_config_without_random_fully() {
    // What kubernetes-sigs/ip-masq-agent writes with its defaults on an iptables before 1.6.2.
    let text = rendered(
        Iptables::new(Backend::Legacy).with_random_fully(false),
        &desired(config(&RFC1918)),
    );
    check_golden("rfc1918-no-random-fully", &text);
}

#[test]
fn custom_config_with_every_option() {
    let mut cfg = config(&["10.0.0.0/8", "203.0.113.0/24", "fd00::/8", "10.0.0.0/8"]);
    cfg.masq_link_local = true;
    cfg.non_masquerade_src_cidrs = nets(&["10.10.0.0/16", "fd10::/64"]);
    let mut d = desired(cfg);
    d.node.enable_ipv6 = true;
    d.node.pod_cidrs = nets(&["10.244.0.0/16", "10.245.0.0/16", "fd20::/64"]);
    d.node.snat_ips = vec!["192.0.2.10".parse().unwrap()];
    d.node.native_routing_cidr = Some("10.96.0.0/12".parse().unwrap());
    let text = rendered(Iptables::new(Backend::Nft), &d);
    check_golden("custom", &text);
}

/// `masqueradeCIDRs`: a peered subnet inside the VPC range that only accepts node addresses
/// (and a subnet inside it that keeps the pod address again), the metadata server out of
/// link-local; with two pod CIDRs and egress routing, so both chains show the forced ranges.
#[test]
fn masquerade_cidrs_come_before_the_return_rules() {
    let mut cfg = config(&["10.0.0.0/8", "10.5.3.0/24", "172.16.0.0/12"]);
    cfg.masquerade_cidrs = nets(&["10.5.0.0/16", "169.254.169.254/32"]);
    let mut d = desired(cfg);
    d.node.pod_cidrs = nets(&["10.244.0.0/16", "10.245.0.0/16"]);
    d.node.egress_interface = Some("eth0".into());
    d.node.uplinks = vec![eni()];
    let text = rendered(Iptables::new(Backend::Nft), &d);
    check_golden("masquerade-cidrs", &text);
}

#[test]
fn custom_chain_name() {
    let mut d = desired(config(&RFC1918));
    d.node.iptables_chain = "IP-MASQ".to_string();
    let text = rendered(Iptables::new(Backend::Nft), &d);
    check_golden("chain-name", &text);
    assert!(!text.contains("IP-MASQ-AGENT"), "{text}");
}

#[test]
fn port_range_split_per_protocol() {
    let ranges = vec![
        PortRange {
            first: 1024,
            last: 29999,
        },
        PortRange {
            first: 32768,
            last: 65535,
        },
    ];
    let mut d = desired(config(&RFC1918));
    d.node.port_ranges = ranges;
    let text = rendered(Iptables::new(Backend::Nft), &d);
    check_golden("port-split", &text);
}

#[test]
fn single_port_range_from_node_settings_needs_no_statistic() {
    let mut d = desired(config(&[]));
    d.node.port_ranges = vec![PortRange {
        first: 32768,
        last: 65535,
    }];
    let text = rendered(Iptables::new(Backend::Nft), &d);
    check_golden("port-range", &text);
    assert!(!text.contains("statistic"), "{text}");
}

/// A pool of two addresses (a `cluster` match each, the same hash as nftables' `jhash`), a
/// port list and two reserved ports (a hostPort and a node service) that split its first range.
#[test]
fn snat_pool_with_port_list_and_reserved_ports() {
    let mut d = desired(config(&RFC1918));
    d.node.pod_cidrs = nets(&["10.244.0.0/16"]);
    d.node.snat_ips = vec!["192.0.2.10".parse().unwrap(), "192.0.2.20".parse().unwrap()];
    d.node.port_ranges = vec![
        PortRange {
            first: 20000,
            last: 29999,
        },
        PortRange {
            first: 40000,
            last: 49999,
        },
    ];
    d.node.reserved_ports = [8443, 25000, 25001].into();
    let text = Iptables::new(Backend::Nft).render(&d);
    check_golden("pool", &text);
    assert!(
        !text.contains("8443"),
        "outside the ranges: nothing to split"
    );
    assert!(
        text.contains(":20000-24999 ") && text.contains(":25002-29999 "),
        "{text}"
    );
}

#[test]
fn egress_routing_adds_the_mangle_chain_and_the_rule() {
    let mut d = desired(config(&RFC1918));
    d.node.enable_ipv6 = true;
    d.node.pod_cidrs = nets(&["10.0.1.0/24", "fd20::/64"]);
    d.node.egress_interface = Some("eth0".into());
    d.node.uplinks = vec![eni()];
    let text = rendered(Iptables::new(Backend::Nft), &d);
    check_golden("egress", &text);
    // Without a secondary uplink, or an egress interface (the other goldens), none of it.
    d.node.uplinks.clear();
    assert!(!rendered(Iptables::new(Backend::Nft), &d).contains("mangle"));
    d.node.uplinks = vec![eni()];
    d.node.egress_interface = None;
    assert!(!rendered(Iptables::new(Backend::Nft), &d).contains("EGRESS"));
}

/// The ENI of a VPC-native node: a secondary uplink, which turns egress routing on.
fn eni() -> masq_datapath::Uplink {
    masq_datapath::Uplink {
        name: "eth1".into(),
        tables: vec![2],
    }
}
