//! IPv4 headers out of the ordinary: a bad IHL and truncated transport headers are dropped
//! and counted, non-IPv4 frames pass, IP options are skipped by the IHL.

use std::net::Ipv4Addr;

use etherparse::{Ipv4Header, PacketBuilder};
use masq_datapath::ebpf::types::Reason;

use crate::harness::*;

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn bad_ihl_is_dropped_and_counted() {
    let h = Harness::new(&base_contents());
    let mut frame = tcp(POD, 40000, EXTERNAL, 80, b"");
    frame[14] = 0x44; // version 4, IHL 4 (16 bytes)
    fix_ip_checksum(&mut frame[..]);
    assert_eq!(h.egress(&frame).0, SHOT);
    assert_eq!(h.ingress(&frame).0, SHOT);
    assert_eq!(h.count(Reason::DropBadIhl), 2);
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn truncated_transport_headers_are_dropped_and_counted() {
    let h = Harness::new(&base_contents());
    let frame = tcp(POD, 40000, EXTERNAL, 80, b"");
    let cut = &frame[..14 + 20 + 10];
    assert_eq!(h.egress(cut).0, SHOT);
    assert_eq!(h.count(Reason::DropTruncated), 1);
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn non_ipv4_frames_are_untouched() {
    let h = Harness::new(&base_contents());
    let mut arp = vec![0xff; 12];
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0u8; 28]);
    assert_eq!(h.egress(&arp), (CONTINUE, arp.clone()));
    assert_eq!(h.count(Reason::PassUnsupported), 1);
}

/// A TCP SYN whose IPv4 header carries 4 bytes of options (IHL 6).
fn tcp_with_options(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let mut ip =
        Ipv4Header::new(0, 64, etherparse::IpNumber::TCP, src.octets(), dst.octets()).unwrap();
    ip.options = [1u8, 1, 1, 0][..].try_into().unwrap(); // NOP NOP NOP EOL
    let mut out = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ip(etherparse::IpHeaders::Ipv4(ip, Default::default()))
        .tcp(sport, dport, 7, 100)
        .syn()
        .write(&mut out, b"with options")
        .unwrap();
    assert_eq!(out[14] & 0x0f, 6);
    out
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn ip_options_are_skipped_by_ihl() {
    let h = Harness::new(&base_contents());
    let (_, out) = h.egress(&tcp_with_options(POD, 1234, EXTERNAL, 443));
    let seen = inspect(&out);
    assert_eq!(seen.src, NODE);
    assert!(in_default_ports(seen.sport));
    let (_, back) = h.ingress(&tcp_with_options(EXTERNAL, 443, NODE, seen.sport));
    assert_eq!(
        inspect(&back),
        Seen {
            src: EXTERNAL,
            sport: 443,
            dst: POD,
            dport: 1234
        }
    );
}
