//! Issue 17 with issue 13's item 4: the node's own IPv6 flows beside the pods' from the same
//! source port to the same IPv6 destination and port (WireGuard's 51820 over UDP, a bound TCP
//! port). Both work, each socket gets its own answers, the node's flow keeps its port at the
//! far side (2001:db8::10), and the pod's is masqueraded to another port of the node's IPv6
//! address.
//!
//! The flows, checks and counterfactual are `node_mix`'s (`node_mix_scenarios::host_flows`),
//! on a dual-stack bed: the peer's IPv6 address makes them IPv6, and the counterfactual is an
//! `ip6` SNAT that keeps the pod's port.

use anyhow::Result;
use masq_testbed::addr6;

use super::{dual_bed, dual_ready, DUAL};
use crate::harness::Datapath;
use crate::node_mix_scenarios::host_flows::{self, Order};

fn udp(datapath: Datapath, order: Order) -> Result<()> {
    host_flows::udp_on(dual_ready(datapath)?, order, addr6::INTERNET.into())
}

fn tcp(datapath: Datapath, order: Order) -> Result<()> {
    host_flows::tcp_on(dual_ready(datapath)?, order, addr6::INTERNET.into())
}

/// The node listens on [::]:51820 before the pod sends from 51820; then the node sends.
pub fn udp_node_port_bound_before_the_pod_sends(datapath: Datapath) -> Result<()> {
    udp(datapath, Order::NodeBindsPodSends)
}

/// The pod sends from 51820 first; then the node binds 51820 and sends to the same peer.
pub fn udp_pod_first_then_the_node(datapath: Datapath) -> Result<()> {
    udp(datapath, Order::PodFirst)
}

/// The node sends from 51820 first; then the pod sends from 51820 to the same peer.
pub fn udp_node_first_then_the_pod(datapath: Datapath) -> Result<()> {
    udp(datapath, Order::NodeFirst)
}

/// As [`udp_node_first_then_the_pod`], with the node's IPv6 network inside
/// `nonMasqueradeSrcCIDRs`: the node's own source is kept, and its port must be kept from the
/// pods all the same.
pub fn udp_node_address_in_non_masquerade_src(datapath: Datapath) -> Result<()> {
    let mut bed = dual_bed(datapath, masq_testbed::Topology::builder())?;
    bed.config.update(&format!(
        "{DUAL}nonMasqueradeSrcCIDRs: [fd00:172:30::/64]\n"
    ))?;
    bed.start_agent()?;
    bed.wait_ready()?;
    host_flows::udp_on(bed, Order::NodeFirst, addr6::INTERNET.into())
}

/// The node connects from [::]:40123 to the internet host, then the pod from the same port.
pub fn tcp_node_first_then_the_pod(datapath: Datapath) -> Result<()> {
    tcp(datapath, Order::NodeFirst)
}

/// The pod connects from 40123 first, then the node from the same port.
pub fn tcp_pod_first_then_the_node(datapath: Datapath) -> Result<()> {
    tcp(datapath, Order::PodFirst)
}
