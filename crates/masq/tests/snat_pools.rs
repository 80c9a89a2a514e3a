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

#[allow(dead_code, unused_imports)]
mod harness;
#[path = "snat_pools_scenarios/ipv6.rs"]
mod ipv6;
#[path = "snat_pools_scenarios/real_node.rs"]
mod real_node;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use harness::{metric, metric_series, run_ok, Bed, Datapath};
use masq_datapath::pool;
use masq_testbed::kube::{portmap, restore, Protocol};
use masq_testbed::probe::TcpSession;
use masq_testbed::{addr, LeakWatch, Netns};

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

/// The node as issue 16's test wants it: a second address on the uplink, portmap's hostPort
/// rules in the iptables backend the node uses, a node service listening (kept open while the
/// returned socket lives).
fn prepare_node(bed: &Bed) -> Result<UdpSocket> {
    let node = &bed.topology.node;
    node.ip(&["addr", "add", &format!("{SECOND}/24"), "dev", "eth0"])?;
    let backend = bed.datapath.iptables_backend().unwrap_or("nft");
    let host_port = portmap::HostPort {
        protocol: Protocol::Udp,
        host_port: HOST_PORT,
        container: std::net::SocketAddr::new(addr::POD.into(), 8080),
        container_prefix: 24,
    };
    restore(
        node,
        backend,
        &portmap::ruleset("cbr0", "pools", &[host_port]),
    )?;
    let service = node.enter(|| UdpSocket::bind(("0.0.0.0", NODE_SERVICE_PORT)))??;
    Ok(service)
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

/// `flows` UDP flows from `src` (ports 20000 and up) in `ns` to `server`, asked again on the
/// sockets without an answer until `answers` of them have one, for up to a minute (netfilter
/// gives up on a flow whose port search fails, and the next packet searches again), and asked
/// again on the answered ones too, which keeps their conntrack or NAT entries alive; returns
/// the translation each flow was answered with, by flow, and fails if one changed.
fn udp_flows(
    ns: &Netns,
    src: Ipv4Addr,
    server: SocketAddr,
    flows: u16,
    answers: usize,
) -> Result<BTreeMap<u16, SocketAddr>> {
    ns.enter(|| -> Result<BTreeMap<u16, SocketAddr>> {
        let sockets = (0..flows)
            .map(|i| {
                let s = UdpSocket::bind((src, 20000 + i))?;
                s.set_nonblocking(true)?;
                Ok((20000 + i, s))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        let mut seen: BTreeMap<u16, SocketAddr> = BTreeMap::new();
        let mut buf = [0u8; 128];
        let started = Instant::now();
        // Bounded: 150 rounds or a minute, whichever comes first.
        for _round in 0..150 {
            for (port, s) in &sockets {
                let _ = s.send_to(b"who am i\n", server);
                if !seen.contains_key(port) {
                    std::thread::sleep(Duration::from_micros(30));
                }
            }
            std::thread::sleep(Duration::from_millis(200));
            for (port, s) in &sockets {
                while let Ok(n) = s.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]);
                    let translation: SocketAddr = text.trim().parse()?;
                    if let Some(before) = seen.insert(*port, translation) {
                        ensure!(
                            before == translation,
                            "flow {src}:{port} changed its translation from {before} to {translation}"
                        );
                    }
                }
            }
            if seen.len() >= answers || started.elapsed() > Duration::from_secs(60) {
                break;
            }
        }
        Ok(seen)
    })?
}

