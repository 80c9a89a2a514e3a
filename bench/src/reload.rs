//! Reload under load: config changes while the pod opens new connections non-stop, to a
//! masqueraded host and to a kept one. Every connection that fails, and every connection that
//! arrives with the wrong source (the node's address at the kept host, the pod's at the
//! masqueraded one), is counted.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use masq_testbed::{addr, Topology};
use serde::Serialize;

use crate::cidrs;
use crate::clients::{self, IO_TIMEOUT};
use crate::control::sync_metrics;
use crate::pin::{self, Plan};
use crate::servers::Server;
use crate::setups::{self, Env};

const PORT: u16 = 9300;
/// Pause between two connections of one stream thread: a steady stream, not a flood that
/// would starve the agent of CPU.
const PACE: Duration = Duration::from_millis(1);
/// Longest wait for one change to be synced.
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// What one reload-under-load run saw.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    /// `masq-<datapath>`.
    pub setup: String,
    /// Config changes written.
    pub changes: usize,
    /// Changes the agent reported synced within the timeout.
    pub changes_synced: usize,
    /// CIDRs in each config.
    pub cidrs: usize,
    /// Median time from a change to its sync, ms.
    pub median_change_ms: f64,
    /// Connections attempted during the run.
    pub connections: u64,
    /// Connections that failed (refused, reset, or timed out after 1 s).
    pub failed: u64,
    /// Connections to the masqueraded host that arrived with the pod's address.
    pub wrong_source_masqueraded: u64,
    /// Connections to the kept (VPC) host that arrived with the node's address.
    pub wrong_source_kept: u64,
    /// Run length, seconds.
    pub seconds: f64,
}

/// Runs `changes` config changes against `datapath` while streaming new connections.
pub fn sample(
    env: &Env,
    plan: &Plan,
    datapath: &str,
    changes: usize,
    cidr_count: usize,
) -> Result<Sample> {
    let topology = Topology::new()?;
    let masqueraded = SocketAddr::new(IpAddr::from(addr::INTERNET), PORT);
    let kept = SocketAddr::new(IpAddr::from(addr::PRIVATE), PORT);
    let server = Server::tcp(&topology.external, &[masqueraded, kept], plan.server)?;
    // Two configs that differ in half their entries; both keep the VPC and masquerade the
    // "internet" host.
    let config_a = cidrs::config_yaml(&with_vpc(cidrs::fillers(0, cidr_count)));
    let config_b = cidrs::config_yaml(&with_vpc(cidrs::fillers(cidr_count / 2, cidr_count)));
    let (agent, mut config) = setups::start_agent(env, &topology.node, datapath, &config_a)?;

    let stop = AtomicBool::new(false);
    let connections = AtomicU64::new(0);
    let failed = AtomicU64::new(0);
    let started = Instant::now();
    let mut change_times = Vec::with_capacity(changes);
    std::thread::scope(|scope| -> Result<()> {
        for thread in 0..2u64 {
            let (stop, connections, failed, pod) = (&stop, &connections, &failed, &topology.pod);
            scope.spawn(move || {
                pod.enter(|| {
                    pin::current_thread(plan.client);
                    let mut n = thread;
                    while !stop.load(Ordering::Relaxed) {
                        // Alternate hosts; the ephemeral port is the kernel's choice.
                        let server = if n % 2 == 0 { masqueraded } else { kept };
                        connections.fetch_add(1, Ordering::Relaxed);
                        if clients::ask_source(server).is_err() {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                        n += 2;
                        std::thread::sleep(PACE);
                    }
                })
            });
        }
        let result = (|| -> Result<()> {
            std::thread::sleep(Duration::from_millis(300));
            for i in 0..changes {
                let (before, _) = sync_metrics(&topology.node)?;
                let t = Instant::now();
                config.update(if i % 2 == 0 { &config_b } else { &config_a })?;
                while t.elapsed() < SYNC_TIMEOUT {
                    if sync_metrics(&topology.node)?.0 > before {
                        change_times.push(t.elapsed().as_secs_f64() * 1e3);
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            // Let connections in flight finish under the last config.
            std::thread::sleep(IO_TIMEOUT);
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        result
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let (_, m_pod, m_other) = server.counts(masqueraded).expect("listening").snapshot();
    let (k_node, _, k_other) = server.counts(kept).expect("listening").snapshot();
    drop(server);
    let installed = setups::Installed {
        agent: Some((agent, config)),
        install_time: Duration::ZERO,
        by_library: false,
    };
    setups::uninstall(env, &topology, installed)?;
    let synced = change_times.len();
    change_times.sort_by(f64::total_cmp);
    Ok(Sample {
        setup: format!("masq-{datapath}"),
        changes,
        changes_synced: synced,
        cidrs: cidr_count + 1,
        median_change_ms: clients::percentile(&change_times, 0.5),
        connections: connections.into_inner(),
        failed: failed.into_inner(),
        wrong_source_masqueraded: m_pod + m_other,
        wrong_source_kept: k_node + k_other,
        seconds,
    })
}

fn with_vpc(mut list: Vec<String>) -> Vec<String> {
    list.push(cidrs::VPC.to_string());
    list
}
