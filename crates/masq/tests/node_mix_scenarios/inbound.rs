//! Issue 13, item 1: flows that begin outside and reach a pod's own address are never
//! translated. The client sits at a masqueraded destination (203.0.113.20 with
//! [`ISSUE_CONFIG`]), and the external side routes the pod CIDR through the node, so the pod's
//! answers go back through the egress interface where masq works: a datapath that translates
//! per packet, without knowing who began the flow, gives the answer the node's address.
//!
//! In each scenario the client checks both ends: the pod saw the client's real address, and
//! the answer came from the pod's address (and port), as a connected socket, TCP or a resolver
//! require. The counterfactual rewrites the pod's packets to the node's address on the uplink,
//! which is what such a datapath does.

use std::net::{IpAddr, SocketAddr};

use anyhow::{ensure, Result};
use masq_testbed::exchange::{
    icmp_echo, raw_ask, tcp_ask, Answer, RawEchoServer, UdpAsker, EXPERIMENTAL_PROTOCOL,
};
use masq_testbed::probe::{IcmpObserver, TcpEchoServer, TcpSession, UdpEchoServer, PROBE_TIMEOUT};
use masq_testbed::{addr, Netns};

use super::sabotage::{each_caught, Sabotage};
use super::ISSUE_CONFIG;
use crate::harness::{eventually, Bed, Datapath};

const POD: IpAddr = IpAddr::V4(addr::POD);
const CLIENT: IpAddr = IpAddr::V4(addr::CLIENT);

/// The answer came from `server` and the server saw the client's real address.
pub fn answered_by_and_saw_client(answer: &Answer, server: SocketAddr) -> Result<()> {
    ensure!(
        answer.seen.ip() == CLIENT,
        "the pod saw {} instead of the client {CLIENT}",
        answer.seen
    );
    ensure!(
        answer.from == server,
        "the answer to {} came from {}, not {server}: a connected socket drops it",
        answer.seen,
        answer.from
    );
    Ok(())
}

fn client(port: u16) -> SocketAddr {
    SocketAddr::new(CLIENT, port)
}

fn outside(bed: &Bed) -> &Netns {
    &bed.topology.external
}

/// TCP from outside to a pod's port: the handshake completes only if the SYN-ACK carries the
/// pod's address and port; a second question on the same connection checks that later
/// segments keep them too.
pub fn tcp_to_a_pod(datapath: Datapath) -> Result<()> {
    let mut bed = Bed::ready(datapath, ISSUE_CONFIG)?;
    let server = SocketAddr::new(POD, 8080);
    let _server = TcpEchoServer::start(&bed.topology.pod, &[server])?;
    let check = |bed: &Bed| {
        let answer = tcp_ask(outside(bed), client(0), server)?;
        answered_by_and_saw_client(&answer, server)
    };
    check(&bed).map_err(|e| bed.with_log(e))?;
    let mut session = TcpSession::connect_from(outside(&bed), client(0), server)?;
    for _ in 0..2 {
        ensure!(session.observed_source()?.ip() == CLIENT);
    }
    each_caught(
        &mut bed,
        &[Sabotage::pod_replies_from_node(addr::POD)],
        check,
    )
}

/// UDP from outside to a pod's port 5353 (the issue's DNS-like case), three datagrams of one
/// flow: every answer must come from the pod's address and port.
pub fn udp_to_a_pod(datapath: Datapath) -> Result<()> {
    let mut bed = Bed::ready(datapath, ISSUE_CONFIG)?;
    let server = SocketAddr::new(POD, 5353);
    let _server = UdpEchoServer::start(&bed.topology.pod, &[server])?;
    let check = |bed: &Bed| {
        let asker = UdpAsker::bind(outside(bed), client(0))?;
        for _ in 0..3 {
            answered_by_and_saw_client(&asker.ask(server)?, server)?;
        }
        Ok(())
    };
    check(&bed).map_err(|e| bed.with_log(e))?;
    each_caught(
        &mut bed,
        &[Sabotage::pod_replies_from_node(addr::POD)],
        check,
    )
}

/// A ping to a pod is answered by the pod's address, with the request's identifier, and the
/// pod saw the client's address on the request.
pub fn ping_to_a_pod(datapath: Datapath) -> Result<()> {
    let mut bed = Bed::ready(datapath, ISSUE_CONFIG)?;
    let observer = IcmpObserver::start(&bed.topology.pod)?;
    let check = |bed: &Bed| {
        for _ in 0..2 {
            let reply = icmp_echo(outside(bed), addr::CLIENT, addr::POD)?;
            ensure!(
                reply.from == POD,
                "the echo reply came from {}, not the pod {POD}",
                reply.from
            );
            ensure!(
                reply.id == reply.sent_id,
                "the echo reply carried identifier {} instead of {}",
                reply.id,
                reply.sent_id
            );
        }
        Ok(())
    };
    check(&bed).map_err(|e| bed.with_log(e))?;
    // The observer's thread records what the pod's kernel has already answered: give it time.
    eventually(PROBE_TIMEOUT, || Ok(!observer.seen().is_empty()))?;
    let requests: Vec<_> = observer.seen().iter().map(|s| s.peer.ip()).collect();
    ensure!(
        !requests.is_empty() && requests.iter().all(|&ip| ip == CLIENT),
        "the pod saw echo requests from {requests:?}, not only {CLIENT}"
    );
    each_caught(
        &mut bed,
        &[Sabotage::pod_replies_from_node(addr::POD)],
        check,
    )
}

/// Another IP protocol (253, no ports) from outside to a pod and back: the pod's raw socket
/// sees the client and answers; the answer must come from the pod's address.
pub fn other_protocol_to_a_pod(datapath: Datapath) -> Result<()> {
    let mut bed = Bed::ready(datapath, ISSUE_CONFIG)?;
    let server = RawEchoServer::start(&bed.topology.pod, addr::POD, EXPERIMENTAL_PROTOCOL)?;
    let check = |bed: &Bed| {
        for _ in 0..2 {
            let answer = raw_ask(outside(bed), addr::CLIENT, addr::POD, EXPERIMENTAL_PROTOCOL)?;
            answered_by_and_saw_client(&answer, SocketAddr::new(POD, 0))?;
        }
        Ok(())
    };
    check(&bed).map_err(|e| bed.with_log(e))?;
    let askers: Vec<_> = server.seen().iter().map(|s| s.peer.ip()).collect();
    ensure!(
        askers.iter().all(|&ip| ip == CLIENT),
        "the pod's raw socket saw {askers:?}, not only {CLIENT}"
    );
    each_caught(
        &mut bed,
        &[Sabotage::pod_replies_from_node(addr::POD)],
        check,
    )
}
