//! The ICMP probe: a raw-socket observer of the echo requests arriving in a namespace (IPv4 and
//! IPv6), and `ping` as the client.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{poll_reads, Seen, Shared, Threads, PROBE_TIMEOUT};
use crate::netns::Netns;
use anyhow::{anyhow, Context, Result};
use nix::sys::socket::{
    recv, recvmsg, setsockopt, socket, sockopt, AddressFamily, ControlMessageOwned, MsgFlags,
    SockFlag, SockProtocol, SockType, SockaddrIn6,
};

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
    poll_reads(&socket)?;
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
