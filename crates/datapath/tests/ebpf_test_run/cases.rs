//! One case per protocol and edge case.

use std::net::Ipv4Addr;

use etherparse::icmpv4::{DestUnreachableHeader, TimeExceededCode};
use etherparse::{Icmpv4Type, Ipv4Header, PacketBuilder, UdpHeader};
use ipnet::Ipv4Net;
use masq_datapath::ebpf::types::Reason;
use masq_datapath::ebpf::{nat, KernCtx};

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
fn kept_destinations_and_sources_leave_untouched() {
    let mut contents = base_contents();
    contents
        .nonmasq_src
        .insert("10.244.9.0/24".parse::<Ipv4Net>().unwrap());
    let mut h = Harness::new(&contents);
    let cases = [
        (
            tcp(POD, 40000, Ipv4Addr::new(10, 1, 2, 3), 80, b""),
            Reason::KeepNonMasqDst,
        ),
        (
            tcp(POD, 40000, Ipv4Addr::new(169, 254, 169, 254), 80, b""),
            Reason::KeepLinkLocal,
        ),
        (
            tcp(Ipv4Addr::new(10, 244, 9, 9), 1, EXTERNAL, 80, b""),
            Reason::KeepNonMasqSrc,
        ),
        (tcp(POD, 40001, NODE, 80, b""), Reason::KeepLocal),
    ];
    for (frame, reason) in &cases {
        let (rc, out) = h.egress(frame);
        assert_eq!(rc, CONTINUE);
        assert_eq!(&out, frame, "{reason:?}");
        assert_eq!(h.count(*reason), 1, "{reason:?}");
    }
    h.set_link_local(true);
    let (_, out) = h.egress(&tcp(POD, 40002, Ipv4Addr::new(169, 254, 169, 254), 80, b""));
    assert_eq!(
        inspect(&out).src,
        NODE,
        "masqLinkLocal: true masquerades 169.254/16"
    );
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn pod_cidrs_limit_who_is_a_pod() {
    let mut contents = base_contents();
    contents
        .pod_cidrs
        .insert("10.244.1.0/24".parse::<Ipv4Net>().unwrap());
    contents.config.flags |= masq_datapath::ebpf::types::CFG_POD_CIDRS;
    let h = Harness::new(&contents);
    let outsider = tcp(Ipv4Addr::new(192, 168, 7, 7), 1000, EXTERNAL, 80, b"");
    assert_eq!(h.egress(&outsider).1, outsider);
    assert_eq!(h.count(Reason::KeepNotAPod), 1);
    assert_eq!(
        inspect(&h.egress(&tcp(POD, 1000, EXTERNAL, 80, b"")).1).src,
        NODE
    );
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn established_flows_keep_their_translation_when_the_config_changes() {
    let mut h = Harness::new(&base_contents());
    assert_eq!(
        inspect(&h.egress(&tcp(POD, 40000, EXTERNAL, 80, b"")).1).src,
        NODE
    );
    let mut changed = base_contents();
    keep_dst(&mut changed, Ipv4Net::new(EXTERNAL, 32).unwrap());
    h.maps.apply(&changed).unwrap();
    assert_eq!(
        inspect(&h.egress(&tcp(POD, 40000, EXTERNAL, 80, b"more")).1).src,
        NODE
    );
    assert_eq!(
        inspect(&h.egress(&tcp(POD, 40001, EXTERNAL, 80, b"")).1).src,
        POD
    );
}

/// A connection that began kept (its destination was in nonMasqueradeCIDRs) stays kept when the
/// config changes: its next segment carries no SYN, so no translation starts mid-stream (the
/// peer would reset it). A new connection to the same destination is masqueraded.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn a_kept_tcp_connection_is_not_translated_mid_stream_after_a_config_change() {
    let mut h = Harness::new(&base_contents());
    let mut kept = base_contents();
    keep_dst(&mut kept, Ipv4Net::new(EXTERNAL, 32).unwrap());
    h.maps.apply(&kept).unwrap();
    assert_eq!(
        inspect(&h.egress(&tcp(POD, 40000, EXTERNAL, 80, b"")).1).src,
        POD
    );
    h.maps.apply(&base_contents()).unwrap();

    let mut segment = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(POD.octets(), EXTERNAL.octets(), 64)
        .tcp(40000, 80, 2000, 512)
        .ack(1)
        .write(&mut segment, b"more")
        .unwrap();
    assert_eq!(h.egress(&segment), (CONTINUE, segment.clone()));
    assert_eq!(h.count(Reason::PassTracked), 1);
    assert_eq!(h.count(Reason::NatCreated), 0);

    assert_eq!(
        inspect(&h.egress(&tcp(POD, 40001, EXTERNAL, 80, b"")).1).src,
        NODE
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
fn replies_to_unknown_flows_are_untouched() {
    let h = Harness::new(&base_contents());
    let stray = tcp(EXTERNAL, 80, NODE, 45678, b"");
    assert_eq!(h.ingress(&stray), (CONTINUE, stray.clone()));
}

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

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn port_exhaustion_drops_with_a_count_and_recovers_after_gc() {
    let mut contents = base_contents();
    contents.set_ports(&[masq_datapath::PortRange {
        first: 40000,
        last: 40003,
    }]);
    let mut h = Harness::new(&contents);
    for port in 0..4u16 {
        let (rc, out) = h.egress(&udp(POD, 1000 + port, EXTERNAL, 53, b""));
        assert_eq!(rc, CONTINUE);
        assert!((40000..=40003).contains(&inspect(&out).sport));
    }
    let (rc, _) = h.egress(&udp(POD, 2000, EXTERNAL, 53, b""));
    assert_eq!(rc, SHOT, "a fifth flow cannot have a port");
    assert_eq!(h.count(Reason::DropPortExhausted), 1);
    // Another destination is another pool.
    assert_eq!(h.egress(&udp(POD, 2000, EXTERNAL, 54, b"")).0, CONTINUE);

    let pressure = nat::pressure(&h.maps).unwrap();
    let busiest = pressure.busiest_pool.unwrap();
    assert_eq!(
        (busiest.dst_addr, busiest.dst_port, busiest.used),
        (EXTERNAL.into(), 53, 4)
    );

    let report = gc_after(&mut h.maps, 120);
    assert_eq!(report.expired_pairs, 5);
    assert_eq!(list(&h.maps).len(), 0);
    assert_eq!(h.egress(&udp(POD, 2000, EXTERNAL, 53, b"")).0, CONTINUE);
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn gc_keeps_live_pairs_and_lists_both_halves() {
    let mut h = Harness::new(&base_contents());
    let port = h.port_of(&tcp(POD, 40000, EXTERNAL, 80, b""));
    h.ingress(&tcp(EXTERNAL, 80, NODE, port, b"answered"));
    h.egress(&udp(POD, 40000, EXTERNAL, 53, b""));
    let report = gc_after(&mut h.maps, 0);
    assert_eq!((report.removed(), report.restored()), (0, 0), "{report:?}");
    let entries = list(&h.maps);
    assert_eq!(entries.len(), 4);
    let line = entries[0].to_string();
    assert!(
        line.contains("OUT 10.244.1.5:40000 -> 203.0.113.10:"),
        "{line}"
    );
    // 2 minutes later the unanswered UDP flow has expired, the answered TCP one has not.
    let report = gc_after(&mut h.maps, 120);
    assert_eq!(report.expired_pairs, 1);
    let left = list(&h.maps);
    assert_eq!(left.len(), 2);
    assert!(left.iter().all(|e| e.original.proto == TCP), "{left:?}");
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn tcp_fin_shortens_the_lifetime() {
    let mut h = Harness::new(&base_contents());
    h.egress(&tcp(POD, 40000, EXTERNAL, 80, b""));
    let mut fin = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(POD.octets(), EXTERNAL.octets(), 64)
        .tcp(40000, 80, 5, 100)
        .fin()
        .write(&mut fin, b"")
        .unwrap();
    h.egress(&fin);
    assert!(list(&h.maps)
        .iter()
        .any(|e| e.state == masq_datapath::ebpf::FlowState::TcpClosing));
    let report = gc_after(&mut h.maps, 30);
    assert_eq!(report.expired_pairs, 1);
}

/// A pair that lost its reverse half (deleted by hand here) is repaired by the GC, not deleted:
/// replies are translated again and the flow keeps its port.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn gc_restores_a_reverse_half_that_went_missing() {
    let mut h = Harness::new(&base_contents());
    let port = h.port_of(&tcp(POD, 40000, EXTERNAL, 80, b""));
    h.egress(&tcp(POD, 40001, EXTERNAL, 80, b""));
    let reverse = masq_datapath::ebpf::types::NatTuple::new(TCP, EXTERNAL, 80, NODE, port);
    h.maps.nat_ingress_mut().remove(&reverse).unwrap();
    let report = gc_after(&mut h.maps, 0);
    assert_eq!(
        (report.restored_reverse, report.removed()),
        (1, 0),
        "{report:?}"
    );
    assert_eq!(list(&h.maps).len(), 4, "both pairs whole");
    let (_, back) = h.ingress(&tcp(EXTERNAL, 80, NODE, port, b""));
    assert_eq!((inspect(&back).dst, inspect(&back).dport), (POD, 40000));
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn an_evicted_reverse_half_is_restored_by_the_flow_within_a_second() {
    use masq_datapath::ebpf::types::NatTuple;
    let mut h = Harness::new(&base_contents());
    let port = h.port_of(&tcp(POD, 40000, EXTERNAL, 80, b""));
    let reverse = NatTuple::new(TCP, EXTERNAL, 80, NODE, port);
    h.maps.nat_ingress_mut().remove(&reverse).unwrap();
    let reply = tcp(EXTERNAL, 80, NODE, port, b"");
    assert_eq!(
        h.ingress(&reply).1,
        reply,
        "no reverse half, no translation"
    );

    // Age the forward half past the one-second refresh, as if the flow had been quiet.
    let forward = NatTuple::new(TCP, POD, 40000, EXTERNAL, 80);
    let mut entry = h.maps.nat_egress_mut().get(&forward, 0).unwrap();
    entry.last_seen = 0;
    h.maps.nat_egress_mut().insert(forward, entry, 0).unwrap();

    h.egress(&tcp(POD, 40000, EXTERNAL, 80, b"again"));
    assert_eq!(h.count(Reason::NatReverseRestored), 1);
    assert_eq!(inspect(&h.ingress(&reply).1).dst, POD);
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

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn the_nat_table_is_read_whole_across_several_batches() {
    let mut h = Harness::new(&base_contents());
    // More pairs than one batch call returns (4096), over several destinations.
    let flows = 10_000u32;
    for i in 0..flows {
        let port = 32768 + u16::try_from(i).unwrap();
        let dport = 80 + u16::try_from(i % 3).unwrap();
        let (rc, _) = h.egress(&udp(POD, port, EXTERNAL, dport, b""));
        assert_eq!(rc, CONTINUE);
    }
    let entries = list(&h.maps);
    assert_eq!(entries.len(), 2 * flows as usize);
    let pressure = nat::pressure(&h.maps).unwrap();
    assert_eq!(
        (pressure.egress_entries, pressure.ingress_entries),
        (flows, flows)
    );
    assert_eq!(pressure.busiest_pool.unwrap().used, 3334);
    assert_eq!(gc_after(&mut h.maps, 0).expired_pairs, 0);
    assert_eq!(gc_after(&mut h.maps, 120).expired_pairs, flows as usize);
    assert!(list(&h.maps).is_empty());
}

/// A kernel with `bpf_cast_to_kern_ctx` (6.2+, with BTF) must be found to have it: otherwise
/// `ebpf_test_run` would quietly test the helper path twice.
#[test]
fn the_kernel_context_is_found_where_the_kernel_offers_it() {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut numbers = release
        .split(['.', '-'])
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let version = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    let offered = version >= (6, 2) && std::path::Path::new("/sys/kernel/btf/vmlinux").exists();
    match KernCtx::detect() {
        KernCtx::Kfunc(id) => assert!(id > 0),
        KernCtx::Absent => assert!(!offered, "kernel {release} has the kfunc, masq missed it"),
    }
}

/// A kfunc the verifier refuses (here: BTF id 1, which is no function) costs the helper path,
/// not the datapath: the programs load once more without it and translate as ever.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn programs_refused_with_the_kfunc_load_with_the_helpers() {
    let h = Harness::fallback(&base_contents(), KernCtx::Kfunc(1));
    let (rc, out) = h.egress(&tcp(POD, 40000, EXTERNAL, 80, b"hello"));
    assert_eq!(rc, CONTINUE);
    assert_eq!(inspect(&out).src, NODE);
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
