//! Request/answer exchanges that report who answered as well as what the server saw: the
//! probes for flows that start outside the pod (a client reaching a pod, a NodePort, a
//! hostPort) and for flows that share a source port.
//!
//! A client that talks to `server` expects the answer from `server`: a connected UDP socket, a
//! DNS resolver or TCP drop anything else. These clients do not drop it; they report
//! [`Answer::from`], so a test can say what arrived instead of timing out. Servers answer
//! with the source they saw ([`crate::probe::UdpEchoServer`], [`crate::probe::TcpEchoServer`],
//! [`RawEchoServer`]). Everything is bounded by [`PROBE_TIMEOUT`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use nix::sys::socket::{bind, recvfrom, sendto, AddressFamily, MsgFlags, SockProtocol, SockaddrIn};

use crate::kube::Protocol;
use crate::netns::Netns;
use crate::probe::{poll_reads, raw_socket, Seen, Shared, TcpSession, Threads, PROBE_TIMEOUT};

/// An IP protocol no kernel module handles (RFC 3692 experimentation): "another protocol",
/// which no datapath can translate by ports.
pub const EXPERIMENTAL_PROTOCOL: u8 = 253;

/// One exchange, seen from the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    /// Where the answer came from (port 0 for ICMP and raw IP).
    pub from: SocketAddr,
    /// The client's source as the server saw it (port 0 for raw IP).
    pub seen: SocketAddr,
}

/// A UDP socket bound in a namespace, asking servers again and again (the same flow each time).
pub struct UdpAsker {
    socket: UdpSocket,
    ns: String,
}

impl UdpAsker {
    /// Binds `local` inside `ns` (port 0: any).
    pub fn bind(ns: &Netns, local: SocketAddr) -> Result<UdpAsker> {
        let socket = ns
            .enter(|| UdpSocket::bind(local))?
            .with_context(|| format!("in {}: binding udp {local}", ns.name()))?;
        Ok(UdpAsker {
            socket,
            ns: ns.name().to_string(),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }

    /// Sends a question to `server` (three tries: the first can be lost while neighbours are
    /// resolved) and returns the first answer, from wherever it came.
    pub fn ask(&self, server: SocketAddr) -> Result<Answer> {
        let attempts = 3;
        self.socket
            .set_read_timeout(Some(PROBE_TIMEOUT / attempts))?;
        let mut buf = [0u8; 256];
        for _ in 0..attempts {
            self.socket
                .send_to(b"who am i\n", server)
                .with_context(|| format!("from {}: udp send to {server}", self.ns))?;
            if let Ok((len, from)) = self.socket.recv_from(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..len]);
                let seen = text
                    .trim()
                    .parse()
                    .with_context(|| format!("udp answer from {from}: {text:?}"))?;
                return Ok(Answer { from, seen });
            }
        }
        bail!(
            "from {} ({:?}): no udp answer to {server} within {PROBE_TIMEOUT:?}",
            self.ns,
            self.socket.local_addr()
        )
    }
}

/// One UDP question from `local` in `ns` to `server`.
pub fn udp_ask(ns: &Netns, local: SocketAddr, server: SocketAddr) -> Result<Answer> {
    UdpAsker::bind(ns, local)?.ask(server)
}

/// One question over `protocol` from `local` in `ns` to `server` that must be answered by
/// `server` itself, as a Service's client insists (an answer from elsewhere is what a caller
/// drops: a reply that missed its un-DNAT or was translated again).
pub fn ask(
    ns: &Netns,
    protocol: Protocol,
    local: SocketAddr,
    server: SocketAddr,
) -> Result<Answer> {
    let answer = match protocol {
        Protocol::Tcp => tcp_ask(ns, local, server),
        Protocol::Udp => udp_ask(ns, local, server),
    }
    .with_context(|| format!("{} to {server}", protocol.name()))?;
    anyhow::ensure!(
        answer.from == server,
        "the {} answer to a question for {server} came from {}: the caller drops it",
        protocol.name(),
        answer.from
    );
    Ok(answer)
}

/// One TCP connection from `local` in `ns` to `server`, asking once. TCP itself insists that
/// the answer comes from `server`: an answer from elsewhere fails the connection.
pub fn tcp_ask(ns: &Netns, local: SocketAddr, server: SocketAddr) -> Result<Answer> {
    let seen = TcpSession::connect_from(ns, local, server)
        .and_then(|mut session| session.observed_source())
        .with_context(|| {
            format!("no TCP conversation with {server} itself (answers from elsewhere are reset)")
        })?;
    Ok(Answer { from: server, seen })
}

/// A payload no other exchange carries, to tell our answers from anything else on a raw
/// socket.
fn nonce() -> [u8; 16] {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&n.to_be_bytes());
    out[8..12].copy_from_slice(&std::process::id().to_be_bytes());
    out[12..].copy_from_slice(&time.to_be_bytes());
    out
}

