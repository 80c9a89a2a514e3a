//! Who started a flow (issue 13): a flow that began outside, towards a pod, is never translated,
//! whatever protocol, and no crafted packet makes the programs pass a flow they translate.
//! Each case also sends the same pod packet without the inbound history, which must be
//! translated: so a case fails when the programs stop telling the two apart.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use masq_datapath::ebpf::types::{Reason, CFG_POD_CIDRS};

use crate::harness::*;

/// A client at an address masq masquerades towards (not in 10.0.0.0/8).
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 77);

fn untouched(h: &Harness, frame: &[u8]) {
    assert_eq!(h.egress(frame), (CONTINUE, frame.to_vec()), "translated");
}

fn translated(h: &Harness, frame: &[u8]) -> Seen {
    let (rc, out) = h.egress(frame);
    assert_eq!(rc, CONTINUE);
    let seen = inspect(&out);
    assert_eq!(seen.src, NODE, "not translated");
    seen
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn an_inbound_udp_flow_is_answered_from_the_pod_address_and_port() {
    let h = Harness::new(&base_contents());
    let query = udp(CLIENT, 40000, POD, 5353, b"question");
    assert_eq!(h.ingress(&query), (CONTINUE, query.clone()));
    assert_eq!(h.count(Reason::InboundTracked), 1);
    for _ in 0..3 {
        untouched(&h, &udp(POD, 5353, CLIENT, 40000, b"answer"));
    }
    assert_eq!(h.count(Reason::PassTracked), 3);
    // No NAT pair, no port: one forward-only entry, marked inbound and replied.
    let entries = list(&h.maps);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(entries[0].pass && entries[0].inbound, "{:?}", entries[0]);
    assert_eq!(h.count(Reason::NatCreated), 0);

    // The counterfactual: the same answer to a client that never wrote is a new pod flow.
    translated(&h, &udp(POD, 5353, CLIENT, 40001, b"unasked"));
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn an_inbound_tcp_connection_keeps_the_pod_address() {
    let h = Harness::new(&base_contents());
    let syn = tcp_segment(CLIENT, 40000, POD, 8080, "S", b"");
    assert_eq!(h.ingress(&syn), (CONTINUE, syn.clone()));
    untouched(&h, &tcp_segment(POD, 8080, CLIENT, 40000, "SA", b""));
    h.ingress(&tcp_segment(CLIENT, 40000, POD, 8080, "A", b"request"));
    untouched(&h, &tcp_segment(POD, 8080, CLIENT, 40000, "A", b"response"));
    untouched(&h, &tcp_segment(POD, 8080, CLIENT, 40000, "FA", b""));
    assert_eq!(h.count(Reason::NatCreated), 0);
    translated(&h, &tcp_segment(POD, 8081, CLIENT, 40000, "S", b""));
}

/// The SYN came in where masq did not see it (another interface, or before masq started): the
/// pod's SYN-ACK still tells the story, and the rest of the connection passes on its record.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn a_pod_syn_ack_without_a_record_is_passed_and_recorded() {
    let h = Harness::new(&base_contents());
    untouched(&h, &tcp_segment(POD, 8080, CLIENT, 40000, "SA", b""));
    assert_eq!(h.count(Reason::PassInboundReply), 1);
    untouched(&h, &tcp_segment(POD, 8080, CLIENT, 40000, "A", b"response"));
    assert_eq!(h.count(Reason::PassTracked), 1);
    let entries = list(&h.maps);
    assert!(entries.len() == 1 && entries[0].inbound, "{entries:?}");
}

/// A flow the pod started and masq translated stays translated, whatever arrives at the pod's
/// own address with the mirrored tuple (a crafted packet, or a peer that also reaches pod IPs).
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn a_crafted_inbound_packet_cannot_unmask_a_translated_flow() {
    let h = Harness::new(&base_contents());
    let first = translated(&h, &udp(POD, 5353, CLIENT, 40000, b"mine"));
    let crafted = udp(CLIENT, 40000, POD, 5353, b"pretend you began it");
    assert_eq!(h.ingress(&crafted), (CONTINUE, crafted.clone()));
    assert_eq!(h.count(Reason::InboundTracked), 0);
    let again = translated(&h, &udp(POD, 5353, CLIENT, 40000, b"still mine"));
    assert_eq!(again.sport, first.sport);
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn an_inbound_ping_is_answered_by_the_pod_address() {
    let h = Harness::new(&base_contents());
    let request = echo_request(CLIENT, POD, 7, 1);
    assert_eq!(h.ingress(&request), (CONTINUE, request.clone()));
    // Echo replies leaving are never translated: only requests start ICMP flows.
    let reply = echo_reply(POD, CLIENT, 7, 1);
    assert_eq!(h.egress(&reply), (CONTINUE, reply.clone()));
    assert_eq!(h.count(Reason::NatCreated), 0);
    // The counterfactual: a request from the pod is translated.
    let (_, out) = h.egress(&echo_request(POD, CLIENT, 7, 1));
    assert_eq!(inspect(&out).src, NODE);
}

/// Traffic to the node itself, to groups and to broadcast is nobody's pod: nothing is recorded.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn packets_to_the_node_and_to_groups_are_not_recorded() {
    let h = Harness::new(&base_contents());
    for dst in [
        NODE,
        Ipv4Addr::new(224, 0, 0, 251),
        Ipv4Addr::new(255, 255, 255, 255),
    ] {
        let frame = udp(CLIENT, 5353, dst, 5353, b"hello");
        assert_eq!(h.ingress(&frame), (CONTINUE, frame.clone()));
    }
    assert_eq!(h.count(Reason::InboundTracked), 0);
    assert!(list(&h.maps).is_empty());
}

/// With --pod-cidr, only addresses inside it are pods.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn with_pod_cidrs_only_pods_get_inbound_records() {
    let mut contents = base_contents();
    contents
        .pod_cidrs
        .insert("10.244.1.0/24".parse::<Ipv4Net>().unwrap());
    contents.config.flags |= CFG_POD_CIDRS;
    let h = Harness::new(&contents);
    h.ingress(&udp(CLIENT, 40000, Ipv4Addr::new(10, 250, 0, 9), 53, b""));
    assert_eq!(h.count(Reason::InboundTracked), 0);
    h.ingress(&udp(CLIENT, 40000, POD, 53, b""));
    assert_eq!(h.count(Reason::InboundTracked), 1);
}

/// The reply of a kept flow (a pod talking to the VPC) marks the kept record replied, as
/// conntrack's SEEN_REPLY: it then lives by the replied lifetime.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn the_reply_of_a_kept_flow_marks_its_record_replied() {
    let mut h = Harness::new(&base_contents());
    let vpc = Ipv4Addr::new(10, 9, 9, 9);
    untouched(&h, &udp(POD, 5000, vpc, 53, b"q"));
    assert_eq!(h.count(Reason::KeepNonMasqDst), 1);
    h.ingress(&udp(vpc, 53, POD, 5000, b"a"));
    assert_eq!(
        h.count(Reason::InboundTracked),
        0,
        "a reply, not an inbound flow"
    );
    let entry = &list(&h.maps)[0];
    assert!(entry.pass && !entry.inbound);
    assert_eq!(entry.state, masq_datapath::ebpf::FlowState::UdpReplied);
    // Replied UDP lives 120 s idle; an unreplied one would be gone after 30 s.
    assert_eq!(gc_after(&mut h.maps, 60).expired_passes, 0);
    assert_eq!(gc_after(&mut h.maps, 121).expired_passes, 1);
}
