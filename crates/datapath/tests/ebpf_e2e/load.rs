//! Many flows at once: two pods with the same source port, bounded UDP and TCP floods, and port
//! exhaustion towards one destination.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use masq_datapath::ebpf::{KernelClock, Maps, Reason, MAPS_SUBDIR};
use masq_datapath::{Datapath, PortRange};
use masq_testbed::Netns;

use crate::topology::*;

/// Echoes datagrams on `addr:port` in `ns` until `expected` arrived or 5 s passed; returns the
/// source of each.
fn udp_echo_server(
    ns: &Netns,
    addr: Ipv4Addr,
    expected: usize,
    ready: mpsc::Sender<()>,
) -> Vec<SocketAddr> {
    ns.enter(move || {
        let sock = UdpSocket::bind((addr, 5353)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        ready.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut peers = Vec::new();
        let mut buf = [0u8; 64];
        while peers.len() < expected && Instant::now() < deadline {
            if let Ok((n, peer)) = sock.recv_from(&mut buf) {
                sock.send_to(&buf[..n], peer).unwrap();
                peers.push(peer);
            }
        }
        peers
    })
    .unwrap()
}

/// Sends `count` datagrams tagged `tag` from `src:sport` and returns how many echoes came back
/// with that tag (anything else arriving is a misdelivery and fails the test).
fn udp_burst(ns: &Netns, src: Ipv4Addr, sport: u16, tag: u8, count: u16) -> u16 {
    ns.enter(move || {
        let sock = UdpSocket::bind((src, sport)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        // Read while sending: a few hundred replies would overflow the default receive buffer.
        let reader = sock.try_clone().unwrap();
        let replies = std::thread::spawn(move || {
            let mut seen = HashSet::new();
            let mut buf = [0u8; 64];
            while seen.len() < usize::from(count) {
                let Ok(n) = reader.recv(&mut buf) else { break };
                assert_eq!((n, buf[0]), (3, tag), "a reply for another pod arrived");
                seen.insert(u16::from_be_bytes([buf[1], buf[2]]));
            }
            seen.len() as u16
        });
        for seq in 0..count {
            let [hi, lo] = seq.to_be_bytes();
            sock.send_to(&[tag, hi, lo], (INTERNET, 5353)).unwrap();
            if seq % 50 == 49 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        replies.join().unwrap()
    })
    .unwrap()
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn two_pods_with_the_same_source_port_each_get_all_their_replies() {
    with_private_bpffs(two_pods_with_the_same_source_port_each_get_all_their_replies_body);
}

fn two_pods_with_the_same_source_port_each_get_all_their_replies_body() {
    let t = topology();
    let mut agent = t.agent();
    t.node.enter(|| agent.sync(&t.desired())).unwrap().unwrap();
    const EACH: u16 = 300;
    let (peers, a, b) = std::thread::scope(|s| {
        let (tx, rx) = mpsc::channel();
        let server = s.spawn(|| udp_echo_server(&t.external, INTERNET, 2 * usize::from(EACH), tx));
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let a = s.spawn(|| udp_burst(&t.pod, POD, 40000, 1, EACH));
        let b = s.spawn(|| udp_burst(&t.pod2, POD2, 40000, 2, EACH));
        (server.join().unwrap(), a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!((a, b), (EACH, EACH), "replies lost");
    let distinct: HashSet<SocketAddr> = peers.iter().copied().collect();
    assert_eq!(distinct.len(), 2, "{distinct:?}");
    assert!(distinct.iter().all(|p| p.ip() == IpAddr::V4(NODE)));
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn a_bounded_tcp_flood_from_two_pods_is_fully_echoed() {
    with_private_bpffs(a_bounded_tcp_flood_from_two_pods_is_fully_echoed_body);
}

fn a_bounded_tcp_flood_from_two_pods_is_fully_echoed_body() {
    let t = topology();
    let mut agent = t.agent();
    t.node.enter(|| agent.sync(&t.desired())).unwrap().unwrap();
    const CONNECTIONS: usize = 8; // per pod
    const MESSAGES: u32 = 50;
    let echoed: u32 = std::thread::scope(|s| {
        let (tx, rx) = mpsc::channel();
        s.spawn(|| {
            t.external
                .enter(move || {
                    let listener = TcpListener::bind((INTERNET, 8080)).unwrap();
                    listener.set_nonblocking(true).unwrap();
                    tx.send(()).unwrap();
                    let deadline = Instant::now() + Duration::from_secs(10);
                    std::thread::scope(|conns| {
                        let mut served = 0;
                        while served < 2 * CONNECTIONS && Instant::now() < deadline {
                            let Ok((mut conn, _)) = listener.accept() else {
                                std::thread::sleep(Duration::from_millis(5));
                                continue;
                            };
                            served += 1;
                            conns.spawn(move || {
                                conn.set_nonblocking(false).unwrap();
                                conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                                let mut buf = [0u8; 256];
                                while let Ok(n @ 1..) = conn.read(&mut buf) {
                                    if conn.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                            });
                        }
                    });
                })
                .unwrap()
        });
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let clients: Vec<_> = [(&t.pod, POD), (&t.pod2, POD2)]
            .into_iter()
            .flat_map(|(ns, _)| (0..CONNECTIONS).map(move |_| ns))
            .map(|ns| {
                s.spawn(move || {
                    ns.enter(|| {
                        let Ok(mut conn) = TcpStream::connect_timeout(
                            &(INTERNET, 8080).into(),
                            Duration::from_secs(3),
                        ) else {
                            return 0;
                        };
                        conn.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                        let mut ok = 0;
                        for i in 0..MESSAGES {
                            let msg = i.to_be_bytes();
                            let mut back = [0u8; 4];
                            if conn.write_all(&msg).is_err() || conn.read_exact(&mut back).is_err()
                            {
                                break;
                            }
                            ok += u32::from(back == msg);
                        }
                        ok
                    })
                    .unwrap()
                })
            })
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).sum()
    });
    assert_eq!(echoed, 2 * CONNECTIONS as u32 * MESSAGES);
    let counters = agent.counters().unwrap();
    assert_eq!(counters[&Reason::NatCreated], 2 * CONNECTIONS as u64);
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn port_exhaustion_drops_cleanly_and_recovers() {
    with_private_bpffs(port_exhaustion_drops_cleanly_and_recovers_body);
}

fn port_exhaustion_drops_cleanly_and_recovers_body() {
    let t = topology();
    let mut desired = t.desired();
    let range = PortRange {
        first: 40000,
        last: 40003,
    };
    desired.node.port_ranges = vec![range];
    let mut agent = t.agent();
    t.node.enter(|| agent.sync(&desired)).unwrap().unwrap();
    let answered: Vec<u16> = std::thread::scope(|s| {
        let (tx, rx) = mpsc::channel();
        s.spawn(|| udp_echo_server(&t.external, INTERNET, 4, tx));
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        (0..6)
            .map(|i| udp_burst(&t.pod, POD, 41000 + i, i as u8, 1))
            .collect()
    });
    assert_eq!(
        answered,
        [1, 1, 1, 1, 0, 0],
        "only 4 ports exist towards 203.0.113.10:5353"
    );
    assert_eq!(agent.counters().unwrap()[&Reason::DropPortExhausted], 2);
    let pool = agent.pressure().unwrap().busiest_pool.unwrap();
    assert_eq!(
        (pool.dst_addr, pool.dst_port, pool.used),
        (INTERNET.into(), 5353, 4)
    );

    // Two minutes later (UDP idle lifetime 120 s once replied) the GC frees the pool.
    let mut maps = Maps::open_pinned(&t.pin_dir.join(MAPS_SUBDIR)).unwrap();
    let clock = KernelClock::get().unwrap();
    let report = masq_datapath::ebpf::gc::gc(
        &mut maps,
        &clock,
        clock.later(Duration::from_secs(120)),
        &Default::default(),
    )
    .unwrap();
    assert_eq!(report.expired_pairs, 4);
    let again = std::thread::scope(|s| {
        let (tx, rx) = mpsc::channel();
        s.spawn(|| udp_echo_server(&t.external, INTERNET, 1, tx));
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        udp_burst(&t.pod, POD, 41004, 9, 1)
    });
    assert_eq!(again, 1, "no recovery after GC");
}
