//! Issue 13, items 2 and 3: masq beside kube-proxy (iptables mode through the datapath's
//! iptables backend, or nftables mode) and the CNI portmap plugin's hostPorts, with the
//! Services of `masq_testbed::kube::standard_services` loaded into the node before the agent
//! starts. The pods serve TCP and UDP on port 8080 and answer with the source they saw.
//!
//! Every check runs over TCP and UDP, and asks from a socket that accepts answers only from
//! the address it called (a ClusterIP, the node's NodePort or hostPort): an answer that
//! conntrack did not un-DNAT, or that was translated again on its way out, fails it.
//!
//! The NodePort and hostPort checks take a [`ServiceBed`] of either family: `dual_stack`'s
//! IPv6 scenarios build theirs with [`ServiceBed::on`] and run the same checks.

use std::net::{IpAddr, SocketAddr};

use anyhow::{ensure, Context, Result};
use masq_testbed::exchange::ask;
use masq_testbed::kube::{
    self, node_port, standard_host_ports, standard_host_ports6, standard_services,
    standard_services6, svc, Family, Protocol, ProxyMode,
};
use masq_testbed::probe::{TcpEchoServer, UdpEchoServer};
use masq_testbed::{addr, Netns};

use super::sabotage::{each_caught, Sabotage};
use super::{Addrs, ISSUE_CONFIG};
use crate::harness::{Bed, Datapath};

/// [`ISSUE_CONFIG`] that also keeps the internet host (203.0.113.0/24).
const ISSUE_CONFIG_KEEPING_THE_INTERNET: &str =
    "nonMasqueradeCIDRs: [10.0.0.0/8, 172.16.0.0/12, 203.0.113.0/24]\n";

const NODE: IpAddr = IpAddr::V4(addr::NODE);
const POD: IpAddr = IpAddr::V4(addr::POD);

/// Which kube-proxy the node runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proxy {
    /// iptables mode, in the iptables backend of the datapath under test (nft but for the
    /// legacy datapath).
    Iptables,
    /// nftables mode.
    Nftables,
}

impl Proxy {
    fn mode(self, datapath: Datapath) -> ProxyMode {
        match self {
            Proxy::Iptables => ProxyMode::Iptables {
                backend: iptables_backend(datapath),
            },
            Proxy::Nftables => ProxyMode::Nftables,
        }
    }

    /// Flushing the chain that masquerades kube-proxy's marked traffic (of `family`'s
    /// proxier): a kube-proxy that lost its own translation.
    fn lose_masquerade(self, datapath: Datapath, family: Family) -> Sabotage {
        match self {
            Proxy::Iptables => {
                let program = format!("{}-{}", family.iptables(), iptables_backend(datapath));
                Sabotage::final_command(
                    &format!("kube-proxy's KUBE-POSTROUTING flushed ({program})"),
                    &program,
                    &["-t", "nat", "-F", "KUBE-POSTROUTING"],
                )
            }
            Proxy::Nftables => Sabotage::final_command(
                &format!("kube-proxy's masquerading chain flushed ({})", family.nft()),
                "nft",
                &[
                    "flush",
                    "chain",
                    family.nft(),
                    kube::nftables::TABLE,
                    "masquerading",
                ],
            ),
        }
    }
}

fn iptables_backend(datapath: Datapath) -> &'static str {
    datapath.iptables_backend().unwrap_or("nft")
}

/// A bed whose node runs kube-proxy (and portmap's hostPorts with `host_ports`), whose pods
/// serve TCP and UDP on 8080 (at their addresses of the bed's family) for as long as it lives,
/// and whose agent is ready.
pub struct ServiceBed {
    bed: Bed,
    _servers: (TcpEchoServer, UdpEchoServer, TcpEchoServer, UdpEchoServer),
    /// The family the scenario checks, and its addresses.
    addrs: Addrs,
    proxy: Proxy,
    /// How kube-proxy runs, and its rules of that family (with portmap's, in the same iptables
    /// backend) as loaded, before the agent started.
    loaded: (ProxyMode, String),
}

