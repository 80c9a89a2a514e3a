//! IPv6 (issue 17), one case per protocol and decision, as `cases` has them for IPv4: the same
//! engine rules with 128-bit addresses, every transport checksum (ICMPv6's pseudo-header
//! included) recomputed by etherparse.

use std::net::Ipv6Addr;

use ipnet::Ipv6Net;
use masq_datapath::ebpf::types::{NatTuple6, Reason, CFG_IPV6, CFG_POD_CIDRS};
use masq_datapath::ebpf::FlowState;

use crate::harness::*;
use crate::harness6::*;

fn translated(h: &Harness, frame: &[u8]) -> Seen6 {
    let (rc, out) = h.egress(frame);
    assert_eq!(rc, CONTINUE);
    let seen = inspect6(&out);
    assert_eq!(seen.src, NODE6, "not translated");
    seen
}

fn untouched(h: &Harness, frame: &[u8]) {
    assert_eq!(h.egress(frame), (CONTINUE, frame.to_vec()), "translated");
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn tcp6_is_masqueraded_and_the_reply_comes_back() {
    let h = Harness::new(&base_contents6());
    let seen = translated(&h, &tcp6(POD6, 40000, EXTERNAL6, 80, "S", b"hello"));
    assert_eq!((seen.src, seen.dst, seen.dport), (NODE6, EXTERNAL6, 80));
    assert!(in_default_ports(seen.sport), "port {}", seen.sport);
    let (rc, back) = h.ingress(&tcp6(EXTERNAL6, 80, NODE6, seen.sport, "SA", b"world"));
    assert_eq!(rc, CONTINUE);
    assert_eq!(
        inspect6(&back),
        Seen6 {
            src: EXTERNAL6,
            sport: 80,
            dst: POD6,
            dport: 40000
        }
    );
    assert_eq!(h.count(Reason::TranslatedEgress), 1);
    assert_eq!(h.count(Reason::TranslatedIngress), 1);
    assert_eq!(h.count(Reason::NatCreated), 1);
    // The IPv4 table is untouched; the IPv6 one holds the pair.
    assert!(h.maps.nat_egress_entries().unwrap().is_empty());
    assert_eq!(h.maps.nat6_egress_entries().unwrap().len(), 1);
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn udp6_port_outside_the_range_is_replaced_and_restored() {
    let h = Harness::new(&base_contents6());
    let seen = translated(&h, &udp6(POD6, 53, EXTERNAL6, 5353, b"query"));
    assert!(
        in_default_ports(seen.sport),
        "port {} outside the range",
        seen.sport
    );
    assert_eq!(
        translated(&h, &udp6(POD6, 53, EXTERNAL6, 5353, b"q2")).sport,
        seen.sport
    );
    let (_, back) = h.ingress(&udp6(EXTERNAL6, 5353, NODE6, seen.sport, b"answer"));
    assert_eq!(
        inspect6(&back),
        Seen6 {
            src: EXTERNAL6,
            sport: 5353,
            dst: POD6,
            dport: 53
        }
    );
}

/// ICMPv6 echo: the identifier is the port, and the checksum (which covers a pseudo-header in
/// IPv6, unlike ICMPv4's) follows both the address and the identifier.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn icmpv6_echo_uses_the_identifier_as_port() {
    let h = Harness::new(&base_contents6());
    let seen = translated(&h, &echo6_request(POD6, EXTERNAL6, 0x1234, 1));
    assert!(in_default_ports(seen.sport));
    let (_, back) = h.ingress(&echo6_reply(EXTERNAL6, NODE6, seen.sport, 1));
    assert_eq!(
        inspect6(&back),
        Seen6 {
            src: EXTERNAL6,
            sport: 0,
            dst: POD6,
            dport: 0x1234
        }
    );
    let entries = list(&h.maps);
    assert_eq!(entries.len(), 2);
    assert!(
        entries.iter().all(|e| e.state == FlowState::Icmp),
        "{entries:?}"
    );
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn two_pods_with_the_same_port_get_distinct_ports() {
    let h = Harness::new(&base_contents6());
    let a = translated(&h, &tcp6(POD6, 40000, EXTERNAL6, 80, "S", b""));
    let b = translated(&h, &tcp6(POD6_2, 40000, EXTERNAL6, 80, "S", b""));
    assert_ne!(a.sport, b.sport);
    let (_, back_b) = h.ingress(&tcp6(EXTERNAL6, 80, NODE6, b.sport, "SA", b""));
    assert_eq!(
        (inspect6(&back_b).dst, inspect6(&back_b).dport),
        (POD6_2, 40000)
    );
}

/// Every keep reason of docs/decision.md, with IPv6 addresses; fe80::/10 follows
/// masqLinkLocalIPv6 (not masqLinkLocal).
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn kept_destinations_and_sources_leave_untouched() {
    let mut contents = base_contents6();
    contents
        .v6
        .nonmasq_src
        .insert("fd00:10:244:9::/64".parse::<Ipv6Net>().unwrap());
    contents.config.flags |= masq_datapath::ebpf::types::CFG_SRC_CIDRS6;
    let mut h = Harness::new(&contents);
    let link_local: Ipv6Addr = "fe80::1".parse().unwrap();
    let cases = [
        (
            tcp6(POD6, 40000, KEPT6, 80, "S", b""),
            Reason::KeepNonMasqDst,
        ),
        (
            tcp6(POD6, 40000, link_local, 80, "S", b""),
            Reason::KeepLinkLocal,
        ),
        (
            tcp6(
                "fd00:10:244:9::9".parse().unwrap(),
                1,
                EXTERNAL6,
                80,
                "S",
                b"",
            ),
            Reason::KeepNonMasqSrc,
        ),
        (tcp6(POD6, 40001, NODE6, 80, "S", b""), Reason::KeepLocal),
    ];
    for (frame, reason) in &cases {
        untouched(&h, frame);
        assert_eq!(h.count(*reason), 1, "{reason:?}");
    }
    // masqLinkLocal (IPv4's range) changes nothing for IPv6.
    h.set_link_local(true);
    untouched(&h, &tcp6(POD6, 40002, link_local, 80, "S", b""));
    let mut c = h.maps.read().unwrap();
    c.v6.dst_policy.remove(&link_local6());
    h.maps.apply(&c).unwrap();
    translated(&h, &tcp6(POD6, 40003, link_local, 80, "S", b""));
}

/// --pod-cidr of one family only: a source of the other family is no pod (docs/decision.md).
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn pod_cidrs_of_either_family_decide_who_is_a_pod() {
    let mut contents = base_contents6();
    contents.pod_cidrs.insert("10.244.1.0/24".parse().unwrap());
    contents.config.flags |= CFG_POD_CIDRS;
    let mut h = Harness::new(&contents);
    untouched(&h, &tcp6(POD6, 1000, EXTERNAL6, 80, "S", b""));
    assert_eq!(h.count(Reason::KeepNotAPod), 1);
    let mut c = h.maps.read().unwrap();
    c.v6.pod_cidrs.insert("fd00:10:244:1::/64".parse().unwrap());
    h.maps.apply(&c).unwrap();
    translated(&h, &tcp6(POD6, 1001, EXTERNAL6, 80, "S", b""));
    untouched(
        &h,
        &tcp6("fd00:99::1".parse().unwrap(), 1, EXTERNAL6, 80, "S", b""),
    );
}

/// Without --enable-ipv6 every IPv6 packet passes as it did before IPv6 existed in masq.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn without_ipv6_enabled_ipv6_passes_untouched_and_unrecorded() {
    let mut contents = base_contents6();
    contents.config.flags &= !CFG_IPV6;
    let h = Harness::new(&contents);
    untouched(&h, &tcp6(POD6, 40000, EXTERNAL6, 80, "S", b""));
    let inbound = udp6(EXTERNAL6, 5000, POD6, 53, b"q");
    assert_eq!(h.ingress(&inbound), (CONTINUE, inbound.clone()));
    assert_eq!(h.count(Reason::PassUnsupported), 1);
    assert!(list(&h.maps).is_empty());
    // The counterfactual: the same packet with IPv6 on.
    let on = Harness::new(&base_contents6());
    translated(&on, &tcp6(POD6, 40000, EXTERNAL6, 80, "S", b""));
}

/// Neighbour discovery, router advertisements and MLD are never touched, either way, and
/// leave nothing in the table; the pod's own messages included.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn ndp_mld_and_router_advertisements_are_never_touched() {
    let h = Harness::new(&base_contents6());
    let solicited: Ipv6Addr = "ff02::1:ff00:10".parse().unwrap();
    let all_nodes: Ipv6Addr = "ff02::1".parse().unwrap();
    let mld: Ipv6Addr = "ff02::16".parse().unwrap();
    let target = EXTERNAL6.octets();
    let mut ns_body = vec![0u8; 4];
    ns_body.extend_from_slice(&target);
    let frames = [
        icmp6_raw(POD6, solicited, 135, 0, &ns_body), // neighbour solicitation
        icmp6_raw(POD6, EXTERNAL6, 136, 0, &ns_body), // neighbour advertisement
        icmp6_raw(POD6, "ff02::2".parse().unwrap(), 133, 0, &[0; 4]), // router solicitation
        icmp6_raw(
            EXTERNAL6,
            all_nodes,
            134,
            0,
            &[64, 0, 7, 8, 0, 0, 0, 0, 0, 0, 0, 0],
        ), // RA
        icmp6_raw(POD6, mld, 143, 0, &[0; 4]),        // MLDv2 report
        icmp6_raw(POD6, mld, 131, 0, &[0; 20]),       // MLDv1 report
        icmp6_raw(POD6, EXTERNAL6, 137, 0, &[0; 36]), // redirect
    ];
    for frame in &frames {
        assert_eq!(h.egress(frame), (CONTINUE, frame.clone()), "egress");
        assert_eq!(h.ingress(frame), (CONTINUE, frame.clone()), "ingress");
    }
    assert!(list(&h.maps).is_empty());
    assert_eq!(h.count(Reason::TranslatedEgress), 0);

    // Not even one whose body looks like an error quoting a translated flow.
    let (_, sent) = h.egress(&udp6(POD6, 1234, EXTERNAL6, 53, b""));
    let error_like = |icmp_type: u8| {
        let mut body = vec![0u8; 4];
        body.extend_from_slice(&sent[14..]);
        icmp6_raw(EXTERNAL6, NODE6, icmp_type, 0, &body)
    };
    assert_eq!(
        inspect6(&h.ingress(&error_like(1)).1).dst,
        POD6,
        "a real error"
    );
    for icmp_type in [133, 134, 135, 136, 137, 130, 143] {
        let frame = error_like(icmp_type);
        assert_eq!(
            h.ingress(&frame),
            (CONTINUE, frame.clone()),
            "type {icmp_type}"
        );
    }
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn the_node_own_flow_reserves_its_port_and_a_collision_moves_it() {
    let h = Harness::new(&base_contents6());
    let own = udp6(NODE6, 40000, EXTERNAL6, 53, b"node");
    untouched(&h, &own);
    assert_eq!(h.count(Reason::HostPortReserved), 1);
    assert_ne!(
        translated(&h, &udp6(POD6, 40000, EXTERNAL6, 53, b"pod")).sport,
        40000
    );
    let reply = udp6(EXTERNAL6, 53, NODE6, 40000, b"for the node");
    assert_eq!(h.ingress(&reply), (CONTINUE, reply.clone()));

    // A pod holds a port first; the node's kernel picks it too, not knowing: the node moves.
    let held = translated(&h, &udp6(POD6, 41000, EXTERNAL6, 53, b"pod")).sport;
    let moved = translated(&h, &udp6(NODE6, held, EXTERNAL6, 53, b"node"));
    assert_ne!(moved.sport, held);
    assert_eq!(h.count(Reason::HostPortRemapped), 1);
    let (_, to_node) = h.ingress(&udp6(EXTERNAL6, 53, NODE6, moved.sport, b""));
    assert_eq!(
        (inspect6(&to_node).dst, inspect6(&to_node).dport),
        (NODE6, held)
    );
}

/// A UDP checksum of 0 is invalid in IPv6; masq never turns it into a valid-looking one.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn a_udp6_datagram_with_a_zero_checksum_keeps_it() {
    let h = Harness::new(&base_contents6());
    let mut frame = udp6(POD6, 53, EXTERNAL6, 5353, b"zero");
    frame[14 + 40 + 6] = 0;
    frame[14 + 40 + 7] = 0;
    let (_, out) = h.egress(&frame);
    assert_eq!(&out[14 + 40 + 6..14 + 40 + 8], &[0, 0]);
    assert_eq!(inspect6(&out).src, NODE6);
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn truncated_headers_are_dropped_and_counted() {
    let h = Harness::new(&base_contents6());
    let frame = tcp6(POD6, 40000, EXTERNAL6, 80, "S", b"");
    assert_eq!(h.egress(&frame[..14 + 40 + 10]).0, SHOT);
    // A fragment header cut short.
    let udp = udp6(POD6, 53, EXTERNAL6, 5353, &[0; 64]);
    let (first, _) = fragment6(&udp, 32);
    assert_eq!(h.egress(&first[..14 + 40 + 4]).0, SHOT);
    assert_eq!(h.count(Reason::DropTruncated), 2);
}

/// The GC and `masq nat list` cover IPv6: lifetimes by state, as for IPv4.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn the_gc_ages_ipv6_pairs_by_state_and_nat_list_shows_them() {
    let mut h = Harness::new(&base_contents6());
    let port = translated(&h, &tcp6(POD6, 40000, EXTERNAL6, 80, "S", b"")).sport;
    h.ingress(&tcp6(EXTERNAL6, 80, NODE6, port, "SA", b""));
    translated(&h, &udp6(POD6, 40000, EXTERNAL6, 53, b""));
    assert_eq!(
        inspect(&h.egress(&tcp(POD, 40000, EXTERNAL, 80, b"")).1).src,
        NODE
    );
    let entries = list(&h.maps);
    assert_eq!(entries.len(), 6, "{entries:?}");
    let line = entries
        .iter()
        .find(|e| e.original.is_ipv6() && e.original.proto == TCP)
        .unwrap()
        .to_string();
    assert!(
        line.starts_with(&format!(
            "TCP OUT [fd00:10:244:1::5]:40000 -> [2001:db8::10]:80 XLATE_SRC [2001:db8:18::2]:{port}"
        )),
        "{line}"
    );
    // 2 minutes on: the unanswered UDP flow and the unanswered IPv4 SYN are gone.
    let report = gc_after(&mut h.maps, 120);
    assert_eq!(report.expired_pairs, 2, "{report:?}");
    let left = list(&h.maps);
    assert_eq!(left.len(), 2);
    assert!(left
        .iter()
        .all(|e| e.original.is_ipv6() && e.state == FlowState::TcpEstablished));

    // A lost reverse half comes back through the GC.
    let reverse = NatTuple6::new(TCP, EXTERNAL6, 80, NODE6, port);
    h.maps.nat6_ingress_mut().remove(&reverse).unwrap();
    assert_eq!(gc_after(&mut h.maps, 0).restored_reverse, 1);
    let (_, back) = h.ingress(&tcp6(EXTERNAL6, 80, NODE6, port, "A", b""));
    assert_eq!(inspect6(&back).dst, POD6);
}
