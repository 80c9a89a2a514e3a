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
//!
//! The same bed runs over IPv6 (a dual-stack node with `--enable-ipv6` and a pool of two IPv6
//! addresses, both kube-proxy proxiers, portmap's ip6tables hostPorts; the internet host is the
//! outside caller, as in `dual_stack`) on nftables and eBPF: iptables gives IPv6 pods one
//! address only (`ipv6.rs` says why).

use std::net::{IpAddr, SocketAddr};

use anyhow::{ensure, Result};
use masq_testbed::exchange::{ask, Answer};
use masq_testbed::kube::{self, node_port, standard_host_ports, standard_host_ports6};
use masq_testbed::kube::{standard_services, standard_services6, svc, svc6};
use masq_testbed::kube::{Family, Protocol, ProxyMode};
use masq_testbed::probe::{TcpEchoServer, UdpEchoServer};
use masq_testbed::{addr, addr6, Netns, Topology};

use crate::harness::{attach_cni, Bed, Datapath};
use crate::ipv6::{add_address6, second_pod_address6, SECOND6};
use crate::{node_flow, pool, second_pod_address, SECOND};

/// The addresses of one family's side of the bed.
#[derive(Clone, Copy)]
struct Side {
    family: Family,
    node: IpAddr,
    /// The node's second address, the pool's second entry.
    second: IpAddr,
    pod: IpAddr,
    pod2: IpAddr,
    /// Who calls the node and the pod from outside (a masqueraded destination).
    client: IpAddr,
    internet: IpAddr,
    /// The ClusterIP whose endpoint is the internet host, and the one of the second pod.
    internet_echo: IpAddr,
    pod2_echo: IpAddr,
}

const V4: Side = Side {
    family: Family::V4,
    node: IpAddr::V4(addr::NODE),
    second: IpAddr::V4(SECOND),
    pod: IpAddr::V4(addr::POD),
    pod2: IpAddr::V4(addr::POD2),
    client: IpAddr::V4(addr::CLIENT),
    internet: IpAddr::V4(addr::INTERNET),
    internet_echo: IpAddr::V4(svc::INTERNET_ECHO),
    pod2_echo: IpAddr::V4(svc::POD2_ECHO),
};

/// IPv6 has no client host of its own: the internet host calls, as in `dual_stack`.
const V6: Side = Side {
    family: Family::V6,
    node: IpAddr::V6(addr6::NODE),
    second: IpAddr::V6(SECOND6),
    pod: IpAddr::V6(addr6::POD),
    pod2: IpAddr::V6(addr6::POD2),
    client: IpAddr::V6(addr6::INTERNET),
    internet: IpAddr::V6(addr6::INTERNET),
    internet_echo: IpAddr::V6(svc6::INTERNET_ECHO),
    pod2_echo: IpAddr::V6(svc6::POD2_ECHO),
};

impl Side {
    fn pool(&self) -> Vec<IpAddr> {
        vec![self.node, self.second]
    }
}

/// Both pods serve TCP and UDP on [`svc::POD_PORT`] while these live.
type Servers = Vec<(TcpEchoServer, UdpEchoServer)>;

fn serve(ns: &Netns, ip: IpAddr) -> Result<(TcpEchoServer, UdpEchoServer)> {
    let at = [SocketAddr::new(ip, svc::POD_PORT)];
    Ok((
        TcpEchoServer::start(ns, &at)?,
        UdpEchoServer::start(ns, &at)?,
    ))
}

/// kube-proxy (iptables mode), portmap's hostPorts and the second pool address on the node
/// (for IPv6 both proxiers, as on a dual-stack node); the pods serving. Returns kube-proxy's
/// and portmap's rules of the side's family as loaded.
fn prepare_node(bed: &Bed, side: Side) -> Result<(ProxyMode, String, Servers)> {
    let node = &bed.topology.node;
    let backend = bed.datapath.iptables_backend().unwrap_or("nft");
    let mode = ProxyMode::Iptables { backend };
    let (services, host_ports) = match side.family {
        Family::V4 => {
            node.ip(&["addr", "add", &format!("{SECOND}/24"), "dev", "eth0"])?;
            (standard_services(), standard_host_ports())
        }
        Family::V6 => {
            add_address6(node, SECOND6)?;
            let both = [standard_services(), standard_services6()].concat();
            (both, standard_host_ports6())
        }
    };
    kube::install_kube_proxy(node, mode, &services)?;
    kube::install_host_ports(node, backend, &host_ports)?;
    let loaded = kube::snapshot(node, mode, side.family)?;
    let servers = vec![
        serve(&bed.topology.pod, side.pod)?,
        serve(&bed.topology.pod2, side.pod2)?,
    ];
    Ok((mode, loaded, servers))
}

