//! Scenarios of the eBPF datapath only (issue 4), with the real agent binary: bounded TCP and UDP
//! floods from two pods with every reply delivered to the right pod, two pods using the same
//! source port towards the same destination, `kill -9` under a stream of new and established
//! connections, the NAT table in `/metrics` and `masq nat list`, and port exhaustion towards one
//! destination with recovery after the agent's GC.
//!
//! A reply that the reverse translation sent to the wrong pod (or port) would not reach the
//! socket waiting for it: the pod's kernel would reset the TCP connection or drop the datagram.
//! So "every question answered on its own socket, naming that socket's own translation" is
//! what "every reply delivered to the right pod" means here.

pub mod beside_cni;
pub mod engine;

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use masq_testbed::probe::{tcp_source, TcpSession, PROBE_TIMEOUT};
use masq_testbed::{addr, Netns};

use crate::harness::*;
use crate::VPC_ONLY;

const NODE: IpAddr = IpAddr::V4(addr::NODE);

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

/// Fails unless every address is the node's, with no two alike.
fn distinct_node_translations(what: &str, seen: &[SocketAddr]) -> Result<()> {
    ensure!(
        seen.iter().all(|s| s.ip() == NODE),
        "{what}: not all masqueraded: {seen:?}"
    );
    let distinct: HashSet<_> = seen.iter().collect();
    ensure!(
        distinct.len() == seen.len(),
        "{what}: {} flows share {} translations",
        seen.len(),
        distinct.len()
    );
    Ok(())
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

/// After traffic, `/metrics` counts translations and NAT entries, and `masq nat list` (text and
/// JSON) shows both halves of the pod's open connection.
pub fn nat_table_in_metrics_and_nat_list(datapath: Datapath) -> Result<()> {
    let bed = Bed::ready(datapath, VPC_ONLY)?;
    let server = bed.probes.tcp_addr(addr::INTERNET.into());
    let mut session = TcpSession::connect(&bed.topology.pod, server)?;
    let translated = session.observed_source()?;
    let local = session.local_addr()?;
    assert_eq!(translated.ip(), NODE);

    let metrics = bed.metrics()?;
    let value = |name: &str, label: &str| metric_with(&metrics, name, label).unwrap_or(-1.0);
    assert!(
        metric(&metrics, "masq_ebpf_translations_total").unwrap_or(0.0) > 0.0,
        "{metrics}"
    );
    for direction in ["egress", "ingress"] {
        let label = format!("direction=\"{direction}\"");
        let entries = value("masq_ebpf_nat_entries", &label);
        assert!(entries >= 1.0, "{direction} entries {entries}:\n{metrics}");
    }
    assert!(
        metric(&metrics, "masq_ebpf_nat_pressure").unwrap_or(0.0) > 0.0,
        "{metrics}"
    );
    let pool = value(
        "masq_ebpf_port_pool_saturation",
        &format!("destination=\"{server}\""),
    );
    assert!(pool > 0.0, "no pool towards {server}:\n{metrics}");

    let out = bed.masq_with_pins(&["nat", "list"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        format!("TCP OUT {local} -> {server} XLATE_SRC {translated} "),
        format!("TCP IN {server} -> {translated} XLATE_DST {local} "),
    ] {
        assert!(
            text.contains(&line),
            "no {line:?} in masq nat list:\n{text}"
        );
    }

    let out = bed.masq_with_pins(&["nat", "list", "-o", "json"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)?;
    let egress = rows
        .iter()
        .find(|r| r["direction"] == "egress" && r["original"] == format!("{local} -> {server}"));
    let egress = egress.with_context(|| format!("no egress entry for {local}: {rows:?}"))?;
    assert_eq!(egress["protocol"], "TCP");
    assert_eq!(egress["translated"], format!("{translated} -> {server}"));
    Ok(())
}

/// Four translated ports towards one destination: four connections get them, a fifth is
/// dropped and counted (never sent untranslated), another destination is unaffected, and once
/// the four close the agent's GC frees the ports: new connections work again.
///
/// A closed TCP pair is removed 10 s after its last packet by a GC that runs every 5 s, so the
/// recovery takes 10 to 15 s: the slowest scenario, kept because it is the real agent's GC
/// (the datapath test fakes the clock instead).
pub fn port_exhaustion_is_counted_and_recovers(datapath: Datapath) -> Result<()> {
    let mut bed = Bed::new(datapath, Some(VPC_ONLY))?;
    bed.agent_args = vec!["--port-range".into(), "40000-40003".into()];
    bed.start_agent()?;
    bed.wait_ready()?;
    let server = bed.probes.tcp_addr(addr::INTERNET.into());
    let pod = &bed.topology.pod;

    let mut held = Vec::new();
    for _ in 0..4 {
        let mut session = TcpSession::connect(pod, server).map_err(|e| bed.with_log(e))?;
        let seen = session.observed_source()?;
        assert!((40000..=40003).contains(&seen.port()), "{seen}");
        held.push((session, seen));
    }
    let seen: Vec<SocketAddr> = held.iter().map(|(_, seen)| *seen).collect();
    distinct_node_translations("the four", &seen)?;

    let fifth = TcpSession::connect(pod, server);
    assert!(fifth.is_err(), "a fifth connection got through");
    let metrics = bed.metrics()?;
    let failures = metric(&metrics, "masq_ebpf_port_allocation_failures_total").unwrap_or(0.0);
    assert!(failures >= 1.0, "{metrics}");
    let dropped = metric_with(
        &metrics,
        "masq_ebpf_drops_total",
        "reason=\"port-exhausted\"",
    );
    assert!(dropped >= Some(1.0), "{metrics}");
    let pool = metric_with(
        &metrics,
        "masq_ebpf_port_pool_saturation",
        &format!("destination=\"{server}\""),
    );
    assert_eq!(pool, Some(1.0), "{metrics}");
    assert_eq!(
        tcp_source(pod, bed.probes.tcp_addr(addr::INTERNET2.into()))?,
        NODE,
        "another destination has its own ports"
    );
    for (session, seen) in &mut held {
        assert_eq!(
            session.observed_source()?,
            *seen,
            "an open connection suffered"
        );
    }

    drop(held);
    let closed = Instant::now();
    let took = bed.wait_for_source(addr::INTERNET, addr::NODE, Duration::from_secs(25))?;
    eprintln!(
        "ports free again {} ms after the connections closed",
        closed.elapsed().as_millis()
    );
    assert!(
        took >= Duration::from_secs(9),
        "freed before the TCP grace period: {took:?}"
    );
    Ok(())
}

/// `--datapath auto` takes eBPF where it loads (its pin directory on a bpffs) and says why in
/// `/status`; with a pin directory that is not on a bpffs it falls back to nftables and names
/// the reason.
pub fn auto_prefers_ebpf_and_says_why(datapath: Datapath) -> Result<()> {
    let mut bed = Bed::new(datapath, Some(VPC_ONLY))?;
    bed.datapath_flag = "auto";
    bed.start_agent()?;
    bed.wait_ready()?;
    let status = bed.status()?;
    assert_eq!(status.datapath, "ebpf", "{status:?}");
    assert!(
        status.datapath_reason.contains("ebpf works"),
        "{}",
        status.datapath_reason
    );
    let installed = bed.installed()?;
    assert_eq!(installed.bpf_hooks, both_hooks("eth0"), "{installed:?}");
    assert!(!installed.nft_table, "{installed:?}");
    assert_eq!(bed.source_of(addr::INTERNET)?, NODE);
    drop(bed);

    // A pin directory where no bpffs can be mounted (its parent is a file): eBPF cannot keep
    // its pins, so `auto` takes nftables. (Where a bpffs can be mounted, the agent mounts one:
    // `beside_cni::mounts_a_bpffs_where_there_is_none`.)
    let not_a_dir = tempfile::NamedTempFile::new()?;
    let pin_dir = not_a_dir.path().join("masq");
    let mut bed = Bed::new(Datapath::Nftables, Some(VPC_ONLY))?;
    bed.datapath_flag = "auto";
    bed.agent_args = vec![
        "--bpf-pin-dir".into(),
        pin_dir.to_string_lossy().into_owned(),
    ];
    bed.start_agent()?;
    bed.wait_ready()?;
    let status = bed.status()?;
    assert_eq!(status.datapath, "nftables", "{status:?}");
    let reason = &status.datapath_reason;
    assert!(
        reason.contains("ebpf unavailable")
            && reason.contains("not on a bpf filesystem and mounting one on"),
        "{reason}"
    );
    assert!(bed.installed()?.nft_table);
    assert!(!pin_dir.exists(), "the probe left {}", pin_dir.display());
    assert_eq!(bed.source_of(addr::INTERNET)?, NODE);
    Ok(())
}

/// Anonymous memory (heap) of a process, MiB.
fn rss_anon_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|rest| rest.split_whitespace().next())
        .context("RssAnon missing from /proc/PID/status")?
        .parse()?;
    Ok(kib / 1024.0)
}

/// Loading the programs parses the kernel's BTF (~19 MiB of heap for a moment). The agent must
/// give that back: with glibc's defaults 10 MiB of it stayed resident for the agent's life.
pub fn loading_memory_is_given_back(datapath: Datapath) -> Result<()> {
    let mut bed = Bed::ready(datapath, VPC_ONLY)?;
    // Past the first sync's trim (ready comes right after it), as the benchmark measures.
    std::thread::sleep(Duration::from_millis(500));
    let heap = rss_anon_mib(bed.agent().pid())?;
    ensure!(heap < 6.0, "agent heap {heap:.1} MiB resident after start");
    Ok(())
}
