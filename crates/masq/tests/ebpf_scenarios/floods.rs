//! Many flows at once from two pods, each reply on its own socket: bounded TCP and UDP floods,
//! two pods using the same source port towards the same destination, and `kill -9` of the agent
//! under a stream of new and established connections.
//!
//! A reply that the reverse translation sent to the wrong pod (or port) would not reach the
//! socket waiting for it: the pod's kernel would reset the TCP connection or drop the datagram.
//! So "every question answered on its own socket, naming that socket's own translation" is
//! what "every reply delivered to the right pod" means here.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use masq_testbed::probe::{tcp_source, TcpSession, PROBE_TIMEOUT};
use masq_testbed::{addr, Netns};

use super::{distinct_node_translations, NODE};
use crate::harness::*;
use crate::VPC_ONLY;

/// A UDP socket in a pod talking to a probe server, which answers each datagram with the
/// source it saw; every answer must name the same translation.
struct UdpFlow {
    socket: UdpSocket,
    server: SocketAddr,
    translated: Option<SocketAddr>,
}

impl UdpFlow {
    /// A socket bound in `ns` to `local` (port 0: any).
    fn open(ns: &Netns, local: SocketAddr, server: SocketAddr) -> Result<UdpFlow> {
        let socket = ns
            .enter(|| UdpSocket::bind(local))?
            .with_context(|| format!("in {}: binding udp {local}", ns.name()))?;
        socket.set_read_timeout(Some(PROBE_TIMEOUT))?;
        Ok(UdpFlow {
            socket,
            server,
            translated: None,
        })
    }

    /// Sends `count` datagrams at once, then reads the `count` answers; returns the translation
    /// they named. A lost or foreign answer is an error.
    fn window(&mut self, count: usize) -> Result<SocketAddr> {
        for _ in 0..count {
            self.socket.send_to(b"who am i\n", self.server)?;
        }
        let mut buf = [0u8; 128];
        for answered in 0..count {
            let (len, from) = self.socket.recv_from(&mut buf).with_context(|| {
                format!(
                    "udp from {:?}: {answered} of {count} answers, then nothing",
                    self.socket.local_addr()
                )
            })?;
            ensure!(
                from == self.server,
                "an answer from {from}, not {}",
                self.server
            );
            let text = String::from_utf8_lossy(&buf[..len]);
            let seen: SocketAddr = text.trim().parse().context("a udp answer")?;
            let first = *self.translated.get_or_insert(seen);
            ensure!(
                seen == first,
                "{:?} got an answer for {seen}, its flow is {first}",
                self.socket.local_addr()
            );
        }
        self.translated.context("no answer at all")
    }
}

/// Opens `flows` TCP connections from `pod`, asks `questions` on each, and keeps them open
/// (so that all the flood's flows hold their translation at once); returns them with the
/// source the server saw on each.
fn tcp_flows(
    pod: &Netns,
    server: SocketAddr,
    flows: usize,
    questions: usize,
) -> Result<Vec<(TcpSession, SocketAddr)>> {
    let mut open = Vec::with_capacity(flows);
    for _ in 0..flows {
        let mut session = TcpSession::connect(pod, server)?;
        let first = session.observed_source()?;
        for _ in 1..questions {
            let again = session.observed_source()?;
            ensure!(
                again == first,
                "one connection seen as {first}, then {again}"
            );
        }
        open.push((session, first));
    }
    Ok(open)
}

