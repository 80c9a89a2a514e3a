//! ICMP errors about translated flows: the outer and the quoted headers translated back to
//! the pod (quoted checksums and the ping identifier included), and a pod's own error about a
//! translated flow leaving translated.

use std::net::Ipv4Addr;

use etherparse::icmpv4::{DestUnreachableHeader, TimeExceededCode};
use etherparse::{Icmpv4Type, Ipv4Header, PacketBuilder, UdpHeader};
use masq_datapath::ebpf::types::Reason;

use crate::harness::*;

/// Checks the quoted header inside a translated ICMP error: source and port are the pod's.
fn quoted(frame: &[u8]) -> (Ipv4Addr, u16, Ipv4Addr, u16) {
    let inner = &frame[14 + 20 + 8..];
    let (ip, rest) = Ipv4Header::from_slice(inner).unwrap();
    assert_eq!(
        ip.header_checksum,
        ip.calc_header_checksum(),
        "quoted IPv4 checksum"
    );
    let sport = u16::from_be_bytes([rest[0], rest[1]]);
    let dport = u16::from_be_bytes([rest[2], rest[3]]);
    (ip.source.into(), sport, ip.destination.into(), dport)
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn fragmentation_needed_about_a_tcp_flow_goes_back_to_the_pod() {
    let h = Harness::new(&base_contents());
    let (_, sent) = h.egress(&tcp(POD, 1234, EXTERNAL, 443, &[7; 64]));
    let sent_port = inspect(&sent).sport;
    assert_ne!(sent_port, 1234);
    let error = icmp_error_about(
        &sent,
        Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
            next_hop_mtu: 1400,
        }),
    );
    let (rc, back) = h.ingress(&error);
    assert_eq!(rc, CONTINUE);
    assert_eq!(inspect(&back).dst, POD);
    assert_eq!(quoted(&back), (POD, 1234, EXTERNAL, 443));
    let original = tcp(POD, 1234, EXTERNAL, 443, &[7; 64]);
    assert_eq!(
        &back[14 + 20 + 8 + 20..][..8],
        &original[34..42],
        "quoted TCP header"
    );
    assert_eq!(h.count(Reason::IcmpErrorTranslated), 1);
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn time_exceeded_about_a_udp_flow_fixes_the_quoted_udp_checksum() {
    let h = Harness::new(&base_contents());
    // No payload: the whole datagram is quoted, so its UDP checksum can be verified.
    let (_, sent) = h.egress(&udp(POD, 33434, EXTERNAL, 33435, b""));
    let error = icmp_error_about(
        &sent,
        Icmpv4Type::TimeExceeded(TimeExceededCode::TtlExceededInTransit),
    );
    let (_, back) = h.ingress(&error);
    assert_eq!(inspect(&back).dst, POD);
    assert_eq!(quoted(&back).0, POD);
    let inner = &back[14 + 20 + 8..];
    let (ip, rest) = Ipv4Header::from_slice(inner).unwrap();
    let (udp, payload) = UdpHeader::from_slice(rest).unwrap();
    assert_eq!(udp.source_port, 33434);
    assert_eq!(
        udp.checksum,
        udp.calc_checksum_ipv4(&ip, payload).unwrap(),
        "quoted UDP checksum"
    );
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn time_exceeded_about_a_ping_restores_the_identifier() {
    let h = Harness::new(&base_contents());
    let (_, sent) = h.egress(&echo_request(POD, EXTERNAL, 77, 3));
    let error = icmp_error_about(
        &sent,
        Icmpv4Type::TimeExceeded(TimeExceededCode::TtlExceededInTransit),
    );
    let (_, back) = h.ingress(&error);
    assert_eq!(inspect(&back).dst, POD);
    let inner = &back[14 + 20 + 8..];
    let (ip, rest) = Ipv4Header::from_slice(inner).unwrap();
    assert_eq!(Ipv4Addr::from(ip.source), POD);
    assert_eq!(u16::from_be_bytes([rest[4], rest[5]]), 77);
    // Identifier and checksum are both back to what the pod sent.
    let original = echo_request(POD, EXTERNAL, 77, 3);
    assert_eq!(&rest[..8], &original[34..42], "quoted echo header");
}

/// A pod's own ICMP error about a reply of a translated flow (its socket closed: port
/// unreachable) leaves translated like the flow, as conntrack translates RELATED packets:
/// from the node's address, quoting the node's address and port. Untranslated, it would carry
/// the pod's address out twice.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn a_pod_icmp_error_about_a_translated_flow_leaves_translated() {
    let h = Harness::new(&base_contents());
    let (_, sent) = h.egress(&udp(POD, 1234, EXTERNAL, 53, b""));
    let port = inspect(&sent).sport;
    assert_ne!(port, 1234);
    let (_, reply) = h.ingress(&udp(EXTERNAL, 53, NODE, port, b""));
    assert_eq!(inspect(&reply).dst, POD);
    // The pod's kernel answers the reply it got with "port unreachable", quoting it.
    let ihl = usize::from(reply[14] & 0x0f) * 4;
    let mut error = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(POD.octets(), EXTERNAL.octets(), 64)
        .icmpv4(Icmpv4Type::DestinationUnreachable(
            DestUnreachableHeader::Port,
        ))
        .write(&mut error, &reply[14..14 + ihl + 8])
        .unwrap();
    let (rc, out) = h.egress(&error);
    assert_eq!(rc, CONTINUE);
    assert_eq!(inspect(&out).src, NODE, "outer source");
    assert_eq!(quoted(&out), (EXTERNAL, 53, NODE, port), "quoted reply");
    let inner = &out[14 + 20 + 8..];
    let (ip, rest) = Ipv4Header::from_slice(inner).unwrap();
    let (udp, payload) = UdpHeader::from_slice(rest).unwrap();
    assert_eq!(
        udp.checksum,
        udp.calc_checksum_ipv4(&ip, payload).unwrap(),
        "quoted UDP checksum"
    );
    assert_eq!(h.count(Reason::IcmpErrorTranslated), 1);
    // About a flow masq does not translate, an error is left alone.
    let mut stray = error.clone();
    stray[14 + 20 + 8 + 20] ^= 1; // another quoted source port
    let stray = {
        let mut frame = stray;
        let icmp_len = frame.len() - 34;
        frame[36] = 0;
        frame[37] = 0;
        let sum = internet_checksum(&frame[34..34 + icmp_len]);
        frame[36..38].copy_from_slice(&sum.to_be_bytes());
        frame
    };
    assert_eq!(h.egress(&stray), (CONTINUE, stray.clone()));
}
