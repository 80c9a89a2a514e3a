//! Issue 16 end to end: the real `masq agent` with a pool of two SNAT addresses (the node's
//! uplink carries a second one), a port range, a hostPort and a node service inside that range.
//!
//! What every datapath does, checked at the far side: each pod's flows all leave with the one
//! address `jhash` of its address picks (the address `masq explain` names), the two pods'
//! addresses differ, 1,000 UDP flows from each pod fill their address's 1,000 free ports with
//! 2,000 distinct (address, port) pairs, and the hostPort and the node's listening port are
//! never a translated source port. What only eBPF does (netfilter cannot, docs/snat-pools.md):
//! the "2,000 flows from one pod", the pod's flows falling over to the next address
//! once its own is full, flow 2,001 dropped and counted without leaking the pod's address,
//! and the node's own flow from the second address left alone meanwhile. [`real_node`] puts
//! the pool beside kube-proxy, portmap, flows from outside, the node's own flows and (eBPF) a
//! CNI's TCX program, all in one bed; [`ipv6`] spreads two pods over a pool of IPv6 addresses.
//!
//! Every scenario runs once per datapath, in its own namespaces, between two read-only looks
//! at the root namespace.
//!
//! The scenarios are in `snat_pools_scenarios/`: [`spreading`] (eBPF's fall-over included),
//! [`pool_flags`], [`real_node`] and [`ipv6`]. This file holds the bed's addresses and ports,
//! the helpers the scenarios share, and the tests.

#[allow(dead_code, unused_imports)]
mod harness;
#[path = "snat_pools_scenarios/ipv6.rs"]
mod ipv6;
#[path = "snat_pools_scenarios/pool_flags.rs"]
mod pool_flags;
#[path = "snat_pools_scenarios/real_node.rs"]
mod real_node;
#[path = "snat_pools_scenarios/spreading.rs"]
mod spreading;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use harness::Bed;
use masq_datapath::pool;
use masq_testbed::{addr, Netns};

/// The node's second uplink address, the pool's second entry.
const SECOND: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 3);
/// `--port-range`: 1,002 ports, of which the two below are reserved: 1,000 left per address.
const FIRST_PORT: u16 = 40000;
const LAST_PORT: u16 = 41001;
/// A hostPort inside the range (portmap's DNAT rules).
const HOST_PORT: u16 = 40500;
/// A port a node service listens on inside the range (a UDP socket of the node).
const NODE_SERVICE_PORT: u16 = 40250;
/// UDP flows per pod.
const FLOWS: u16 = 1000;

/// The pool, in `--snat-ip` order.
fn pool() -> Vec<IpAddr> {
    vec![addr::NODE.into(), SECOND.into()]
}

/// An address for the second pod that the pool hash sends to the other address than the first
/// pod's (10.244.1.2 and .3 happen to share one): added to the second pod, and made the
/// source of its default route.
fn second_pod_address(pod2: &Netns) -> Result<Ipv4Addr> {
    pod_address_on(pod2, 1 - pool::index_for(addr::POD.into(), 2))
}

/// An address for the second pod whose own address is the pool's entry `index`, set up as
/// [`second_pod_address`] says.
fn pod_address_on(pod2: &Netns, index: usize) -> Result<Ipv4Addr> {
    let chosen = (4..=250u8)
        .map(|host| Ipv4Addr::new(10, 244, 1, host))
        .find(|a| pool::index_for((*a).into(), 2) == index)
        .context("no address of 10.244.1.0/24 hashes to that address")?;
    pod2.ip(&["addr", "add", &format!("{chosen}/24"), "dev", "eth0"])?;
    let gateway = addr::POD_GATEWAY.to_string();
    let src = chosen.to_string();
    pod2.ip(&["route", "replace", "default", "via", &gateway, "src", &src])?;
    Ok(chosen)
}

/// `--snat-ip` for each address of [`pool`].
fn pool_args() -> Vec<String> {
    pool()
        .iter()
        .flat_map(|ip| ["--snat-ip".to_string(), ip.to_string()])
        .collect()
}

