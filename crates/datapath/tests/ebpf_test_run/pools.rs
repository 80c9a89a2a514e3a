//! SNAT address pools (issue 16), IPv4: the programs pick the address `pool::address_for`
//! picks (the kernel's jhash, the same function as nftables and `masq explain`), fall over to
//! the next address in pool order when one has no free port towards the destination (counted),
//! drop the flow once every address is full, translate the replies to every address back, and
//! treat a flow from any pool address as the node's own.

use std::net::{IpAddr, Ipv4Addr};

use masq_datapath::ebpf::types::Reason;
use masq_datapath::ebpf::{nat, Contents, Flavor, KernCtx, PortSearch, DEFAULT_NAT_CAPACITY};
use masq_datapath::{pool, PortRange};

use crate::cases::fragment;
use crate::harness::*;

/// The node's addresses the pools are made of (NODE first).
const POOL: [Ipv4Addr; 3] = [
    NODE,
    Ipv4Addr::new(172, 18, 0, 3),
    Ipv4Addr::new(172, 18, 0, 4),
];
const FIRST_PORT: u16 = 40000;

/// [`base_contents`] with `pool` for every interface and a port table of `ports` ports.
fn pool_contents(pool: &[Ipv4Addr], ports: u16) -> Contents {
    let mut c = base_contents();
    c.snat_pools.clear();
    c.snat_pools.insert(0, pool.to_vec());
    c.local_addrs.extend(pool.iter().copied());
    c.set_ports(&[PortRange {
        first: FIRST_PORT,
        last: FIRST_PORT + ports - 1,
    }]);
    c
}

/// The address `pool.rs` gives `pod` in `pool`.
fn expected(pool: &[Ipv4Addr], pod: Ipv4Addr) -> Ipv4Addr {
    let pool: Vec<IpAddr> = pool.iter().map(|a| IpAddr::V4(*a)).collect();
    match pool::address_for(&pool, pod.into()) {
        Some(IpAddr::V4(v4)) => v4,
        other => panic!("no IPv4 address for {pod}: {other:?}"),
    }
}

/// The first packet of a flow from `pod`: the translation it left with, or None when dropped.
fn new_flow(h: &Harness, pod: Ipv4Addr, sport: u16) -> Option<Seen> {
    let (rc, out) = h.egress(&udp(pod, sport, EXTERNAL, 53, b"q"));
    match rc {
        SHOT => None,
        CONTINUE => Some(inspect(&out)),
        other => panic!("verdict {other}"),
    }
}

/// 1,000 pods over pools of 2, 3, 5 and 32 addresses: each pod's flow leaves with the address
/// `pool::address_for` names. The C jhash and the Rust one agree, scaling included.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn the_programs_pick_the_address_pool_rs_picks() {
    let big: Vec<Ipv4Addr> = (1..=32).map(|i| Ipv4Addr::new(192, 0, 2, i)).collect();
    for pool in [&POOL[..2], &POOL[..], &big[..5], &big[..]] {
        let h = Harness::new(&pool_contents(pool, 1000));
        let mut used = vec![0usize; pool.len()];
        for n in 0..1000u16 {
            let pod = Ipv4Addr::new(10, 244, (n / 250) as u8, (n % 250) as u8 + 1);
            let seen = new_flow(&h, pod, 5000).expect("translated");
            assert_eq!(
                seen.src,
                expected(pool, pod),
                "pod {pod}, pool of {}",
                pool.len()
            );
            used[pool.iter().position(|a| *a == seen.src).unwrap()] += 1;
        }
        assert!(
            used.iter().all(|&n| n > 0),
            "an address never used: {used:?}"
        );
        assert_eq!(h.count(Reason::SnatFallover), 0, "no address was full");
    }
}

/// A later fragment whose first fragment was not seen is translated by address alone: to the
/// pod's own address of the pool (no port, so no fall-over).
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn a_later_fragment_takes_the_pods_own_address() {
    let h = Harness::new(&pool_contents(&POOL, 1000));
    for host in 1..=20u8 {
        let pod = Ipv4Addr::new(10, 244, 7, host);
        let (_, later) = fragment(&udp(pod, 5000, EXTERNAL, 53, &[7u8; 200]), 48);
        let (rc, out) = h.egress(&later);
        assert_eq!(rc, CONTINUE);
        let src = Ipv4Addr::new(out[26], out[27], out[28], out[29]);
        assert_eq!(src, expected(&POOL, pod), "pod {pod}");
    }
}

