//! Thousands of random packets, each checked against a small userspace model of the NAT.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::harness::*;

/// (proto, src, sport, dst, dport) of the pod's (or node's) side.
type Flow = (u8, Ipv4Addr, u16, Ipv4Addr, u16);
/// (proto, remote, remote port, port on the node address): one port of one pool.
type PoolPort = (u8, Ipv4Addr, u16, u16);

#[derive(Default)]
struct Model {
    /// Translated flow → translated port.
    forward: HashMap<Flow, u16>,
    /// Port on the node address → the flow it translates back to.
    reverse: HashMap<PoolPort, Flow>,
    /// Every port in use: translations and the node's own (reserved) flows.
    taken: HashSet<PoolPort>,
}

const PORTS: [u16; 6] = [53, 80, 40000, 40001, 50000, 1234];

/// A flow of the node itself: untouched and reserved, unless a translation already holds its
/// port towards that destination; then it is moved to a free port.
fn node_flow(
    h: &Harness,
    model: &mut Model,
    round: usize,
    (proto, remote, rport): (u8, Ipv4Addr, u16),
    rng: &mut StdRng,
) {
    // Half of the time the node's kernel happens to pick a port a pod's translation holds
    // towards that destination (it cannot know): the collision masq must resolve.
    let held: Vec<u16> = model
        .reverse
        .keys()
        .filter(|(p, r, rp, _)| (*p, *r, *rp) == (proto, remote, rport))
        .map(|(_, _, _, port)| *port)
        .collect();
    let nport = if !held.is_empty() && rng.random_bool(0.5) {
        held[rng.random_range(0..held.len())]
    } else {
        PORTS[rng.random_range(0..PORTS.len())]
    };
    let flow = (proto, NODE, nport, remote, rport);
    let frame = build(proto, NODE, nport, remote, rport, true);
    let (rc, out) = h.egress(&frame);
    assert_eq!(rc, CONTINUE, "round {round}");
    let pool = (proto, remote, rport, nport);
    if let Some(port) = model.forward.get(&flow) {
        assert_eq!(
            inspect(&out).sport,
            *port,
            "round {round}: node remap changed"
        );
    } else if model.reverse.contains_key(&pool) {
        let port = inspect(&out).sport;
        let moved = (proto, remote, rport, port);
        assert!(
            port != nport && in_default_ports(port),
            "round {round}: node flow not moved"
        );
        assert!(
            !model.taken.contains(&moved),
            "round {round}: node moved onto a used port"
        );
        model.taken.insert(moved);
        model.forward.insert(flow, port);
        model.reverse.insert(moved, flow);
    } else {
        assert_eq!(out, frame, "round {round}: a node flow was translated");
        model.taken.insert(pool);
    }
}

