//! The eBPF flow table under stress, with the real agent (issue 14): a 4-tuple reused after a
//! reset, unanswered SYNs, a port pool used to the last port, a flood that fills the table, and
//! BIG TCP. A leak watch at the far side counts every packet that arrives there with a pod's
//! address for a masqueraded destination: it must stay at zero.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use masq_testbed::probe::{TcpSession, PROBE_TIMEOUT};
use masq_testbed::{addr, LeakWatch, Netns};
use nix::sys::socket::{
    bind, connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage,
};

use crate::harness::*;
use crate::VPC_ONLY;

const NODE: IpAddr = IpAddr::V4(addr::NODE);
/// A TEST-NET host nobody answers for: the external side drops what it cannot deliver.
const BLACKHOLE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 99);

fn leak_watch(bed: &Bed) -> Result<LeakWatch<'_>> {
    LeakWatch::start(
        &bed.topology.external,
        addr::POD_CIDR,
        &[addr::INTERNET.into(), addr::INTERNET2.into()],
    )
}

/// A TCP connection from a fixed local port that asks the echo server who it is.
fn ask(stream: &mut BufReader<TcpStream>) -> Result<SocketAddr> {
    stream.get_mut().write_all(b"who am i\n")?;
    let mut line = String::new();
    stream.read_line(&mut line)?;
    line.trim()
        .parse()
        .with_context(|| format!("answer {line:?}"))
}

fn connect_from(ns: &Netns, local: SocketAddr, server: SocketAddr) -> Result<BufReader<TcpStream>> {
    let stream = ns.enter(|| -> Result<TcpStream> {
        let s = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        // The previous connection on this port was reset: no TIME_WAIT, but be sure.
        setsockopt(&s, sockopt::ReuseAddr, &true)?;
        bind(s.as_raw_fd(), &SockaddrStorage::from(local))?;
        connect(s.as_raw_fd(), &SockaddrStorage::from(server))?;
        Ok(TcpStream::from(s))
    })??;
    stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
    Ok(BufReader::new(stream))
}

/// Closes with a reset (SO_LINGER 0), as a client that aborts its connection does.
fn reset(stream: BufReader<TcpStream>) -> Result<()> {
    let stream = stream.into_inner();
    setsockopt(
        &stream,
        sockopt::Linger,
        &libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    )?;
    drop(stream);
    Ok(())
}

/// A client with a fixed source port resets its connection and reuses the 4-tuple at once,
/// then goes quiet for 15 s (past the 10 s closing grace): the new connection still works
/// with the same translation, and no packet ever reaches the far side with the pod's address.
pub fn reset_then_reuse_then_idle_stays_translated(datapath: Datapath) -> Result<()> {
    let bed = Bed::ready(datapath, VPC_ONLY)?;
    let watch = leak_watch(&bed)?;
    let server = bed.probes.tcp_addr(addr::INTERNET.into());
    let local = SocketAddr::new(addr::POD.into(), 45000);
    let pod = &bed.topology.pod;
    let mut first = connect_from(pod, local, server)?;
    let translated = ask(&mut first)?;
    ensure!(translated.ip() == NODE, "{translated}");
    reset(first)?;
    let mut second = connect_from(pod, local, server)?;
    ensure!(
        ask(&mut second)? == translated,
        "the reused tuple was translated anew"
    );
    std::thread::sleep(Duration::from_secs(15));
    let after = ask(&mut second).map_err(|e| bed.with_log(e.context("after 15 s idle")))?;
    ensure!(after == translated, "{after} after the idle time");
    ensure!(
        watch.packets()? == 0,
        "{} pod-sourced packets leaked",
        watch.packets()?
    );
    Ok(())
}

