//! Dual stack (issue 17), the real agent with `--enable-ipv6` on every datapath: the pods have
//! an IPv4 and an IPv6 address, the external side an IPv6 internet host (2001:db8::10,
//! masqueraded) and a kept IPv6 range (fd00::/8), and every datapath passes the same scenarios:
//! TCP, UDP and ping in both families, path-MTU discovery through the masquerade with a router
//! whose route MTU is locked lower (a real Packet Too Big), an inbound IPv6 flow whose reply
//! keeps the pod address, `kill -9` and a restart under an IPv6 connection, the SNAT address
//! following the kernel's address flags, both families beside a CNI's tc program that ends the
//! chain, `masq cleanup`, and kube-proxy's IPv6 ClusterIPs (iptables and nftables mode).
//!
//! The IPv6 side of `node_mix` (issue 13 on a dual-stack node), with its checks and
//! counterfactuals: IPv6 NodePorts with `Local` and `Cluster` policy in both kube-proxy modes
//! and an IPv6 hostPort through portmap's ip6tables rules ([`services6`]), and the node's own
//! IPv6 flows beside the pods' from the same port to the same peer, in each order, over UDP and
//! TCP ([`host_flows6`]).

mod host_flows6;
mod kube_proxy6;
mod pmtu;
mod services6;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{ensure, Result};
use masq_testbed::probe::{tcp_source, udp_source_from, TcpEchoServer, TcpSession, UdpEchoServer};
use masq_testbed::{addr, addr6, Topology, TopologyBuilder};

use crate::harness::*;

/// TEST-NET and 2001:db8::/32 masqueraded, the private networks of both families kept.
pub const DUAL: &str = "nonMasqueradeCIDRs: [10.0.0.0/8, fd00::/8]\n";

/// A dual-stack bed whose agent runs with `--enable-ipv6` and both pod CIDRs, not started.
pub fn dual_bed(datapath: Datapath, topology: TopologyBuilder) -> Result<Bed> {
    let mut bed = Bed::on(topology.ipv6(true), datapath, Some(DUAL))?;
    bed.agent_args.extend(
        ["--enable-ipv6", "--pod-cidr", addr6::POD_CIDR]
            .iter()
            .map(|s| s.to_string()),
    );
    Ok(bed)
}

/// [`dual_bed`] with the agent ready.
pub fn dual_ready(datapath: Datapath) -> Result<Bed> {
    let mut bed = dual_bed(datapath, Topology::builder())?;
    bed.start_agent()?;
    bed.wait_ready()?;
    Ok(bed)
}

fn v4(a: std::net::Ipv4Addr) -> IpAddr {
    a.into()
}

fn v6(a: std::net::Ipv6Addr) -> IpAddr {
    a.into()
}

/// TCP, UDP and ping in both families, masqueraded and kept, from both pods.
pub fn tcp_udp_ping_in_both_families(datapath: Datapath) -> Result<()> {
    let bed = dual_ready(datapath)?;
    assert_eq!(bed.source_of(addr::INTERNET)?, v4(addr::NODE));
    assert_eq!(bed.source_of(addr6::INTERNET)?, v6(addr6::NODE));
    assert_eq!(bed.source_of(addr::PRIVATE)?, v4(addr::POD));
    assert_eq!(bed.source_of(addr6::PRIVATE)?, v6(addr6::POD));
    let pod2 = &bed.topology.pod2;
    assert_eq!(bed.source_from(pod2, addr6::INTERNET)?, v6(addr6::NODE));
    assert_eq!(bed.source_from(pod2, addr6::PRIVATE)?, v6(addr6::POD2));
    if datapath == Datapath::Ebpf {
        // The IPv6 flows are in `masq nat list` and in the metrics.
        let out = bed.masq_with_pins(&["nat", "list", "-o", "json"])?;
        ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let v6_rows: Vec<_> = rows
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["family"] == "ipv6")
            .collect();
        let wanted = format!("[{}]:", addr6::NODE);
        assert!(
            v6_rows
                .iter()
                .any(|r| r["translated"].as_str().unwrap_or("").starts_with(&wanted)),
            "{rows:#}"
        );
        assert!(
            v6_rows.iter().any(|r| r["protocol"] == "ICMPv6"),
            "{rows:#}"
        );
        let metrics = bed.metrics()?;
        let v6_entries = metric_with(
            &metrics,
            "masq_ebpf_nat_entries_by_family",
            "family=\"ipv6\",direction=\"egress\"",
        );
        assert!(v6_entries.unwrap_or(0.0) >= 3.0, "{metrics}");
    }
    Ok(())
}