/// Three addresses of four ports each, 13 flows from one pod to one destination: four on the
/// pod's own address, four on the next one in pool order, four on the one after (wrapping
/// around), never another order; the 13th is dropped and counted, never sent with the pod's
/// address. Every fall-over is counted (1 per flow on the second address, 2 per flow on the
/// third and for the refused one), the replies to all three addresses go back to the pod, and
/// the pressure shows each address full towards the destination.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn a_full_address_falls_over_to_the_next_in_pool_order() {
    let h = Harness::new(&pool_contents(&POOL, 4));
    let home = pool::index_for(POD.into(), POOL.len());
    let mut flows = Vec::new();
    for i in 0..12u16 {
        let seen = new_flow(&h, POD, 1000 + i).expect("a free port on some address");
        let want = POOL[(home + usize::from(i) / 4) % POOL.len()];
        assert_eq!(seen.src, want, "flow {i}: pool order from index {home}");
        assert!((FIRST_PORT..FIRST_PORT + 4).contains(&seen.sport));
        flows.push((1000 + i, seen));
    }
    assert!(new_flow(&h, POD, 2000).is_none(), "the 13th flow left");
    assert_eq!(h.count(Reason::DropPortExhausted), 1);
    assert_eq!(h.count(Reason::SnatFallover), 4 + 4 * 2 + 2);
    let distinct: std::collections::HashSet<(Ipv4Addr, u16)> =
        flows.iter().map(|(_, s)| (s.src, s.sport)).collect();
    assert_eq!(distinct.len(), 12, "a pair handed out twice");
    for (sport, seen) in &flows {
        let (rc, back) = h.ingress(&udp(EXTERNAL, 53, seen.src, seen.sport, b"a"));
        assert_eq!(rc, CONTINUE);
        let back = inspect(&back);
        assert_eq!(
            (back.dst, back.dport),
            (POD, *sport),
            "reply to {}",
            seen.src
        );
    }
    let pressure = nat::pressure(&h.maps).unwrap();
    let by_address: Vec<(IpAddr, u32)> = pressure
        .busiest_by_address
        .iter()
        .map(|p| (p.snat_addr, p.used))
        .collect();
    let mut want: Vec<(IpAddr, u32)> = POOL.iter().map(|a| (IpAddr::V4(*a), 4)).collect();
    want.sort();
    assert_eq!(by_address, want);
    let failed = pressure.last_failure.expect("the refused flow's pool");
    assert_eq!(failed.pool.snat_addr, IpAddr::V4(POOL[(home + 2) % 3]));
    assert_eq!(failed.pool.used, 4);
}

/// Once its own address has room again (the flows there expired), a pod's new flows go back
/// to it: an address is left only while it is full.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn a_pod_returns_to_its_own_address_once_it_has_room() {
    let mut h = Harness::new(&pool_contents(&POOL[..2], 4));
    let own = expected(&POOL[..2], POD);
    for i in 0..5u16 {
        let seen = new_flow(&h, POD, 1000 + i).unwrap();
        assert_eq!(seen.src == own, i < 4, "flow {i} left with {}", seen.src);
    }
    let removed = gc_after(&mut h.maps, 3600);
    assert!(removed.expired_pairs >= 5, "{removed:?}");
    for i in 0..4u16 {
        assert_eq!(new_flow(&h, POD, 3000 + i).unwrap().src, own, "flow {i}");
    }
}

/// A pod whose own address in `pool` is `address`.
fn pod_of(pool: &[Ipv4Addr], address: Ipv4Addr) -> Ipv4Addr {
    (1..=250u8)
        .map(|host| Ipv4Addr::new(10, 244, 3, host))
        .find(|p| expected(pool, *p) == address)
        .expect("a pod for every address")
}

/// A flow of the node from the pool's second address is the node's own: it leaves untouched
/// and reserves its port there, so a pod never gets that port on that address (its flows fall
/// over instead), and the replies to it stay the node's.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn a_node_flow_from_any_pool_address_keeps_its_port() {
    let pool = &POOL[..2];
    let second = pool[1];
    let pod = pod_of(pool, second);
    let h = Harness::new(&pool_contents(pool, 2));
    let node = udp(second, FIRST_PORT, EXTERNAL, 53, b"node");
    assert_eq!(h.egress(&node), (CONTINUE, node.clone()), "the node's flow");
    assert_eq!(h.count(Reason::HostPortReserved), 1);
    let first = new_flow(&h, pod, 1000).unwrap();
    assert_eq!((first.src, first.sport), (second, FIRST_PORT + 1));
    let next = new_flow(&h, pod, 1001).unwrap();
    assert_eq!(
        next.src, pool[0],
        "fell over: the node's port stays the node's"
    );
    assert_eq!(h.count(Reason::SnatFallover), 1);
    let reply = udp(EXTERNAL, 53, second, FIRST_PORT, b"to the node");
    assert_eq!(
        h.ingress(&reply),
        (CONTINUE, reply.clone()),
        "not sent to a pod"
    );
}

/// When a pod's flow held a port of the second address first and the node then uses it, the
/// node's flow moves to another port of its own address, never to another address.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn a_node_flow_that_must_move_keeps_its_address() {
    let pool = &POOL[..2];
    let second = pool[1];
    let h = Harness::new(&pool_contents(pool, 3));
    let taken = new_flow(&h, pod_of(pool, second), 1000).unwrap();
    assert_eq!(taken.src, second);
    let (rc, out) = h.egress(&udp(second, taken.sport, EXTERNAL, 53, b"node"));
    assert_eq!(rc, CONTINUE);
    let moved = inspect(&out);
    assert_eq!(moved.src, second, "the node's flow changed address");
    assert_ne!(moved.sport, taken.sport);
    assert_eq!(h.count(Reason::HostPortRemapped), 1);
    assert_eq!(h.count(Reason::SnatFallover), 0);
}

/// The build for kernels without bpf_loop searches the pod's own address only: a full
/// address refuses the flow, as netfilter does (docs/snat-pools.md).
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn the_bounded_build_stays_on_the_pods_own_address() {
    let flavor = Flavor {
        kern_ctx: KernCtx::Absent,
        port_search: PortSearch::Bounded,
    };
    let h = Harness::flavored(&pool_contents(&POOL, 4), flavor, DEFAULT_NAT_CAPACITY);
    let own = expected(&POOL, POD);
    for i in 0..4u16 {
        assert_eq!(new_flow(&h, POD, 1000 + i).unwrap().src, own);
    }
    assert!(new_flow(&h, POD, 2000).is_none());
    assert_eq!(h.count(Reason::SnatFallover), 0);
    assert_eq!(h.count(Reason::DropPortExhausted), 1);
}