/// An IPv4 packet's source, destination, protocol and payload.
fn ipv4(packet: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr, u8, &[u8])> {
    let header = usize::from(packet.first()? & 0x0f) * 4;
    let octets = |at: usize| -> Option<Ipv4Addr> {
        let four: [u8; 4] = packet.get(at..at + 4)?.try_into().ok()?;
        Some(four.into())
    };
    Some((
        octets(12)?,
        octets(16)?,
        *packet.get(9)?,
        packet.get(header..)?,
    ))
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A raw IPv4 socket of `protocol` bound to `local` inside `ns`, its reads bounded by the probes'
/// poll interval.
fn raw_bound(ns: &Netns, protocol: u8, local: Ipv4Addr) -> Result<OwnedFd> {
    let socket = ns
        .enter(|| -> Result<OwnedFd> {
            let socket = if protocol == libc::IPPROTO_ICMP as u8 {
                raw_socket(AddressFamily::Inet, SockProtocol::Icmp)?
            } else {
                // SAFETY: plain socket(2); the descriptor is checked and owned at once.
                let fd = unsafe {
                    libc::socket(
                        libc::AF_INET,
                        libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                        i32::from(protocol),
                    )
                };
                anyhow::ensure!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
                // SAFETY: fd is a fresh descriptor nobody else owns.
                let socket = unsafe { OwnedFd::from_raw_fd(fd) };
                poll_reads(&socket)?;
                socket
            };
            bind(
                socket.as_raw_fd(),
                &SockaddrIn::from(std::net::SocketAddrV4::new(local, 0)),
            )?;
            Ok(socket)
        })?
        .with_context(|| format!("in {}: a raw socket of protocol {protocol}", ns.name()))?;
    Ok(socket)
}

/// Reads `socket` until `pick` accepts a packet or [`PROBE_TIMEOUT`] passes; every packet
/// `pick` refused is described in the error.
fn await_packet<T>(
    socket: &OwnedFd,
    what: &str,
    mut pick: impl FnMut(Ipv4Addr, &[u8]) -> Option<T>,
) -> Result<T> {
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let mut others = Vec::new();
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        let Ok((len, _)) = recvfrom::<SockaddrIn>(socket.as_raw_fd(), &mut buf) else {
            continue;
        };
        if let Some((src, _, _, payload)) = ipv4(&buf[..len]) {
            match pick(src, payload) {
                Some(found) => return Ok(found),
                None => others.push(src),
            }
        }
    }
    bail!("no {what} within {PROBE_TIMEOUT:?} (other packets came from {others:?})")
}

/// An ICMP echo answered: who answered and with which identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EchoReply {
    /// The reply's source address.
    pub from: IpAddr,
    /// The identifier it carried.
    pub id: u16,
    /// The identifier the request carried.
    pub sent_id: u16,
}

/// Pings `dst` once from `local` inside `ns` on a raw socket and returns the echo reply that
/// carries the request's payload, whatever its source and identifier (a translated reply
/// keeps the payload).
pub fn icmp_echo(ns: &Netns, local: Ipv4Addr, dst: Ipv4Addr) -> Result<EchoReply> {
    const ECHO_REQUEST: u8 = 8;
    const ECHO_REPLY: u8 = 0;
    let socket = raw_bound(ns, libc::IPPROTO_ICMP as u8, local)?;
    let payload = nonce();
    let sent_id = u16::from_be_bytes([payload[6], payload[7]]);
    let mut request = vec![ECHO_REQUEST, 0, 0, 0];
    request.extend_from_slice(&sent_id.to_be_bytes());
    request.extend_from_slice(&1u16.to_be_bytes());
    request.extend_from_slice(&payload);
    let sum = checksum(&request);
    request[2..4].copy_from_slice(&sum.to_be_bytes());
    let to = SockaddrIn::from(std::net::SocketAddrV4::new(dst, 0));
    for _ in 0..3 {
        sendto(socket.as_raw_fd(), &request, &to, MsgFlags::empty())
            .with_context(|| format!("from {}: echo request to {dst}", ns.name()))?;
        let reply = await_packet(&socket, "echo reply", |src, icmp| {
            (icmp.first() == Some(&ECHO_REPLY) && icmp.get(8..) == Some(&payload[..])).then(|| {
                EchoReply {
                    from: src.into(),
                    id: u16::from_be_bytes([icmp[4], icmp[5]]),
                    sent_id,
                }
            })
        });
        if let Ok(reply) = reply {
            return Ok(reply);
        }
    }
    bail!("from {} ({local}): no echo reply from {dst}", ns.name())
}