fn both(mut check: impl FnMut(Protocol) -> Result<()>) -> Result<()> {
    Protocol::BOTH.iter().try_for_each(|&p| check(p))
}

/// What the pod saw of a call from the outside client to `server`, which must answer itself.
fn from_outside(bed: &Bed, side: Side, protocol: Protocol, server: SocketAddr) -> Result<Answer> {
    let client = SocketAddr::new(side.client, 0);
    ask(&bed.topology.external, protocol, client, server)
}

/// Every check of the module doc, on a bed whose agent runs.
fn check(bed: &Bed, side: Side, pods: &[(&Netns, IpAddr)]) -> Result<()> {
    let internet_echo = SocketAddr::new(side.internet_echo, svc::CLUSTER_PORT);
    let pod2_echo = SocketAddr::new(side.pod2_echo, svc::CLUSTER_PORT);
    both(|protocol| {
        let proto = protocol.name();
        for &(ns, src) in pods {
            let local = SocketAddr::new(src, 0);
            let want = pool::address_for(&side.pool(), src).expect("a pool");
            let seen = ask(ns, protocol, local, internet_echo)?.seen.ip();
            ensure!(
                seen == want,
                "{proto} from {src} through {internet_echo} left with {seen}, not its pool \
                 address {want}"
            );
        }
        let (pod, src) = pods[0];
        let seen = ask(pod, protocol, SocketAddr::new(src, 0), pod2_echo)?
            .seen
            .ip();
        ensure!(
            seen == src,
            "{proto} through {pod2_echo} reached the other pod as {seen}, not {src}"
        );
        for server in [
            SocketAddr::new(side.pod, svc::POD_PORT),
            SocketAddr::new(side.node, node_port(svc::NODEPORT_LOCAL, protocol)),
            SocketAddr::new(side.node, svc::HOST_PORT),
        ] {
            let seen = from_outside(bed, side, protocol, server)?.seen.ip();
            ensure!(
                seen == side.client,
                "{proto} from outside to {server}: the pod saw {seen}, not the client"
            );
        }
        Ok(())
    })?;
    let server = SocketAddr::new(side.internet, bed.probes.port());
    for own in side.pool() {
        let local = SocketAddr::new(own, 51820);
        let seen = node_flow(bed, local, server)?;
        ensure!(seen == local, "the node's flow from {local} left as {seen}");
    }
    Ok(())
}

/// The scenario of the module doc, over IPv4.
pub fn the_pool_on_a_real_node(datapath: Datapath) -> Result<()> {
    let bed = Bed::new(datapath, Some("nonMasqueradeCIDRs: [10.0.0.0/8]\n"))?;
    on_a_real_node(bed, V4)
}

/// The scenario of the module doc, over IPv6 (nftables and eBPF).
pub fn an_ipv6_pool_on_a_real_node(datapath: Datapath) -> Result<()> {
    let config = "nonMasqueradeCIDRs: [10.0.0.0/8, fd00::/8]\n";
    let mut bed = Bed::on(Topology::builder().ipv6(true), datapath, Some(config))?;
    bed.agent_args = vec![
        "--enable-ipv6".into(),
        "--pod-cidr".into(),
        addr6::POD_CIDR.into(),
    ];
    on_a_real_node(bed, V6)
}

fn on_a_real_node(mut bed: Bed, side: Side) -> Result<()> {
    let (mode, loaded, _servers) = prepare_node(&bed, side)?;
    let cni = match bed.datapath {
        Datapath::Ebpf => Some(attach_cni(&bed.topology.node, true)?),
        _ => None,
    };
    let second = match side.family {
        Family::V4 => second_pod_address(&bed.topology.pod2)?.into(),
        Family::V6 => second_pod_address6(&bed.topology.pod2)?.into(),
    };
    for ip in side.pool() {
        bed.agent_args.extend(["--snat-ip".into(), ip.to_string()]);
    }
    bed.start_agent()?;
    bed.wait_ready()?;
    let pods = [(&bed.topology.pod, side.pod), (&bed.topology.pod2, second)];
    check(&bed, side, &pods).map_err(|e| bed.with_log(e))?;

    let now = kube::snapshot(&bed.topology.node, mode, side.family)?;
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
