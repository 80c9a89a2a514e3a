//! IPv6 packets for the cases: builders (extension headers and fragments included), an
//! independent reader that checks every checksum with etherparse, and the map contents with
//! IPv6 on.

use std::net::Ipv6Addr;

use etherparse::{
    Icmpv6Header, Icmpv6Type, IpNumber, Ipv6Header, PacketBuilder, TcpHeader, UdpHeader,
};
use ipnet::Ipv6Net;
use masq_datapath::ebpf::types::CFG_IPV6;
use masq_datapath::ebpf::Contents;
use masq_decision::Reason as Why;

use crate::harness::base_contents;

/// The node's uplink address (outside the kept fd00::/8, so "local" decides for it).
pub const NODE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x18, 0, 0, 0, 0, 2);
pub const POD6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x244, 1, 0, 0, 0, 5);
pub const POD6_2: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x244, 1, 0, 0, 0, 6);
pub const EXTERNAL6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);
pub const ROUTER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
/// A kept destination (inside fd00::/8, the kept range of [`base_contents6`]).
pub const KEPT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x200, 0, 0, 0, 0, 0, 0x10);

pub const ICMPV6: u8 = 58;
const HOPOPTS: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const DSTOPTS: u8 = 60;

/// [`base_contents`] with IPv6 on: SNAT to NODE6 on every interface, fd00::/8 kept.
/// The IPv6 link-local range, kept unless masqLinkLocalIPv6.
pub fn link_local6() -> Ipv6Net {
    "fe80::/10".parse().unwrap()
}

pub fn base_contents6() -> Contents {
    let mut c = base_contents();
    c.config.flags |= CFG_IPV6;
    c.v6.snat_pools.insert(0, vec![NODE6]);
    c.v6.local_addrs.insert(NODE6);
    c.v6.dst_policy.insert(
        "fd00::/8".parse::<Ipv6Net>().unwrap(),
        Why::NonMasqueradeCidr,
    );
    c.v6.dst_policy.insert(link_local6(), Why::LinkLocal);
    c
}

const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];

fn builder(src: Ipv6Addr, dst: Ipv6Addr) -> etherparse::PacketBuilderStep<etherparse::IpHeaders> {
    PacketBuilder::ethernet2(MAC_A, MAC_B).ipv6(src.octets(), dst.octets(), 64)
}

