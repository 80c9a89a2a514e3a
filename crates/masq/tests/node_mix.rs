//! Issue 13, items 1–4, end to end: the real `masq agent` on a node that carries what a
//! Kubernetes node carries besides pod egress, on every datapath.
//!
//! - Flows that begin outside and reach a pod's address (TCP, UDP, ICMP echo, IP protocol
//!   253) are never translated: the client sees the pod's address in every answer.
//! - The node's own flows beside pod flows from the same port to the same peer (WireGuard's
//!   51820, a bound TCP port), in both orders and with the node inside
//!   `nonMasqueradeSrcCIDRs`: both work and the node keeps its port.
//! - kube-proxy in iptables mode and in nftables mode (ClusterIPs towards an external host and
//!   towards a pod, NodePorts with Local and Cluster policy) and portmap's hostPorts, written
//!   into the node namespace with kube-proxy's and the plugin's own chain layout.
//!
//! netfilter's conntrack is the reference: the nftables and iptables datapaths pass. Each
//! scenario also runs its check under a sabotage of the node (`node_mix_scenarios::sabotage`)
//! that breaks the property, and fails unless the check then reports it. Like `agent_e2e.rs`,
//! every scenario runs once per datapath (`tests_for!` below), in its own namespaces, between
//! two read-only looks at the root namespace.

// Shared with agent_e2e.rs, which uses all of it; this file uses a part.
#[allow(dead_code, unused_imports)]
mod harness;
mod node_mix_scenarios;

/// One `#[test]` per scenario × datapath, named `<datapath>::<scenario>`.
macro_rules! tests_for {
    ($module:ident, $datapath:expr) => {
        mod $module {
            use super::harness::{run, Datapath};
            use super::node_mix_scenarios::services::{self, Proxy};
            use super::node_mix_scenarios::{host_flows, inbound};

            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn tcp_to_a_pod() {
                run($datapath, inbound::tcp_to_a_pod)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn udp_to_a_pod() {
                run($datapath, inbound::udp_to_a_pod)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn ping_to_a_pod() {
                run($datapath, inbound::ping_to_a_pod)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn other_protocol_to_a_pod() {
                run($datapath, inbound::other_protocol_to_a_pod)
            }

            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn udp_node_port_bound_before_the_pod_sends() {
                run(
                    $datapath,
                    host_flows::udp_node_port_bound_before_the_pod_sends,
                )
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn udp_pod_first_then_the_node() {
                run($datapath, host_flows::udp_pod_first_then_the_node)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn udp_node_first_then_the_pod() {
                run($datapath, host_flows::udp_node_first_then_the_pod)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn udp_node_address_in_non_masquerade_src() {
                run(
                    $datapath,
                    host_flows::udp_node_address_in_non_masquerade_src,
                )
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn tcp_node_first_then_the_pod() {
                run($datapath, host_flows::tcp_node_first_then_the_pod)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn tcp_pod_first_then_the_node() {
                run($datapath, host_flows::tcp_pod_first_then_the_node)
            }

            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn kube_proxy_iptables_cluster_ip_to_an_external_endpoint() {
                run($datapath, |d| {
                    services::cluster_ip_to_an_external_endpoint(d, Proxy::Iptables)
                })
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn kube_proxy_nftables_cluster_ip_to_an_external_endpoint() {
                run($datapath, |d| {
                    services::cluster_ip_to_an_external_endpoint(d, Proxy::Nftables)
                })
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn kube_proxy_iptables_cluster_ip_to_another_pod() {
                run($datapath, |d| {
                    services::cluster_ip_to_another_pod(d, Proxy::Iptables)
                })
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn kube_proxy_nftables_cluster_ip_to_another_pod() {
                run($datapath, |d| {
                    services::cluster_ip_to_another_pod(d, Proxy::Nftables)
                })
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn kube_proxy_iptables_node_port_with_local_policy() {
                run($datapath, |d| {
                    services::node_port_with_local_policy(d, Proxy::Iptables)
                })
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn kube_proxy_nftables_node_port_with_local_policy() {
                run($datapath, |d| {
                    services::node_port_with_local_policy(d, Proxy::Nftables)
                })
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn kube_proxy_iptables_node_port_with_cluster_policy() {
                run($datapath, |d| {
                    services::node_port_with_cluster_policy(d, Proxy::Iptables)
                })
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn kube_proxy_nftables_node_port_with_cluster_policy() {
                run($datapath, |d| {
                    services::node_port_with_cluster_policy(d, Proxy::Nftables)
                })
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn portmap_host_port() {
                run($datapath, services::host_port)
            }
        }
    };
}

// The datapaths under test, as in agent_e2e.rs.
tests_for!(nftables, Datapath::Nftables);
tests_for!(iptables_nft, Datapath::IptablesNft);
tests_for!(iptables_legacy, Datapath::IptablesLegacy);
tests_for!(ebpf, Datapath::Ebpf);
