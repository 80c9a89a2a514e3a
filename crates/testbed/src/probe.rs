//! Traffic probes that report the source address the far end saw: the whole point of masq.
//!
//! Servers ([`TcpEchoServer`], [`UdpEchoServer`], [`IcmpObserver`]) run on background threads
//! with sockets created inside a namespace (a socket stays in the namespace it was created in,
//! whichever thread uses it). They answer each request with the peer address they saw and
//! record it. Clients ([`tcp_source`], [`udp_source`], [`ping_source`], [`TcpSession`]) send
//! from a namespace and return that address. Everything is bounded by [`PROBE_TIMEOUT`];
//! servers stop when dropped.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::socket::{
    bind, connect, recv, recvmsg, setsockopt, socket, sockopt, AddressFamily, ControlMessageOwned,
    MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn6, SockaddrStorage,
};
use nix::sys::time::TimeVal;

use crate::netns::Netns;

/// The longest any probe waits for an answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How often server threads look at their stop flag.
pub(crate) const POLL: Duration = Duration::from_millis(50);

/// One thing a server saw: who sent it, to which of its addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    /// The source address and port of the packet as it arrived.
    pub peer: SocketAddr,
    /// The address (and port) it was sent to.
    pub local: SocketAddr,
}

/// State shared by a server's threads.
#[derive(Default)]
pub(crate) struct Shared {
    pub(crate) stop: AtomicBool,
    seen: Mutex<Vec<Seen>>,
}

impl Shared {
    pub(crate) fn record(&self, seen: Seen) {
        self.seen.lock().expect("not poisoned").push(seen);
    }
}

/// Background threads that end when the owner is dropped.
pub(crate) struct Threads {
    pub(crate) shared: Arc<Shared>,
    pub(crate) threads: Vec<JoinHandle<()>>,
}

impl Threads {
    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().expect("not poisoned").clone()
    }
}

impl Drop for Threads {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// A TCP server answering every line it reads with the peer address it sees (`ip:port\n`).
pub struct TcpEchoServer {
    addrs: Vec<SocketAddr>,
    threads: Threads,
}

impl TcpEchoServer {
    /// Listens on each address inside `ns` (`0.0.0.0:port` serves every address).
    pub fn start(ns: &Netns, addrs: &[SocketAddr]) -> Result<TcpEchoServer> {
        let shared = Arc::new(Shared::default());
        let mut threads = Vec::new();
        for &addr in addrs {
            let listener = ns
                .enter(|| TcpListener::bind(addr))?
                .with_context(|| format!("in {}: listening on tcp {addr}", ns.name()))?;
            listener.set_nonblocking(true)?;
            let shared = Arc::clone(&shared);
            threads.push(std::thread::spawn(move || accept_loop(listener, shared)));
        }
        Ok(TcpEchoServer {
            addrs: addrs.to_vec(),
            threads: Threads { shared, threads },
        })
    }

    /// The addresses it listens on.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Every connection accepted so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.threads.seen()
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = Vec::new();
    while !shared.stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, peer)) => {
                let local = stream.local_addr().unwrap_or(peer);
                shared.record(Seen { peer, local });
                let shared = Arc::clone(&shared);
                connections.push(std::thread::spawn(move || {
                    serve_lines(stream, peer, shared)
                }));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(POLL / 5),
            Err(_) => std::thread::sleep(POLL),
        }
    }
    for connection in connections {
        let _ = connection.join();
    }
}

