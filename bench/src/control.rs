//! Control plane: how long a config change takes to reach the datapath, and what the agent costs
//! in memory and CPU.
//!
//! A change is timed from `ConfigMapDir::update` (kubelet's `..data` swap) to two events,
//! watched at the same time: traffic (a prober in the pod opens a new connection every
//! millisecond or so and asks the "internet" host which source it saw; each change flips that
//! host between masqueraded and kept by adding or removing 203.0.113.0/24), and the agent's own
//! report (its `masq_sync_duration_seconds_count` metric moving). The change counts as applied
//! when both happened; the sync duration the agent measured around the kernel update splits the
//! time between the datapath and the rest (debounce, reading and parsing the file).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use masq_testbed::{addr, AgentProcess, ConfigMapDir, Netns, Topology};
use serde::Serialize;

use crate::pin::Plan;
use crate::procfs::{self, CpuTime};
use crate::servers::Server;
use crate::setups::{self, Env};
use crate::{cidrs, clients};

/// The port of the prober's server.
const PROBE_PORT: u16 = 9200;
/// Longest wait for one change.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(180);

/// One timed config change.
#[derive(Clone, Debug, Serialize)]
pub struct Change {
    /// Filler CIDRs in the new config (plus one: the marker, or the CIDR that replaced it).
    pub cidrs: usize,
    /// Until new connections showed the new behaviour, ms (None: never within the timeout).
    pub traffic_ms: Option<f64>,
    /// Until the agent reported the sync done, ms.
    pub agent_ms: Option<f64>,
    /// The later of the two: the change is in the kernel and the agent knows it.
    pub applied_ms: Option<f64>,
    /// The agent's own measure of the datapath sync (kernel update), ms.
    pub sync_ms: Option<f64>,
    /// CPU the agent used for the change, seconds (itself, and the helpers it ran).
    pub cpu: CpuTime,
    /// Agent memory right after the change.
    pub memory: procfs::Memory,
}

/// One control-plane run of one masq datapath.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    /// `masq-<datapath>`.
    pub setup: String,
    /// Round, from 1.
    pub round: usize,
    /// From an empty list to N CIDRs (plus the marker), for each N.
    pub apply: Vec<Change>,
    /// Replacing one CIDR inside the largest set.
    pub change_one: Change,
    /// RSS with an empty list, idle, MiB.
    pub rss_idle_empty_mib: f64,
    /// RSS with the largest set installed, idle, MiB.
    pub rss_idle_largest_mib: f64,
    /// Peak RSS over the whole run (VmHWM), MiB.
    pub peak_rss_mib: f64,
    /// CPU used while idle with the largest set installed, percent of one CPU.
    pub idle_cpu_percent: f64,
    /// Sizes the agent cannot be given (config over 1 MiB), replaced above by the most that
    /// fit, with the datapath's own sync timed as a library for them.
    pub library: Vec<LibrarySync>,
}

/// The datapath's `sync` alone, called as a library: no file, no parsing, no debounce.
#[derive(Clone, Debug, Serialize)]
pub struct LibrarySync {
    /// Filler CIDRs.
    pub cidrs: usize,
    /// From nothing installed to the set, ms.
    pub install_ms: f64,
    /// Replacing one CIDR inside the set, ms.
    pub change_one_ms: f64,
    /// Reading the installed set back once (`nft -j list table inet masq`,
    /// `iptables-save -t nat`, or the eBPF maps), ms: what each sync does before (and for nftables after) it
    /// writes, the profile of a slow change.
    pub read_back_ms: f64,
}

/// The agent and what it watches, in one topology.
struct Rig<'a> {
    topology: &'a Topology,
    agent: &'a AgentProcess,
    config: &'a mut ConfigMapDir,
    probe: SocketAddr,
    plan: &'a Plan,
}

