//! IPv6 extension headers and fragments (issue 17): a chain within the programs' bound is
//! walked and the packet translated; a longer one passes untouched and is counted; later
//! fragments follow their first fragment's fate, both ways.

use masq_datapath::ebpf::types::Reason;

use crate::harness::*;
use crate::harness6::*;

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn hop_by_hop_and_destination_options_are_walked_both_ways() {
    let h = Harness::new(&base_contents6());
    let frame = with_extensions(&tcp6(POD6, 1234, EXTERNAL6, 443, "S", b"x"), &hop_and_dst());
    let (rc, out) = h.egress(&frame);
    assert_eq!(rc, CONTINUE);
    let seen = inspect6(&out);
    assert_eq!(seen.src, NODE6);
    assert_ne!(seen.sport, 1234, "1234 is outside the range");
    let reply = with_extensions(
        &tcp6(EXTERNAL6, 443, NODE6, seen.sport, "SA", b"y"),
        &hop_and_dst(),
    );
    let (_, back) = h.ingress(&reply);
    assert_eq!(
        inspect6(&back),
        Seen6 {
            src: EXTERNAL6,
            sport: 443,
            dst: POD6,
            dport: 1234
        }
    );
    // The headers themselves are as they were.
    assert_eq!(&back[14 + 40..14 + 40 + 24], &reply[14 + 40..14 + 40 + 24]);
}

/// Eight headers are the bound: eight are walked, nine pass untouched (counted), in both
/// directions (the pod's address leaves then: issue 17 has what is beyond the bound passed).
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn a_chain_longer_than_the_bound_passes_untouched_and_is_counted() {
    let h = Harness::new(&base_contents6());
    let within = with_extensions(&udp6(POD6, 5000, EXTERNAL6, 53, b"q"), &long_chain(8));
    assert_eq!(
        inspect6(&h.egress(&within).1).src,
        NODE6,
        "8 headers: walked"
    );
    let beyond = with_extensions(&udp6(POD6, 5001, EXTERNAL6, 53, b"q"), &long_chain(9));
    assert_eq!(h.egress(&beyond), (CONTINUE, beyond.clone()));
    let inbound = with_extensions(&udp6(EXTERNAL6, 53, NODE6, 5000, b"a"), &long_chain(9));
    assert_eq!(h.ingress(&inbound), (CONTINUE, inbound.clone()));
    assert_eq!(h.count(Reason::PassExtHeaders), 2);
    assert_eq!(h.count(Reason::PassUnsupported), 0);

    // Past the byte bound (256 bytes of headers) even with few headers.
    let wide: Vec<_> = (0..2).map(|_| (60u8, ext_header(60, 20, 0))).collect();
    let far = with_extensions(&udp6(POD6, 5002, EXTERNAL6, 53, b"q"), &wide);
    assert_eq!(h.egress(&far), (CONTINUE, far.clone()));
    assert_eq!(h.count(Reason::PassExtHeaders), 3);
}

/// A routing header with segments left sends the packet on to another final destination,
/// which the transport checksum covers: not masq's to translate.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn a_routing_header_with_segments_left_is_left_alone() {
    let h = Harness::new(&base_contents6());
    let routed = with_extensions(&udp6(POD6, 5000, EXTERNAL6, 53, b"q"), &routing_chain(1));
    assert_eq!(h.egress(&routed), (CONTINUE, routed.clone()));
    let done = with_extensions(&udp6(POD6, 5001, EXTERNAL6, 53, b"q"), &routing_chain(0));
    assert_eq!(inspect6(&h.egress(&done).1).src, NODE6);
}