/// A client on the internet side reaches the pod's IPv6 address over UDP and TCP: the pod's
/// answers keep its address and port (the client's sockets take no other), and the pod sees
/// the client's own address. The client's address is a masqueraded destination: the pod's own
/// flow there leaves translated.
pub fn an_inbound_ipv6_flow_keeps_the_pod_address(datapath: Datapath) -> Result<()> {
    let bed = dual_ready(datapath)?;
    let pod = &bed.topology.pod;
    let udp_server = SocketAddr::new(v6(addr6::POD), 5353);
    let tcp_server = SocketAddr::new(v6(addr6::POD), 8081);
    let _udp = UdpEchoServer::start(pod, &[udp_server])?;
    let _tcp = TcpEchoServer::start(pod, &[tcp_server])?;
    let client = SocketAddr::new(v6(addr6::INTERNET), 0);
    let external = &bed.topology.external;
    assert_eq!(
        udp_source_from(external, client, udp_server)?,
        v6(addr6::INTERNET),
        "UDP: the pod sees the client"
    );
    let mut session = TcpSession::connect_from(external, client, tcp_server)?;
    assert_eq!(session.observed_source()?.ip(), v6(addr6::INTERNET));
    // The counterfactual: the pod's own flow to that address is masqueraded.
    assert_eq!(bed.source_of(addr6::INTERNET)?, v6(addr6::NODE));
    Ok(())
}

/// Both families beside a CNI's program (issue 17 with issue 13's item 5): a CNI-like program
/// that ends the chain with `TC_ACT_OK` sits first on both hooks of the uplink before the agent
/// starts. Pod flows of both families still leave masqueraded, an inbound IPv6 flow keeps the
/// pod's address, and the CNI's program saw the traffic in both directions.
pub fn both_families_beside_a_cni_program(datapath: Datapath) -> Result<()> {
    use aya::programs::TcAttachType::{Egress, Ingress};

    let mut bed = dual_bed(datapath, Topology::builder())?;
    let cni = attach_cni(&bed.topology.node, true)?;
    bed.start_agent()?;
    bed.wait_ready()?;
    let (egress, ingress) = (cni.packets(Egress)?, cni.packets(Ingress)?);
    assert_eq!(bed.source_of(addr6::INTERNET)?, v6(addr6::NODE), "IPv6");
    assert_eq!(bed.source_of(addr::INTERNET)?, v4(addr::NODE), "IPv4");
    let server = SocketAddr::new(v6(addr6::POD), 5353);
    let _udp = UdpEchoServer::start(&bed.topology.pod, &[server])?;
    let client = SocketAddr::new(v6(addr6::INTERNET), 0);
    assert_eq!(
        udp_source_from(&bed.topology.external, client, server)?,
        v6(addr6::INTERNET),
        "an inbound IPv6 flow: the pod sees the client"
    );
    ensure!(
        cni.packets(Egress)? > egress && cni.packets(Ingress)? > ingress,
        "the CNI's program saw nothing"
    );
    Ok(())
}