/// Two pods, 1,000 UDP flows each, through a pool of two addresses and a 1,002-port range with
/// two ports reserved: every flow answered, each pod's flows all with its own address (the one
/// `pool::address_for` and `masq explain` name, different for the two pods), 2,000 distinct
/// (address, port) pairs, none on the hostPort or the node service's port. TCP connections
/// from each pod leave with the same address, and `masq status` shows the pool and the
/// reserved ports.
pub fn two_pods_spread_over_the_pool(datapath: Datapath) -> Result<()> {
    let mut bed = Bed::new(datapath, Some("nonMasqueradeCIDRs: [10.0.0.0/8]\n"))?;
    let _service = prepare_node(&bed)?;
    let second_pod = second_pod_address(&bed.topology.pod2)?;
    bed.agent_args = agent_args();
    bed.start_agent()?;
    bed.wait_ready()?;

    let status = bed.status()?;
    let snat = status.snat.context("no snat in /status")?;
    ensure!(
        snat.pools[0].addresses == ["172.30.0.1", "172.30.0.3"],
        "{snat:?}"
    );
    ensure!(
        snat.reserved_ports == [NODE_SERVICE_PORT, HOST_PORT],
        "the agent did not find both reserved ports: {snat:?}"
    );
    ensure!(snat.ports == 1000, "{snat:?}");

    let server = SocketAddr::new(addr::INTERNET.into(), bed.probes.port());
    let pods = [
        (&bed.topology.pod, addr::POD),
        (&bed.topology.pod2, second_pod),
    ];
    let mut pairs = BTreeSet::new();
    let mut addresses = Vec::new();
    for (ns, src) in pods {
        let want = pool::address_for(&pool(), src.into()).expect("a pool");
        let explained = explained_address(&bed, src)?;
        ensure!(
            explained == want,
            "masq explain says {explained}, the pool hash {want}"
        );
        let seen =
            udp_flows(ns, src, server, FLOWS, usize::from(FLOWS)).map_err(|e| bed.with_log(e))?;
        ensure!(
            seen.len() == usize::from(FLOWS),
            "{src}: {} of {FLOWS} flows answered",
            seen.len()
        );
        for translation in seen.values() {
            ensure!(
                translation.ip() == want,
                "{src}: a flow left with {translation}, the pod's address is {want}"
            );
            ensure!(
                (FIRST_PORT..=LAST_PORT).contains(&translation.port()),
                "{src}: {translation} is outside --port-range"
            );
            ensure!(
                translation.port() != HOST_PORT && translation.port() != NODE_SERVICE_PORT,
                "{src}: {translation} took a reserved port"
            );
            pairs.insert(*translation);
        }
        // A TCP connection of the same pod: the same address.
        let mut session = TcpSession::connect(ns, bed.probes.tcp_addr(addr::INTERNET.into()))?;
        let tcp = session.observed_source()?;
        ensure!(tcp.ip() == want, "{src}: TCP left with {tcp}, not {want}");
        addresses.push(want);
    }
    ensure!(
        addresses[0] != addresses[1],
        "both pods took {}",
        addresses[0]
    );
    ensure!(
        pairs.len() == 2 * usize::from(FLOWS),
        "{} distinct (address, port) pairs at the far side",
        pairs.len()
    );
    Ok(())
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

/// eBPF only, issue 16's acceptance test: 2,001 UDP flows from ONE pod to ONE destination
/// through two addresses of 1,000 free ports each (the range holds 1,002, a hostPort and a node
/// service take two). The pod's own address is the pool's second (so a datapath that used the
/// first address, or a random one, shows). A TCP connection opened before, and the first 1,000
/// flows, take the pod's own address (the one `masq explain` names) and fill it; the next 1,000
/// fall over to the other address: 2,000 distinct
/// (address, port) pairs at the far side, none on a reserved port. Flow 2,001 gets no answer:
/// dropped at every try and counted (one fall-over and one allocation failure per try, so the
/// fall-overs are exactly 1,000 more than the failures: no flow left the pod's own address
/// while it had room), and the leak watch at the far side sees no packet with the pod's
/// address. Meanwhile the node's own flow from the second address leaves as itself, and the
/// saturation gauge shows both addresses full.
pub fn one_pod_falls_over_to_the_next_address(datapath: Datapath) -> Result<()> {
    let mut bed = Bed::new(datapath, Some("nonMasqueradeCIDRs: [10.0.0.0/8]\n"))?;
    let _service = prepare_node(&bed)?;
    bed.agent_args = agent_args();
    bed.start_agent()?;
    bed.wait_ready()?;
    let snat = bed.status()?.snat.context("no snat in /status")?;
    ensure!(
        snat.ports == 1000 && snat.reserved_ports == [NODE_SERVICE_PORT, HOST_PORT],
        "{snat:?}"
    );
    let watch = LeakWatch::start(
        &bed.topology.external,
        addr::POD_CIDR,
        &[addr::INTERNET.into()],
    )?;
    let server = SocketAddr::new(addr::INTERNET.into(), bed.probes.port());
    let pod = &bed.topology.pod2;
    let src = pod_address_on(pod, 1)?;
    let (own, other) = (pool()[1], pool()[0]);
    ensure!(
        explained_address(&bed, src)? == own,
        "masq explain disagrees"
    );
    let mut session = TcpSession::connect(pod, bed.probes.tcp_addr(addr::INTERNET.into()))?;
    let before = session.observed_source()?.ip();
    ensure!(
        before == own,
        "the pod's TCP connection left with {before}, not {own}"
    );
    // Outside the range: the node's flow reserves no port the pods need.
    let node_local = SocketAddr::new(SECOND.into(), 50000);
    ensure!(node_flow(&bed, node_local, server)? == node_local);

    let seen = udp_flows(pod, src, server, 2 * FLOWS + 1, 2000).map_err(|e| bed.with_log(e))?;
    ensure!(seen.len() == 2000, "{} of 2,000 flows answered", seen.len());
    let pairs: BTreeSet<SocketAddr> = seen.values().copied().collect();
    ensure!(pairs.len() == 2000, "{} distinct pairs", pairs.len());
    for translation in &pairs {
        let port = translation.port();
        ensure!(
            (FIRST_PORT..=LAST_PORT).contains(&port)
                && port != HOST_PORT
                && port != NODE_SERVICE_PORT,
            "{translation}: outside the range or on a reserved port"
        );
    }
    // Sent one after the other: the first 500 are surely among the first 1,000 to arrive.
    let early: Vec<&SocketAddr> = seen.range(..20500).map(|(_, t)| t).collect();
    ensure!(
        early.iter().all(|t| t.ip() == own),
        "an early flow left its own address while it had room: {:?}",
        early.iter().find(|t| t.ip() != own)
    );
    let on = |a: IpAddr| pairs.iter().filter(|p| p.ip() == a).count();
    ensure!(
        on(own) == 1000 && on(other) == 1000,
        "{} flows on the pod's own address {own}, {} on {other}",
        on(own),
        on(other)
    );
    ensure!(
        node_flow(&bed, node_local, server)? == node_local,
        "the node's flow moved"
    );

    let metrics = bed.metrics()?;
    let failures = metric(&metrics, "masq_ebpf_port_allocation_failures_total").unwrap_or(0.0);
    let fallovers = metric(&metrics, "masq_ebpf_snat_fallovers_total").unwrap_or(0.0);
    ensure!(failures >= 1.0, "flow 2,001 was not counted: {failures}");
    ensure!(
        fallovers - failures == 1000.0,
        "{fallovers} fall-overs for {failures} refused tries: flows left their own address \
         early, or were not counted"
    );
    let saturation = metric_series(&metrics, "masq_ebpf_port_pool_saturation", "");
    ensure!(
        saturation == [1.0, 1.0],
        "saturation by address: {saturation:?}"
    );
    let leaked = watch.packets()?;
    ensure!(leaked == 0, "{leaked} packets left with the pod's address");
    let after = session.observed_source()?.ip();
    ensure!(after == own, "the pod's TCP connection moved to {after}");
    Ok(())
}

/// The address `masq explain --src SRC` names for the pool, run in the node namespace.
fn explained_address(bed: &Bed, src: Ipv4Addr) -> Result<IpAddr> {
    let mut args = vec!["explain".to_string(), "-o".into(), "json".into()];
    args.extend(agent_args());
    args.extend(["--src".into(), src.to_string(), addr::INTERNET.to_string()]);
    let config = bed.config.config_path();
    args.extend(["--config".into(), config.to_string_lossy().into_owned()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = bed.masq(&args)?;
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| String::from_utf8_lossy(&out.stderr).into_owned())?;
    answer[0]["snat_ip"]
        .as_str()
        .context("no snat_ip")?
        .parse()
        .context("snat_ip")
}

/// A `--snat-ip` the node does not have: the agent refuses to start, exit 1, one line naming
/// the flag and the value.
pub fn an_address_not_on_the_node_is_refused(datapath: Datapath) -> Result<()> {
    let bed = Bed::new(datapath, None)?;
    let args = ["--snat-ip", "172.30.0.1", "--snat-ip", "172.30.0.99"].map(String::from);
    refused_at_start(
        &bed,
        &args,
        "masq: --snat-ip: \"172.30.0.99\" is not an address of this node (add it to an \
         interface, or leave it out)",
    )
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

/// `--snat-ips-from-interface`: an address added to the egress interface while the agent runs
/// joins the pool, and the pod the hash sends to it moves there.
pub fn the_pool_follows_the_interface(datapath: Datapath) -> Result<()> {
    let mut bed = Bed::new(datapath, Some("nonMasqueradeCIDRs: [10.0.0.0/8]\n"))?;
    let second_pod = second_pod_address(&bed.topology.pod2)?;
    bed.agent_args = vec!["--snat-ips-from-interface".into()];
    bed.start_agent()?;
    bed.wait_ready()?;
    let server = bed.probes.tcp_addr(addr::INTERNET.into());
    let pods = [
        (&bed.topology.pod, IpAddr::from(addr::POD)),
        (&bed.topology.pod2, IpAddr::from(second_pod)),
    ];
    for (ns, _) in pods {
        let seen = masq_testbed::probe::tcp_source(ns, server)?;
        ensure!(
            seen == IpAddr::from(addr::NODE),
            "one address: the pool is the uplink's, not {seen}"
        );
    }
    run_ok(
        &bed.topology.node,
        "ip",
        &["addr", "add", &format!("{SECOND}/24"), "dev", "eth0"],
    )?;
    // The two pods hash to different addresses: one of them moves to the new one.
    for (ns, src) in pods {
        let want = pool::address_for(&pool(), src).expect("a pool");
        harness::wait_for_source(ns, server, want, Duration::from_secs(5))
            .map_err(|e| bed.with_log(e))?;
    }
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
                run($datapath, super::two_pods_spread_over_the_pool)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn an_address_not_on_the_node_is_refused() {
                run($datapath, super::an_address_not_on_the_node_is_refused)
            }
            #[test]
            #[cfg_attr(masq_unprivileged, ignore = "needs root")]
            fn the_pool_follows_the_interface() {
                run($datapath, super::the_pool_follows_the_interface)
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
            super::one_pod_falls_over_to_the_next_address,
        )
    }
}
