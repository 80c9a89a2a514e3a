//! The NAT table: a full port pool and its recovery after GC, live pairs kept and listed,
//! lifetimes (TCP FIN), lost reverse halves restored by the GC or by the flow, and the whole
//! table read across several batches.

use etherparse::PacketBuilder;
use masq_datapath::ebpf::nat;
use masq_datapath::ebpf::types::Reason;

use crate::harness::*;

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
