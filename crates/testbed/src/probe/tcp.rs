//! The TCP probe: an echo server that answers each line with the peer address it saw, and a
//! client session that can ask again later (did the translation survive a reload?).

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{Context, Result};
use nix::sys::socket::{
    bind, connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage,
};
use nix::sys::time::TimeVal;

use super::{Seen, Shared, Threads, POLL, PROBE_TIMEOUT};
use crate::netns::Netns;

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