/// Answers every packet of an IP protocol sent to one address with `seen <source>` and the
/// question's payload, on a raw socket, and records who asked.
pub struct RawEchoServer {
    threads: Threads,
}

impl RawEchoServer {
    /// Serves `protocol` on `local` inside `ns`.
    pub fn start(ns: &Netns, local: Ipv4Addr, protocol: u8) -> Result<RawEchoServer> {
        let socket = raw_bound(ns, protocol, local)?;
        let shared = Arc::new(Shared::default());
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !thread_shared.stop.load(Ordering::Relaxed) {
                let Ok((len, _)) = recvfrom::<SockaddrIn>(socket.as_raw_fd(), &mut buf) else {
                    continue;
                };
                let Some((src, dst, _, payload)) = ipv4(&buf[..len]) else {
                    continue;
                };
                let Some(question) = payload.strip_prefix(b"ask ") else {
                    continue;
                };
                thread_shared.record(Seen {
                    peer: SocketAddr::new(src.into(), 0),
                    local: SocketAddr::new(dst.into(), 0),
                });
                let mut answer = format!("seen {src} ").into_bytes();
                answer.extend_from_slice(question);
                let to = SockaddrIn::from(std::net::SocketAddrV4::new(src, 0));
                let _ = sendto(socket.as_raw_fd(), &answer, &to, MsgFlags::empty());
            }
        });
        Ok(RawEchoServer {
            threads: Threads {
                shared,
                threads: vec![thread],
            },
        })
    }

    /// Every question received so far (ports are 0).
    pub fn seen(&self) -> Vec<Seen> {
        self.threads.seen()
    }
}

/// Asks a [`RawEchoServer`] at `dst` from `local` inside `ns` over `protocol`, and returns who
/// answered and the source the server saw.
pub fn raw_ask(ns: &Netns, local: Ipv4Addr, dst: Ipv4Addr, protocol: u8) -> Result<Answer> {
    let socket = raw_bound(ns, protocol, local)?;
    let token = nonce();
    let mut question = b"ask ".to_vec();
    question.extend_from_slice(&token);
    let to = SockaddrIn::from(std::net::SocketAddrV4::new(dst, 0));
    for _ in 0..3 {
        sendto(socket.as_raw_fd(), &question, &to, MsgFlags::empty())
            .with_context(|| format!("from {}: protocol {protocol} to {dst}", ns.name()))?;
        let answer = await_packet(&socket, "answer", |src, payload| {
            let text = payload.strip_prefix(b"seen ")?;
            let split = text.iter().position(|&b| b == b' ')?;
            if text.get(split + 1..) != Some(&token[..]) {
                return None;
            }
            let seen: Ipv4Addr = std::str::from_utf8(&text[..split]).ok()?.parse().ok()?;
            Some(Answer {
                from: SocketAddr::new(src.into(), 0),
                seen: SocketAddr::new(seen.into(), 0),
            })
        });
        if let Ok(answer) = answer {
            return Ok(answer);
        }
    }
    bail!(
        "from {} ({local}): no protocol {protocol} answer from {dst}",
        ns.name()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::UdpEchoServer;
    use crate::topology::{addr, Topology};

    #[test]
    fn checksums_as_rfc_1071() {
        // An echo request with id 1, seq 1 and no payload: 0x08 0x00 csum 0x0001 0x0001.
        assert_eq!(checksum(&[8, 0, 0, 0, 0, 1, 0, 1]), 0xf7fd);
    }

    /// Without NAT every exchange from outside reaches the pod and is answered by it.
    #[test]
    #[cfg_attr(masq_unprivileged, ignore = "needs root")]
    fn without_nat_the_pod_answers_every_protocol() {
        crate::require(&[]);
        let topology = Topology::new().unwrap();
        let (pod, client) = (addr::POD, addr::CLIENT);
        let server = SocketAddr::new(pod.into(), 5353);
        let _udp = UdpEchoServer::start(&topology.pod, &[server]).unwrap();
        let local = SocketAddr::new(client.into(), 0);
        let answer = udp_ask(&topology.external, local, server).unwrap();
        assert_eq!(answer.from, server);
        assert_eq!(answer.seen.ip(), IpAddr::from(client));

        let reply = icmp_echo(&topology.external, client, pod).unwrap();
        assert_eq!(reply.from, IpAddr::from(pod));
        assert_eq!(reply.id, reply.sent_id);

        let raw = RawEchoServer::start(&topology.pod, pod, EXPERIMENTAL_PROTOCOL).unwrap();
        let answer = raw_ask(&topology.external, client, pod, EXPERIMENTAL_PROTOCOL).unwrap();
        assert_eq!(answer.from.ip(), IpAddr::from(pod));
        assert_eq!(answer.seen.ip(), IpAddr::from(client));
        assert_eq!(raw.seen().len(), 1);
    }
}
