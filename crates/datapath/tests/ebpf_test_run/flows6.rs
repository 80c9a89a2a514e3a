//! Who started an IPv6 flow (issue 13's guarantees) and its life cycle (issue 14's), as
//! `direction` and `lifecycle` have them for IPv4. Each case also sends the counterfactual: the
//! same pod packet without the history, which must be translated.

use std::net::Ipv6Addr;

use ipnet::Ipv6Net;
use masq_datapath::ebpf::types::{NatTuple6, Reason};
use masq_datapath::ebpf::FlowState;

use crate::harness::*;
use crate::harness6::*;

const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 7, 0, 0, 0, 0, 77);

fn untouched(h: &Harness, frame: &[u8]) {
    assert_eq!(h.egress(frame), (CONTINUE, frame.to_vec()), "translated");
}

fn translated(h: &Harness, frame: &[u8]) -> Seen6 {
    let (rc, out) = h.egress(frame);
    assert_eq!(rc, CONTINUE);
    let seen = inspect6(&out);
    assert_eq!(seen.src, NODE6, "not translated");
    seen
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn an_inbound_udp6_flow_is_answered_from_the_pod_address_and_port() {
    let h = Harness::new(&base_contents6());
    let query = udp6(CLIENT6, 40000, POD6, 5353, b"question");
    assert_eq!(h.ingress(&query), (CONTINUE, query.clone()));
    assert_eq!(h.count(Reason::InboundTracked), 1);
    for _ in 0..3 {
        untouched(&h, &udp6(POD6, 5353, CLIENT6, 40000, b"answer"));
    }
    assert_eq!(h.count(Reason::PassTracked), 3);
    let entries = list(&h.maps);
    assert!(entries.len() == 1 && entries[0].inbound, "{entries:?}");
    assert_eq!(h.count(Reason::NatCreated), 0);
    translated(&h, &udp6(POD6, 5353, CLIENT6, 40001, b"unasked"));
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn an_inbound_tcp6_connection_keeps_the_pod_address() {
    let h = Harness::new(&base_contents6());
    let syn = tcp6(CLIENT6, 40000, POD6, 8080, "S", b"");
    assert_eq!(h.ingress(&syn), (CONTINUE, syn.clone()));
    untouched(&h, &tcp6(POD6, 8080, CLIENT6, 40000, "SA", b""));
    h.ingress(&tcp6(CLIENT6, 40000, POD6, 8080, "A", b"request"));
    untouched(&h, &tcp6(POD6, 8080, CLIENT6, 40000, "A", b"response"));
    assert_eq!(h.count(Reason::NatCreated), 0);
    translated(&h, &tcp6(POD6, 8081, CLIENT6, 40000, "S", b""));
}

/// The SYN came in where masq did not see it: the pod's SYN-ACK tells the story.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn a_pod_syn_ack_without_a_record_is_passed_and_recorded() {
    let h = Harness::new(&base_contents6());
    untouched(&h, &tcp6(POD6, 8080, CLIENT6, 40000, "SA", b""));
    assert_eq!(h.count(Reason::PassInboundReply), 1);
    untouched(&h, &tcp6(POD6, 8080, CLIENT6, 40000, "A", b"response"));
    assert_eq!(h.count(Reason::PassTracked), 1);
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn a_crafted_inbound_packet_cannot_unmask_a_translated_flow() {
    let h = Harness::new(&base_contents6());
    let first = translated(&h, &udp6(POD6, 5353, CLIENT6, 40000, b"mine"));
    let crafted = udp6(CLIENT6, 40000, POD6, 5353, b"pretend you began it");
    assert_eq!(h.ingress(&crafted), (CONTINUE, crafted.clone()));
    assert_eq!(h.count(Reason::InboundTracked), 0);
    assert_eq!(
        translated(&h, &udp6(POD6, 5353, CLIENT6, 40000, b"still")).sport,
        first.sport
    );
}

/// Pings to a pod are answered by the pod's address; multicast, link-local and the node's own
/// addresses are nobody's pod.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn inbound_pings_and_packets_to_no_pod_are_not_translated_or_recorded() {
    let h = Harness::new(&base_contents6());
    let request = echo6_request(CLIENT6, POD6, 7, 1);
    assert_eq!(h.ingress(&request), (CONTINUE, request.clone()));
    untouched(&h, &echo6_reply(POD6, CLIENT6, 7, 1));
    for dst in [
        NODE6,
        "ff02::fb".parse().unwrap(),
        "fe80::5".parse().unwrap(),
    ] {
        let frame = udp6(CLIENT6, 5353, dst, 5353, b"hello");
        assert_eq!(h.ingress(&frame), (CONTINUE, frame.clone()));
    }
    assert_eq!(h.count(Reason::InboundTracked), 0);
    assert!(list(&h.maps).is_empty());
    assert_eq!(
        translated(&h, &echo6_request(POD6, CLIENT6, 7, 1)).src,
        NODE6
    );
}

/// A kept flow is recorded and stays kept when its destination stops being kept; a new one to
/// it is masqueraded. The reply of a kept flow marks its record replied.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn a_kept_flow_stays_kept_when_the_config_changes() {
    let mut kept = base_contents6();
    kept.v6.dst_policy.insert(
        Ipv6Net::new(EXTERNAL6, 128).unwrap(),
        masq_decision::Reason::NonMasqueradeCidr,
    );
    let mut h = Harness::new(&kept);
    let flow = udp6(POD6, 5000, EXTERNAL6, 53, b"q");
    untouched(&h, &flow);
    h.ingress(&udp6(EXTERNAL6, 53, POD6, 5000, b"a"));
    assert_eq!(list(&h.maps)[0].state, FlowState::UdpReplied);
    let tcp_kept = tcp6(POD6, 6000, EXTERNAL6, 443, "S", b"");
    untouched(&h, &tcp_kept);
    h.maps.apply(&base_contents6()).unwrap();
    untouched(&h, &flow);
    untouched(&h, &tcp6(POD6, 6000, EXTERNAL6, 443, "A", b"more"));
    assert_eq!(h.count(Reason::NatCreated), 0);
    translated(&h, &udp6(POD6, 5001, EXTERNAL6, 53, b"q"));
}

