//! The GC's schedule on a real table with the programs attached (ebpf/gc/schedule.rs): a pass
//! over 100,000 live pairs is costly enough that the next tick is deferred, and flows the
//! programs refuse make the following tick run a pass at once.

use std::net::{Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

use masq_datapath::ebpf::types::{NatEntry, NatTuple, NAT_F_REPLIED, PROTO_TCP, PROTO_UDP};
use masq_datapath::ebpf::{KernelClock, Maps, Reason, MAPS_SUBDIR};
use masq_datapath::{Datapath, PortRange};

use crate::topology::*;

const LIVE_PAIRS: u32 = 100_000;
const TEST_NET_2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

/// Writes the pair of a flow from `pod:port` to `dst:443` translated to NODE:port, last used
/// at `at` (jiffies); returns its forward key.
fn pair(
    maps: &mut Maps,
    proto: u8,
    pod: Ipv4Addr,
    dst: Ipv4Addr,
    port: u16,
    flags: u8,
    at: u64,
) -> NatTuple {
    let forward = NatTuple::new(proto, pod, port, dst, 443);
    maps.nat_egress_mut()
        .insert(forward, NatEntry::new(NODE, port, flags, at), 0)
        .unwrap();
    maps.nat_ingress_mut()
        .insert(
            NatTuple::new(proto, dst, 443, NODE, port),
            NatEntry::new(pod, port, flags, at),
            0,
        )
        .unwrap();
    forward
}

/// An unreplied UDP pair idle since jiffy 0: expired (30 s) at any pass.
fn expired_pair(maps: &mut Maps, port: u16) -> NatTuple {
    pair(maps, PROTO_UDP, POD2, TEST_NET_2, port, 0, 0)
}

fn present(maps: &mut Maps, forward: &NatTuple) -> bool {
    maps.nat_egress_mut().get(forward, 0).is_ok()
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn a_costly_pass_defers_the_next_tick_until_flows_are_refused() {
    with_private_bpffs(a_costly_pass_defers_the_next_tick_until_flows_are_refused_body);
}

fn a_costly_pass_defers_the_next_tick_until_flows_are_refused_body() {
    let t = topology();
    let mut desired = t.desired();
    desired.node.port_ranges = vec![PortRange {
        first: 40000,
        last: 40003,
    }];
    let mut agent = t.agent();
    t.node.enter(|| agent.sync(&desired)).unwrap().unwrap();

    let mut maps = Maps::open_pinned(&t.pin_dir.join(MAPS_SUBDIR)).unwrap();
    let now = KernelClock::get().unwrap().now();
    for i in 0..LIVE_PAIRS {
        let pod = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 100, 0)) + i / 60000);
        let dst = Ipv4Addr::from(u32::from(TEST_NET_2) + 1 + i / 60000);
        let port = 1024 + u16::try_from(i % 60000).unwrap();
        pair(&mut maps, PROTO_TCP, pod, dst, port, NAT_F_REPLIED, now);
    }
    let first = expired_pair(&mut maps, 1000);

    let started = Instant::now();
    let log = agent.housekeeping().unwrap().expect("the first pass runs");
    let took = started.elapsed();
    assert!(
        log.contains("1 expired pairs") && log.contains("first pass"),
        "{log}"
    );
    assert!(!present(&mut maps, &first));
    // Within 2 % of a CPU the next pass waits 50 times as long as this one took.
    assert!(
        took > Duration::from_millis(20),
        "a pass over {LIVE_PAIRS} pairs took {took:?}"
    );

    let second = expired_pair(&mut maps, 1001);
    assert_eq!(
        agent.housekeeping().unwrap(),
        None,
        "a tick right after a costly pass"
    );
    assert!(present(&mut maps, &second), "the deferred tick ran a pass");

    // Six new flows towards one destination with four ports: two are refused.
    t.pod
        .enter(|| {
            for sport in 41000..41006 {
                let sock = UdpSocket::bind((POD, sport)).unwrap();
                sock.send_to(b"x", (INTERNET, 5353)).unwrap();
            }
        })
        .unwrap();
    let refused = || agent.counters().unwrap()[&Reason::DropPortExhausted];
    let deadline = Instant::now() + Duration::from_secs(2);
    while refused() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(refused(), 2);
    let within_budget = started.elapsed() + Duration::from_millis(500) < took * 50;
    assert!(
        within_budget,
        "the traffic took longer than the pass's budget: {took:?} a pass"
    );
    let log = agent
        .housekeeping()
        .unwrap()
        .expect("refused flows run a pass at once");
    assert!(log.contains("flows refused"), "{log}");
    assert!(!present(&mut maps, &second));
}