/// Answers each line with the peer address until EOF or stop; a long-lived session can ask
/// again later and see whether its translation survived.
fn serve_lines(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    if stream.set_nonblocking(false).is_err() || stream.set_read_timeout(Some(POLL)).is_err() {
        return;
    }
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    while !shared.stop.load(Ordering::Relaxed) {
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) if line.ends_with('\n') => {
                line.clear();
                if writer.write_all(format!("{peer}\n").as_bytes()).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

/// A TCP connection from a namespace to a [`TcpEchoServer`], kept open across questions.
pub struct TcpSession {
    reader: BufReader<TcpStream>,
    server: SocketAddr,
}

impl TcpSession {
    /// Connects from inside `ns`, waiting at most [`PROBE_TIMEOUT`].
    pub fn connect(ns: &Netns, server: SocketAddr) -> Result<TcpSession> {
        let stream = ns
            .enter(|| TcpStream::connect_timeout(&server, PROBE_TIMEOUT))?
            .with_context(|| format!("from {}: tcp connect to {server}", ns.name()))?;
        TcpSession::with(stream, server)
    }

    /// Connects from inside `ns` from a fixed local address and port (two pods using the same
    /// source port), waiting at most [`PROBE_TIMEOUT`].
    pub fn connect_from(ns: &Netns, local: SocketAddr, server: SocketAddr) -> Result<TcpSession> {
        let stream = ns
            .enter(|| connect_bound(local, server))?
            .with_context(|| format!("from {} ({local}): tcp connect to {server}", ns.name()))?;
        TcpSession::with(stream, server)
    }

    fn with(stream: TcpStream, server: SocketAddr) -> Result<TcpSession> {
        stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
        stream.set_write_timeout(Some(PROBE_TIMEOUT))?;
        Ok(TcpSession {
            reader: BufReader::new(stream),
            server,
        })
    }

    /// The local end of the connection, as the client sees it (before any translation).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.reader.get_ref().local_addr()?)
    }

    /// Asks the server which source address it sees on this connection.
    pub fn observed_source(&mut self) -> Result<SocketAddr> {
        self.reader
            .get_mut()
            .write_all(b"who am i\n")
            .with_context(|| format!("tcp send to {}", self.server))?;
        let mut line = String::new();
        self.reader
            .read_line(&mut line)
            .with_context(|| format!("tcp answer from {}", self.server))?;
        line.trim()
            .parse()
            .with_context(|| format!("tcp answer from {}: {line:?}", self.server))
    }
}

/// A blocking connect from `local`; SO_SNDTIMEO bounds it, as `connect_timeout` would.
fn connect_bound(local: SocketAddr, server: SocketAddr) -> Result<TcpStream> {
    let family = match local {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let socket = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    // A previous connection from the same port may linger in TIME_WAIT.
    setsockopt(&socket, sockopt::ReuseAddr, &true)?;
    setsockopt(
        &socket,
        sockopt::SendTimeout,
        &TimeVal::from(libc::timeval {
            tv_sec: libc::time_t::try_from(PROBE_TIMEOUT.as_secs()).expect("small"),
            tv_usec: 0,
        }),
    )?;
    bind(socket.as_raw_fd(), &SockaddrStorage::from(local))
        .with_context(|| format!("binding {local}"))?;
    connect(socket.as_raw_fd(), &SockaddrStorage::from(server))?;
    Ok(TcpStream::from(socket))
}

/// Connects from `ns` to `server`, and returns the source address the server saw.
pub fn tcp_source(ns: &Netns, server: SocketAddr) -> Result<IpAddr> {
    Ok(TcpSession::connect(ns, server)?.observed_source()?.ip())
}

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

/// Records the source and destination of every ICMP (and ICMPv6) echo request arriving in a
/// namespace (a raw socket sees a copy; the kernel still answers the ping).
pub struct IcmpObserver {
    threads: Threads,
}

impl IcmpObserver {
    /// Starts observing inside `ns`. IPv6 is observed too where the namespace has it.
    pub fn start(ns: &Netns) -> Result<IcmpObserver> {
        let v4 = ns
            .enter(|| raw_socket(AddressFamily::Inet, SockProtocol::Icmp))?
            .with_context(|| format!("in {}: opening a raw icmp socket", ns.name()))?;
        // An IPv6-less kernel only loses the IPv6 half.
        let v6 = ns
            .enter(|| raw_socket(AddressFamily::Inet6, SockProtocol::IcmpV6))?
            .ok();
        let shared = Arc::new(Shared::default());
        let mut threads = Vec::new();
        {
            let shared = Arc::clone(&shared);
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 1500];
                while !shared.stop.load(Ordering::Relaxed) {
                    if let Ok(len) = recv(v4.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                        if let Some(seen) = echo_request(&buf[..len]) {
                            shared.record(seen);
                        }
                    }
                }
            }));
        }
        if let Some(v6) = v6 {
            setsockopt(&v6, sockopt::Ipv6RecvPacketInfo, &true)?;
            let shared = Arc::clone(&shared);
            threads.push(std::thread::spawn(move || {
                while !shared.stop.load(Ordering::Relaxed) {
                    if let Some(seen) = echo_request_v6(&v6) {
                        shared.record(seen);
                    }
                }
            }));
        }
        Ok(IcmpObserver {
            threads: Threads { shared, threads },
        })
    }

    /// Every echo request seen so far (ports are 0).
    pub fn seen(&self) -> Vec<Seen> {
        self.threads.seen()
    }
}

pub(crate) fn raw_socket(family: AddressFamily, protocol: SockProtocol) -> Result<OwnedFd> {
    let socket = socket(family, SockType::Raw, SockFlag::SOCK_CLOEXEC, protocol)?;
    setsockopt(
        &socket,
        sockopt::ReceiveTimeout,
        &TimeVal::from(libc::timeval {
            tv_sec: 0,
            tv_usec: libc::suseconds_t::try_from(POLL.as_micros()).expect("small"),
        }),
    )?;
    Ok(socket)
}