/// `kill -9` and a restart under an open IPv6 connection: it keeps its translation, new IPv6
/// connections are masqueraded at every moment. The connection's source port (1234) lies
/// outside `--port-range`, so the translation changes it: a table lost in the restart would
/// show as another port.
pub fn kill9_and_restart_under_an_ipv6_connection(datapath: Datapath) -> Result<()> {
    let mut bed = dual_bed(datapath, Topology::builder())?;
    bed.agent_args
        .extend(["--port-range".to_string(), "40000-40999".to_string()]);
    bed.start_agent()?;
    bed.wait_ready()?;
    let server = bed.probes.tcp_addr(v6(addr6::INTERNET));
    let local = SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), 1234);
    let mut session = TcpSession::connect_from(&bed.topology.pod, local, server)?;
    let before = session.observed_source()?;
    assert_eq!(before.ip(), v6(addr6::NODE));
    assert!((40000..=40999).contains(&before.port()), "{before}");
    let seen = bed.kill9_and_restart_while_probing(server)?;
    let node = Ok(v6(addr6::NODE));
    assert!(
        !seen.is_empty() && seen.iter().all(|s| *s == node),
        "new IPv6 connections during the restart saw: {seen:?}"
    );
    assert_eq!(
        session.observed_source()?,
        before,
        "the open connection changed"
    );
    assert_eq!(bed.source_of(addr6::INTERNET)?, v6(addr6::NODE));
    Ok(())
}

/// The SNAT address is the interface's primary global address, never a deprecated one, and
/// follows the addresses as they change: a newer deprecated address (listed first by the
/// kernel) is passed over; when the primary is deprecated in turn, new flows take the fresh
/// address, within a few seconds.
pub fn the_snat_address_follows_the_address_flags(datapath: Datapath) -> Result<()> {
    let mut bed = dual_bed(datapath, Topology::builder())?;
    let node = &bed.topology.node;
    let deprecated = "fd00:172:30::99";
    node.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{deprecated}/64"),
        "dev",
        "eth0",
        "nodad",
        "preferred_lft",
        "0",
    ])?;
    bed.start_agent()?;
    bed.wait_ready()?;
    assert_eq!(bed.source_of(addr6::INTERNET)?, v6(addr6::NODE));

    let fresh = "fd00:172:30::7";
    let node = &bed.topology.node;
    node.ip(&[
        "-6",
        "addr",
        "change",
        &format!("{}/64", addr6::NODE),
        "dev",
        "eth0",
        "nodad",
        "preferred_lft",
        "0",
    ])?;
    node.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{fresh}/64"),
        "dev",
        "eth0",
        "nodad",
    ])?;
    let server = bed.probes.tcp_addr(v6(addr6::INTERNET));
    wait_for_source(
        &bed.topology.pod,
        server,
        fresh.parse()?,
        Duration::from_secs(10),
    )
    .map_err(|e| bed.with_log(e))?;
    assert_eq!(
        tcp_source(&bed.topology.pod, server)?,
        fresh.parse::<IpAddr>()?
    );
    Ok(())
}

/// `masq cleanup` removes both families' rules (ip6tables included) and programs; IPv6 then
/// leaves with the pod's address again.
pub fn cleanup_removes_both_families(datapath: Datapath) -> Result<()> {
    let mut bed = dual_ready(datapath)?;
    assert_eq!(bed.source_of(addr6::INTERNET)?, v6(addr6::NODE));
    bed.take_agent().terminate()?;
    let out = bed.masq_with_pins(&["cleanup"])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let installed = bed.installed()?;
    assert!(installed.nothing(), "{installed:?}");
    if let Some(backend) = datapath.iptables_backend() {
        let save = run_ok_stdout(
            &bed.topology.node,
            &format!("ip6tables-{backend}-save"),
            &[],
        )?;
        assert!(!save.contains("IP-MASQ"), "{save}");
    }
    assert_eq!(bed.source_of(addr6::INTERNET)?, v6(addr6::POD));
    assert_eq!(bed.source_of(addr::INTERNET)?, v4(addr::POD));
    Ok(())
}

