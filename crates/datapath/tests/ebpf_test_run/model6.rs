//! The randomized runs of `model`, for IPv6: thousands of random packets checked against the
//! userspace NAT model, and a run in which halves go missing and the GC runs at random moments.

use std::collections::{HashMap, HashSet};
use std::net::Ipv6Addr;

use masq_datapath::ebpf::types::{NatTuple6, Reason};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::harness::*;
use crate::harness6::*;

/// (proto, src, sport, dst, dport) of the pod's (or node's) side.
type Flow6 = (u8, Ipv6Addr, u16, Ipv6Addr, u16);
/// (proto, remote, remote port, port on the node address): one port of one pool.
type PoolPort6 = (u8, Ipv6Addr, u16, u16);

const PORTS: [u16; 6] = [53, 80, 40000, 40001, 50000, 1234];

fn build6(
    proto: u8,
    src: Ipv6Addr,
    sport: u16,
    dst: Ipv6Addr,
    dport: u16,
    egress: bool,
) -> Vec<u8> {
    match proto {
        TCP => tcp6(src, sport, dst, dport, "S", b"x"),
        UDP => udp6(src, sport, dst, dport, b"yy"),
        _ if egress => echo6_request(src, dst, sport, 1),
        _ => echo6_reply(src, dst, dport, 1),
    }
}