impl ServiceBed {
    /// An IPv4 bed with [`ISSUE_CONFIG`]: see [`ServiceBed::on`].
    fn ready(datapath: Datapath, proxy: Proxy, host_ports: bool) -> Result<ServiceBed> {
        let bed = Bed::new(datapath, Some(ISSUE_CONFIG))?;
        ServiceBed::on(bed, Family::V4, proxy, host_ports)
    }

    /// `bed` (agent not started) with kube-proxy in `proxy` mode and, with `host_ports`,
    /// portmap's hostPorts, checked in `family`. For IPv6 the node is dual-stack: both
    /// proxiers run ([`standard_services`] and [`standard_services6`]) and the hostPorts are
    /// the pod's IPv6 ones. `host_ports` needs `proxy` in iptables mode: portmap writes to the
    /// same backend.
    pub fn on(mut bed: Bed, family: Family, proxy: Proxy, host_ports: bool) -> Result<ServiceBed> {
        ensure!(
            !host_ports || proxy == Proxy::Iptables,
            "portmap needs iptables mode"
        );
        let datapath = bed.datapath;
        let addrs = Addrs::of(family);
        let node = &bed.topology.node;
        let mode = proxy.mode(datapath);
        let (services, ports) = match family {
            Family::V4 => (standard_services(), standard_host_ports()),
            Family::V6 => (
                [standard_services(), standard_services6()].concat(),
                standard_host_ports6(),
            ),
        };
        kube::install_kube_proxy(node, mode, &services)?;
        if host_ports {
            kube::install_host_ports(node, iptables_backend(datapath), &ports)?;
        }
        let serve = |ns: &Netns, ip: IpAddr| -> Result<(TcpEchoServer, UdpEchoServer)> {
            let at = [SocketAddr::new(ip, svc::POD_PORT)];
            Ok((
                TcpEchoServer::start(ns, &at)?,
                UdpEchoServer::start(ns, &at)?,
            ))
        };
        let loaded = (mode, kube::snapshot(node, mode, family)?);
        let pod = serve(&bed.topology.pod, addrs.pod)?;
        let pod2 = serve(&bed.topology.pod2, addrs.pod2)?;
        bed.start_agent()?;
        bed.wait_ready()?;
        Ok(ServiceBed {
            bed,
            _servers: (pod.0, pod.1, pod2.0, pod2.1),
            addrs,
            proxy,
            loaded,
        })
    }

    /// kube-proxy's and portmap's rules are as they were loaded: masq touched none of them.
    pub fn untouched(&self) -> Result<()> {
        let (mode, loaded) = &self.loaded;
        let now = kube::snapshot(&self.topology.node, *mode, self.addrs.family)?;
        let gone = loaded.lines().filter(|l| !now.lines().any(|n| n == *l));
        let new = now.lines().filter(|n| !loaded.lines().any(|l| l == *n));
        let changed: Vec<String> = gone
            .map(|l| format!("- {l}"))
            .chain(new.map(|n| format!("+ {n}")))
            .collect();
        ensure!(
            changed.is_empty(),
            "kube-proxy's or portmap's rules changed ({mode:?}):\n{}",
            changed.join("\n")
        );
        Ok(())
    }
}

impl std::ops::Deref for ServiceBed {
    type Target = Bed;

    fn deref(&self) -> &Bed {
        &self.bed
    }
}

impl std::ops::DerefMut for ServiceBed {
    fn deref_mut(&mut self) -> &mut Bed {
        &mut self.bed
    }
}

fn any() -> SocketAddr {
    Addrs::V4.any(0)
}

/// Over TCP and UDP, `check(protocol)` holds.
fn both(mut check: impl FnMut(Protocol) -> Result<()>) -> Result<()> {
    Protocol::BOTH.iter().try_for_each(|&p| check(p))
}

