//! The UDP probe: an echo server that answers each datagram with the peer address it saw, and a
//! client that asks once (with retries).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use super::{Seen, Shared, Threads, POLL, PROBE_TIMEOUT};
use crate::netns::Netns;

/// A UDP server answering every datagram with the peer address it sees. Each address gets its
/// own socket so that the answer leaves from the address that was asked (a reply from another
/// address would not match the sender's conntrack entry).
pub struct UdpEchoServer {
    threads: Threads,
}

impl UdpEchoServer {
    /// Binds each address inside `ns`.
    pub fn start(ns: &Netns, addrs: &[SocketAddr]) -> Result<UdpEchoServer> {
        let shared = Arc::new(Shared::default());
        let mut threads = Vec::new();
        for &addr in addrs {
            let socket = ns
                .enter(|| UdpSocket::bind(addr))?
                .with_context(|| format!("in {}: binding udp {addr}", ns.name()))?;
            socket.set_read_timeout(Some(POLL))?;
            let shared = Arc::clone(&shared);
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 1500];
                while !shared.stop.load(Ordering::Relaxed) {
                    if let Ok((_, peer)) = socket.recv_from(&mut buf) {
                        shared.record(Seen { peer, local: addr });
                        let _ = socket.send_to(format!("{peer}\n").as_bytes(), peer);
                    }
                }
            }));
        }
        Ok(UdpEchoServer {
            threads: Threads { shared, threads },
        })
    }

    /// Every datagram received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.threads.seen()
    }
}

/// Sends a datagram from `ns` to `server` (retrying, as the first one can be lost while
/// neighbours are resolved) and returns the source address the server saw.
pub fn udp_source(ns: &Netns, server: SocketAddr) -> Result<IpAddr> {
    let any: IpAddr = match server {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    udp_source_from(ns, SocketAddr::new(any, 0), server)
}

/// [`udp_source`] from a socket bound to `local`. The answer counts only when it comes from
/// `server` itself: a reply translated on its way (another source address or port) is no
/// answer, as for a connected client.
pub fn udp_source_from(ns: &Netns, local: SocketAddr, server: SocketAddr) -> Result<IpAddr> {
    let socket = ns
        .enter(|| UdpSocket::bind(local))?
        .with_context(|| format!("in {}: binding a udp client to {local}", ns.name()))?;
    let attempts = 3;
    socket.set_read_timeout(Some(PROBE_TIMEOUT / attempts))?;
    let mut buf = [0u8; 256];
    for _ in 0..attempts {
        socket
            .send_to(b"who am i\n", server)
            .with_context(|| format!("from {}: udp send to {server}", ns.name()))?;
        if let Ok((len, from)) = socket.recv_from(&mut buf) {
            if from == server {
                let text = String::from_utf8_lossy(&buf[..len]);
                let peer: SocketAddr = text
                    .trim()
                    .parse()
                    .with_context(|| format!("udp answer from {server}: {text:?}"))?;
                return Ok(peer.ip());
            }
        }
    }
    bail!(
        "from {}: no udp answer from {server} within {PROBE_TIMEOUT:?}",
        ns.name()
    )
}
