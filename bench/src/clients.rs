//! Load generators that run in the pod namespace: new TCP connections, new UDP flows, and
//! request/response latency over one established connection. Every load is bounded by a flow
//! count and a time limit, and every socket operation by a timeout.
//!
//! Connection and flow clients choose their source port themselves, consecutive flows to
//! consecutive server ports, each server port's source ports walking 1024..65024, so that no
//! 5-tuple repeats within a measurement: each flow really is a
//! new conntrack entry (a repeated tuple would hit the old entry and skip the NAT rules), and
//! closing TCP with SO_LINGER 0 (a reset) leaves no TIME_WAIT to exhaust the ports. Every
//! client speaks the family of the server address it is given (IPv4 or IPv6).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use masq_testbed::Netns;
use nix::sys::socket::{
    bind, connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage,
};
use serde::Serialize;

use crate::pin;
use crate::servers::timeval;

/// Longest wait for a connect, a request or an answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(1);
const FIRST_PORT: u16 = 1024;
const PORTS: u64 = 64_000;

/// A bounded burst of new flows.
#[derive(Clone, Copy, Debug)]
pub struct Burst {
    /// Concurrent client threads.
    pub threads: usize,
    /// Stop after this many flows…
    pub max_flows: u64,
    /// …or after this long, whichever comes first.
    pub max_time: Duration,
}

/// What a burst achieved.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct BurstResult {
    /// Flows that got their answer.
    pub ok: u64,
    /// Flows that failed (connect refused or timed out, no answer).
    pub failed: u64,
    /// Wall time of the burst, seconds.
    pub seconds: f64,
    /// `ok / seconds`.
    pub per_second: f64,
}

/// Consecutive flows to one server port before the next port's turn (see [`tuple`]).
const BLOCK: u64 = 1024;

/// The 5-tuple plan: flows go to the server ports in turn, a block of [`BLOCK`] consecutive
/// flows each, and each port's flows walk source ports 1024..65024. Every server port is its own
/// NAT port pool (destination address, port, protocol), so a burst fills the pools evenly: filling
/// one port first, as this plan did before, put 64,000 flows in one pool of 61,744 and measured
/// the NAT's search near a full pool (and its refusals) instead of a new flow's cost. Blocks,
/// not one flow a port: each server port has its own thread, and switching between them on
/// every datagram measured the server's scheduling (a third of the UDP rate).
fn tuple(n: u64, ports: &[u16]) -> (u16, u16) {
    let len = ports.len() as u64;
    let block = n / BLOCK;
    let nth_of_port = block / len * BLOCK + n % BLOCK;
    let source = FIRST_PORT + u16::try_from(nth_of_port % PORTS).expect("below 64000");
    (source, ports[usize::try_from(block % len).expect("small")])
}

