//! One data-plane sample: a fresh topology, one setup installed with N non-masquerade CIDRs
//! (none of which covers the destination, so every new flow walks them all and is
//! masqueraded), then new TCP connections/s, new UDP flows/s, one-stream throughput and
//! request/response latency from the pod to the "internet" host.
//!
//! A fresh topology per sample means a fresh conntrack table: no sample inherits the entries of
//! the previous one.
//!
//! A sample is of one address family: IPv6 samples run the same load over the dual-stack
//! topology, to 2001:db8::10, with IPv6 non-masquerade CIDRs ([`Family`]).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::clients::{self, Burst, BurstResult, Latency};
use crate::family::Family;
use crate::pin::Plan;
use crate::procfs;
use crate::servers::Server;
use crate::setups::{self, Env, Setup};
use crate::throughput;

/// Server ports of the load (several, so that source ports never repeat a 5-tuple).
pub const LOAD_PORTS: [u16; 8] = [9100, 9101, 9102, 9103, 9104, 9105, 9106, 9107];

/// How much load each sample applies.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Load {
    /// Client threads for the connection and flow bursts.
    pub threads: usize,
    /// Most connections (or flows) per burst.
    pub max_flows: u64,
    /// Longest burst, seconds.
    pub burst_seconds: f64,
    /// iperf3 duration, seconds.
    pub stream_seconds: u32,
    /// Timed round trips of the latency test.
    pub round_trips: usize,
}

/// What one sample measured.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    /// The setup's name.
    pub setup: String,
    /// The address family of the traffic: `ipv4` or `ipv6`.
    pub family: String,
    /// Non-masquerade CIDRs installed (0 for no-nat), of that family.
    pub cidrs: usize,
    /// Round number, from 1.
    pub round: usize,
    /// Time to install the setup (agent start to ready, or the rules loaded), seconds.
    pub install_seconds: f64,
    /// How the setup was installed: `agent`, `rules` (peers) or `library` (a masq datapath set
    /// too big for the agent's 1 MiB config file, installed without the agent).
    pub installed_by: String,
    /// The source address the external side saw before the load.
    pub observed_source: String,
    /// New TCP connections (connect, one byte each way, reset).
    pub tcp: BurstResult,
    /// New UDP flows (one datagram each way, fresh source port).
    pub udp: BurstResult,
    /// One TCP stream, Gbit/s.
    pub throughput_gbps: f64,
    /// One-byte request/response over one established connection.
    pub latency: Latency,
    /// What each load's server saw: connections with the node's and the pod's address.
    pub tcp_sources: (u64, u64, u64),
    /// The node's conntrack statistics after the sample (summed over CPUs): `clashres`,
    /// `insert_failed`, `drop`, `early_drop`; zeros when conntrack never ran (no-nat).
    pub conntrack: ConntrackStats,
    /// For the eBPF datapath: its packet counters and NAT table fill after the sample.
    pub ebpf: Option<EbpfStats>,
    /// With an agent: the CPU seconds it used during the TCP and the UDP burst (its GC passes,
    /// resyncs), on the CPU the servers share with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_cpu_seconds: Option<(f64, f64)>,
}

/// The eBPF datapath's own view of a sample, read from its pinned maps: where flows went
/// (translated, port retries, drops by reason) and how full the NAT table got.
#[derive(Clone, Debug, Serialize)]
pub struct EbpfStats {
    /// Packets per reason (metric labels), zeros left out.
    pub counters: std::collections::BTreeMap<String, u64>,
    /// Forward NAT halves at the end.
    pub egress_entries: u32,
    /// Reverse NAT halves at the end.
    pub ingress_entries: u32,
    /// Capacity of each NAT map.
    pub capacity: u32,
}

fn ebpf_stats(env: &Env) -> Result<EbpfStats> {
    let dir = env
        .bpf_pin_dir
        .as_ref()
        .map_err(|why| anyhow::anyhow!("no eBPF pin directory: {why}"))?;
    let ebpf = masq_datapath::ebpf::Ebpf::new(dir.clone());
    let counters = ebpf
        .counters()
        .context("reading the eBPF counters")?
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(reason, n)| (reason.label().to_string(), n))
        .collect();
    let pressure = ebpf.pressure().context("reading the eBPF NAT table fill")?;
    Ok(EbpfStats {
        counters,
        egress_entries: pressure.egress_entries,
        ingress_entries: pressure.ingress_entries,
        capacity: pressure.capacity,
    })
}

/// Counters of /proc/net/stat/nf_conntrack in one namespace.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct ConntrackStats {
    /// Clashes between concurrent new entries that conntrack resolved.
    pub clashres: u64,
    /// New entries that could not be inserted (their packet is dropped).
    pub insert_failed: u64,
    /// Packets dropped by conntrack.
    pub drop: u64,
    /// Entries evicted because the table was full.
    pub early_drop: u64,
}

/// Reads the conntrack statistics of `ns` (per-namespace counters, one line per CPU, in hex).
fn conntrack_stats(ns: &masq_testbed::Netns) -> Result<ConntrackStats> {
    let text = ns
        .enter(|| std::fs::read_to_string("/proc/thread-self/net/stat/nf_conntrack"))?
        .unwrap_or_default();
    Ok(parse_conntrack_stats(&text))
}

