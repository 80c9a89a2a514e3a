//! Issue 13, item 4: the node's own flows beside pod flows from the same source port to the
//! same destination and port (WireGuard's or IPsec NAT-T's fixed port, a client bound to a
//! port). Both flows must work, each socket must get its own answers, and the node's flow
//! must keep its port at the far side: a pod never gets a port the node itself has bound
//! (docs/ebpf.md, "Port search"). netfilter's `fully-random` gives the pod a random port and conntrack keeps the
//! node's; a datapath that keeps the pod's port makes the node's flow move (or break).
//!
//! Each scenario starts the two flows in one order, then asks on both three more times. The
//! counterfactual makes the pod's flow keep its port (an SNAT to the node's address and the
//! same port, before masq), on a fresh port so that no earlier flow is reused.
//!
//! The flows and the checks work in either family: the peer's address chooses it.
//! `dual_stack`'s IPv6 scenarios call [`udp_on`] and [`tcp_on`] with the internet host's IPv6
//! address on a dual-stack bed.

use std::net::{IpAddr, SocketAddr};

use anyhow::{ensure, Context, Result};
use masq_testbed::exchange::{Answer, UdpAsker};
use masq_testbed::kube::Family;
use masq_testbed::probe::{TcpSession, UdpEchoServer};
use masq_testbed::{addr, Netns};

use super::sabotage::{each_caught, Sabotage};
use super::{Addrs, ISSUE_CONFIG};
use crate::harness::{Bed, Datapath};

/// WireGuard's port: the node's listener and the peer's.
const WIREGUARD: u16 = 51820;
/// A fixed TCP source port used by both.
const TCP_PORT: u16 = 40123;

/// Which flow starts first.
#[derive(Clone, Copy, Debug)]
pub enum Order {
    /// The node binds the port (a listener, like WireGuard), the pod sends, then the node.
    NodeBindsPodSends,
    /// The pod sends; only then does the node bind the port and send.
    PodFirst,
    /// The node binds and sends; then the pod sends.
    NodeFirst,
}

/// The addresses of `peer`'s family.
fn addrs(peer: SocketAddr) -> Addrs {
    Addrs::of(Family::of(peer.ip()))
}

/// Every answer came from `peer`; the node's flow kept the node's address and `port`; the
/// pod's flow was masqueraded to one other port of the node's address (of `peer`'s family).
fn judge(node: &[Answer], pod: &[Answer], peer: SocketAddr, port: u16) -> Result<()> {
    let node_ip = addrs(peer).node;
    for (who, answers) in [("node", node), ("pod", pod)] {
        for answer in answers {
            ensure!(
                answer.from == peer,
                "the {who}'s socket got an answer from {}, not {peer}",
                answer.from
            );
        }
    }
    let kept = SocketAddr::new(node_ip, port);
    for answer in node {
        ensure!(
            answer.seen == kept,
            "the node's flow reached {peer} as {}, not {kept}: its port was moved \
             (node flow {:?}, pod flow {:?})",
            answer.seen,
            node.iter().map(|a| a.seen).collect::<Vec<_>>(),
            pod.iter().map(|a| a.seen).collect::<Vec<_>>()
        );
    }
    let first = pod.first().context("no answer to the pod")?.seen;
    ensure!(
        first.ip() == node_ip && first.port() != port,
        "the pod's flow reached {peer} as {first}: it must be masqueraded to another port"
    );
    ensure!(
        pod.iter().all(|a| a.seen == first),
        "the pod's flow changed translation: {:?}",
        pod.iter().map(|a| a.seen).collect::<Vec<_>>()
    );
    Ok(())
}

/// UDP from `port` in both the node and the pod to `peer`, started in `order`.
fn udp_flows(bed: &Bed, order: Order, peer: SocketAddr, port: u16) -> Result<()> {
    let (node_ns, pod_ns) = (&bed.topology.node, &bed.topology.pod);
    let any = |port| addrs(peer).any(port);
    let (mut node_answers, mut pod_answers) = (Vec::new(), Vec::new());
    let (node, pod) = match order {
        Order::NodeBindsPodSends => {
            let node = UdpAsker::bind(node_ns, any(port))?;
            let pod = UdpAsker::bind(pod_ns, any(port))?;
            pod_answers.push(pod.ask(peer).context("the pod's first question")?);
            (node, pod)
        }
        Order::PodFirst => {
            let pod = UdpAsker::bind(pod_ns, any(port))?;
            pod_answers.push(pod.ask(peer).context("the pod's first question")?);
            (UdpAsker::bind(node_ns, any(port))?, pod)
        }
        Order::NodeFirst => {
            let node = UdpAsker::bind(node_ns, any(port))?;
            node_answers.push(node.ask(peer).context("the node's first question")?);
            (node, UdpAsker::bind(pod_ns, any(port))?)
        }
    };
    for round in 0..3 {
        node_answers.push(
            node.ask(peer)
                .with_context(|| format!("the node's question, round {round}"))?,
        );
        pod_answers.push(
            pod.ask(peer)
                .with_context(|| format!("the pod's question, round {round}"))?,
        );
    }
    judge(&node_answers, &pod_answers, peer, port)
}