/// Bounded TCP and UDP floods from both pods at once: every question is answered on its own
/// socket with its own translation, no two flows share one, and nothing is dropped.
pub fn floods_reach_the_right_pod(datapath: Datapath) -> Result<()> {
    const TCP_WORKERS_PER_POD: usize = 4;
    const TCP_FLOWS_PER_WORKER: usize = 10;
    const TCP_QUESTIONS: usize = 20;
    const UDP_FLOWS_PER_POD: usize = 4;
    // At most 8 × 10 datagrams in flight: well inside the server's receive buffer.
    const UDP_WINDOWS: usize = 10;
    const UDP_WINDOW: usize = 10;

    let bed = Bed::ready(datapath, VPC_ONLY)?;
    let server = bed.probes.tcp_addr(addr::INTERNET.into());
    let pods = [
        (&bed.topology.pod, IpAddr::from(addr::POD)),
        (&bed.topology.pod2, IpAddr::from(addr::POD2)),
    ];
    let (tcp, udp) = std::thread::scope(|s| {
        let tcp: Vec<_> = pods
            .iter()
            .flat_map(|&(pod, _)| std::iter::repeat_n(pod, TCP_WORKERS_PER_POD))
            .map(|pod| s.spawn(move || tcp_flows(pod, server, TCP_FLOWS_PER_WORKER, TCP_QUESTIONS)))
            .collect();
        let udp: Vec<_> = pods
            .iter()
            .flat_map(|&pod| std::iter::repeat_n(pod, UDP_FLOWS_PER_POD))
            .map(|(pod, ip)| {
                s.spawn(move || {
                    let mut flow = UdpFlow::open(pod, SocketAddr::new(ip, 0), server)?;
                    for _ in 0..UDP_WINDOWS {
                        flow.window(UDP_WINDOW)?;
                    }
                    flow.translated.context("no answer")
                })
            })
            .collect();
        (join_all(tcp), join_all(udp))
    });
    let tcp: Vec<(TcpSession, SocketAddr)> = tcp
        .into_iter()
        .collect::<Result<Vec<_>>>()
        .map_err(|e| bed.with_log(e))?
        .into_iter()
        .flatten()
        .collect();
    let udp: Vec<SocketAddr> = udp
        .into_iter()
        .collect::<Result<_>>()
        .map_err(|e| bed.with_log(e))?;
    let tcp_seen: Vec<SocketAddr> = tcp.iter().map(|(_, seen)| *seen).collect();
    assert_eq!(
        tcp_seen.len(),
        2 * TCP_WORKERS_PER_POD * TCP_FLOWS_PER_WORKER
    );
    distinct_node_translations("tcp", &tcp_seen)?;
    distinct_node_translations("udp", &udp)?;

    let metrics = bed.metrics()?;
    // Each question is translated on its way out and its answer on its way back.
    let questions = tcp_seen.len() * TCP_QUESTIONS + udp.len() * UDP_WINDOWS * UDP_WINDOW;
    let translations = metric(&metrics, "masq_ebpf_translations_total").unwrap_or(0.0);
    assert!(
        translations >= 2.0 * questions as f64,
        "{translations} translations for {questions} questions"
    );
    let drops = metric_series(&metrics, "masq_ebpf_drops_total", "");
    assert!(
        !drops.is_empty() && drops.iter().all(|d| *d == 0.0),
        "drops during the flood:\n{metrics}"
    );
    Ok(())
}

fn join_all<T>(handles: Vec<std::thread::ScopedJoinHandle<'_, T>>) -> Vec<T> {
    handles
        .into_iter()
        .map(|h| h.join().expect("the thread does not panic"))
        .collect()
}

/// Two pods use the same source port towards the same destination, over TCP and UDP: both
/// flows work side by side, with distinct translated ports.
pub fn same_source_port_from_two_pods(datapath: Datapath) -> Result<()> {
    let bed = Bed::ready(datapath, VPC_ONLY)?;
    let server = bed.probes.tcp_addr(addr::INTERNET.into());
    let (pod, pod2) = (&bed.topology.pod, &bed.topology.pod2);

    let port = 40000;
    let mut a = TcpSession::connect_from(pod, SocketAddr::new(addr::POD.into(), port), server)?;
    let mut b = TcpSession::connect_from(pod2, SocketAddr::new(addr::POD2.into(), port), server)?;
    let (first_a, first_b) = (a.observed_source()?, b.observed_source()?);
    for _ in 0..5 {
        assert_eq!(a.observed_source()?, first_a);
        assert_eq!(b.observed_source()?, first_b);
    }
    distinct_node_translations("tcp", &[first_a, first_b])?;

    let port = 40001;
    let mut a = UdpFlow::open(pod, SocketAddr::new(addr::POD.into(), port), server)?;
    let mut b = UdpFlow::open(pod2, SocketAddr::new(addr::POD2.into(), port), server)?;
    for _ in 0..5 {
        a.window(1)?;
        b.window(1)?;
    }
    let (first_a, first_b) = (a.window(1)?, b.window(1)?);
    distinct_node_translations("udp", &[first_a, first_b])?;
    Ok(())
}

