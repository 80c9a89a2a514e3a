//! The servers of the external namespace: TCP and UDP responders that count which source address
//! each connection or flow arrived with (the node's, after masquerading, or the pod's).
//!
//! A request is one byte, answered with one byte; a request starting with `?` is answered with
//! the peer address as a text line, which is how probers learn what the far side saw. Sockets
//! are created inside the namespace; the serving threads are pinned to the server CPU. Every
//! blocking call has a timeout, so dropping a server stops it within [`POLL`].

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use masq_testbed::{addr, addr6, Netns};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;

use crate::pin;

/// How often serving threads look at their stop flag.
const POLL: Duration = Duration::from_millis(100);
/// How long a server waits for the next request on an open connection.
const IDLE: Duration = Duration::from_secs(2);

/// How many connections or flows arrived with each kind of source address.
#[derive(Debug, Default)]
pub struct SourceCounts {
    /// With the node's address (either family): masqueraded.
    pub node: AtomicU64,
    /// With a pod's address (either family): kept.
    pub pod: AtomicU64,
    /// With anything else (never expected).
    pub other: AtomicU64,
}

impl SourceCounts {
    fn record(&self, peer: IpAddr) {
        let counter = if peer == addr::NODE || peer == addr6::NODE {
            &self.node
        } else if peer == addr::POD
            || peer == addr::POD2
            || peer == addr6::POD
            || peer == addr6::POD2
        {
            &self.pod
        } else {
            &self.other
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// (node, pod, other) so far.
    pub fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.node.load(Ordering::Relaxed),
            self.pod.load(Ordering::Relaxed),
            self.other.load(Ordering::Relaxed),
        )
    }
}

/// Serving threads on some addresses, each address with its own counts. Stops on drop.
pub struct Server {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    counts: Vec<(SocketAddr, Arc<SourceCounts>)>,
}

impl Server {
    /// A TCP responder on each of `addrs`, one serving thread each.
    pub fn tcp(ns: &Netns, addrs: &[SocketAddr], cpu: Option<usize>) -> Result<Server> {
        let mut server = Server::empty();
        for &address in addrs {
            let listener = ns
                .enter(|| TcpListener::bind(address))?
                .with_context(|| format!("in {}: listening on tcp {address}", ns.name()))?;
            // accept() honours SO_RCVTIMEO: the thread wakes up to look at its stop flag.
            setsockopt(&listener, sockopt::ReceiveTimeout, &timeval(POLL))?;
            let counts = Arc::new(SourceCounts::default());
            server.counts.push((address, Arc::clone(&counts)));
            let stop = Arc::clone(&server.stop);
            server.threads.push(std::thread::spawn(move || {
                pin::current_thread(cpu);
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, peer)) => {
                            counts.record(peer.ip());
                            serve_tcp(stream, peer, &stop);
                        }
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                        Err(_) => std::thread::sleep(Duration::from_millis(1)),
                    }
                }
            }));
        }
        Ok(server)
    }

    /// A UDP responder on each of `addrs`, one serving thread each.
    pub fn udp(ns: &Netns, addrs: &[SocketAddr], cpu: Option<usize>) -> Result<Server> {
        let mut server = Server::empty();
        for &address in addrs {
            let socket = ns
                .enter(|| UdpSocket::bind(address))?
                .with_context(|| format!("in {}: binding udp {address}", ns.name()))?;
            socket.set_read_timeout(Some(POLL))?;
            let counts = Arc::new(SourceCounts::default());
            server.counts.push((address, Arc::clone(&counts)));
            let stop = Arc::clone(&server.stop);
            server.threads.push(std::thread::spawn(move || {
                pin::current_thread(cpu);
                let mut buf = [0u8; 64];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((len, peer)) = socket.recv_from(&mut buf) {
                        counts.record(peer.ip());
                        let _ = socket.send_to(&answer(&buf[..len], peer), peer);
                    }
                }
            }));
        }
        Ok(server)
    }

    fn empty() -> Server {
        Server {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            counts: Vec::new(),
        }
    }

    /// The counts of the responder on `address`.
    pub fn counts(&self, address: SocketAddr) -> Option<Arc<SourceCounts>> {
        self.counts
            .iter()
            .find(|(a, _)| *a == address)
            .map(|(_, c)| Arc::clone(c))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Answers requests on one connection until the client closes it (or resets it, as the
/// connection-rate client does), the server stops, or it idles for [`IDLE`].
fn serve_tcp(mut stream: TcpStream, peer: SocketAddr, stop: &AtomicBool) {
    let _ = stream.set_nodelay(true);
    if stream.set_read_timeout(Some(IDLE)).is_err() {
        return;
    }
    let mut buf = [0u8; 64];
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(len) => {
                if stream.write_all(&answer(&buf[..len], peer)).is_err() {
                    return;
                }
            }
        }
    }
}

/// One byte back, or the peer address as a line for a `?` request.
fn answer(request: &[u8], peer: SocketAddr) -> Vec<u8> {
    if request.first() == Some(&b'?') {
        format!("{}\n", peer.ip()).into_bytes()
    } else {
        vec![b'.']
    }
}

/// A socket timeout value.
pub fn timeval(duration: Duration) -> TimeVal {
    TimeVal::from(libc::timeval {
        tv_sec: libc::time_t::try_from(duration.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_usec: libc::suseconds_t::from(duration.subsec_micros()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_one_byte_or_the_peer() {
        let peer: SocketAddr = "172.30.0.1:40000".parse().unwrap();
        assert_eq!(answer(b"x", peer), b".");
        assert_eq!(answer(b"?", peer), b"172.30.0.1\n");
        let v6: SocketAddr = "[fd00:172:30::1]:40000".parse().unwrap();
        assert_eq!(answer(b"?", v6), b"fd00:172:30::1\n");
    }

    #[test]
    fn counts_sources_by_kind() {
        let counts = SourceCounts::default();
        counts.record(addr::NODE.into());
        counts.record(addr::POD.into());
        counts.record(addr::POD2.into());
        counts.record(addr::INTERNET.into());
        counts.record(addr6::NODE.into());
        counts.record(addr6::POD.into());
        assert_eq!(counts.snapshot(), (2, 3, 1));
    }
}
