//! The flow table's life cycle (issue 14): per-state lifetimes, a reused 4-tuple, halves that go
//! missing and come back, and no translated flow ever leaving with the pod's address.

use masq_datapath::ebpf::types::{NatTuple, Reason};
use masq_datapath::ebpf::FlowState;

use crate::harness::*;

fn forward_key(sport: u16) -> NatTuple {
    NatTuple::new(TCP, POD, sport, EXTERNAL, 80)
}

/// Makes an entry look idle since long ago, so the next packet refreshes its timestamp (the
/// moment the programs check the other half).
fn age(h: &mut Harness, egress: bool, key: NatTuple) {
    let map = if egress {
        h.maps.nat_egress_mut()
    } else {
        h.maps.nat_ingress_mut()
    };
    let mut entry = map.get(&key, 0).unwrap();
    entry.last_seen = 0;
    map.insert(key, entry, 0).unwrap();
}

fn out(h: &Harness, flags: &str) -> Seen {
    let (rc, frame) = h.egress(&tcp_segment(POD, 40000, EXTERNAL, 80, flags, b"x"));
    assert_eq!(rc, CONTINUE);
    inspect(&frame)
}

/// The flow's state (`masq nat list` shows both halves' flags together).
fn state_of(h: &Harness) -> FlowState {
    let entries = list(&h.maps);
    let forward = entries
        .iter()
        .find(|e| e.original == forward_key(40000).into())
        .expect("the forward half");
    forward.state
}

/// A client with a fixed source port resets a connection and opens the next one at once on
/// the same 4-tuple, then goes quiet past the closing grace: the new connection is alive
/// (reopened by its SYN), so the GC keeps it and its packets stay translated.
/// The remote side resets: the reverse half closes, and the pod's SYN must reopen it too.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn a_syn_reopens_a_pair_closed_by_rst() {
    reuse_after(Teardown::RemoteRst);
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn a_syn_reopens_a_pair_closed_by_fin() {
    reuse_after(Teardown::PodFin);
}

enum Teardown {
    RemoteRst,
    PodFin,
}

fn reuse_after(teardown: Teardown) {
    let mut h = Harness::new(&base_contents());
    let first = out(&h, "S");
    assert_eq!(first.src, NODE);
    let port = first.sport;
    h.ingress(&tcp_segment(EXTERNAL, 80, NODE, port, "SA", b""));
    assert_eq!(state_of(&h), FlowState::TcpEstablished);
    match teardown {
        Teardown::RemoteRst => {
            h.ingress(&tcp_segment(EXTERNAL, 80, NODE, port, "R", b""));
        }
        Teardown::PodFin => {
            out(&h, "FA");
        }
    }
    assert_eq!(state_of(&h), FlowState::TcpClosing);

    assert_eq!(
        out(&h, "S"),
        first,
        "the reused tuple keeps its translation"
    );
    assert_eq!(state_of(&h), FlowState::TcpSynSent, "the SYN reopened it");
    h.ingress(&tcp_segment(EXTERNAL, 80, NODE, port, "SA", b""));
    // 15 s idle: past the 10 s closing grace, well within the established lifetime.
    let report = gc_after(&mut h.maps, 15);
    assert_eq!(report.removed(), 0, "{report:?}");
    let seen = out(&h, "A");
    assert_eq!((seen.src, seen.sport), (NODE, port));
}

/// The forward half is gone; the next packet is a plain ACK (not a SYN, which would hide the
/// bug): it is translated, never passed with the pod's address; and when the search meets the
/// flow's own reverse half (here the only port there is) the flow keeps its port.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn an_ack_after_the_forward_half_is_lost_keeps_its_translation() {
    let mut contents = base_contents();
    contents.set_ports(&[masq_datapath::PortRange {
        first: 41000,
        last: 41000,
    }]);
    let mut h = Harness::new(&contents);
    out(&h, "S");
    h.maps.nat_egress_mut().remove(&forward_key(40000)).unwrap();
    let seen = out(&h, "A");
    assert_eq!((seen.src, seen.sport), (NODE, 41000));
    assert_eq!(h.count(Reason::NatMidstream), 1);
    assert_eq!(list(&h.maps).len(), 2, "one pair, whole");
}

/// The same with a changed port: the flow cannot find its reverse half from the pod's side, but
/// it gets a mapping, so it never leaves untranslated.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn a_mid_stream_packet_without_any_entry_is_translated() {
    let h = Harness::new(&base_contents());
    let seen = translated_ack(&h, 1234);
    assert_eq!(seen.src, NODE);
    assert_eq!(h.count(Reason::NatMidstream), 1);
}