/// Runs the control-plane measurements for `datapath` with the given set sizes.
pub fn sample(
    env: &Env,
    plan: &Plan,
    datapath: &str,
    sizes: &[usize],
    round: usize,
) -> Result<Sample> {
    let fit = cidrs::most_that_fit();
    let too_big: Vec<usize> = sizes.iter().copied().filter(|&s| s > fit).collect();
    let sizes: Vec<usize> = sizes.iter().map(|&s| s.min(fit)).collect();
    let sizes = &sizes[..];
    let topology = Topology::new()?;
    let probe = SocketAddr::new(IpAddr::from(addr::INTERNET), PROBE_PORT);
    let _server = Server::tcp(&topology.external, &[probe], plan.server)?;
    let (agent, mut config) =
        setups::start_agent(env, &topology.node, datapath, &cidrs::config_yaml(&[]))?;
    let pid = agent.pid();
    std::thread::sleep(Duration::from_millis(500));
    let rss_idle_empty_mib = procfs::memory(pid)?.rss_mib;

    let mut rig = Rig {
        topology: &topology,
        agent: &agent,
        config: &mut config,
        probe,
        plan,
    };
    let node_ip = IpAddr::from(addr::NODE);
    let pod_ip = IpAddr::from(addr::POD);
    let mut apply = Vec::new();
    for &size in sizes {
        apply.push(rig.change(size, &cidrs::with(size, &[cidrs::MARKER]), pod_ip)?);
        if size != *sizes.last().expect("sizes") {
            rig.change(0, &[], node_ip)?;
        }
    }
    let largest = *sizes.last().expect("sizes");
    let swapped = {
        let mut list = cidrs::fillers(0, largest);
        list.push(cidrs::other(0));
        list
    };
    let change_one = rig.change(largest, &swapped, node_ip)?;

    std::thread::sleep(Duration::from_millis(500));
    let before = procfs::cpu_time(pid)?;
    let idle = Duration::from_secs(2);
    std::thread::sleep(idle);
    let used = procfs::cpu_time(pid)?.since(&before);
    let memory = procfs::memory(pid)?;
    let installed = setups::Installed {
        agent: Some((agent, config)),
        install_time: Duration::ZERO,
        by_library: false,
    };
    setups::uninstall(env, &topology, installed)?;
    let mut library = Vec::new();
    for size in too_big {
        let (install, change) = crate::library::timed_change(
            env,
            &topology.node,
            datapath,
            &cidrs::with(size, &[cidrs::MARKER]),
            &cidrs::with(size, &[&cidrs::other(0)]),
        )?;
        let read_back = crate::library::timed_read_back(env, &topology.node, datapath)?;
        setups::cleanup(env, &topology.node)?;
        library.push(LibrarySync {
            cidrs: size,
            install_ms: install.as_secs_f64() * 1e3,
            change_one_ms: change.as_secs_f64() * 1e3,
            read_back_ms: read_back.as_secs_f64() * 1e3,
        });
    }
    Ok(Sample {
        library,
        setup: format!("masq-{datapath}"),
        round,
        apply,
        change_one,
        rss_idle_empty_mib,
        rss_idle_largest_mib: memory.rss_mib,
        peak_rss_mib: memory.peak_rss_mib,
        idle_cpu_percent: (used.own + used.children) / idle.as_secs_f64() * 100.0,
    })
}

impl Rig<'_> {
    /// Writes a config listing `cidr_list` (`size` fillers, plus the marker or its
    /// replacement) and times it until new connections from the pod reach the "internet" host
    /// with `expected` as their source and the agent reports a sync.
    fn change(&mut self, size: usize, cidr_list: &[String], expected: IpAddr) -> Result<Change> {
        let node = &self.topology.node;
        let pid = self.agent.pid();
        let (syncs_before, sync_sum_before) = sync_metrics(node)?;
        let cpu_before = procfs::cpu_time(pid)?;
        let yaml = cidrs::config_yaml(cidr_list);
        let stop = AtomicBool::new(false);
        let started = Instant::now();
        self.config.update(&yaml)?;
        let (traffic, agent) = std::thread::scope(|scope| {
            let prober = scope.spawn(|| {
                clients::wait_for_source(
                    &self.topology.pod,
                    self.probe,
                    expected,
                    started,
                    CHANGE_TIMEOUT,
                    &stop,
                    self.plan.client,
                )
            });
            let agent = wait_for_sync(node, syncs_before, started);
            if agent.is_err() {
                stop.store(true, Ordering::Relaxed);
            }
            let traffic = prober.join().expect("the prober does not panic");
            (traffic, agent)
        });
        let traffic = traffic?;
        let agent = agent?;
        let (_, sync_sum_after) = sync_metrics(node)?;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        // Let the helpers the agent ran be reaped and counted.
        std::thread::sleep(Duration::from_millis(50));
        Ok(Change {
            cidrs: size,
            traffic_ms: traffic.map(ms),
            agent_ms: Some(ms(agent)),
            applied_ms: traffic.map(|t| ms(t.max(agent))),
            sync_ms: Some((sync_sum_after - sync_sum_before) * 1e3),
            cpu: procfs::cpu_time(pid)?.since(&cpu_before),
            memory: procfs::memory(pid)?,
        })
    }
}

/// Polls the agent's metrics until the sync count moves past `before`; the time since `since`.
fn wait_for_sync(node: &Netns, before: u64, since: Instant) -> Result<Duration> {
    while since.elapsed() < CHANGE_TIMEOUT {
        if sync_metrics(node)?.0 > before {
            return Ok(since.elapsed());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    anyhow::bail!("the agent reported no sync within {CHANGE_TIMEOUT:?}")
}

/// (`masq_sync_duration_seconds_count`, `…_sum`) from the agent's /metrics.
pub fn sync_metrics(node: &Netns) -> Result<(u64, f64)> {
    let address = masq_testbed::agent::METRICS_ADDR.parse()?;
    let (_, text) = masq_testbed::agent::get(node, address, "/metrics")?
        .context("the agent's /metrics did not answer")?;
    Ok(parse_sync_metrics(&text))
}

fn parse_sync_metrics(text: &str) -> (u64, f64) {
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    (
        value("masq_sync_duration_seconds_count") as u64,
        value("masq_sync_duration_seconds_sum"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_sync_histogram() {
        let text = "# HELP x\nmasq_sync_duration_seconds_sum 0.25\nmasq_sync_duration_seconds_count 3\nmasq_sync_duration_seconds_bucket{le=\"0.1\"} 2\n";
        assert_eq!(parse_sync_metrics(text), (3, 0.25));
        assert_eq!(parse_sync_metrics(""), (0, 0.0));
    }
}
