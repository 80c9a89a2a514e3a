//! Issue 17: masq beside kube-proxy's IPv6 proxier. A dual-stack node runs one proxier per
//! family; both load their rules (iptables mode through the datapath's iptables backend, or
//! nftables mode) before the agent starts, with the IPv6 ClusterIPs of
//! `masq_testbed::kube::standard_services6`. As in the IPv4 scenarios of `node_mix`, masq
//! decides on the destination after kube-proxy's DNAT, and every question is asked over TCP
//! and UDP from a socket that accepts answers only from the ClusterIP it called: an answer
//! conntrack did not un-DNAT, or translated again on its way back, fails it.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use anyhow::{ensure, Result};
use masq_testbed::exchange;
use masq_testbed::kube::{svc, svc6, Family, Protocol};
use masq_testbed::{addr6, Netns, Topology};

use super::dual_bed;
use crate::harness::{Bed, Datapath};
use crate::node_mix_scenarios::sabotage::{each_caught, Sabotage};
use crate::node_mix_scenarios::services::{Proxy, ServiceBed};

/// kube-proxy in iptables mode, in the datapath's iptables backend (nft but for the legacy
/// datapath): see [`ipv6_cluster_ips`].
pub fn iptables_mode(datapath: Datapath) -> Result<()> {
    ipv6_cluster_ips(datapath, Proxy::Iptables)
}

/// kube-proxy in nftables mode (table `ip6 kube-proxy` beside `ip kube-proxy`): see
/// [`ipv6_cluster_ips`].
pub fn nftables_mode(datapath: Datapath) -> Result<()> {
    ipv6_cluster_ips(datapath, Proxy::Nftables)
}

/// kube-proxy in `proxy` mode beside the agent: the pod calls the IPv6 ClusterIP whose endpoint
/// is the internet host (2001:db8::10:8080), whose flow masq masquerades after the DNAT (the far
/// side sees the node's IPv6 address), and the one whose endpoint is the second pod, which keeps
/// the caller's address. masq touches none of kube-proxy's IPv6 rules. The counterfactual
/// masquerades IPv6 flows towards the pods: the second pod then sees the bridge's address.
fn ipv6_cluster_ips(datapath: Datapath, proxy: Proxy) -> Result<()> {
    let bed = dual_bed(datapath, Topology::builder())?;
    let mut bed = ServiceBed::on(bed, Family::V6, proxy, false)?;
    let check = |bed: &Bed| {
        let pod = &bed.topology.pod;
        Protocol::BOTH.iter().try_for_each(|&protocol| {
            let internet = SocketAddr::new(svc6::INTERNET_ECHO.into(), svc::CLUSTER_PORT);
            let seen = ask(pod, protocol, internet)?;
            ensure!(
                seen == IpAddr::from(addr6::NODE),
                "{internet} (2001:db8::10) saw {seen}, not the node"
            );
            let pod2 = SocketAddr::new(svc6::POD2_ECHO.into(), svc::CLUSTER_PORT);
            let seen = ask(pod, protocol, pod2)?;
            ensure!(
                seen == IpAddr::from(addr6::POD),
                "{pod2} (the second pod) saw {seen}, not the caller"
            );
            Ok(())
        })
    };
    check(&bed).map_err(|e| bed.with_log(e))?;
    bed.untouched()?;
    let sabotage = Sabotage::masquerade_towards_pods(Family::V6);
    each_caught(&mut bed, &[sabotage], check)
}

/// One question over `protocol` from the pod to `server`, answered from `server`; the source
/// the far side saw.
fn ask(pod: &Netns, protocol: Protocol, server: SocketAddr) -> Result<IpAddr> {
    let local = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0);
    Ok(exchange::ask(pod, protocol, local, server)?.seen.ip())
}