/// `--datapath auto --enable-ipv6` stays on eBPF (it used to take nftables) and masquerades
/// both families.
pub fn auto_stays_on_ebpf_with_ipv6(datapath: Datapath) -> Result<()> {
    let mut bed = dual_bed(datapath, Topology::builder())?;
    bed.datapath_flag = "auto";
    bed.start_agent()?;
    bed.wait_ready()?;
    let status = bed.status()?;
    assert_eq!(status.datapath, "ebpf", "{status:?}");
    assert_eq!(bed.source_of(addr6::INTERNET)?, v6(addr6::NODE));
    assert_eq!(bed.source_of(addr::INTERNET)?, v4(addr::NODE));
    Ok(())
}

/// One `#[test]` per scenario × datapath, named `dual_stack::<datapath>::<scenario>`.
macro_rules! dual_stack_tests {
    ($module:ident, $datapath:expr) => {
        mod $module {
            use super::*;
            use crate::node_mix_scenarios::services::Proxy;

            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn tcp_udp_ping_in_both_families() {
                run($datapath, super::tcp_udp_ping_in_both_families)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn path_mtu_through_the_masquerade() {
                run($datapath, pmtu::path_mtu_through_the_masquerade)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn an_inbound_ipv6_flow_keeps_the_pod_address() {
                run($datapath, super::an_inbound_ipv6_flow_keeps_the_pod_address)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn kill9_and_restart_under_an_ipv6_connection() {
                run($datapath, super::kill9_and_restart_under_an_ipv6_connection)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn the_snat_address_follows_the_address_flags() {
                run($datapath, super::the_snat_address_follows_the_address_flags)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn both_families_beside_a_cni_program() {
                run($datapath, super::both_families_beside_a_cni_program)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn cleanup_removes_both_families() {
                run($datapath, super::cleanup_removes_both_families)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn kube_proxy_iptables_ipv6_cluster_ips() {
                run($datapath, kube_proxy6::iptables_mode)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn kube_proxy_nftables_ipv6_cluster_ips() {
                run($datapath, kube_proxy6::nftables_mode)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn kube_proxy_iptables_ipv6_node_port_with_local_policy() {
                run($datapath, |d| {
                    services6::node_port_with_local_policy(d, Proxy::Iptables)
                })
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn kube_proxy_nftables_ipv6_node_port_with_local_policy() {
                run($datapath, |d| {
                    services6::node_port_with_local_policy(d, Proxy::Nftables)
                })
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn kube_proxy_iptables_ipv6_node_port_with_cluster_policy() {
                run($datapath, |d| {
                    services6::node_port_with_cluster_policy(d, Proxy::Iptables)
                })
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn kube_proxy_nftables_ipv6_node_port_with_cluster_policy() {
                run($datapath, |d| {
                    services6::node_port_with_cluster_policy(d, Proxy::Nftables)
                })
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn portmap_ipv6_host_port() {
                run($datapath, services6::host_port)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn ipv6_udp_node_port_bound_before_the_pod_sends() {
                run(
                    $datapath,
                    host_flows6::udp_node_port_bound_before_the_pod_sends,
                )
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn ipv6_udp_pod_first_then_the_node() {
                run($datapath, host_flows6::udp_pod_first_then_the_node)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn ipv6_udp_node_first_then_the_pod() {
                run($datapath, host_flows6::udp_node_first_then_the_pod)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn ipv6_udp_node_address_in_non_masquerade_src() {
                run(
                    $datapath,
                    host_flows6::udp_node_address_in_non_masquerade_src,
                )
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn ipv6_tcp_node_first_then_the_pod() {
                run($datapath, host_flows6::tcp_node_first_then_the_pod)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn ipv6_tcp_pod_first_then_the_node() {
                run($datapath, host_flows6::tcp_pod_first_then_the_node)
            }
        }
    };
}

dual_stack_tests!(nftables, Datapath::Nftables);
dual_stack_tests!(iptables_nft, Datapath::IptablesNft);
dual_stack_tests!(iptables_legacy, Datapath::IptablesLegacy);
dual_stack_tests!(ebpf, Datapath::Ebpf);

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn ebpf_auto_stays_on_ebpf_with_ipv6() {
    run(Datapath::Ebpf, auto_stays_on_ebpf_with_ipv6)
}