/// Runs `flow` for each flow number from `threads` threads inside `ns`, all pinned to `cpu`.
fn run_burst<F>(ns: &Netns, burst: Burst, cpu: Option<usize>, flow: F) -> Result<BurstResult>
where
    F: Fn(u64) -> bool + Sync,
{
    let next = AtomicU64::new(0);
    let ok = AtomicU64::new(0);
    let failed = AtomicU64::new(0);
    let started = Instant::now();
    let deadline = started + burst.max_time;
    std::thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = (0..burst.threads)
            .map(|_| {
                scope.spawn(|| {
                    ns.enter(|| {
                        pin::current_thread(cpu);
                        loop {
                            let n = next.fetch_add(1, Ordering::Relaxed);
                            if n >= burst.max_flows || Instant::now() >= deadline {
                                break;
                            }
                            let counter = if flow(n) { &ok } else { &failed };
                            counter.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                })
            })
            .collect();
        for worker in workers {
            worker.join().expect("load threads do not panic")?;
        }
        Ok(())
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let ok = ok.into_inner();
    Ok(BurstResult {
        ok,
        failed: failed.into_inner(),
        seconds,
        per_second: ok as f64 / seconds,
    })
}

/// New TCP connections: connect, one byte each way, reset.
pub fn tcp_connections(
    ns: &Netns,
    server: IpAddr,
    ports: &[u16],
    burst: Burst,
    cpu: Option<usize>,
) -> Result<BurstResult> {
    run_burst(ns, burst, cpu, |n| {
        let (source, port) = tuple(n, ports);
        one_connection(source, SocketAddr::new(server, port)).is_ok()
    })
}

fn one_connection(source: u16, server: SocketAddr) -> Result<()> {
    let mut stream = connect_from(source, server)?;
    stream.write_all(b"x")?;
    let mut answer = [0u8; 1];
    stream.read_exact(&mut answer)?;
    reset(&stream);
    Ok(())
}

/// The wildcard address of `server`'s family with `port`: where a client binds its source port.
fn any_address_like(server: SocketAddr, port: u16) -> SocketAddr {
    let any = match server {
        SocketAddr::V4(_) => IpAddr::from(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::from(Ipv6Addr::UNSPECIFIED),
    };
    SocketAddr::new(any, port)
}

/// A TCP connection from `source` (any address, this port), with every timeout set.
pub fn connect_from(source: u16, server: SocketAddr) -> Result<TcpStream> {
    let family = match server {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    // connect() honours SO_SNDTIMEO: a lost SYN costs a second, not two minutes.
    setsockopt(&fd, sockopt::SendTimeout, &timeval(IO_TIMEOUT))?;
    setsockopt(&fd, sockopt::ReceiveTimeout, &timeval(IO_TIMEOUT))?;
    setsockopt(&fd, sockopt::TcpNoDelay, &true)?;
    if source != 0 {
        bind(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            &SockaddrStorage::from(any_address_like(server, source)),
        )?;
    }
    connect(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrStorage::from(server),
    )?;
    Ok(TcpStream::from(fd))
}

/// Close with a reset (SO_LINGER 0): no TIME_WAIT on either side.
fn reset(stream: &TcpStream) {
    let _ = setsockopt(
        stream,
        sockopt::Linger,
        &libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    );
}

/// New UDP flows: a fresh source port, one datagram each way.
pub fn udp_flows(
    ns: &Netns,
    server: IpAddr,
    ports: &[u16],
    burst: Burst,
    cpu: Option<usize>,
) -> Result<BurstResult> {
    run_burst(ns, burst, cpu, |n| {
        let (source, port) = tuple(n, ports);
        one_datagram(source, SocketAddr::new(server, port)).is_ok()
    })
}

fn one_datagram(source: u16, server: SocketAddr) -> Result<()> {
    let socket = UdpSocket::bind(any_address_like(server, source))?;
    socket.connect(server)?;
    socket.set_read_timeout(Some(IO_TIMEOUT / 2))?;
    socket.send(b"x")?;
    let mut answer = [0u8; 8];
    socket.recv(&mut answer)?;
    Ok(())
}

/// Round-trip times over one established connection.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Latency {
    /// Median round trip, microseconds.
    pub p50_us: f64,
    /// 99th percentile, microseconds.
    pub p99_us: f64,
    /// Round trips measured.
    pub samples: usize,
}

/// One-byte request/response round trips over one connection: `warmup` untimed, then `count`.
pub fn latency(
    ns: &Netns,
    server: SocketAddr,
    warmup: usize,
    count: usize,
    cpu: Option<usize>,
) -> Result<Latency> {
    ns.enter(|| -> Result<Latency> {
        pin::current_thread(cpu);
        let mut stream = connect_from(0, server)?;
        let mut answer = [0u8; 1];
        let mut times = Vec::with_capacity(count);
        for i in 0..warmup + count {
            let started = Instant::now();
            stream.write_all(b"x")?;
            stream.read_exact(&mut answer)?;
            if i >= warmup {
                times.push(started.elapsed().as_secs_f64() * 1e6);
            }
        }
        times.sort_by(f64::total_cmp);
        Ok(Latency {
            p50_us: percentile(&times, 0.50),
            p99_us: percentile(&times, 0.99),
            samples: times.len(),
        })
    })?
    .with_context(|| format!("latency to {server}"))
}

/// The `q` quantile of sorted values (nearest rank).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The source address `server` sees for a new connection from `ns`.
pub fn observed_source(ns: &Netns, server: SocketAddr) -> Result<IpAddr> {
    ns.enter(|| ask_source(server))?
}

/// From the current namespace: connect, ask `?`, read the address line, reset.
pub fn ask_source(server: SocketAddr) -> Result<IpAddr> {
    let mut stream = connect_from(0, server)?;
    stream.write_all(b"?")?;
    let mut line = Vec::with_capacity(48);
    let mut byte = [0u8; 1];
    while line.len() < 48 {
        stream.read_exact(&mut byte)?;
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
    }
    reset(&stream);
    let text = String::from_utf8_lossy(&line);
    text.parse()
        .with_context(|| format!("answer from {server}: {text:?}"))
}

/// Probes `server` from inside `ns` until it reports `wanted` as the source, at most `timeout`;
/// returns when that was first seen, measured from `since`. `stop` ends it early.
pub fn wait_for_source(
    ns: &Netns,
    server: SocketAddr,
    wanted: IpAddr,
    since: Instant,
    timeout: Duration,
    stop: &AtomicBool,
    cpu: Option<usize>,
) -> Result<Option<Duration>> {
    ns.enter(|| {
        pin::current_thread(cpu);
        while since.elapsed() < timeout && !stop.load(Ordering::Relaxed) {
            let probe_started = Instant::now();
            if matches!(ask_source(server), Ok(ip) if ip == wanted) {
                // The change happened somewhere during this probe; count its start.
                return Some(probe_started.duration_since(since));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuples_take_the_server_ports_in_turn_and_do_not_repeat_within_a_cycle() {
        let ports = [9100, 9101];
        assert_eq!(tuple(0, &ports), (1024, 9100));
        assert_eq!(tuple(1023, &ports), (2047, 9100));
        assert_eq!(tuple(1024, &ports), (1024, 9101));
        assert_eq!(tuple(2048, &ports), (2048, 9100));
        // 62 blocks a port: 63,488 flows each, within one walk of the source ports.
        let flows = 124 * BLOCK;
        let seen: std::collections::HashSet<_> = (0..flows).map(|n| tuple(n, &ports)).collect();
        assert_eq!(seen.len() as u64, flows);
    }

    #[test]
    fn clients_bind_the_wildcard_of_the_server_family() {
        let v6: SocketAddr = "[2001:db8::10]:9100".parse().unwrap();
        assert_eq!(any_address_like(v6, 1024).to_string(), "[::]:1024");
        let v4: SocketAddr = "203.0.113.10:9100".parse().unwrap();
        assert_eq!(any_address_like(v4, 0).to_string(), "0.0.0.0:0");
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.5), 50.0);
        assert_eq!(percentile(&values, 0.99), 99.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert!(percentile(&[], 0.5).is_nan());
    }
}
