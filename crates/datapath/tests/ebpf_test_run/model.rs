//! Thousands of random packets, each checked against a small userspace model of the NAT.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::harness::*;

/// (proto, src, sport, dst, dport) of the pod's side.
type Flow = (u8, Ipv4Addr, u16, Ipv4Addr, u16);

#[derive(Default)]
struct Model {
    /// Pod flow → translated port.
    forward: HashMap<Flow, u16>,
    /// (proto, remote, remote port, translated port) → pod flow.
    reverse: HashMap<(u8, Ipv4Addr, u16, u16), Flow>,
    taken: HashSet<(u8, Ipv4Addr, u16, u16)>,
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
fn random_packets_agree_with_the_model() {
    let Some(h) = Harness::new(&base_contents()) else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(0x6d61_7371);
    let pods = [POD, POD2, Ipv4Addr::new(10, 244, 2, 9)];
    let remotes = [
        EXTERNAL,
        Ipv4Addr::new(198, 51, 100, 7),
        Ipv4Addr::new(10, 9, 9, 9),
    ];
    let ports = [53u16, 80, 40000, 40001, 50000, 1234];
    let mut model = Model::default();
    let mut translated = 0;

    for round in 0..4000 {
        let proto = [TCP, UDP, ICMP][rng.random_range(0..3)];
        let remote = remotes[rng.random_range(0..remotes.len())];
        let rport = if proto == ICMP {
            0
        } else {
            ports[rng.random_range(0..ports.len())]
        };
        if rng.random_bool(0.6) {
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
                        port >= 32768,
                        "round {round}: port {port} outside the range"
                    );
                    assert!(
                        !model.taken.contains(&pool),
                        "round {round}: port {port} reused"
                    );
                    if pport >= 32768 && !model.taken.contains(&(proto, remote, rport, pport)) {
                        assert_eq!(
                            port, pport,
                            "round {round}: a free original port was changed"
                        );
                    }
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
}