#[derive(Default)]
struct Model6 {
    forward: HashMap<Flow6, u16>,
    reverse: HashMap<PoolPort6, Flow6>,
    taken: HashSet<PoolPort6>,
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn random_ipv6_packets_agree_with_the_model() {
    let h = Harness::new(&base_contents6());
    let mut rng = StdRng::seed_from_u64(0x6d61_7376);
    let pods = [POD6, POD6_2, "fd00:10:244:2::9".parse().unwrap()];
    let remotes = [EXTERNAL6, "2001:db8::7".parse().unwrap(), KEPT6];
    let mut model = Model6::default();
    let (mut translated, mut node_moves) = (0, 0);

    for round in 0..5000 {
        let proto = [TCP, UDP, ICMPV6][rng.random_range(0..3)];
        let remote = remotes[rng.random_range(0..remotes.len())];
        let rport = if proto == ICMPV6 {
            0
        } else {
            PORTS[rng.random_range(0..PORTS.len())]
        };
        let sport = PORTS[rng.random_range(0..PORTS.len())];
        if rng.random_bool(0.1) && remote != KEPT6 {
            // The node's own flow: untouched and reserved, or moved off a pod's port. Half of
            // the time its kernel happens to pick a port a pod's translation holds towards
            // that destination (it cannot know): the collision masq must resolve.
            let held: Vec<u16> = model
                .reverse
                .keys()
                .filter(|(p, r, rp, _)| (*p, *r, *rp) == (proto, remote, rport))
                .map(|(_, _, _, port)| *port)
                .collect();
            let sport = if !held.is_empty() && rng.random_bool(0.5) {
                held[rng.random_range(0..held.len())]
            } else {
                sport
            };
            let flow = (proto, NODE6, sport, remote, rport);
            let frame = build6(proto, NODE6, sport, remote, rport, true);
            let (rc, out) = h.egress(&frame);
            assert_eq!(rc, CONTINUE, "round {round}");
            let pool = (proto, remote, rport, sport);
            if let Some(port) = model.forward.get(&flow) {
                assert_eq!(
                    inspect6(&out).sport,
                    *port,
                    "round {round}: node remap changed"
                );
            } else if model.reverse.contains_key(&pool) {
                let port = inspect6(&out).sport;
                let moved = (proto, remote, rport, port);
                assert!(
                    port != sport && !model.taken.contains(&moved),
                    "round {round}"
                );
                model.taken.insert(moved);
                model.forward.insert(flow, port);
                model.reverse.insert(moved, flow);
                node_moves += 1;
            } else {
                assert_eq!(out, frame, "round {round}: a node flow was translated");
                model.taken.insert(pool);
            }
        } else if rng.random_bool(0.6) {
            let pod = pods[rng.random_range(0..pods.len())];
            let flow = (proto, pod, sport, remote, rport);
            let (rc, out) = h.egress(&build6(proto, pod, sport, remote, rport, true));
            assert_eq!(rc, CONTINUE, "round {round}");
            let seen = inspect6(&out);
            if remote == KEPT6 {
                assert_eq!(seen.src, pod, "round {round}: kept destination translated");
                continue;
            }
            assert_eq!(seen.src, NODE6, "round {round}");
            match model.forward.get(&flow) {
                Some(known) => assert_eq!(seen.sport, *known, "round {round}: translation changed"),
                None => {
                    let pool = (proto, remote, rport, seen.sport);
                    assert!(
                        in_default_ports(seen.sport),
                        "round {round}: port {} outside",
                        seen.sport
                    );
                    assert!(!model.taken.contains(&pool), "round {round}: port reused");
                    model.taken.insert(pool);
                    model.forward.insert(flow, seen.sport);
                    model.reverse.insert(pool, flow);
                }
            }
            translated += 1;
        } else {
            let known: Vec<_> = model.reverse.keys().copied().collect();
            let (proto, remote, rport, port) = if !known.is_empty() && rng.random_bool(0.8) {
                known[rng.random_range(0..known.len())]
            } else {
                (proto, remote, rport, rng.random_range(32768..=65535))
            };
            let frame = build6(proto, remote, rport, NODE6, port, false);
            let (rc, out) = h.ingress(&frame);
            assert_eq!(rc, CONTINUE, "round {round}");
            match model.reverse.get(&(proto, remote, rport, port)) {
                Some(&(_, pod, pport, _, _)) => {
                    let seen = inspect6(&out);
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
    assert!(node_moves > 0, "no node flow collided with a translation");
    assert_eq!(h.count(Reason::HostPortRemapped) as usize, node_moves);
}

/// Random pod packets while halves go missing and the GC runs at random moments up to 400 s
/// ahead: every packet leaves translated, and the reply to the port it left with reaches the
/// pod that sent it. After a half goes missing, the flow's own next packet comes first (a
/// timestamp refresh, under a second later, restores the half): another flow taking the port
/// meanwhile is a race the GC settles, which this run does not model.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn no_pod_address_leaves_under_lost_ipv6_halves_and_gc() {
    let mut h = Harness::new(&base_contents6());
    let mut rng = StdRng::seed_from_u64(0x6c65_6136);
    let pods = [POD6, POD6_2];
    let remotes = [EXTERNAL6, "2001:db8::7".parse().unwrap()];
    let (mut lost, mut gcs) = (0, 0);
    let mut next: Option<Flow6> = None;
    for round in 0..4000 {
        if next.is_none() {
            match rng.random_range(0..20) {
                0 => {
                    let forward = h.maps.nat6_egress_entries().unwrap();
                    if let Some((key, entry)) =
                        forward.get(rng.random_range(0..forward.len().max(1)))
                    {
                        if rng.random_bool(0.5) {
                            let _ = h.maps.nat6_egress_mut().remove(key);
                        } else {
                            let rev = NatTuple6::new(
                                key.proto,
                                key.dst(),
                                key.dst_port(),
                                entry.addr(),
                                entry.port(),
                            );
                            let _ = h.maps.nat6_ingress_mut().remove(&rev);
                            let mut aged = *entry;
                            aged.last_seen = 0;
                            let _ = h.maps.nat6_egress_mut().insert(key, aged, 0);
                        }
                        next = Some((
                            key.proto,
                            key.src(),
                            key.src_port(),
                            key.dst(),
                            key.dst_port(),
                        ));
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
        }
        let (proto, pod, pport, remote, rport) = next.take().unwrap_or_else(|| {
            let proto = [TCP, UDP, ICMPV6][rng.random_range(0..3)];
            let rport = if proto == ICMPV6 { 0 } else { 443 };
            (
                proto,
                pods[rng.random_range(0..pods.len())],
                PORTS[rng.random_range(0..PORTS.len())],
                remotes[rng.random_range(0..remotes.len())],
                rport,
            )
        });
        let frame = match proto {
            TCP => tcp6(
                pod,
                pport,
                remote,
                rport,
                ["S", "A", "A", "FA", "R"][rng.random_range(0..5)],
                b"x",
            ),
            _ => build6(proto, pod, pport, remote, rport, true),
        };
        let (rc, out) = h.egress(&frame);
        assert_eq!(rc, CONTINUE, "round {round}");
        let seen = inspect6(&out);
        assert_eq!(
            seen.src, NODE6,
            "round {round}: {proto} from {pod}:{pport} left untranslated"
        );
        let (_, back) = h.ingress(&build6(proto, remote, rport, NODE6, seen.sport, false));
        let back = inspect6(&back);
        assert_eq!(
            (back.dst, back.dport),
            (pod, pport),
            "round {round}: the reply went astray"
        );
    }
    assert!(
        lost > 100 && gcs > 100,
        "lost {lost} halves, {gcs} GC passes"
    );
}

/// Both families side by side: the same pod ports towards the same remote ports keep their
/// ports in each family (separate tables and pools), and each reply goes to its own family.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn both_families_keep_their_own_tables() {
    // Three ports: each family's three flows take all three, the other family's flows
    // notwithstanding.
    let mut contents = base_contents6();
    contents.set_ports(&[masq_datapath::PortRange {
        first: 41000,
        last: 41002,
    }]);
    let h = Harness::new(&contents);
    let (mut ports4, mut ports6) = (
        std::collections::BTreeSet::new(),
        std::collections::BTreeSet::new(),
    );
    for port in [40000u16, 40001, 50000] {
        let (_, v4) = h.egress(&udp(POD, port, EXTERNAL, 53, b"v4"));
        let (_, v6) = h.egress(&udp6(POD6, port, EXTERNAL6, 53, b"v6"));
        let (s4, s6) = (inspect(&v4), inspect6(&v6));
        assert_eq!((s4.src, s6.src), (NODE, NODE6));
        ports4.insert(s4.sport);
        ports6.insert(s6.sport);
        let (_, back4) = h.ingress(&udp(EXTERNAL, 53, NODE, s4.sport, b"a"));
        let (_, back6) = h.ingress(&udp6(EXTERNAL6, 53, NODE6, s6.sport, b"a"));
        assert_eq!((inspect(&back4).dst, inspect(&back4).dport), (POD, port));
        assert_eq!((inspect6(&back6).dst, inspect6(&back6).dport), (POD6, port));
    }
    let all: std::collections::BTreeSet<u16> = (41000..=41002).collect();
    assert_eq!((ports4, ports6), (all.clone(), all));
    assert_eq!(h.maps.nat_egress_entries().unwrap().len(), 3);
    assert_eq!(h.maps.nat6_egress_entries().unwrap().len(), 3);
}