/// 300 SYNs to a host that never answers, their sockets closed at once (no retransmissions):
/// with a 5 s SYN lifetime, the pairs are there 3 s later and gone within one GC period
/// (5 s) after their lifetime. A pass over so small a table is cheap: the schedule runs one at
/// every tick (`masq_ebpf_gc_deferred_total` stays 0).
pub fn unanswered_syns_leave_after_their_lifetime(datapath: Datapath) -> Result<()> {
    let mut bed = Bed::new(datapath, Some(VPC_ONLY))?;
    bed.agent_args = vec!["--nat-timeout-tcp-syn".into(), "5s".into()];
    bed.start_agent()?;
    bed.wait_ready()?;
    let target = SocketAddr::new(BLACKHOLE.into(), 80);
    bed.topology.pod.enter(|| -> Result<()> {
        let mut sockets = Vec::new();
        for _ in 0..300 {
            let s = socket(
                AddressFamily::Inet,
                SockType::Stream,
                SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
                None,
            )?;
            // EINPROGRESS: the SYN is on its way.
            let _ = connect(s.as_raw_fd(), &SockaddrStorage::from(target));
            sockets.push(s);
        }
        std::thread::sleep(Duration::from_millis(200));
        Ok(())
    })??;
    let closed = Instant::now();
    let pairs = || -> Result<usize> {
        let out = bed.masq_with_pins(&["nat", "list"])?;
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text
            .lines()
            .filter(|l| l.starts_with("TCP OUT") && l.contains(&BLACKHOLE.to_string()))
            .count())
    };
    std::thread::sleep(Duration::from_secs(3));
    let early = pairs()?;
    ensure!(early == 300, "{early} of 300 pairs 3 s after the SYNs");
    let gone = loop {
        if pairs()? == 0 {
            break closed.elapsed();
        }
        ensure!(
            closed.elapsed() < Duration::from_secs(20),
            "the unanswered SYNs outlived their lifetime: {} pairs left",
            pairs()?
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    eprintln!(
        "300 unanswered SYNs gone {} ms after the last packet (lifetime 5 s, GC every 5 s)",
        gone.as_millis()
    );
    ensure!(gone <= Duration::from_secs(11), "gone only after {gone:?}");
    let metrics = bed.metrics()?;
    let passes = metric(&metrics, "masq_ebpf_gc_passes_total").unwrap_or(0.0);
    let deferred = metric(&metrics, "masq_ebpf_gc_deferred_total");
    ensure!(
        passes >= 2.0 && deferred == Some(0.0),
        "GC passes {passes}, deferred ticks {deferred:?}"
    );
    Ok(())
}

/// Opens one UDP flow from each of `ports` of the pod to `server`, asking again (up to five
/// rounds) on the sockets without an answer, since a burst can overflow a receive buffer on
/// the way; returns the sources the server answered with, one per answered socket.
fn udp_from_each_port(
    ns: &Netns,
    ports: std::ops::Range<u16>,
    server: SocketAddr,
) -> Result<Vec<SocketAddr>> {
    ns.enter(|| -> Result<Vec<SocketAddr>> {
        let sockets = ports
            .map(|port| {
                let s = UdpSocket::bind((addr::POD, port))?;
                s.set_nonblocking(true)?;
                Ok(s)
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        let mut answers: Vec<Option<SocketAddr>> = vec![None; sockets.len()];
        let mut buf = [0u8; 128];
        for _round in 0..5 {
            for (s, answer) in sockets.iter().zip(&answers) {
                if answer.is_none() {
                    let _ = s.send_to(b"who am i\n", server);
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
            std::thread::sleep(Duration::from_millis(300));
            for (s, answer) in sockets.iter().zip(answers.iter_mut()) {
                if let Ok(n) = s.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]);
                    *answer = Some(text.trim().parse()?);
                }
            }
        }
        Ok(answers.into_iter().flatten().collect())
    })?
}

/// 1,050 UDP flows from one pod to one destination through a 1,000-port range: 1,000 are
/// answered, with 1,000 distinct translations, the other 50 are dropped and counted, none
/// leaves with the pod's address.
pub fn a_port_pool_is_used_to_the_last_port(datapath: Datapath) -> Result<()> {
    let mut bed = Bed::new(datapath, Some(VPC_ONLY))?;
    bed.agent_args = vec!["--port-range".into(), "40000-40999".into()];
    bed.start_agent()?;
    bed.wait_ready()?;
    let watch = leak_watch(&bed)?;
    let server = SocketAddr::new(addr::INTERNET.into(), bed.probes.port());
    let answered = udp_from_each_port(&bed.topology.pod, 20000..21050, server)?;
    ensure!(answered.len() == 1000, "{} flows answered", answered.len());
    let seen: HashSet<SocketAddr> = answered.iter().copied().collect();
    ensure!(seen.len() == 1000, "{} distinct translations", seen.len());
    ensure!(
        seen.iter()
            .all(|s| s.ip() == NODE && (40000..=40999).contains(&s.port())),
        "a translation outside the pool"
    );
    // Each of the 50 refused flows was tried up to five times.
    let failures = metric(&bed.metrics()?, "masq_ebpf_port_allocation_failures_total");
    ensure!(
        failures >= Some(50.0) && failures <= Some(250.0),
        "{failures:?} allocation failures"
    );
    ensure!(watch.packets()? == 0, "pod-sourced packets leaked");
    Ok(())
}

/// Twenty pooled connections sit idle while a flood of one-packet UDP flows fills a small
/// table (2,048 flows): the flood's excess is refused and counted, the pooled connections keep
/// working with their translations, nothing leaks.
pub fn a_flood_that_fills_the_table_spares_idle_connections(datapath: Datapath) -> Result<()> {
    let mut bed = Bed::new(datapath, Some(VPC_ONLY))?;
    bed.agent_args = vec!["--nat-table-size".into(), "2048".into()];
    bed.start_agent()?;
    bed.wait_ready()?;
    let watch = leak_watch(&bed)?;
    let server = bed.probes.tcp_addr(addr::INTERNET.into());
    let mut pooled = Vec::new();
    for _ in 0..20 {
        let mut session = TcpSession::connect(&bed.topology.pod, server)?;
        let seen = session.observed_source()?;
        pooled.push((session, seen));
    }
    let flood = SocketAddr::new(addr::INTERNET2.into(), bed.probes.port());
    bed.topology.pod.enter(|| -> Result<()> {
        for port in 0..3000u16 {
            let s = UdpSocket::bind((addr::POD, 30000 + port))?;
            let _ = s.send_to(b"flood", flood);
        }
        Ok(())
    })??;
    let metrics = bed.metrics()?;
    let refused = metric_with(
        &metrics,
        "masq_ebpf_drops_total",
        "reason=\"nat-insert-failed\"",
    );
    ensure!(
        refused >= Some(900.0),
        "{refused:?} flows refused: {metrics}"
    );
    for (session, seen) in &mut pooled {
        let now = session.observed_source().map_err(|e| bed.with_log(e))?;
        ensure!(
            now == *seen,
            "a pooled connection changed from {seen} to {now}"
        );
    }
    ensure!(watch.packets()? == 0, "pod-sourced packets leaked");
    Ok(())
}

/// BIG TCP (kernel 6.3+): the pod sends GSO packets of up to 185,000 bytes, whose IPv4 length
/// field is 0. They are translated (counted as big packets), none is dropped, and the whole
/// stream arrives.
pub fn big_tcp_is_translated(datapath: Datapath) -> Result<()> {
    let bed = Bed::ready(datapath, VPC_ONLY)?;
    let t = &bed.topology;
    for (ns, dev) in [
        (&t.pod, "eth0"),
        (&t.node, "vpod"),
        (&t.node, "eth0"),
        (&t.external, "eth0"),
    ] {
        masq_testbed::link::allow_big_tcp(ns, dev, 185_000)?;
    }
    let sink = SocketAddr::new(addr::INTERNET.into(), 9100);
    let listener = t.external.enter(|| std::net::TcpListener::bind(sink))??;
    const TOTAL: usize = 64 << 20;
    let received = std::thread::scope(|s| -> Result<(usize, SocketAddr)> {
        let reader = s.spawn(move || -> Result<(usize, SocketAddr)> {
            let (mut conn, peer) = listener.accept()?;
            conn.set_read_timeout(Some(Duration::from_secs(10)))?;
            let mut total = 0;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                match std::io::Read::read(&mut conn, &mut buf)? {
                    0 => return Ok((total, peer)),
                    n => total += n,
                }
            }
        });
        t.pod.enter(|| -> Result<()> {
            let mut conn = TcpStream::connect_timeout(&sink, PROBE_TIMEOUT)?;
            let chunk = vec![0x5au8; 1 << 20];
            for _ in 0..TOTAL / chunk.len() {
                conn.write_all(&chunk)?;
            }
            Ok(())
        })??;
        reader.join().expect("the sink thread")
    })?;
    ensure!(
        received.0 == TOTAL,
        "{} of {TOTAL} bytes arrived",
        received.0
    );
    ensure!(received.1.ip() == NODE, "the sink saw {}", received.1);
    let metrics = bed.metrics()?;
    let big = metric_with(&metrics, "masq_ebpf_packets_total", "reason=\"big-packet\"");
    ensure!(big > Some(0.0), "no BIG TCP packet was seen: {big:?}");
    let bad = metric_with(&metrics, "masq_ebpf_drops_total", "reason=\"bad-ihl\"");
    ensure!(bad == Some(0.0), "{bad:?} packets dropped as bad-ihl");
    Ok(())
}
