//! Issue 17 with issue 13's items 2 and 3: IPv6 NodePorts and hostPorts on a dual-stack node.
//! kube-proxy runs both proxiers (iptables mode through the datapath's iptables backend, or
//! nftables mode) with `standard_services` and `standard_services6`, whose IPv6 NodePort
//! Services have the IPv4 ones' node ports; portmap maps the first pod's IPv6 address through
//! ip6tables. The external client is the internet host (2001:db8::10), a masqueraded
//! destination, calling the node's IPv6 address.
//!
//! The checks and counterfactuals are `node_mix`'s (`node_mix_scenarios::services`), run on
//! the IPv6 addresses: each asks over TCP and UDP from a socket that accepts answers only from
//! the node's address and port it called, and fails under an `ip6` sabotage of the node.

use anyhow::Result;
use masq_testbed::kube::Family;
use masq_testbed::Topology;

use super::dual_bed;
use crate::harness::Datapath;
use crate::node_mix_scenarios::services::{self, Proxy, ServiceBed};

fn ready(datapath: Datapath, proxy: Proxy, host_ports: bool) -> Result<ServiceBed> {
    let bed = dual_bed(datapath, Topology::builder())?;
    ServiceBed::on(bed, Family::V6, proxy, host_ports)
}

/// An IPv6 NodePort with `externalTrafficPolicy: Local`: the pod sees the client's IPv6
/// address, and the answer comes back from the node's address and NodePort, translated by no
/// one. The counterfactual masquerades IPv6 flows towards the pods.
pub fn node_port_with_local_policy(datapath: Datapath, proxy: Proxy) -> Result<()> {
    services::node_port_local_on(ready(datapath, proxy, false)?)
}

/// An IPv6 NodePort with `externalTrafficPolicy: Cluster`: kube-proxy's IPv6 proxier
/// masquerades the flow towards the pod (which sees the bridge's fd00:10:244:1::1) and masq
/// never translates it again: the answer reaches the client from the NodePort. The
/// counterfactuals rewrite the answer's port on the way out, and flush the IPv6 proxier's
/// masquerade chain.
pub fn node_port_with_cluster_policy(datapath: Datapath, proxy: Proxy) -> Result<()> {
    services::node_port_cluster_on(ready(datapath, proxy, false)?)
}

/// An IPv6 hostPort (portmap's chains in ip6tables, beside kube-proxy's): the client reaches
/// the pod through the node's IPv6 address and port 8443, the pod sees the client, and the
/// answer leaves from the node's port. The counterfactuals masquerade IPv6 flows towards the
/// pods, and rewrite the answer's port.
pub fn host_port(datapath: Datapath) -> Result<()> {
    services::host_port_on(ready(datapath, Proxy::Iptables, true)?)
}