/// A pod calls a ClusterIP whose endpoint is outside the cluster: after kube-proxy's DNAT the
/// destination is the internet host, so masq masquerades the flow (the far side sees the
/// node), and the answer comes back to the pod from the ClusterIP. The ClusterIP whose endpoint
/// is the private host (a non-masquerade destination) keeps the pod's source: masq decides
/// on the destination after the DNAT, as netfilter does. The counterfactual is a config that
/// keeps 203.0.113.0/24: the flow to the external endpoint then keeps the pod's source, as a
/// decision on the ClusterIP (inside 10.0.0.0/8) would, and the check must see it.
pub fn cluster_ip_to_an_external_endpoint(datapath: Datapath, proxy: Proxy) -> Result<()> {
    let mut bed = ServiceBed::ready(datapath, proxy, false)?;
    let check = |bed: &Bed| {
        let pod = &bed.topology.pod;
        both(|protocol| {
            let internet = SocketAddr::new(svc::INTERNET_ECHO.into(), svc::CLUSTER_PORT);
            let seen = ask(pod, protocol, any(), internet)?.seen;
            ensure!(
                seen.ip() == NODE,
                "{internet} (203.0.113.10) saw {seen}, not the node"
            );
            let private = SocketAddr::new(svc::PRIVATE_ECHO.into(), svc::CLUSTER_PORT);
            let seen = ask(pod, protocol, any(), private)?.seen;
            ensure!(
                seen.ip() == POD,
                "{private} (10.200.0.10) saw {seen}, not the pod"
            );
            Ok(())
        })
    };
    check(&bed).map_err(|e| bed.with_log(e))?;
    bed.untouched()?;
    each_caught(
        &mut bed,
        &[Sabotage::config_keeps_the_internet(
            ISSUE_CONFIG,
            ISSUE_CONFIG_KEEPING_THE_INTERNET,
        )],
        check,
    )
}

/// A pod calls a ClusterIP whose endpoint is the other pod: the other pod sees the caller's
/// own address, and the answer comes back from the ClusterIP.
pub fn cluster_ip_to_another_pod(datapath: Datapath, proxy: Proxy) -> Result<()> {
    let mut bed = ServiceBed::ready(datapath, proxy, false)?;
    let check = |bed: &Bed| {
        both(|protocol| {
            let service = SocketAddr::new(svc::POD2_ECHO.into(), svc::CLUSTER_PORT);
            let seen = ask(&bed.topology.pod, protocol, any(), service)?.seen;
            ensure!(
                seen.ip() == POD,
                "the other pod saw {seen}, not the caller {POD}"
            );
            Ok(())
        })
    };
    check(&bed).map_err(|e| bed.with_log(e))?;
    bed.untouched()?;
    each_caught(
        &mut bed,
        &[Sabotage::masquerade_towards_pods(Family::V4)],
        check,
    )
}

/// The client calls `base`'s NodePort (TCP `base`, UDP `base + 100`) on the node's address of
/// the bed's family and checks what the pod saw with `pod_saw`.
fn call_node_port(
    bed: &Bed,
    addrs: Addrs,
    base: u16,
    pod_saw: impl Fn(SocketAddr) -> Result<()>,
) -> Result<()> {
    let Addrs { node, client, .. } = addrs;
    both(|protocol| {
        let server = SocketAddr::new(node, node_port(base, protocol));
        let client = SocketAddr::new(client, 0);
        pod_saw(ask(&bed.topology.external, protocol, client, server)?.seen)
    })
}

/// A NodePort with `externalTrafficPolicy: Local` (no kube-proxy mark): the outside client
/// (at a masqueraded destination) gets the answer from the NodePort, and the pod sees the
/// client's real address: masq translates neither the DNATed request nor the pod's answer.
pub fn node_port_with_local_policy(datapath: Datapath, proxy: Proxy) -> Result<()> {
    node_port_local_on(ServiceBed::ready(datapath, proxy, false)?)
}