/// Source and destination of an IPv4 packet carrying an ICMP echo request.
fn echo_request(packet: &[u8]) -> Option<Seen> {
    const ECHO_REQUEST: u8 = 8;
    let header_len = usize::from(packet.first()? & 0x0f) * 4;
    if packet.len() < 20 || *packet.get(header_len)? != ECHO_REQUEST {
        return None;
    }
    let addr = |at: usize| -> Option<SocketAddr> {
        let octets: [u8; 4] = packet.get(at..at + 4)?.try_into().ok()?;
        Some(SocketAddr::new(Ipv4Addr::from(octets).into(), 0))
    };
    Some(Seen {
        peer: addr(12)?,
        local: addr(16)?,
    })
}

/// Receives one ICMPv6 message; an echo request yields its source and destination. A raw
/// ICMPv6 socket gets no IP header, so the destination comes from the packet-info message.
fn echo_request_v6(socket: &OwnedFd) -> Option<Seen> {
    const ECHO_REQUEST: u8 = 128;
    let mut buf = [0u8; 1500];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!(libc::in6_pktinfo);
    let msg = recvmsg::<SockaddrIn6>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    )
    .ok()?;
    let source = msg.address?.ip();
    let destination = msg.cmsgs().ok()?.find_map(|c| match c {
        ControlMessageOwned::Ipv6PacketInfo(info) => Some(Ipv6Addr::from(info.ipi6_addr.s6_addr)),
        _ => None,
    })?;
    let kind = *msg.iovs().next()?.first()?;
    (kind == ECHO_REQUEST).then(|| Seen {
        peer: SocketAddr::new(source.into(), 0),
        local: SocketAddr::new(destination.into(), 0),
    })
}

/// Pings `dst` once from `ns` and returns the source the observer saw on the echo request.
/// The ping itself may go unanswered (a pod source the far side cannot route back to): what
/// matters is what arrived.
pub fn ping_source(ns: &Netns, observer: &IcmpObserver, dst: IpAddr) -> Result<IpAddr> {
    let before = observer.seen().len();
    let _ = ns
        .command("ping")
        .args(["-c1", "-W1", "-n", &dst.to_string()])
        .output()
        .context("running ping")?;
    let deadline = Instant::now() + PROBE_TIMEOUT;
    loop {
        let new = observer
            .seen()
            .into_iter()
            .skip(before)
            .find(|s| s.local.ip() == dst);
        if let Some(seen) = new {
            return Ok(seen.peer.ip());
        }
        if Instant::now() > deadline {
            return Err(anyhow!(
                "from {}: no echo request to {dst} reached the observer",
                ns.name()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The source address each protocol's server saw for one destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sources {
    /// Seen by the TCP server.
    pub tcp: IpAddr,
    /// Seen by the UDP server.
    pub udp: IpAddr,
    /// Seen on the ICMP echo request.
    pub icmp: IpAddr,
}

impl Sources {
    /// The address when all three protocols agree.
    pub fn agreed(&self) -> Option<IpAddr> {
        (self.tcp == self.udp && self.udp == self.icmp).then_some(self.tcp)
    }
}

/// TCP, UDP and ICMP servers on every external host of a topology, on one port.
pub struct Probes {
    /// TCP echo on every external host.
    pub tcp: TcpEchoServer,
    /// UDP echo on every external host.
    pub udp: UdpEchoServer,
    /// ICMP echo-request observer.
    pub icmp: IcmpObserver,
    port: u16,
}

impl Probes {
    /// Starts the servers in `external` for each of `hosts`, on `port`.
    pub fn start(external: &Netns, hosts: &[IpAddr], port: u16) -> Result<Probes> {
        let addrs: Vec<SocketAddr> = hosts.iter().map(|h| SocketAddr::new(*h, port)).collect();
        Ok(Probes {
            tcp: TcpEchoServer::start(external, &addrs)?,
            udp: UdpEchoServer::start(external, &addrs)?,
            icmp: IcmpObserver::start(external)?,
            port,
        })
    }

    /// The port the servers use.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TCP server address for `dst`.
    pub fn tcp_addr(&self, dst: IpAddr) -> SocketAddr {
        SocketAddr::new(dst, self.port)
    }

    /// Sends TCP, UDP and a ping from `from` to `dst` and returns the sources seen.
    pub fn sources(&self, from: &Netns, dst: IpAddr) -> Result<Sources> {
        let server = SocketAddr::new(dst, self.port);
        Ok(Sources {
            tcp: tcp_source(from, server)?,
            udp: udp_source(from, server)?,
            icmp: ping_source(from, &self.icmp, dst)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_echo_request() {
        let mut packet = [0u8; 28];
        packet[0] = 0x45;
        packet[12..16].copy_from_slice(&[10, 244, 1, 2]);
        packet[16..20].copy_from_slice(&[203, 0, 113, 10]);
        packet[20] = 8;
        let seen = echo_request(&packet).unwrap();
        assert_eq!(seen.peer.ip(), IpAddr::from([10, 244, 1, 2]));
        assert_eq!(seen.local.ip(), IpAddr::from([203, 0, 113, 10]));
        packet[20] = 0; // an echo reply
        assert_eq!(echo_request(&packet), None);
    }
}