fn translated_ack(h: &Harness, sport: u16) -> Seen {
    let (rc, frame) = h.egress(&tcp_segment(POD, sport, EXTERNAL, 80, "A", b"data"));
    assert_eq!(rc, CONTINUE);
    inspect(&frame)
}

/// A reply whose forward half is gone puts it back, so the pod's next packet keeps the port.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn a_reply_restores_a_missing_forward_half() {
    let mut h = Harness::new(&base_contents());
    // A changed port: restoring is the only way the flow keeps it.
    let (_, first) = h.egress(&tcp_segment(POD, 1234, EXTERNAL, 80, "S", b""));
    let port = inspect(&first).sport;
    assert_ne!(port, 1234);
    h.maps.nat_egress_mut().remove(&forward_key(1234)).unwrap();
    let reverse = NatTuple::new(TCP, EXTERNAL, 80, NODE, port);
    age(&mut h, false, reverse);
    let (_, back) = h.ingress(&tcp_segment(EXTERNAL, 80, NODE, port, "SA", b""));
    assert_eq!((inspect(&back).dst, inspect(&back).dport), (POD, 1234));
    assert_eq!(h.count(Reason::NatForwardRestored), 1);
    assert_eq!(translated_ack(&h, 1234).sport, port);
}

/// The GC repairs a pair from its reverse half too.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn gc_restores_a_forward_half_that_went_missing() {
    let mut h = Harness::new(&base_contents());
    let (_, first) = h.egress(&tcp_segment(POD, 1234, EXTERNAL, 80, "S", b""));
    let port = inspect(&first).sport;
    h.maps.nat_egress_mut().remove(&forward_key(1234)).unwrap();
    // Past the grace a just-claimed port gets before its forward half is written.
    let report = gc_after(&mut h.maps, 6);
    assert_eq!(report.restored_forward, 1, "{report:?}");
    assert_eq!(translated_ack(&h, 1234).sport, port);
}

/// Unanswered SYNs (a pod probing a dead service) are gone after the SYN lifetime, not 6 hours;
/// an answered connection stays.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn unanswered_syns_expire_after_the_syn_lifetime() {
    let mut h = Harness::new(&base_contents());
    for port in 0..50 {
        h.egress(&tcp_segment(POD, 41000 + port, EXTERNAL, 80, "S", b""));
    }
    let port = out(&h, "S").sport;
    h.ingress(&tcp_segment(EXTERNAL, 80, NODE, port, "SA", b""));
    assert_eq!(gc_after(&mut h.maps, 55).removed(), 0);
    let report = gc_after(&mut h.maps, 61);
    assert_eq!(report.expired_pairs, 50, "{report:?}");
    assert_eq!(list(&h.maps).len(), 2, "the answered connection stays");
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn udp_lives_30_s_unanswered_and_120_s_answered() {
    let mut h = Harness::new(&base_contents());
    let (_, asked) = h.egress(&udp(POD, 40000, EXTERNAL, 53, b"q"));
    h.egress(&udp(POD, 40001, EXTERNAL, 53, b"q"));
    h.ingress(&udp(EXTERNAL, 53, NODE, inspect(&asked).sport, b"a"));
    let report = gc_after(&mut h.maps, 31);
    assert_eq!(report.expired_pairs, 1, "the unanswered one");
    assert_eq!(gc_after(&mut h.maps, 119).expired_pairs, 0);
    assert_eq!(gc_after(&mut h.maps, 121).expired_pairs, 1);
}

/// A kept flow is recorded, passes on its record, and stays kept when its destination stops
/// being kept; a new flow to that destination is masqueraded.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn a_kept_udp_flow_stays_kept_when_the_config_changes() {
    let mut kept = base_contents();
    keep_dst(&mut kept, ipnet::Ipv4Net::new(EXTERNAL, 32).unwrap());
    let mut h = Harness::new(&kept);
    let flow = udp(POD, 5000, EXTERNAL, 53, b"q");
    assert_eq!(h.egress(&flow), (CONTINUE, flow.clone()));
    h.maps.apply(&base_contents()).unwrap();
    assert_eq!(h.egress(&flow), (CONTINUE, flow.clone()), "kept mid-flow");
    let (_, new) = h.egress(&udp(POD, 5001, EXTERNAL, 53, b"q"));
    assert_eq!(inspect(&new).src, NODE);
}