/// Reassembles two IPv6 fragments and checks the UDP checksum over the whole datagram.
fn reassemble_udp6(first: &[u8], later: &[u8]) -> Seen6 {
    let (_, off1) = upper_layer(first);
    let (_, off2) = upper_layer(later);
    for frag in [first, later] {
        assert_eq!(
            usize::from(u16::from_be_bytes([frag[18], frag[19]])),
            frag.len() - 54
        );
    }
    assert_eq!(&first[22..54], &later[22..54], "both fragments' addresses");
    let mut datagram = first[..14 + 40].to_vec();
    datagram[14 + 6] = 17;
    datagram.extend_from_slice(&first[off1..]);
    datagram.extend_from_slice(&later[off2..]);
    let len = u16::try_from(datagram.len() - 54).unwrap();
    datagram[18..20].copy_from_slice(&len.to_be_bytes());
    inspect6(&datagram)
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn fragments_follow_the_first_fragment_both_ways() {
    let h = Harness::new(&base_contents6());
    let big = udp6(POD6, 53, EXTERNAL6, 9000, &[0x5a; 300]);
    let (first, later) = fragment6(&big, 104);
    let (rc1, first_out) = h.egress(&first);
    let (rc2, later_out) = h.egress(&later);
    assert_eq!((rc1, rc2), (CONTINUE, CONTINUE));
    let seen = reassemble_udp6(&first_out, &later_out);
    assert_eq!(seen.src, NODE6);
    assert!(in_default_ports(seen.sport));

    let reply = udp6(EXTERNAL6, 9000, NODE6, seen.sport, &[0xa5; 300]);
    let (first, later) = fragment6(&reply, 104);
    let (_, first_back) = h.ingress(&first);
    let (_, later_back) = h.ingress(&later);
    let back = reassemble_udp6(&first_back, &later_back);
    assert_eq!((back.dst, back.dport), (POD6, 53));
    // The later fragments are counted as translated, not as strays.
    assert_eq!(h.count(Reason::FragUntracked), 0);
    assert_eq!(h.count(Reason::TranslatedEgress), 2);
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn a_kept_first_fragment_keeps_the_rest_and_a_stray_is_counted() {
    let h = Harness::new(&base_contents6());
    let kept = udp6(POD6, 53, KEPT6, 9000, &[1; 200]);
    let (first, later) = fragment6(&kept, 96);
    assert_eq!(h.egress(&first), (CONTINUE, first.clone()));
    assert_eq!(h.egress(&later), (CONTINUE, later.clone()));

    let reply = udp6(EXTERNAL6, 9000, NODE6, 40000, &[1; 200]);
    let (_, stray) = fragment6(&reply, 96);
    assert_eq!(h.ingress(&stray), (CONTINUE, stray.clone()));
    assert_eq!(h.count(Reason::FragUntracked), 1);
}

/// The first fragment is dropped (no port left): the rest of the datagram is dropped too.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn later_fragments_follow_a_dropped_first_fragment() {
    let mut contents = base_contents6();
    contents.set_ports(&[masq_datapath::PortRange {
        first: 40000,
        last: 40000,
    }]);
    let h = Harness::new(&contents);
    assert_eq!(h.egress(&udp6(POD6, 1, EXTERNAL6, 9000, b"")).0, CONTINUE);
    let big = udp6(POD6, 2, EXTERNAL6, 9000, &[0x5a; 200]);
    let (first, later) = fragment6(&big, 96);
    assert_eq!(h.egress(&first).0, SHOT);
    assert_eq!(h.egress(&later).0, SHOT);
    assert_eq!(h.count(Reason::DropFragOfDropped), 1);
    assert_eq!(h.count(Reason::DropPortExhausted), 1);
}

/// An atomic fragment (offset 0, no more fragments) is a whole packet: translated.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn an_atomic_fragment_is_translated_like_a_whole_packet() {
    let h = Harness::new(&base_contents6());
    let frame = udp6(POD6, 5000, EXTERNAL6, 53, b"atomic");
    let (first, _) = fragment6(&frame, frame.len() - 54);
    // Clear M: the only fragment.
    let mut atomic = first.clone();
    atomic[14 + 40 + 3] &= !1;
    let (_, out) = h.egress(&atomic);
    assert_eq!(inspect6(&out).src, NODE6);
    assert_eq!(h.count(Reason::FragUntracked), 0);
}
