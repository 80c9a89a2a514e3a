//! Traffic probes that report the source address the far end saw: the whole point of masq.
//!
//! Servers ([`TcpEchoServer`], [`UdpEchoServer`], [`IcmpObserver`]) run on background threads
//! with sockets created inside a namespace (a socket stays in the namespace it was created in,
//! whichever thread uses it). They answer each request with the peer address they saw and
//! record it. Clients ([`tcp_source`], [`udp_source`], [`ping_source`], [`TcpSession`]) send
//! from a namespace and return that address. Everything is bounded by [`PROBE_TIMEOUT`];
//! servers stop when dropped.

//!
//! One file per protocol: `tcp`, `udp`, `icmp`; here what they share and [`Probes`], which runs
//! the three servers together.

mod icmp;
mod tcp;
mod udp;

use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Result;
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;

use crate::netns::Netns;
pub(crate) use icmp::raw_socket;
pub use icmp::{ping_source, IcmpObserver};
pub use tcp::{tcp_source, TcpEchoServer, TcpSession};
pub use udp::{udp_source, udp_source_from, UdpEchoServer};

/// The longest any probe waits for an answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How often server threads look at their stop flag.
pub(crate) const POLL: Duration = Duration::from_millis(50);

/// Makes a blocking read on `socket` give up after [`POLL`], so that a server thread looks at its
/// stop flag that often.
pub(crate) fn poll_reads(socket: &OwnedFd) -> Result<()> {
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: libc::suseconds_t::try_from(POLL.as_micros()).expect("small"),
    };
    setsockopt(socket, sockopt::ReceiveTimeout, &TimeVal::from(timeout))?;
    Ok(())
}

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