/// [`pool_args`] and the port range.
fn agent_args() -> Vec<String> {
    let mut args = pool_args();
    args.extend([
        "--port-range".to_string(),
        format!("{FIRST_PORT}-{LAST_PORT}"),
    ]);
    args
}

/// A flow of the node itself from `local` to `server`: the source the server saw.
fn node_flow(bed: &Bed, local: SocketAddr, server: SocketAddr) -> Result<SocketAddr> {
    bed.topology.node.enter(|| -> Result<SocketAddr> {
        let socket = UdpSocket::bind(local)?;
        socket.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut buf = [0u8; 128];
        // Bounded: three tries, for a datagram lost on the way.
        for _ in 0..3 {
            socket.send_to(b"who am i\n", server)?;
            if let Ok(n) = socket.recv(&mut buf) {
                return Ok(String::from_utf8_lossy(&buf[..n]).trim().parse()?);
            }
        }
        anyhow::bail!("the node's flow from {local} got no answer")
    })?
}

/// `masq agent` on the bed's config and datapath with `args`: exit 1, `line` among its error
/// lines, nothing installed.
fn refused_at_start(bed: &Bed, args: &[String], line: &str) -> Result<()> {
    let config = bed.config.config_path().to_string_lossy().into_owned();
    let mut all = vec![
        "agent",
        "--config",
        &config,
        "--datapath",
        bed.datapath.flag(),
    ];
    all.extend(args.iter().map(String::as_str));
    let out = bed.masq(&all)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(1),
        "exit {:?}: {stderr}",
        out.status
    );
    ensure!(stderr.lines().any(|l| l == line), "{stderr}");
    ensure!(bed.installed()?.nothing(), "it installed something");
    Ok(())
}

/// One `#[test]` per scenario × datapath, named `<datapath>::<scenario>`.
macro_rules! tests_for {
    ($module:ident, $datapath:expr) => {
        mod $module {
            use super::harness::{run, Datapath};

            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn two_pods_spread_over_the_pool() {
                run($datapath, super::spreading::two_pods_spread_over_the_pool)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn an_address_not_on_the_node_is_refused() {
                run(
                    $datapath,
                    super::pool_flags::an_address_not_on_the_node_is_refused,
                )
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn the_pool_follows_the_interface() {
                run($datapath, super::pool_flags::the_pool_follows_the_interface)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn the_pool_on_a_real_node() {
                run($datapath, super::real_node::the_pool_on_a_real_node)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn ipv6_pods_spread_over_an_ipv6_pool() {
                run($datapath, super::ipv6::ipv6_pods_spread_over_an_ipv6_pool)
            }
        }
    };
}

tests_for!(nftables, Datapath::Nftables);
tests_for!(iptables_nft, Datapath::IptablesNft);
tests_for!(iptables_legacy, Datapath::IptablesLegacy);
tests_for!(ebpf, Datapath::Ebpf);

/// The IPv6 pool on a real node, where a pool of IPv6 addresses spreads pods (not iptables).
mod ipv6_spreading {
    use super::harness::{run, Datapath};

    #[test]
    #[cfg_attr(masq_unprivileged, ignore = "needs root")]
    fn nftables_an_ipv6_pool_on_a_real_node() {
        run(
            Datapath::Nftables,
            super::real_node::an_ipv6_pool_on_a_real_node,
        )
    }
    #[test]
    #[cfg_attr(masq_unprivileged, ignore = "needs root")]
    fn ebpf_an_ipv6_pool_on_a_real_node() {
        run(
            Datapath::Ebpf,
            super::real_node::an_ipv6_pool_on_a_real_node,
        )
    }
}

/// What only the eBPF datapath does.
mod ebpf_only {
    use super::harness::{run, Datapath};

    #[test]
    #[cfg_attr(masq_unprivileged, ignore = "needs root")]
    fn one_pod_falls_over_to_the_next_address() {
        run(
            Datapath::Ebpf,
            super::spreading::one_pod_falls_over_to_the_next_address,
        )
    }
}