/// TCP connections from `port` in both the node and the pod to `server`, opened in `order`
/// (`NodeFirst` or `PodFirst`).
fn tcp_flows(bed: &Bed, order: Order, server: SocketAddr, port: u16) -> Result<()> {
    let (node_ns, pod_ns) = (&bed.topology.node, &bed.topology.pod);
    let connect = |ns: &Netns, who: &str| {
        TcpSession::connect_from(ns, addrs(server).any(port), server)
            .with_context(|| format!("the {who}'s connection"))
    };
    let (mut node, mut pod) = match order {
        Order::PodFirst => {
            let pod = connect(pod_ns, "pod")?;
            (connect(node_ns, "node")?, pod)
        }
        _ => {
            let node = connect(node_ns, "node")?;
            (node, connect(pod_ns, "pod")?)
        }
    };
    let (mut node_answers, mut pod_answers) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        for (session, answers) in [(&mut node, &mut node_answers), (&mut pod, &mut pod_answers)] {
            let seen = session.observed_source()?;
            answers.push(Answer { from: server, seen });
        }
    }
    judge(&node_answers, &pod_answers, server, port)
}

fn udp_scenario(datapath: Datapath, config: &str, order: Order) -> Result<()> {
    udp_on(Bed::ready(datapath, config)?, order, addr::INTERNET.into())
}

/// UDP flows from WireGuard's port in the node and the pod to a peer on that port of
/// `peer_ip` (served by the external side), started in `order`, on `bed` (agent ready), then
/// the counterfactual: the pod's flow keeping its port.
pub fn udp_on(mut bed: Bed, order: Order, peer_ip: IpAddr) -> Result<()> {
    let peer = SocketAddr::new(peer_ip, WIREGUARD);
    let _server = UdpEchoServer::start(&bed.topology.external, &[peer])?;
    udp_flows(&bed, order, peer, WIREGUARD).map_err(|e| bed.with_log(e))?;
    let fresh = WIREGUARD + 1;
    let pod = addrs(peer).pod;
    each_caught(
        &mut bed,
        &[Sabotage::pod_keeps_its_port(pod, "udp", fresh)],
        |bed: &Bed| udp_flows(bed, order, peer, fresh),
    )
}

fn tcp_scenario(datapath: Datapath, order: Order) -> Result<()> {
    tcp_on(
        Bed::ready(datapath, ISSUE_CONFIG)?,
        order,
        addr::INTERNET.into(),
    )
}

/// TCP connections from port 40123 in the node and the pod to the probe server of `server_ip`,
/// opened in `order`, on `bed` (agent ready), then the counterfactual: the pod's connection
/// keeping its port.
pub fn tcp_on(mut bed: Bed, order: Order, server_ip: IpAddr) -> Result<()> {
    let server = bed.probes.tcp_addr(server_ip);
    tcp_flows(&bed, order, server, TCP_PORT).map_err(|e| bed.with_log(e))?;
    let fresh = TCP_PORT + 1;
    let pod = addrs(server).pod;
    each_caught(
        &mut bed,
        &[Sabotage::pod_keeps_its_port(pod, "tcp", fresh)],
        |bed: &Bed| tcp_flows(bed, order, server, fresh),
    )
}

/// The node listens on 51820 (WireGuard) before the pod sends from 51820 to the node's peer;
/// then the node sends to that peer too. The pod must not have been given the node's port.
pub fn udp_node_port_bound_before_the_pod_sends(datapath: Datapath) -> Result<()> {
    udp_scenario(datapath, ISSUE_CONFIG, Order::NodeBindsPodSends)
}

/// The issue's case: the pod sends from 51820 first; then the node binds 51820 and sends to
/// the same peer. The node's flow keeps 51820 only if the pod's flow was given another port.
pub fn udp_pod_first_then_the_node(datapath: Datapath) -> Result<()> {
    udp_scenario(datapath, ISSUE_CONFIG, Order::PodFirst)
}

/// The node sends from 51820 first; then the pod sends from 51820 to the same peer.
pub fn udp_node_first_then_the_pod(datapath: Datapath) -> Result<()> {
    udp_scenario(datapath, ISSUE_CONFIG, Order::NodeFirst)
}

/// As [`udp_node_first_then_the_pod`], with the node's address inside
/// `nonMasqueradeSrcCIDRs`: the verdict for the node's own source is "keep", and its port must
/// be kept from the pods all the same.
pub fn udp_node_address_in_non_masquerade_src(datapath: Datapath) -> Result<()> {
    let config = format!("{ISSUE_CONFIG}nonMasqueradeSrcCIDRs: [172.30.0.0/24]\n");
    udp_scenario(datapath, &config, Order::NodeFirst)
}

/// The node connects from port 40123 to the internet host, then the pod does from the same
/// port to the same destination and port.
pub fn tcp_node_first_then_the_pod(datapath: Datapath) -> Result<()> {
    tcp_scenario(datapath, Order::NodeFirst)
}

/// The pod connects from port 40123 first, then the node from the same port to the same
/// destination and port.
pub fn tcp_pod_first_then_the_node(datapath: Datapath) -> Result<()> {
    tcp_scenario(datapath, Order::PodFirst)
}