/// `kill -9` of the agent and a restart while both pods talk: established TCP connections and
/// UDP flows keep answering with their translation at every moment, and every new connection
/// opened meanwhile is masqueraded. Zero broken connections, zero lost datagrams.
pub fn kill9_under_traffic_breaks_nothing(datapath: Datapath) -> Result<()> {
    let mut bed = Bed::ready(datapath, VPC_ONLY)?;
    let crashed = bed.take_agent();
    let server = bed.probes.tcp_addr(addr::INTERNET.into());
    let pods = [
        (&bed.topology.pod, addr::POD),
        (&bed.topology.pod2, addr::POD2),
    ];
    let mut sessions = Vec::new();
    let mut udp_flows = Vec::new();
    for (pod, ip) in pods {
        for _ in 0..2 {
            let mut session = TcpSession::connect(pod, server)?;
            let first = session.observed_source()?;
            sessions.push((session, first));
        }
        let mut flow = UdpFlow::open(pod, SocketAddr::new(ip.into(), 0), server)?;
        flow.window(1)?;
        udp_flows.push(flow);
    }
    let installed = bed.installed()?;

    let talking = AtomicBool::new(true);
    let bed_ref = &bed;
    let (restarted, established, fresh) = std::thread::scope(|s| {
        let established: Vec<_> = sessions
            .iter_mut()
            .map(|(session, first)| {
                let talking = &talking;
                s.spawn(move || -> Result<usize> {
                    let mut rounds = 0;
                    while talking.load(Ordering::Relaxed) {
                        let seen = session.observed_source()?;
                        ensure!(
                            seen == *first,
                            "an open connection went from {first} to {seen}"
                        );
                        rounds += 1;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Ok(rounds)
                })
            })
            .chain(udp_flows.iter_mut().map(|flow| {
                let talking = &talking;
                s.spawn(move || -> Result<usize> {
                    let mut rounds = 0;
                    while talking.load(Ordering::Relaxed) {
                        flow.window(1)?;
                        rounds += 1;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Ok(rounds)
                })
            }))
            .collect();
        let fresh = s.spawn(|| {
            let mut seen = Vec::new();
            while talking.load(Ordering::Relaxed) {
                for (pod, _) in pods {
                    seen.push(tcp_source(pod, server).map_err(|e| format!("{e:#}")));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            seen
        });
        // Traffic before, during and after the gap.
        std::thread::sleep(Duration::from_millis(200));
        crashed.kill9();
        let restarted = bed_ref.spawn_agent().and_then(|mut agent| {
            let took = agent.wait_ready(&bed_ref.topology.node, Duration::from_secs(10))?;
            Ok((agent, took))
        });
        std::thread::sleep(Duration::from_millis(300));
        talking.store(false, Ordering::Relaxed);
        (
            restarted,
            join_all(established),
            fresh.join().expect("no panic"),
        )
    });
    let (restarted, took) = restarted?;
    bed.agent = Some(restarted);
    let mut all_rounds = Vec::new();
    for (n, rounds) in established.into_iter().enumerate() {
        let rounds = rounds.with_context(|| format!("established flow {n} broke"))?;
        assert!(rounds > 10, "established flow {n}: only {rounds} rounds");
        all_rounds.push(rounds);
    }
    eprintln!(
        "kill -9: new agent ready after {} ms; {} new connections, rounds on the 4 TCP and 2 UDP \
         established flows: {all_rounds:?}",
        took.as_millis(),
        fresh.len()
    );
    let node = Ok(NODE);
    assert!(
        fresh.len() > 10 && fresh.iter().all(|s| *s == node),
        "new connections during kill -9 and restart saw: {fresh:?}"
    );
    assert_eq!(
        bed.installed()?,
        installed,
        "the restart changed the datapath"
    );
    Ok(())
}