fn forward6(sport: u16) -> NatTuple6 {
    NatTuple6::new(TCP, POD6, sport, EXTERNAL6, 80)
}

/// The forward half is gone; the next packet is a plain ACK: translated with its own port.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn an_ack_after_the_forward_half_is_lost_keeps_its_translation() {
    // One port: the search meets the flow's own reverse half and adopts it.
    let mut contents = base_contents6();
    contents.set_ports(&[masq_datapath::PortRange {
        first: 41000,
        last: 41000,
    }]);
    let mut h = Harness::new(&contents);
    translated(&h, &tcp6(POD6, 40000, EXTERNAL6, 80, "S", b""));
    h.maps.nat6_egress_mut().remove(&forward6(40000)).unwrap();
    let seen = translated(&h, &tcp6(POD6, 40000, EXTERNAL6, 80, "A", b"x"));
    assert_eq!(seen.sport, 41000);
    assert_eq!(h.count(Reason::NatMidstream), 1);
    assert_eq!(list(&h.maps).len(), 2, "one pair, whole");
}

/// A reply whose forward half is gone puts it back (at its timestamp refresh), so the pod's
/// next packet keeps the changed port.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn a_reply_restores_a_missing_forward_half() {
    let mut h = Harness::new(&base_contents6());
    let port = translated(&h, &tcp6(POD6, 1234, EXTERNAL6, 80, "S", b"")).sport;
    assert_ne!(port, 1234);
    h.maps.nat6_egress_mut().remove(&forward6(1234)).unwrap();
    let reverse = NatTuple6::new(TCP, EXTERNAL6, 80, NODE6, port);
    let mut entry = h.maps.nat6_ingress_mut().get(&reverse, 0).unwrap();
    entry.last_seen = 0;
    h.maps.nat6_ingress_mut().insert(reverse, entry, 0).unwrap();
    let (_, back) = h.ingress(&tcp6(EXTERNAL6, 80, NODE6, port, "SA", b""));
    assert_eq!((inspect6(&back).dst, inspect6(&back).dport), (POD6, 1234));
    assert_eq!(h.count(Reason::NatForwardRestored), 1);
    assert_eq!(
        translated(&h, &tcp6(POD6, 1234, EXTERNAL6, 80, "A", b"")).sport,
        port
    );
}