fn build(proto: u8, src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, egress: bool) -> Vec<u8> {
    match proto {
        TCP => tcp(src, sport, dst, dport, b"x"),
        UDP => udp(src, sport, dst, dport, b"yy"),
        _ if egress => echo_request(src, dst, sport, 1),
        _ => echo_reply(src, dst, dport, 1),
    }
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn random_packets_agree_with_the_model() {
    let h = Harness::new(&base_contents());
    let mut rng = StdRng::seed_from_u64(0x6d61_7371);
    let pods = [POD, POD2, Ipv4Addr::new(10, 244, 2, 9)];
    let remotes = [
        EXTERNAL,
        Ipv4Addr::new(198, 51, 100, 7),
        Ipv4Addr::new(10, 9, 9, 9),
    ];
    let ports = PORTS;
    let mut model = Model::default();
    let mut translated = 0;

    for round in 0..5000 {
        let proto = [TCP, UDP, ICMP][rng.random_range(0..3)];
        let remote = remotes[rng.random_range(0..remotes.len())];
        let rport = if proto == ICMP {
            0
        } else {
            ports[rng.random_range(0..ports.len())]
        };
        if rng.random_bool(0.1) {
            node_flow(&h, &mut model, round, (proto, remote, rport), &mut rng);
        } else if rng.random_bool(0.6) {
            let pod = pods[rng.random_range(0..pods.len())];
            let pport = ports[rng.random_range(0..ports.len())];
            let flow = (proto, pod, pport, remote, rport);
            let (rc, out) = h.egress(&build(proto, pod, pport, remote, rport, true));
            assert_eq!(rc, CONTINUE, "round {round}");
            let seen = inspect(&out);
            let kept = remote.octets()[0] == 10;
            if kept {
                assert_eq!(seen.src, pod, "round {round}: kept destination translated");
                continue;
            }
            assert_eq!(seen.src, NODE, "round {round}");
            let port = seen.sport;
            match model.forward.get(&flow) {
                Some(known) => assert_eq!(port, *known, "round {round}: translation changed"),
                None => {
                    let pool = (proto, remote, rport, port);
                    assert!(
                        in_default_ports(port),
                        "round {round}: port {port} outside the table"
                    );
                    assert!(
                        !model.taken.contains(&pool),
                        "round {round}: port {port} reused"
                    );
                    model.taken.insert(pool);
                    model.forward.insert(flow, port);
                    model.reverse.insert((proto, remote, rport, port), flow);
                }
            }
            translated += 1;
        } else {
            // A reply: to a known translated port most of the time, else to a random one.
            let known: Vec<_> = model.reverse.keys().copied().collect();
            let (proto, remote, rport, port) = if !known.is_empty() && rng.random_bool(0.8) {
                known[rng.random_range(0..known.len())]
            } else {
                (proto, remote, rport, rng.random_range(32768..=65535))
            };
            let frame = build(proto, remote, rport, NODE, port, false);
            let (rc, out) = h.ingress(&frame);
            assert_eq!(rc, CONTINUE, "round {round}");
            match model.reverse.get(&(proto, remote, rport, port)) {
                Some(&(_, pod, pport, _, _)) => {
                    let seen = inspect(&out);
                    // ICMP: the echo identifier reads as the destination port of a reply.
                    assert_eq!((seen.dst, seen.dport), (pod, pport), "round {round}");
                }
                None => assert_eq!(out, frame, "round {round}: unknown reply translated"),
            }
        }
    }
    assert!(
        translated > 1000,
        "only {translated} translations exercised"
    );
    let node_moves = model.forward.keys().filter(|f| f.1 == NODE).count();
    assert!(node_moves > 0, "no node flow collided with a translation");
    assert_eq!(
        h.count(masq_datapath::ebpf::types::Reason::HostPortRemapped) as usize,
        node_moves
    );
}

/// Thousands of random pod packets to masqueraded destinations while halves of the table go
/// missing (as by a hand, an upgrade, a half-copied carry-over) and the GC runs at random
/// moments up to 400 s ahead (expiring whatever is idle by then): every packet leaves
/// translated, and the reply to the port it left with reaches the pod and port that sent it.
/// A lost reverse half comes back at the flow's next timestamp refresh (under a second), so
/// the model lets that much time pass for the flow before its next packet.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn no_pod_address_leaves_under_lost_halves_and_gc() {
    use masq_datapath::ebpf::types::NatTuple;

    let mut h = Harness::new(&base_contents());
    let mut rng = StdRng::seed_from_u64(0x6c65_616b);
    let pods = [POD, POD2];
    let remotes = [EXTERNAL, Ipv4Addr::new(198, 51, 100, 7)];
    let (mut lost, mut gcs) = (0, 0);
    for round in 0..4000 {
        match rng.random_range(0..20) {
            0 => {
                // Lose one half of a random entry.
                let forward = h.maps.nat_egress_entries().unwrap();
                if let Some((key, entry)) = forward.get(rng.random_range(0..forward.len().max(1))) {
                    if rng.random_bool(0.5) {
                        let _ = h.maps.nat_egress_mut().remove(key);
                    } else {
                        let rev = masq_datapath::ebpf::gc::reverse_of(key, entry);
                        let _ = h.maps.nat_ingress_mut().remove(&rev);
                        // The flow's next packet comes after a timestamp refresh (100 jiffies,
                        // under a second), when the programs look for the other half.
                        let mut aged = *entry;
                        aged.last_seen = 0;
                        let _ = h.maps.nat_egress_mut().insert(key, aged, 0);
                    }
                    lost += 1;
                }
                continue;
            }
            1 => {
                gc_after(&mut h.maps, rng.random_range(0..400));
                gcs += 1;
                continue;
            }
            _ => {}
        }
        let proto = [TCP, UDP, ICMP][rng.random_range(0..3)];
        let pod = pods[rng.random_range(0..pods.len())];
        let remote = remotes[rng.random_range(0..remotes.len())];
        let pport = PORTS[rng.random_range(0..PORTS.len())];
        let rport = if proto == ICMP { 0 } else { 443 };
        let frame = match proto {
            TCP => tcp_segment(
                pod,
                pport,
                remote,
                rport,
                ["S", "A", "A", "FA", "R"][rng.random_range(0..5)],
                b"x",
            ),
            _ => build(proto, pod, pport, remote, rport, true),
        };
        let (rc, out) = h.egress(&frame);
        assert_eq!(rc, CONTINUE, "round {round}");
        let seen = inspect(&out);
        assert_eq!(
            seen.src, NODE,
            "round {round}: {proto} from {pod}:{pport} left untranslated"
        );
        let port = seen.sport;
        let reply = build(proto, remote, rport, NODE, port, false);
        let (_, back) = h.ingress(&reply);
        let back = inspect(&back);
        assert_eq!(
            (back.dst, back.dport),
            (pod, pport),
            "round {round}: the reply went astray"
        );
        let key = NatTuple::new(proto, pod, pport, remote, rport);
        assert!(
            h.maps.nat_egress_mut().get(&key, 0).is_ok(),
            "round {round}: no forward half"
        );
    }
    assert!(
        lost > 100 && gcs > 100,
        "lost {lost} halves, {gcs} GC passes"
    );
}
