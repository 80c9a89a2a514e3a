//! Translation itself: TCP, UDP and ping leave with the node's address on a port of the range
//! and their replies come back to the pod; ports drawn at random, distinct for two pods, never
//! one the node's own flows hold.

use std::net::Ipv4Addr;

use masq_datapath::ebpf::types::Reason;

use crate::harness::*;

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn tcp_is_masqueraded_and_the_reply_comes_back() {
    let h = Harness::new(&base_contents());
    let (rc, out) = h.egress(&tcp(POD, 40000, EXTERNAL, 80, b"hello"));
    assert_eq!(rc, CONTINUE);
    let seen = inspect(&out);
    assert_eq!((seen.src, seen.dst, seen.dport), (NODE, EXTERNAL, 80));
    assert!(in_default_ports(seen.sport), "port {}", seen.sport);

    let (rc, back) = h.ingress(&tcp(EXTERNAL, 80, NODE, seen.sport, b"world"));
    assert_eq!(rc, CONTINUE);
    assert_eq!(
        inspect(&back),
        Seen {
            src: EXTERNAL,
            sport: 80,
            dst: POD,
            dport: 40000
        }
    );
    assert_eq!(h.count(Reason::TranslatedEgress), 1);
    assert_eq!(h.count(Reason::TranslatedIngress), 1);
    assert_eq!(h.count(Reason::NatCreated), 1);
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn a_port_outside_the_range_is_replaced_and_restored() {
    let h = Harness::new(&base_contents());
    let (_, out) = h.egress(&udp(POD, 53, EXTERNAL, 5353, b"query"));
    let seen = inspect(&out);
    assert_eq!(seen.src, NODE);
    assert!(
        in_default_ports(seen.sport),
        "port {} outside the range",
        seen.sport
    );
    // The same flow keeps its translation.
    let (_, again) = h.egress(&udp(POD, 53, EXTERNAL, 5353, b"query 2"));
    assert_eq!(inspect(&again).sport, seen.sport);
    let (_, back) = h.ingress(&udp(EXTERNAL, 5353, NODE, seen.sport, b"answer"));
    assert_eq!(
        inspect(&back),
        Seen {
            src: EXTERNAL,
            sport: 5353,
            dst: POD,
            dport: 53
        }
    );
}

/// Like a fully-random masquerade: the pod's own port gets no preference, so a pod never holds
/// a port the node may bind later; ports are drawn over the whole table, never a NodePort.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn translated_ports_are_drawn_at_random_from_the_table() {
    let h = Harness::new(&base_contents());
    let mut kept = 0;
    let mut ports = std::collections::HashSet::new();
    for i in 0..200u16 {
        let dst = Ipv4Addr::new(203, 0, 113, 100 + u8::try_from(i % 100).unwrap());
        let (_, out) = h.egress(&udp(POD, 5000 + i, dst, 53, b"q"));
        let port = inspect(&out).sport;
        assert!(in_default_ports(port), "port {port}");
        kept += usize::from(port == 5000 + i);
        ports.insert(port);
    }
    assert!(kept <= 1, "{kept} of 200 flows kept their port");
    assert!(ports.len() >= 195, "only {} distinct ports", ports.len());
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn a_udp_datagram_without_checksum_keeps_none() {
    let h = Harness::new(&base_contents());
    let mut frame = udp(POD, 53, EXTERNAL, 5353, b"no checksum");
    frame[14 + 20 + 6] = 0;
    frame[14 + 20 + 7] = 0;
    let (_, out) = h.egress(&frame);
    assert_eq!(&out[14 + 20 + 6..14 + 20 + 8], &[0, 0]);
    assert_eq!(inspect(&out).src, NODE);
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn icmp_echo_uses_the_identifier_as_port() {
    let h = Harness::new(&base_contents());
    let (_, out) = h.egress(&echo_request(POD, EXTERNAL, 0x1234, 1));
    let seen = inspect(&out);
    assert_eq!(seen.src, NODE);
    assert!(in_default_ports(seen.sport));
    let (_, back) = h.ingress(&echo_reply(EXTERNAL, NODE, seen.sport, 1));
    assert_eq!(
        inspect(&back),
        Seen {
            src: EXTERNAL,
            sport: 0,
            dst: POD,
            dport: 0x1234
        }
    );
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn two_pods_with_the_same_port_to_the_same_destination_get_distinct_ports() {
    let mut contents = base_contents();
    // Two ports only: the second pod's flow must take the one the first left.
    contents.set_ports(&[masq_datapath::PortRange {
        first: 41000,
        last: 41001,
    }]);
    let h = Harness::new(&contents);
    let (_, a) = h.egress(&tcp(POD, 40000, EXTERNAL, 80, b""));
    let (_, b) = h.egress(&tcp(POD2, 40000, EXTERNAL, 80, b""));
    let (a, b) = (inspect(&a), inspect(&b));
    assert_ne!(a.sport, b.sport);
    let (_, back_a) = h.ingress(&tcp(EXTERNAL, 80, NODE, a.sport, b""));
    let (_, back_b) = h.ingress(&tcp(EXTERNAL, 80, NODE, b.sport, b""));
    assert_eq!(inspect(&back_a).dst, POD);
    assert_eq!(
        inspect(&back_b),
        Seen {
            src: EXTERNAL,
            sport: 80,
            dst: POD2,
            dport: 40000
        }
    );
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn the_node_own_flow_reserves_its_port() {
    let mut contents = base_contents();
    // The node's port and one more: a pod must get the other.
    contents.set_ports(&[masq_datapath::PortRange {
        first: 40000,
        last: 40001,
    }]);
    let h = Harness::new(&contents);
    let own = udp(NODE, 40000, EXTERNAL, 53, b"node query");
    assert_eq!(h.egress(&own).1, own);
    assert_eq!(h.count(Reason::HostPortReserved), 1);
    let (_, pod) = h.egress(&udp(POD, 40000, EXTERNAL, 53, b"pod query"));
    assert_ne!(
        inspect(&pod).sport,
        40000,
        "the node's port was handed to a pod"
    );
    let reply = udp(EXTERNAL, 53, NODE, 40000, b"for the node");
    assert_eq!(
        h.ingress(&reply).1,
        reply,
        "a reply to the node was translated"
    );
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn a_node_flow_colliding_with_a_pod_translation_is_moved_to_another_port() {
    let h = Harness::new(&base_contents());
    let port = h.port_of(&udp(POD, 40000, EXTERNAL, 53, b"pod"));
    // The node's kernel picks the same port towards the same destination, not knowing.
    let (rc, node) = h.egress(&udp(NODE, port, EXTERNAL, 53, b"node"));
    assert_eq!(rc, CONTINUE);
    let moved = inspect(&node);
    assert_eq!(moved.src, NODE);
    assert_ne!(moved.sport, port);
    assert_eq!(h.count(Reason::HostPortRemapped), 1);
    // Each side gets its own replies.
    let (_, to_node) = h.ingress(&udp(EXTERNAL, 53, NODE, moved.sport, b""));
    assert_eq!(
        (inspect(&to_node).dst, inspect(&to_node).dport),
        (NODE, port)
    );
    let (_, to_pod) = h.ingress(&udp(EXTERNAL, 53, NODE, port, b""));
    assert_eq!((inspect(&to_pod).dst, inspect(&to_pod).dport), (POD, 40000));
}
