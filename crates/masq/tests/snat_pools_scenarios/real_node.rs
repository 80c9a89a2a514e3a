//! Issue 16 on a real node: the pool of two SNAT addresses beside everything else that
//! translates on a Kubernetes node, in one bed. kube-proxy's iptables mode (its real chain
//! layout, in the datapath's iptables backend) with the standard Services, portmap's hostPort
//! rules, a node service and a host-network flow of the node's own, and on eBPF a CNI's TCX
//! program that ends the chain with `TC_ACT_OK` attached first on both hooks of the uplink
//! before the agent starts (so masq's links join an occupied hook).
//!
//! What must hold at the far side, TCP and UDP:
//! - each pod's flow through a ClusterIP whose endpoint is the internet host leaves with that
//!   pod's pool address (the two pods hash to different ones), and the answer comes back from
//!   the ClusterIP: the pool applies after kube-proxy's DNAT and its reply is un-DNATed;
//! - a ClusterIP whose endpoint is the other pod keeps the caller's address;
//! - a flow from outside to a pod's own address, to a NodePort (`Local`) and to a hostPort is
//!   answered by the address it called, and the pod sees the client: no pool address is
//!   ever put on an answer;
//! - the node's own flow from either pool address keeps its address and port;
//! - kube-proxy's and portmap's rules are as loaded, and the CNI program saw the traffic on
//!   both hooks.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::{ensure, Result};
use masq_testbed::exchange::{ask, Answer};
use masq_testbed::kube::{self, node_port, standard_host_ports, standard_services, svc};
use masq_testbed::kube::{Family, Protocol, ProxyMode};
use masq_testbed::probe::{TcpEchoServer, UdpEchoServer};
use masq_testbed::{addr, Netns};

use crate::harness::{attach_cni, Bed, Datapath};
use crate::{node_flow, pool, pool_args, second_pod_address, SECOND};

const CLIENT: IpAddr = IpAddr::V4(addr::CLIENT);

/// Both pods serve TCP and UDP on [`svc::POD_PORT`] while these live.
type Servers = Vec<(TcpEchoServer, UdpEchoServer)>;

fn serve(ns: &Netns, ip: Ipv4Addr) -> Result<(TcpEchoServer, UdpEchoServer)> {
    let at = [SocketAddr::new(ip.into(), svc::POD_PORT)];
    Ok((
        TcpEchoServer::start(ns, &at)?,
        UdpEchoServer::start(ns, &at)?,
    ))
}

/// kube-proxy (iptables mode), portmap's hostPorts and the second pool address on the node;
/// the pods serving. Returns kube-proxy's and portmap's rules as loaded.
fn prepare_node(bed: &Bed) -> Result<(ProxyMode, String, Servers)> {
    let node = &bed.topology.node;
    node.ip(&["addr", "add", &format!("{SECOND}/24"), "dev", "eth0"])?;
    let backend = bed.datapath.iptables_backend().unwrap_or("nft");
    let mode = ProxyMode::Iptables { backend };
    kube::install_kube_proxy(node, mode, &standard_services())?;
    kube::install_host_ports(node, backend, &standard_host_ports())?;
    let loaded = kube::snapshot(node, mode, Family::V4)?;
    let servers = vec![
        serve(&bed.topology.pod, addr::POD)?,
        serve(&bed.topology.pod2, addr::POD2)?,
    ];
    Ok((mode, loaded, servers))
}

fn both(mut check: impl FnMut(Protocol) -> Result<()>) -> Result<()> {
    Protocol::BOTH.iter().try_for_each(|&p| check(p))
}

/// What the pod saw of a call from the outside client to `server`, which must answer itself.
fn from_outside(bed: &Bed, protocol: Protocol, server: SocketAddr) -> Result<Answer> {
    ask(
        &bed.topology.external,
        protocol,
        SocketAddr::new(CLIENT, 0),
        server,
    )
}

/// Every check of the module doc, on a bed whose agent runs.
fn check(bed: &Bed, pods: &[(&Netns, Ipv4Addr)]) -> Result<()> {
    let internet_echo = SocketAddr::new(svc::INTERNET_ECHO.into(), svc::CLUSTER_PORT);
    let pod2_echo = SocketAddr::new(svc::POD2_ECHO.into(), svc::CLUSTER_PORT);
    both(|protocol| {
        let proto = protocol.name();
        for &(ns, src) in pods {
            let local = SocketAddr::new(src.into(), 0);
            let want = pool::address_for(&pool(), src.into()).expect("a pool");
            let seen = ask(ns, protocol, local, internet_echo)?.seen.ip();
            ensure!(
                seen == want,
                "{proto} from {src} through {internet_echo} left with {seen}, not its pool \
                 address {want}"
            );
        }
        let (pod, src) = pods[0];
        let local = SocketAddr::new(src.into(), 0);
        let seen = ask(pod, protocol, local, pod2_echo)?.seen.ip();
        ensure!(
            seen == IpAddr::from(src),
            "{proto} through {pod2_echo} reached the other pod as {seen}, not {src}"
        );
        let node = IpAddr::from(addr::NODE);
        for server in [
            SocketAddr::new(addr::POD.into(), svc::POD_PORT),
            SocketAddr::new(node, node_port(svc::NODEPORT_LOCAL, protocol)),
            SocketAddr::new(node, svc::HOST_PORT),
        ] {
            let seen = from_outside(bed, protocol, server)?.seen.ip();
            ensure!(
                seen == CLIENT,
                "{proto} from outside to {server}: the pod saw {seen}, not the client"
            );
        }
        Ok(())
    })?;
    let server = SocketAddr::new(addr::INTERNET.into(), bed.probes.port());
    for own in pool() {
        let local = SocketAddr::new(own, 51820);
        let seen = node_flow(bed, local, server)?;
        ensure!(seen == local, "the node's flow from {local} left as {seen}");
    }
    Ok(())
}

/// The scenario of the module doc.
pub fn the_pool_on_a_real_node(datapath: Datapath) -> Result<()> {
    let mut bed = Bed::new(datapath, Some("nonMasqueradeCIDRs: [10.0.0.0/8]\n"))?;
    let (mode, loaded, _servers) = prepare_node(&bed)?;
    let cni = match datapath {
        Datapath::Ebpf => Some(attach_cni(&bed.topology.node, true)?),
        _ => None,
    };
    let second = second_pod_address(&bed.topology.pod2)?;
    bed.agent_args = pool_args();
    bed.start_agent()?;
    bed.wait_ready()?;
    let pods = [(&bed.topology.pod, addr::POD), (&bed.topology.pod2, second)];
    check(&bed, &pods).map_err(|e| bed.with_log(e))?;

    let now = kube::snapshot(&bed.topology.node, mode, Family::V4)?;
    ensure!(
        now == loaded,
        "kube-proxy's or portmap's rules changed:\n{loaded}\n---\n{now}"
    );
    if let Some(cni) = cni {
        use aya::programs::TcAttachType::{Egress, Ingress};
        for hook in [Egress, Ingress] {
            let seen = cni.packets(hook)?;
            ensure!(seen > 0, "the CNI's program saw no packet on {hook:?}");
        }
    }
    Ok(())
}