/// A 4-tuple reset by the remote side (so both halves are closing), reused at once by the pod,
/// then idle past the closing grace: the SYN reopened both halves, the pair lives on.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn a_syn_reopens_a_pair_closed_by_rst() {
    let mut h = Harness::new(&base_contents6());
    let port = translated(&h, &tcp6(POD6, 40000, EXTERNAL6, 80, "S", b"")).sport;
    h.ingress(&tcp6(EXTERNAL6, 80, NODE6, port, "SA", b""));
    h.ingress(&tcp6(EXTERNAL6, 80, NODE6, port, "R", b""));
    translated(&h, &tcp6(POD6, 40000, EXTERNAL6, 80, "R", b""));
    translated(&h, &tcp6(POD6, 40000, EXTERNAL6, 80, "S", b""));
    h.ingress(&tcp6(EXTERNAL6, 80, NODE6, port, "SA", b""));
    assert_eq!(gc_after(&mut h.maps, 15).removed(), 0);
    assert_eq!(
        translated(&h, &tcp6(POD6, 40000, EXTERNAL6, 80, "A", b"")).sport,
        port
    );
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn unanswered_syns_expire_after_the_syn_lifetime() {
    let mut h = Harness::new(&base_contents6());
    for port in 0..20 {
        translated(&h, &tcp6(POD6, 41000 + port, EXTERNAL6, 80, "S", b""));
    }
    let port = translated(&h, &tcp6(POD6, 40000, EXTERNAL6, 80, "S", b"")).sport;
    h.ingress(&tcp6(EXTERNAL6, 80, NODE6, port, "SA", b""));
    assert_eq!(gc_after(&mut h.maps, 55).removed(), 0);
    assert_eq!(gc_after(&mut h.maps, 61).expired_pairs, 20);
    assert_eq!(list(&h.maps).len(), 2, "the answered connection stays");
}

/// A pool of N ports serves N flows to one destination; flow N+1 is dropped and counted, and
/// the pool shows up in the pressure report with IPv6 addresses.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn a_pool_of_n_ports_serves_n_ipv6_flows() {
    let mut contents = base_contents6();
    contents.set_ports(&[masq_datapath::PortRange {
        first: 40000,
        last: 40199,
    }]);
    let h = Harness::new(&contents);
    let mut ports = std::collections::HashSet::new();
    let mut dropped = 0;
    for i in 0..210u16 {
        let (rc, out) = h.egress(&udp6(POD6, 1000 + i, EXTERNAL6, 53, b"q"));
        if rc == SHOT {
            dropped += 1;
            continue;
        }
        assert!(ports.insert(inspect6(&out).sport));
    }
    assert_eq!((ports.len(), dropped), (200, 10));
    assert_eq!(h.count(Reason::DropPortExhausted), 10);
    let pressure = masq_datapath::ebpf::nat::pressure(&h.maps).unwrap();
    let pool = pressure.busiest_pool.unwrap();
    assert_eq!(
        (pool.snat_addr, pool.dst_addr, pool.used),
        (NODE6.into(), EXTERNAL6.into(), 200)
    );
    let failed = pressure.last_failure.unwrap();
    assert_eq!(
        (failed.pool.dst_addr, failed.fill()),
        (EXTERNAL6.into(), 1.0)
    );
    assert_eq!(pressure.by_family[1], ("ipv6", 200, 200));
}

/// A node socket bound to a UDP port keeps it: a pod sending from it gets another one. The
/// table holds only the node's port and one more, so the pod's flow must take the other.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn a_port_a_node_ipv6_socket_holds_is_not_given_to_a_pod() {
    let mut contents = base_contents6();
    contents.set_ports(&[
        masq_datapath::PortRange {
            first: 51820,
            last: 51821,
        },
        masq_datapath::PortRange {
            first: 8443,
            last: 8444,
        },
    ]);
    let h = Harness::new(&contents);
    let _wireguard = std::net::UdpSocket::bind("[::]:51820").unwrap();
    assert_ne!(
        translated(&h, &udp6(POD6, 51820, EXTERNAL6, 51820, b"hs")).sport,
        51820
    );
    let _server = std::net::TcpListener::bind("[::]:8443").unwrap();
    assert_ne!(
        translated(&h, &tcp6(POD6, 8443, EXTERNAL6, 443, "S", b"")).sport,
        8443
    );
}
