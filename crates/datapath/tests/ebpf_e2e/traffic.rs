//! Servers in the external namespace and clients in the pods.

use crate::topology::*;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use masq_testbed::Netns;

/// Runs a TCP echo server for one connection in `ns`; returns the peer address it saw.
pub fn tcp_server(ns: &Netns, addr: Ipv4Addr, ready: mpsc::Sender<()>) -> Option<SocketAddr> {
    ns.enter(move || {
        let listener = TcpListener::bind((addr, 8080)).unwrap();
        listener.set_nonblocking(true).unwrap();
        ready.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok((mut conn, peer)) = listener.accept() {
                conn.set_nonblocking(false).unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut buf = [0u8; 64];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                return Some(peer);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    })
    .unwrap()
}

/// Connects from the pod to `addr:8080`, sends `rounds` messages and checks each echo.
pub fn tcp_client(t: &Topology, addr: Ipv4Addr) -> bool {
    t.pod
        .enter(move || {
            let Ok(mut conn) =
                TcpStream::connect_timeout(&(addr, 8080).into(), Duration::from_secs(3))
            else {
                return false;
            };
            conn.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            for round in 0..3u8 {
                let msg = [b'm', round];
                let mut back = [0u8; 2];
                if conn.write_all(&msg).is_err() || conn.read_exact(&mut back).is_err() {
                    return false;
                }
                if back != msg {
                    return false;
                }
            }
            true
        })
        .unwrap()
}

pub fn tcp_peer_seen(t: &Topology, addr: Ipv4Addr) -> (bool, Option<SocketAddr>) {
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::channel();
        let server = s.spawn(|| tcp_server(&t.external, addr, tx));
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let ok = tcp_client(t, addr);
        (ok, server.join().unwrap())
    })
}

/// Sends one datagram from the pod to `addr:5353`, where a server echoes it back; returns the
/// echo the pod got (if any) and the peer address the server saw.
pub fn udp_peer_seen(t: &Topology, addr: Ipv4Addr) -> (Option<Vec<u8>>, Option<SocketAddr>) {
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::channel();
        let server = s.spawn(|| {
            t.external
                .enter(move || {
                    let sock = UdpSocket::bind((addr, 5353)).unwrap();
                    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    tx.send(()).unwrap();
                    let mut buf = [0u8; 64];
                    let (n, peer) = sock.recv_from(&mut buf).ok()?;
                    let _ = sock.send_to(&buf[..n], peer);
                    Some(peer)
                })
                .unwrap()
        });
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let echoed = t
            .pod
            .enter(|| {
                let sock = UdpSocket::bind((POD, 0)).unwrap();
                sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                sock.send_to(b"udp ping", (addr, 5353)).unwrap();
                let mut buf = [0u8; 64];
                sock.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
            })
            .unwrap();
        (echoed, server.join().unwrap())
    })
}
