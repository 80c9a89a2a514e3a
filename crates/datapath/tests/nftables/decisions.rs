//! Who leaves with which address: masqueraded and kept destinations, link-local, kept sources,
//! pod CIDRs, the native-routing CIDR, the SNAT address and port range, IPv6, and an open
//! connection across a config change.

use std::net::{IpAddr, SocketAddr};

use masq_datapath::PortRange;
use masq_testbed::probe::TcpSession;
use masq_testbed::{addr, addr6, Topology};

use crate::bed::*;

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn masquerades_all_but_non_masquerade_and_link_local_destinations() {
    masq_testbed::require(NEEDS);
    let mut bed = Bed::new();
    let want = desired(config(&["10.0.0.0/8"]));
    let report = bed.sync(&want);
    assert!(report.changed && !report.drift_repaired);
    assert!(bed.matches(&want));
    assert_eq!(bed.pod_source(addr::INTERNET), NODE);
    assert_eq!(bed.pod_source(addr::INTERNET2), NODE);
    assert_eq!(bed.source(&bed.topology.pod2, addr::INTERNET), NODE);
    assert_eq!(bed.pod_source(addr::PRIVATE), POD, "nonMasqueradeCIDRs");
    assert_eq!(
        bed.pod_source(addr::METADATA),
        POD,
        "link-local is kept by default"
    );
    // The counters tell which step decided: 3 protocols × 2 masqueraded destinations from pod.
    let counters = bed
        .topology
        .node
        .enter(|| bed.nft.counters())
        .unwrap()
        .unwrap();
    let packets = |reason: &str| -> u64 {
        counters
            .iter()
            .filter(|c| c.comment.as_deref() == Some(reason))
            .map(|c| c.packets)
            .sum()
    };
    assert!(packets("masquerade") >= 9, "{counters:?}");
    assert!(packets("non-masquerade-cidr") >= 3, "{counters:?}");
    assert!(packets("link-local") >= 3, "{counters:?}");
    assert_root_untouched();
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn masq_link_local_masquerades_the_metadata_server() {
    masq_testbed::require(NEEDS);
    let mut bed = Bed::new();
    let mut cfg = config(&["10.0.0.0/8"]);
    cfg.masq_link_local = true;
    bed.sync(&desired(cfg));
    assert_eq!(bed.pod_source(addr::METADATA), NODE);
    assert_eq!(bed.pod_source(addr::PRIVATE), POD);
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn non_masquerade_sources_keep_their_address() {
    masq_testbed::require(NEEDS);
    let mut bed = Bed::new();
    let mut cfg = config(&[]);
    cfg.non_masquerade_src_cidrs = nets(&["10.244.1.3/32"]);
    bed.sync(&desired(cfg));
    assert_eq!(bed.source(&bed.topology.pod2, addr::INTERNET), POD2);
    assert_eq!(bed.pod_source(addr::INTERNET), NODE);
    // An empty nonMasqueradeCIDRs masquerades private destinations too.
    assert_eq!(bed.pod_source(addr::PRIVATE), NODE);
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn with_pod_cidrs_only_pods_are_masqueraded() {
    masq_testbed::require(NEEDS);
    let mut bed = Bed::new();
    let mut want = desired(config(&[]));
    // Pretend only the first pod's address is a pod: the second is then "not a pod".
    want.node.pod_cidrs = nets(&["10.244.1.2/32"]);
    bed.sync(&want);
    assert_eq!(bed.pod_source(addr::INTERNET), NODE);
    assert_eq!(bed.source(&bed.topology.pod2, addr::INTERNET), POD2);
    want.node.pod_cidrs = nets(&[addr::POD_CIDR]);
    bed.sync(&want);
    assert_eq!(bed.source(&bed.topology.pod2, addr::INTERNET), NODE);
    // Turning pod CIDRs off removes their set and rule in the same transaction.
    want.node.pod_cidrs.clear();
    want.config.non_masquerade_src_cidrs = nets(&["10.244.1.2/32"]);
    bed.sync(&want);
    assert!(!bed.listing().contains("pod-v4"));
    assert_eq!(bed.source(&bed.topology.pod2, addr::INTERNET), NODE);
    assert_eq!(bed.pod_source(addr::INTERNET), POD);
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn native_routing_cidr_is_never_masqueraded() {
    masq_testbed::require(NEEDS);
    let mut bed = Bed::new();
    let mut want = desired(config(&[]));
    want.node.native_routing_cidr = Some("10.200.0.0/16".parse().unwrap());
    bed.sync(&want);
    assert_eq!(bed.pod_source(addr::PRIVATE), POD);
    assert_eq!(bed.pod_source(addr::INTERNET), NODE);
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn snat_ip_and_port_range_are_used() {
    masq_testbed::require(NEEDS);
    let mut bed = Bed::new();
    let node = &bed.topology.node;
    node.ip(&["addr", "add", "172.30.0.100/24", "dev", "eth0"])
        .unwrap();
    let mut want = desired(config(&[]));
    want.node.snat_ips = vec!["172.30.0.100".parse().unwrap()];
    want.node.port_ranges = vec![PortRange {
        first: 40000,
        last: 40099,
    }];
    bed.sync(&want);
    assert_eq!(
        bed.pod_source(addr::INTERNET),
        IpAddr::from([172, 30, 0, 100])
    );
    for _ in 0..5 {
        let server = SocketAddr::new(addr::INTERNET.into(), PORT);
        let mut session = TcpSession::connect(&bed.topology.pod, server).unwrap();
        let seen = session.observed_source().unwrap();
        assert!((40000..=40099).contains(&seen.port()), "source port {seen}");
    }
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn ipv6_is_masqueraded_when_enabled() {
    masq_testbed::require(NEEDS);
    let mut bed = Bed::with(Topology::builder().ipv6(true));
    let mut want = desired(config(&["10.0.0.0/8", "fd00::/8"]));
    // Without --enable-ipv6 IPv6 passes untouched.
    bed.sync(&want);
    assert_eq!(bed.pod_source(addr6::INTERNET), IpAddr::from(addr6::POD));
    want.node.enable_ipv6 = true;
    bed.sync(&want);
    assert_eq!(bed.pod_source(addr6::INTERNET), IpAddr::from(addr6::NODE));
    assert_eq!(bed.pod_source(addr6::PRIVATE), IpAddr::from(addr6::POD));
    assert_eq!(bed.pod_source(addr::INTERNET), NODE);
    assert_eq!(bed.pod_source(addr::PRIVATE), POD);
    want.node.pod_cidrs = nets(&[addr::POD_CIDR, addr6::POD_CIDR]);
    bed.sync(&want);
    assert_eq!(bed.pod_source(addr6::INTERNET), IpAddr::from(addr6::NODE));
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn existing_connections_keep_their_translation_across_a_change() {
    masq_testbed::require(NEEDS);
    let mut bed = Bed::new();
    bed.sync(&desired(config(&[])));
    let server = SocketAddr::new(addr::INTERNET.into(), PORT);
    let mut session = TcpSession::connect(&bed.topology.pod, server).unwrap();
    assert_eq!(session.observed_source().unwrap().ip(), NODE);
    bed.sync(&desired(config(&["203.0.113.0/24"])));
    // conntrack keeps the translation of the open connection; new ones follow the new config.
    assert_eq!(session.observed_source().unwrap().ip(), NODE);
    assert_eq!(bed.pod_source(addr::INTERNET), POD);
}
