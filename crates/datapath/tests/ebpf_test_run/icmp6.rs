//! ICMPv6 errors about translated flows, both ways (issue 17): Packet Too Big, Destination
//! Unreachable, Time Exceeded and Parameter Problem, each quoting a packet whose address,
//! port and checksum must be translated with the outer header. Every checksum is recomputed:
//! the outer ICMPv6 one (pseudo-header included) by `inspect6`, the quoted ones here.

use std::net::Ipv6Addr;

use etherparse::icmpv6::{
    DestUnreachableCode, ParameterProblemCode, ParameterProblemHeader, TimeExceededCode,
};
use etherparse::{Icmpv6Header, Icmpv6Type, Ipv6Header, PacketBuilder, TcpHeader, UdpHeader};
use masq_datapath::ebpf::types::Reason;

use crate::harness::*;
use crate::harness6::*;

/// The quoted packet of an ICMPv6 error frame: its addresses and ports, every checksum in it
/// that it quotes whole verified.
fn quoted6(frame: &[u8]) -> (Ipv6Addr, u16, Ipv6Addr, u16) {
    let inner = &frame[14 + 40 + 8..];
    let (ip, rest) = Ipv6Header::from_slice(inner).unwrap();
    let (src, dst) = (ip.source, ip.destination);
    let ports = match ip.next_header.0 {
        6 => {
            let (tcp, payload) = TcpHeader::from_slice(rest).unwrap();
            assert_eq!(
                tcp.checksum,
                tcp.calc_checksum_ipv6_raw(src, dst, payload).unwrap(),
                "quoted TCP checksum"
            );
            (tcp.source_port, tcp.destination_port)
        }
        17 => {
            let (udp, payload) = UdpHeader::from_slice(rest).unwrap();
            assert_eq!(
                udp.checksum,
                udp.calc_checksum_ipv6_raw(src, dst, payload).unwrap(),
                "quoted UDP checksum"
            );
            (udp.source_port, udp.destination_port)
        }
        58 => {
            let (icmp, payload) = Icmpv6Header::from_slice(rest).unwrap();
            assert_eq!(
                icmp.checksum,
                icmp.icmp_type.calc_checksum(src, dst, payload).unwrap(),
                "quoted ICMPv6 checksum"
            );
            match icmp.icmp_type {
                Icmpv6Type::EchoRequest(e) => (e.id, 0),
                other => panic!("quoted {other:?}"),
            }
        }
        other => panic!("quoted next header {other}"),
    };
    (src.into(), ports.0, dst.into(), ports.1)
}

/// Sends `original` out, then the error a router returns about what left: it must reach the
/// pod quoting exactly what the pod sent (every byte of the quoted transport header).
fn error_back_to_the_pod(original: &[u8], icmp_type: Icmpv6Type) {
    let h = Harness::new(&base_contents6());
    let (_, sent) = h.egress(original);
    assert_eq!(inspect6(&sent).src, NODE6);
    let error = icmp6_error_about(&sent, icmp_type);
    inspect6(&error);
    let (rc, back) = h.ingress(&error);
    assert_eq!(rc, CONTINUE);
    assert_eq!(inspect6(&back).dst, POD6, "outer destination");
    let (src, _, dst, _) = quoted6(&back);
    assert_eq!((src, dst), (POD6, EXTERNAL6));
    assert_eq!(
        &back[14 + 40 + 8..],
        &original[14..],
        "the quoted packet is the pod's"
    );
    assert_eq!(h.count(Reason::IcmpErrorTranslated), 1);
}

/// Path-MTU discovery: Packet Too Big about a TCP segment whose port masq changed.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn packet_too_big_about_a_tcp_flow_goes_back_to_the_pod() {
    error_back_to_the_pod(
        &tcp6(POD6, 1234, EXTERNAL6, 443, "A", &[7; 64]),
        Icmpv6Type::PacketTooBig { mtu: 1280 },
    );
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn destination_unreachable_about_a_udp_flow_fixes_the_quoted_udp_checksum() {
    error_back_to_the_pod(
        &udp6(POD6, 33434, EXTERNAL6, 33435, b"probe"),
        Icmpv6Type::DestinationUnreachable(DestUnreachableCode::Port),
    );
}

/// traceroute6 with ICMPv6 echo: the quoted identifier and its checksum (pseudo-header
/// included) go back to the pod's.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn time_exceeded_about_a_ping_restores_the_identifier() {
    error_back_to_the_pod(
        &echo6_request(POD6, EXTERNAL6, 77, 3),
        Icmpv6Type::TimeExceeded(TimeExceededCode::HopLimitExceeded),
    );
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn parameter_problem_about_a_tcp_flow_goes_back_to_the_pod() {
    error_back_to_the_pod(
        &tcp6(POD6, 40000, EXTERNAL6, 80, "S", b""),
        Icmpv6Type::ParameterProblem(ParameterProblemHeader {
            code: ParameterProblemCode::ErroneousHeaderField,
            pointer: 7,
        }),
    );
}

/// A pod's own error about a reply of a translated flow leaves translated, quoting the node's
/// address and port (conntrack's RELATED); about a flow masq does not translate, untouched.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn a_pod_icmpv6_error_about_a_translated_flow_leaves_translated() {
    let h = Harness::new(&base_contents6());
    let (_, sent) = h.egress(&udp6(POD6, 1234, EXTERNAL6, 53, b""));
    let port = inspect6(&sent).sport;
    assert_ne!(port, 1234);
    let (_, reply) = h.ingress(&udp6(EXTERNAL6, 53, NODE6, port, b"answer"));
    assert_eq!(inspect6(&reply).dst, POD6);
    let error = |quoted: &[u8]| {
        let mut out = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv6(POD6.octets(), EXTERNAL6.octets(), 64)
            .icmpv6(Icmpv6Type::DestinationUnreachable(
                DestUnreachableCode::Port,
            ))
            .write(&mut out, &quoted[14..])
            .unwrap();
        out
    };
    let (rc, out) = h.egress(&error(&reply));
    assert_eq!(rc, CONTINUE);
    assert_eq!(inspect6(&out).src, NODE6, "outer source");
    assert_eq!(quoted6(&out), (EXTERNAL6, 53, NODE6, port), "quoted reply");
    assert_eq!(h.count(Reason::IcmpErrorTranslated), 1);

    let stranger = udp6(EXTERNAL6, 53, POD6, 999, b"?");
    let stray = error(&stranger);
    assert_eq!(h.egress(&stray), (CONTINUE, stray.clone()));
    assert_eq!(h.count(Reason::IcmpErrorTranslated), 1);
}

/// An error whose quoted source is not the error's destination (a forged or misrouted one)
/// is left alone.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn an_error_quoting_someone_else_is_left_alone() {
    let h = Harness::new(&base_contents6());
    let (_, sent) = h.egress(&tcp6(POD6, 1234, EXTERNAL6, 443, "S", b""));
    let mut error = icmp6_error_about(&sent, Icmpv6Type::PacketTooBig { mtu: 1280 });
    // The outer destination becomes another address; the quoted source stays the node's.
    error[14 + 24 + 15] ^= 1;
    let (_, back) = h.ingress(&error);
    assert_eq!(back, error);
    assert_eq!(h.count(Reason::IcmpErrorTranslated), 0);
}
