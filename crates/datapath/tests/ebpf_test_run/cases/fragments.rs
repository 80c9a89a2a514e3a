//! IPv4 fragments: later fragments follow the first one both ways, a later fragment without
//! its first is counted and left alone. `fragment` serves the other modules too.

use std::net::Ipv4Addr;

use etherparse::{Ipv4Header, UdpHeader};
use masq_datapath::ebpf::types::Reason;

use crate::harness::*;

/// Splits a single-fragment IPv4 frame after `first_len` bytes of IP payload (a multiple of 8).
pub(crate) fn fragment(frame: &[u8], first_len: usize) -> (Vec<u8>, Vec<u8>) {
    let payload = &frame[34..];
    let mut first = frame[..34].to_vec();
    first.extend_from_slice(&payload[..first_len]);
    let mut later = frame[..34].to_vec();
    later.extend_from_slice(&payload[first_len..]);
    first[16..18].copy_from_slice(&((20 + first_len) as u16).to_be_bytes());
    first[20..22].copy_from_slice(&0x2000u16.to_be_bytes()); // MF
    later[16..18].copy_from_slice(&((20 + payload.len() - first_len) as u16).to_be_bytes());
    later[20..22].copy_from_slice(&((first_len / 8) as u16).to_be_bytes());
    first[18..20].copy_from_slice(&0x4242u16.to_be_bytes());
    later[18..20].copy_from_slice(&0x4242u16.to_be_bytes());
    fix_ip_checksum(&mut first);
    fix_ip_checksum(&mut later);
    (first, later)
}

/// Reassembles two fragments and checks the UDP checksum over the whole datagram.
fn reassemble_udp(first: &[u8], later: &[u8]) -> (Ipv4Addr, u16, Ipv4Addr, u16) {
    for frag in [first, later] {
        let (ip, _) = Ipv4Header::from_slice(&frag[14..]).unwrap();
        assert_eq!(ip.header_checksum, ip.calc_header_checksum());
    }
    let (ip1, _) = Ipv4Header::from_slice(&first[14..]).unwrap();
    let (ip2, _) = Ipv4Header::from_slice(&later[14..]).unwrap();
    assert_eq!((ip1.source, ip1.destination), (ip2.source, ip2.destination));
    let mut datagram = first[34..].to_vec();
    datagram.extend_from_slice(&later[34..]);
    let (udp, payload) = UdpHeader::from_slice(&datagram).unwrap();
    assert_eq!(
        udp.checksum,
        udp.calc_checksum_ipv4_raw(ip1.source, ip1.destination, payload)
            .unwrap(),
        "UDP checksum over the reassembled datagram"
    );
    (
        ip1.source.into(),
        udp.source_port,
        ip1.destination.into(),
        udp.destination_port,
    )
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn fragments_follow_the_first_fragment_both_ways() {
    let h = Harness::new(&base_contents());
    let big = udp(POD, 53, EXTERNAL, 9000, &[0x5a; 200]);
    let (first, later) = fragment(&big, 48);
    let (rc1, first_out) = h.egress(&first);
    let (rc2, later_out) = h.egress(&later);
    assert_eq!((rc1, rc2), (CONTINUE, CONTINUE));
    let (src, sport, _, _) = reassemble_udp(&first_out, &later_out);
    assert_eq!(src, NODE);
    assert!(in_default_ports(sport));

    let reply = udp(EXTERNAL, 9000, NODE, sport, &[0xa5; 200]);
    let (first, later) = fragment(&reply, 48);
    let (_, first_back) = h.ingress(&first);
    let (_, later_back) = h.ingress(&later);
    assert_eq!(
        reassemble_udp(&first_back, &later_back),
        (EXTERNAL, 9000, POD, 53)
    );
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn a_later_fragment_without_its_first_is_counted_and_left_alone_on_ingress() {
    let h = Harness::new(&base_contents());
    let reply = udp(EXTERNAL, 9000, NODE, 40000, &[1; 100]);
    let (_, later) = fragment(&reply, 48);
    assert_eq!(h.ingress(&later), (CONTINUE, later.clone()));
    assert_eq!(h.count(Reason::FragUntracked), 1);
}
