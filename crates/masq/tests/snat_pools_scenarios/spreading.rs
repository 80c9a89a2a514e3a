//! How each pod's flows spread over a pool of two IPv4 addresses, at the far side: two pods
//! with 1,000 UDP flows each, each pod on its own address (the one `masq explain` names) and no
//! reserved port taken; and (eBPF only) issue 16's acceptance test, one pod's 2,001 flows
//! falling over to the next address once its own is full.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use masq_testbed::kube::{portmap, restore, Protocol};
use masq_testbed::probe::TcpSession;
use masq_testbed::{addr, LeakWatch, Netns};

use crate::harness::{metric, metric_series, Bed, Datapath};
use crate::{agent_args, node_flow, pod_address_on, pool, second_pod_address};
use crate::{FIRST_PORT, FLOWS, HOST_PORT, LAST_PORT, NODE_SERVICE_PORT, SECOND};

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
