//! SNAT address pools (issue 16), IPv6: `pools.rs`'s rules over 16-byte addresses. The hash is
//! jhash over the address's 16 bytes (nft's `jhash ip6 saddr`, `pool::address_for`).

use std::net::{IpAddr, Ipv6Addr};

use masq_datapath::ebpf::types::Reason;
use masq_datapath::ebpf::{nat, Contents};
use masq_datapath::{pool, PortRange};

use crate::harness::*;
use crate::harness6::*;

const POOL6: [Ipv6Addr; 3] = [
    NODE6,
    Ipv6Addr::new(0x2001, 0xdb8, 0x18, 0, 0, 0, 0, 3),
    Ipv6Addr::new(0x2001, 0xdb8, 0x18, 0, 0, 0, 0, 4),
];
const FIRST_PORT: u16 = 40000;

fn pool6_contents(pool: &[Ipv6Addr], ports: u16) -> Contents {
    let mut c = base_contents6();
    c.v6.snat_pools.clear();
    c.v6.snat_pools.insert(0, pool.to_vec());
    c.v6.local_addrs.extend(pool.iter().copied());
    c.set_ports(&[PortRange {
        first: FIRST_PORT,
        last: FIRST_PORT + ports - 1,
    }]);
    c
}

fn expected6(pool: &[Ipv6Addr], pod: Ipv6Addr) -> Ipv6Addr {
    let pool: Vec<IpAddr> = pool.iter().map(|a| IpAddr::V6(*a)).collect();
    match pool::address_for(&pool, pod.into()) {
        Some(IpAddr::V6(v6)) => v6,
        other => panic!("no IPv6 address for {pod}: {other:?}"),
    }
}

fn new_flow6(h: &Harness, pod: Ipv6Addr, sport: u16) -> Option<Seen6> {
    let (rc, out) = h.egress(&udp6(pod, sport, EXTERNAL6, 53, b"q"));
    match rc {
        SHOT => None,
        CONTINUE => Some(inspect6(&out)),
        other => panic!("verdict {other}"),
    }
}

/// 600 IPv6 pods over pools of 2 and 3 addresses: each pod's flow leaves with the address
/// `pool::address_for` names.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn ipv6_programs_pick_the_address_pool_rs_picks() {
    for pool in [&POOL6[..2], &POOL6[..]] {
        let h = Harness::new(&pool6_contents(pool, 1000));
        let mut used = vec![0usize; pool.len()];
        for n in 0..600u16 {
            // Different bits in every word of the address, so all four words feed the hash.
            let pod = Ipv6Addr::new(0xfd00, 0x10 + n % 3, 0x244, n / 7, 0, n % 5, 0, n + 1);
            let seen = new_flow6(&h, pod, 5000).expect("translated");
            assert_eq!(seen.src, expected6(pool, pod), "pod {pod}");
            used[pool.iter().position(|a| *a == seen.src).unwrap()] += 1;
        }
        assert!(
            used.iter().all(|&n| n > 0),
            "an address never used: {used:?}"
        );
    }
}

/// `pools.rs`'s fall-over for IPv6: three addresses of four ports, 13 flows from one pod.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn ipv6_a_full_address_falls_over_to_the_next_in_pool_order() {
    let h = Harness::new(&pool6_contents(&POOL6, 4));
    let home = pool::index_for(POD6.into(), POOL6.len());
    let mut flows = Vec::new();
    for i in 0..12u16 {
        let seen = new_flow6(&h, POD6, 1000 + i).expect("a free port on some address");
        let want = POOL6[(home + usize::from(i) / 4) % POOL6.len()];
        assert_eq!(seen.src, want, "flow {i}: pool order from index {home}");
        flows.push((1000 + i, seen));
    }
    assert!(new_flow6(&h, POD6, 2000).is_none(), "the 13th flow left");
    assert_eq!(h.count(Reason::DropPortExhausted), 1);
    assert_eq!(h.count(Reason::SnatFallover), 4 + 4 * 2 + 2);
    for (sport, seen) in &flows {
        let (rc, back) = h.ingress(&udp6(EXTERNAL6, 53, seen.src, seen.sport, b"a"));
        assert_eq!(rc, CONTINUE);
        let back = inspect6(&back);
        assert_eq!(
            (back.dst, back.dport),
            (POD6, *sport),
            "reply to {}",
            seen.src
        );
    }
    let pressure = nat::pressure(&h.maps).unwrap();
    assert_eq!(pressure.busiest_by_address.len(), 3);
    assert!(pressure.busiest_by_address.iter().all(|p| p.used == 4));
}

/// A node flow from the second IPv6 address keeps its port; a pod whose own address that is
/// falls over rather than take it.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn ipv6_a_node_flow_from_any_pool_address_keeps_its_port() {
    let pool = &POOL6[..2];
    let second = pool[1];
    let pod = (1..=500u16)
        .map(|n| Ipv6Addr::new(0xfd00, 0x10, 0x244, 3, 0, 0, 0, n))
        .find(|p| expected6(pool, *p) == second)
        .unwrap();
    let h = Harness::new(&pool6_contents(pool, 2));
    let node = udp6(second, FIRST_PORT, EXTERNAL6, 53, b"node");
    assert_eq!(h.egress(&node), (CONTINUE, node.clone()));
    assert_eq!(h.count(Reason::HostPortReserved), 1);
    let first = new_flow6(&h, pod, 1000).unwrap();
    assert_eq!((first.src, first.sport), (second, FIRST_PORT + 1));
    assert_eq!(new_flow6(&h, pod, 1001).unwrap().src, pool[0]);
}