/// A TCP segment with the flags spelled out: `S` SYN, `A` ACK, `F` FIN, `R` RST.
pub fn tcp6(
    src: Ipv6Addr,
    sport: u16,
    dst: Ipv6Addr,
    dport: u16,
    flags: &str,
    payload: &[u8],
) -> Vec<u8> {
    let mut b = builder(src, dst).tcp(sport, dport, 1000, 512);
    for flag in flags.chars() {
        b = match flag {
            'S' => b.syn(),
            'A' => b.ack(1),
            'F' => b.fin(),
            'R' => b.rst(),
            other => panic!("unknown TCP flag {other:?}"),
        };
    }
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

pub fn udp6(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    builder(src, dst)
        .udp(sport, dport)
        .write(&mut out, payload)
        .unwrap();
    out
}

pub fn echo6_request(src: Ipv6Addr, dst: Ipv6Addr, id: u16, seq: u16) -> Vec<u8> {
    let mut out = Vec::new();
    builder(src, dst)
        .icmpv6_echo_request(id, seq)
        .write(&mut out, b"ping6-payload")
        .unwrap();
    out
}

pub fn echo6_reply(src: Ipv6Addr, dst: Ipv6Addr, id: u16, seq: u16) -> Vec<u8> {
    let mut out = Vec::new();
    builder(src, dst)
        .icmpv6_echo_reply(id, seq)
        .write(&mut out, b"ping6-payload")
        .unwrap();
    out
}

/// Any ICMPv6 message, e.g. neighbour discovery (a raw type, code and body).
pub fn icmp6_raw(src: Ipv6Addr, dst: Ipv6Addr, icmp_type: u8, code: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let bytes5to8: [u8; 4] = body[..4].try_into().unwrap();
    builder(src, dst)
        .icmpv6_raw(icmp_type, code, bytes5to8)
        .write(&mut out, &body[4..])
        .unwrap();
    out
}

/// An extension header of `len8` 8-byte units after the first 8 (hop-by-hop, destination
/// options: PadN filling it; routing: type 0 with `segments_left` in byte 3).
pub fn ext_header(kind: u8, len8: u8, segments_left: u8) -> Vec<u8> {
    let mut h = vec![0u8; 8 * (usize::from(len8) + 1)];
    h[1] = len8;
    match kind {
        ROUTING => h[3] = segments_left,
        _ => {
            // PadN over the rest (type 1, length).
            h[2] = 1;
            h[3] = u8::try_from(h.len() - 4).unwrap();
        }
    }
    h
}

/// `frame` (IPv6 without extension headers) with `chain` inserted after the fixed header:
/// (next-header number, bytes) each; next-header fields and the payload length are fixed up.
/// The transport checksum does not change (no routing header with segments left).
pub fn with_extensions(frame: &[u8], chain: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let upper = frame[14 + 6];
    let mut out = frame[..14 + 40].to_vec();
    out[14 + 6] = chain[0].0;
    for (i, (_, bytes)) in chain.iter().enumerate() {
        let mut header = bytes.clone();
        header[0] = chain.get(i + 1).map(|(kind, _)| *kind).unwrap_or(upper);
        out.extend_from_slice(&header);
    }
    out.extend_from_slice(&frame[14 + 40..]);
    let payload = u16::try_from(out.len() - 14 - 40).unwrap();
    out[18..20].copy_from_slice(&payload.to_be_bytes());
    out
}

/// The usual chain in front of a transport header: hop-by-hop then destination options.
pub fn hop_and_dst() -> Vec<(u8, Vec<u8>)> {
    vec![
        (HOPOPTS, ext_header(HOPOPTS, 0, 0)),
        (DSTOPTS, ext_header(DSTOPTS, 1, 0)),
    ]
}

/// `n` destination-options headers (past the programs' bound of 8 when n > 8).
pub fn long_chain(n: usize) -> Vec<(u8, Vec<u8>)> {
    (0..n)
        .map(|_| (DSTOPTS, ext_header(DSTOPTS, 0, 0)))
        .collect()
}

/// A routing header with segments left: the final destination is elsewhere.
pub fn routing_chain(segments_left: u8) -> Vec<(u8, Vec<u8>)> {
    vec![(ROUTING, ext_header(ROUTING, 2, segments_left))]
}

/// Splits `frame` (no extension headers) into two fragments after `first_len` bytes of its
/// payload (a multiple of 8), each with a fragment header of identification 0x4242_0001.
pub fn fragment6(frame: &[u8], first_len: usize) -> (Vec<u8>, Vec<u8>) {
    let upper = frame[14 + 6];
    let payload = &frame[14 + 40..];
    let make = |offset: usize, more: bool, part: &[u8]| {
        let mut out = frame[..14 + 40].to_vec();
        out[14 + 6] = FRAGMENT;
        let frag_off = u16::try_from(offset / 8).unwrap() << 3 | u16::from(more);
        out.push(upper);
        out.push(0);
        out.extend_from_slice(&frag_off.to_be_bytes());
        out.extend_from_slice(&0x4242_0001u32.to_be_bytes());
        out.extend_from_slice(part);
        let len = u16::try_from(8 + part.len()).unwrap();
        out[18..20].copy_from_slice(&len.to_be_bytes());
        out
    };
    (
        make(0, true, &payload[..first_len]),
        make(first_len, false, &payload[first_len..]),
    )
}

/// The fields masq touches, read back from an IPv6 frame.
#[derive(Debug, PartialEq, Eq)]
pub struct Seen6 {
    pub src: Ipv6Addr,
    pub sport: u16,
    pub dst: Ipv6Addr,
    pub dport: u16,
}

/// (next header, offset of the upper-layer header) after walking the extension headers; the
/// test's own walk, independent of the programs'.
pub fn upper_layer(frame: &[u8]) -> (u8, usize) {
    let mut next = frame[14 + 6];
    let mut off = 14 + 40;
    loop {
        match next {
            HOPOPTS | ROUTING | DSTOPTS => {
                let len = (usize::from(frame[off + 1]) + 1) * 8;
                next = frame[off];
                off += len;
            }
            FRAGMENT => {
                next = frame[off];
                off += 8;
            }
            _ => return (next, off),
        }
    }
}

/// Parses `frame` and checks its transport checksum against a full recomputation (etherparse).
pub fn inspect6(frame: &[u8]) -> Seen6 {
    let (ip, _) = Ipv6Header::from_slice(&frame[14..]).unwrap();
    assert_eq!(
        usize::from(ip.payload_length),
        frame.len() - 14 - 40,
        "payload length"
    );
    let (src, dst) = (Ipv6Addr::from(ip.source), Ipv6Addr::from(ip.destination));
    let (proto, off) = upper_layer(frame);
    let l4 = &frame[off..];
    match IpNumber(proto) {
        IpNumber::TCP => {
            let (h, payload) = TcpHeader::from_slice(l4).unwrap();
            assert_eq!(
                h.checksum,
                h.calc_checksum_ipv6_raw(ip.source, ip.destination, payload)
                    .unwrap(),
                "TCP checksum"
            );
            Seen6 {
                src,
                sport: h.source_port,
                dst,
                dport: h.destination_port,
            }
        }
        IpNumber::UDP => {
            let (h, payload) = UdpHeader::from_slice(l4).unwrap();
            if h.checksum != 0 {
                assert_eq!(
                    h.checksum,
                    h.calc_checksum_ipv6_raw(ip.source, ip.destination, payload)
                        .unwrap(),
                    "UDP checksum"
                );
            }
            Seen6 {
                src,
                sport: h.source_port,
                dst,
                dport: h.destination_port,
            }
        }
        IpNumber::IPV6_ICMP => {
            let (h, payload) = Icmpv6Header::from_slice(l4).unwrap();
            assert_eq!(
                h.checksum,
                h.icmp_type
                    .calc_checksum(ip.source, ip.destination, payload)
                    .unwrap(),
                "ICMPv6 checksum"
            );
            match h.icmp_type {
                Icmpv6Type::EchoRequest(e) => Seen6 {
                    src,
                    sport: e.id,
                    dst,
                    dport: 0,
                },
                Icmpv6Type::EchoReply(e) => Seen6 {
                    src,
                    sport: 0,
                    dst,
                    dport: e.id,
                },
                _ => Seen6 {
                    src,
                    sport: 0,
                    dst,
                    dport: 0,
                },
            }
        }
        other => panic!("unexpected next header {other:?}"),
    }
}

/// An ICMPv6 error from ROUTER6 quoting `sent` (a translated frame, up to 1232 bytes of it),
/// sent where the quoted packet came from.
pub fn icmp6_error_about(sent: &[u8], icmp_type: Icmpv6Type) -> Vec<u8> {
    let quoted = &sent[14..sent.len().min(14 + 1232)];
    let quoted_source: [u8; 16] = sent[22..38].try_into().expect("an IPv6 source");
    let mut out = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 9], [2, 0, 0, 0, 0, 2])
        .ipv6(ROUTER6.octets(), quoted_source, 64)
        .icmpv6(icmp_type)
        .write(&mut out, quoted)
        .unwrap();
    out
}