/// [`node_port_with_local_policy`] on `bed`, of either family.
pub fn node_port_local_on(mut bed: ServiceBed) -> Result<()> {
    let addrs = bed.addrs;
    let client = addrs.client;
    let check = |bed: &Bed| {
        call_node_port(bed, addrs, svc::NODEPORT_LOCAL, |seen| {
            ensure!(
                seen.ip() == client,
                "the pod saw {seen}, not the client {client}"
            );
            Ok(())
        })
    };
    check(&bed).map_err(|e| bed.with_log(e))?;
    bed.untouched()?;
    let sabotage = Sabotage::masquerade_towards_pods(bed.addrs.family);
    each_caught(&mut bed, &[sabotage], check)
}

/// A NodePort with `externalTrafficPolicy: Cluster`: kube-proxy marks the flow and
/// masquerades it towards the pod (which sees the node's bridge address), and the client gets
/// the answer from the NodePort: translated once by kube-proxy, never again by masq. The
/// counterfactuals: the answer's port rewritten on the way out (a second translation), and
/// kube-proxy's masquerade lost (the check sees whose translation the pod got).
pub fn node_port_with_cluster_policy(datapath: Datapath, proxy: Proxy) -> Result<()> {
    node_port_cluster_on(ServiceBed::ready(datapath, proxy, false)?)
}

/// [`node_port_with_cluster_policy`] on `bed`, of either family.
pub fn node_port_cluster_on(mut bed: ServiceBed) -> Result<()> {
    let addrs = bed.addrs;
    let Addrs {
        family, gateway, ..
    } = addrs;
    let check = |bed: &Bed| {
        call_node_port(bed, addrs, svc::NODEPORT_CLUSTER, |seen| {
            ensure!(
                seen.ip() == gateway,
                "the pod saw {seen}, not kube-proxy's masquerade to {gateway}"
            );
            Ok(())
        })
    };
    check(&bed).map_err(|e| bed.with_log(e))?;
    bed.untouched()?;
    let sabotages = [
        Sabotage::node_replies_from_another_port(family, "tcp", svc::NODEPORT_CLUSTER),
        bed.proxy.lose_masquerade(bed.datapath, family),
    ];
    each_caught(&mut bed, &sabotages, check)?;
    // The last sabotage changed kube-proxy's rules, and the comparison must say so.
    let report = bed
        .untouched()
        .err()
        .context("a flushed chain went unnoticed")?;
    eprintln!("counterfactual, kube-proxy's rules changed: caught: {report:#}");
    Ok(())
}

/// A hostPort (portmap's `CNI-HOSTPORT-DNAT` layout, beside kube-proxy's iptables rules): the
/// outside client reaches the pod through the node's port 8443, the pod sees the client's
/// address, and the answer leaves from the node's port untranslated by masq.
pub fn host_port(datapath: Datapath) -> Result<()> {
    host_port_on(ServiceBed::ready(datapath, Proxy::Iptables, true)?)
}

/// [`host_port`] on `bed` (built with its hostPorts), of either family.
pub fn host_port_on(mut bed: ServiceBed) -> Result<()> {
    let Addrs {
        family,
        node,
        client,
        ..
    } = bed.addrs;
    let check = |bed: &Bed| {
        both(|protocol| {
            let server = SocketAddr::new(node, svc::HOST_PORT);
            let seen = ask(
                &bed.topology.external,
                protocol,
                SocketAddr::new(client, 0),
                server,
            )?
            .seen;
            ensure!(
                seen.ip() == client,
                "the pod saw {seen}, not the client {client}"
            );
            Ok(())
        })
    };
    check(&bed).map_err(|e| bed.with_log(e))?;
    bed.untouched()?;
    let sabotages = [
        Sabotage::masquerade_towards_pods(family),
        Sabotage::node_replies_from_another_port(family, "udp", svc::HOST_PORT),
    ];
    each_caught(&mut bed, &sabotages, check)
}