/// The first fragment is dropped (no port left): the rest of the datagram is dropped too.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn later_fragments_follow_a_dropped_first_fragment() {
    let mut contents = base_contents();
    contents.set_ports(&[masq_datapath::PortRange {
        first: 40000,
        last: 40000,
    }]);
    let h = Harness::new(&contents);
    assert_eq!(h.egress(&udp(POD, 1, EXTERNAL, 9000, b"")).0, CONTINUE);
    let big = udp(POD, 2, EXTERNAL, 9000, &[0x5a; 200]);
    let (first, later) = crate::cases::fragment(&big, 48);
    assert_eq!(h.egress(&first).0, SHOT);
    assert_eq!(h.egress(&later).0, SHOT);
    assert_eq!(h.count(Reason::DropFragOfDropped), 1);
}

/// A flow's reverse half goes missing and another flow takes its port meanwhile: at the first
/// flow's next timestamp refresh it finds its port taken and gets a new one, so each flow gets
/// its own replies again (rather than until the GC notices).
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn a_flow_whose_port_went_to_another_flow_is_mapped_anew() {
    let mut contents = base_contents();
    contents.set_ports(&[masq_datapath::PortRange {
        first: 41000,
        last: 41001,
    }]);
    let mut h = Harness::new(&contents);
    let a = h.port_of(&tcp_segment(POD, 40000, EXTERNAL, 80, "S", b""));
    let c = h.port_of(&tcp_segment(POD, 40009, EXTERNAL, 80, "S", b""));
    h.maps
        .nat_ingress_mut()
        .remove(&NatTuple::new(TCP, EXTERNAL, 80, NODE, a))
        .unwrap();
    // The only free port is A's: B takes it.
    let b = h.port_of(&tcp_segment(POD2, 40000, EXTERNAL, 80, "S", b""));
    assert_eq!(b, a);
    // C leaves, and A's next packet comes after a refresh.
    h.maps
        .nat_ingress_mut()
        .remove(&NatTuple::new(TCP, EXTERNAL, 80, NODE, c))
        .unwrap();
    h.maps.nat_egress_mut().remove(&forward_key(40009)).unwrap();
    age(&mut h, true, forward_key(40000));
    let moved = h.port_of(&tcp_segment(POD, 40000, EXTERNAL, 80, "A", b"again"));
    assert_eq!(moved, c, "A takes the port left free");
    assert_eq!(h.count(Reason::NatRemapped), 1);
    for (port, pod) in [(a, POD2), (moved, POD)] {
        let (_, back) = h.ingress(&tcp_segment(EXTERNAL, 80, NODE, port, "A", b""));
        assert_eq!((inspect(&back).dst, inspect(&back).dport), (pod, 40000));
    }
}

/// The GC's schedule reads the programs' counters (ebpf/gc/schedule.rs): after a pass slow enough to
/// defer the next tick, new flows (translated and kept) count as entries added, and the first
/// flow refused for want of a port makes a pass due at once.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn the_gc_schedule_follows_new_flows_and_refusals() {
    use masq_datapath::ebpf::gc::schedule::{Due, GcSchedule, Signals};
    use masq_datapath::ebpf::DEFAULT_NAT_CAPACITY;
    use std::time::{Duration, Instant};

    const KEPT_HOST: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 9, 9, 9);
    let mut contents = base_contents();
    contents.set_ports(&[masq_datapath::PortRange {
        first: 40000,
        last: 40002,
    }]);
    let mut h = Harness::new(&contents);
    let mut schedule = GcSchedule::default();
    let began = Instant::now();
    let mut slow = gc_after(&mut h.maps, 0);
    slow.duration = Duration::from_millis(500);
    let before = Signals::read(&h.maps).unwrap();
    schedule.passed(began, &slow, Some(before));
    let tick = began + Duration::from_secs(5);
    let due = |h: &Harness| {
        schedule.due(
            tick,
            Some(Signals::read(&h.maps).unwrap()),
            DEFAULT_NAT_CAPACITY,
        )
    };

    for port in 0..3u16 {
        assert_eq!(
            h.egress(&udp(POD, 1000 + port, EXTERNAL, 53, b"")).0,
            CONTINUE
        );
    }
    assert_eq!(h.egress(&udp(POD, 1000, KEPT_HOST, 53, b"")).0, CONTINUE);
    let now = Signals::read(&h.maps).unwrap();
    assert_eq!((now.added - before.added, now.refused), (4, before.refused));
    assert_eq!(
        due(&h),
        None,
        "a 500 ms pass waits 25 s while nothing is refused"
    );

    assert_eq!(h.egress(&udp(POD, 2000, EXTERNAL, 53, b"")).0, SHOT);
    assert_eq!(due(&h), Some(Due::Refusals));
}