fn parse_conntrack_stats(text: &str) -> ConntrackStats {
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let column = |name: &str| header.iter().position(|h| *h == name);
    let rows: Vec<Vec<u64>> = lines
        .map(|l| {
            l.split_whitespace()
                .map(|v| u64::from_str_radix(v, 16).unwrap_or(0))
                .collect()
        })
        .collect();
    let sum = |name: &str| column(name).map_or(0, |i| rows.iter().filter_map(|r| r.get(i)).sum());
    ConntrackStats {
        clashres: sum("clashres"),
        insert_failed: sum("insert_failed"),
        drop: sum("drop"),
        early_drop: sum("early_drop"),
    }
}

/// Measures `setup` with `cidr_count` fillers, over `family`.
pub fn sample(
    env: &Env,
    plan: &Plan,
    load: &Load,
    setup: Setup,
    family: Family,
    cidr_count: usize,
    round: usize,
) -> Result<Sample> {
    let topology = family.topology()?;
    let internet = family.internet();
    let addrs: Vec<SocketAddr> = LOAD_PORTS
        .iter()
        .map(|&p| SocketAddr::new(internet, p))
        .collect();
    let tcp_server = Server::tcp(&topology.external, &addrs, plan.server)?;
    let udp_server = Server::udp(&topology.external, &addrs, plan.server)?;
    let fillers = family.fillers(cidr_count);
    let installed = setups::install(env, setup, &topology, family, &fillers)
        .with_context(|| format!("installing {} with {cidr_count} CIDRs", setup.name()))?;

    let seen = clients::observed_source(&topology.pod, addrs[0])?;
    let expected = setup.expected_source(family);
    if seen != expected {
        bail!(
            "{} with {cidr_count} {} CIDRs: the external side saw {seen}, expected {expected}",
            setup.name(),
            family.name()
        );
    }
    let burst = Burst {
        threads: load.threads,
        max_flows: load.max_flows,
        max_time: Duration::from_secs_f64(load.burst_seconds),
    };
    // Warm up caches, neighbours and the agent's idle state; not counted.
    let warmup = Burst {
        max_flows: 200,
        ..burst
    };
    clients::tcp_connections(
        &topology.pod,
        internet,
        &LOAD_PORTS[..1],
        warmup,
        plan.client,
    )?;

    // The connection burst starts after the warm-up's source ports: a distinct tuple space.
    let agent_pid = installed.agent.as_ref().map(|(agent, _)| agent.pid());
    let agent_cpu = || agent_pid.map(procfs::cpu_time).transpose();
    let before_tcp = agent_cpu()?;
    let tcp = clients::tcp_connections(
        &topology.pod,
        internet,
        &LOAD_PORTS[1..],
        burst,
        plan.client,
    )?;
    let before_udp = agent_cpu()?;
    let udp = clients::udp_flows(&topology.pod, internet, &LOAD_PORTS, burst, plan.client)?;
    let after_udp = agent_cpu()?;
    let agent_cpu_seconds = match (before_tcp, before_udp, after_udp) {
        (Some(a), Some(b), Some(c)) => Some((b.since(&a).own, c.since(&b).own)),
        _ => None,
    };
    let throughput_gbps = throughput::one_stream(
        &topology.pod,
        &topology.external,
        internet,
        load.stream_seconds,
        (plan.client, plan.server),
    )?;
    let latency = clients::latency(
        &topology.pod,
        addrs[0],
        load.round_trips / 10,
        load.round_trips,
        plan.client,
    )?;
    let mut tcp_sources = (0, 0, 0);
    for address in &addrs {
        let (node, pod, other) = tcp_server.counts(*address).expect("listening").snapshot();
        tcp_sources = (
            tcp_sources.0 + node,
            tcp_sources.1 + pod,
            tcp_sources.2 + other,
        );
    }
    let conntrack = conntrack_stats(&topology.node)?;
    drop(udp_server);
    drop(tcp_server);
    let install_seconds = installed.install_time.as_secs_f64();
    let installed_by = match (&installed.agent, installed.by_library) {
        (Some(_), _) => "agent",
        (None, true) => "library",
        (None, false) => "rules",
    }
    .to_string();
    let ebpf = setup.is_ebpf().then(|| ebpf_stats(env)).transpose()?;
    setups::uninstall(env, &topology, installed)?;
    Ok(Sample {
        setup: setup.name(),
        family: family.name().to_string(),
        cidrs: if setup.has_cidrs() { cidr_count } else { 0 },
        round,
        install_seconds,
        installed_by,
        observed_source: seen.to_string(),
        tcp,
        udp,
        throughput_gbps,
        latency,
        tcp_sources,
        conntrack,
        ebpf,
        agent_cpu_seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_conntrack_counters_over_cpus() {
        let text = "entries  clashres found insert_failed drop early_drop\n\
                    00000001  00000002 00000000 0000000a 00000001 00000000\n\
                    00000001  00000001 00000000 00000001 00000000 00000000\n";
        let stats = parse_conntrack_stats(text);
        assert_eq!(
            (
                stats.clashres,
                stats.insert_failed,
                stats.drop,
                stats.early_drop
            ),
            (3, 11, 1, 0)
        );
    }
}
