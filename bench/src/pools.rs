//! SNAT address pools under one busy destination (issue 16): how many concurrent flows one
//! pod gets towards one destination (address, port, protocol) before the first is refused, and
//! what a new flow costs at 99 % of what that pod can hold, with one and with two SNAT
//! addresses, for masq-ebpf and masq-nftables in the same run.
//!
//! The packet generator of [`crate::newflow`] sends from the pod's one address, every frame a
//! new UDP flow (the next source port) to one destination port, through `--port-range` of
//! [`POOL_RANGE`]. A pod can hold every port of every address on eBPF (it falls over to the
//! next address when its own is full) and the ports of its own address on netfilter, which
//! cannot fall over (docs/snat-pools.md): that is the sample's `capacity`.
//!
//! Two topologies per sample, since UDP entries outlive the measurement: in the first, flows
//! are sent one at a time and a socket at the far side must receive each (the first that does
//! not arrive within a second is the first refusal); in the second, the pool is filled to 98 %
//! of the capacity untimed, and the flows from 98 % to 99 % are timed (ns of CPU per new flow
//! on the generator's pinned CPU, as in [`crate::newflow`]).

use std::net::{Ipv4Addr, UdpSocket};
use std::time::Duration;

use anyhow::{Context, Result};
use masq_testbed::{addr, Topology};
use serde::Serialize;

use crate::newflow::{self, FILL_DPORT};
use crate::pin::Plan;
use crate::setups::{self, Env, Setup};

/// `--port-range` of the pool runs: 10,000 ports an address.
pub const POOL_RANGE: (u16, u16) = (40000, 49999);
/// The node's second address, the pool's second entry (on the uplink, like the first).
const SECOND: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 3);
/// Flows sent past the capacity while looking for the first refusal.
const PAST_CAPACITY: u32 = 100;

/// One (setup, pool size) sample.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    /// The setup's name.
    pub setup: String,
    /// SNAT addresses in the pool (`--snat-ip` given this many times).
    pub addresses: usize,
    /// The round.
    pub round: usize,
    /// Flows one pod can hold towards one destination on this datapath.
    pub capacity: u32,
    /// Flows that arrived, one at a time, before the first that did not.
    pub first_refusal: u32,
    /// The fill before the timed flows: flows sent and the share that arrived.
    pub filled: (u64, f64),
    /// ns of CPU per new flow sent from 98 % to 99 % of the capacity.
    pub ns_per_flow_at_99: f64,
    /// The share of those flows that arrived.
    pub delivered_at_99: f64,
}

/// Ports a pool address has.
fn ports() -> u32 {
    u32::from(POOL_RANGE.1 - POOL_RANGE.0) + 1
}

/// Flows one pod can hold towards one destination.
pub fn capacity(setup: Setup, addresses: usize) -> u32 {
    match setup {
        Setup::Masq("ebpf") => ports() * addresses as u32,
        _ => ports(),
    }
}

/// The agent's flags: the port range and the pool, the node's address first.
fn agent_args(addresses: usize) -> Vec<String> {
    let mut args = vec![
        "--port-range".to_string(),
        format!("{}-{}", POOL_RANGE.0, POOL_RANGE.1),
    ];
    for address in [addr::NODE, SECOND].iter().take(addresses) {
        args.extend(["--snat-ip".to_string(), address.to_string()]);
    }
    args
}

/// A topology whose uplink carries the pool, with `setup` installed.
fn installed(
    env: &Env,
    setup: Setup,
    addresses: usize,
) -> Result<(Topology, setups::Installed, Env)> {
    let topology = Topology::new()?;
    if addresses > 1 {
        topology
            .node
            .ip(&["addr", "add", &format!("{SECOND}/24"), "dev", "eth0"])?;
    }
    let env = Env {
        agent_args: agent_args(addresses),
        ..env.clone()
    };
    let installed = newflow::install(&env, setup, &topology)?;
    Ok((topology, installed, env))
}

/// The frame of flow `i` (source port 1024 + i, one destination).
fn frames(topology: &Topology, flows: std::ops::Range<u32>) -> Result<Vec<[u8; 60]>> {
    let (src, gateway) = newflow::frame_macs(topology)?;
    flows
        .map(|i| {
            let sport = u16::try_from(1024 + i).context("more flows than source ports")?;
            Ok(newflow::frame(src, gateway, sport, FILL_DPORT))
        })
        .collect()
}

/// Flows sent one at a time until one does not reach the far side: how many did.
fn first_refusal(env: &Env, plan: &Plan, setup: Setup, addresses: usize) -> Result<u32> {
    let (topology, installed, env) = installed(env, setup, addresses)?;
    let sink = topology
        .external
        .enter(|| UdpSocket::bind((addr::INTERNET, FILL_DPORT)))??;
    sink.set_read_timeout(Some(Duration::from_secs(1)))?;
    let limit = capacity(setup, addresses) + PAST_CAPACITY;
    let frames = frames(&topology, 0..limit)?;
    let arrived = newflow::in_pod(&topology, plan, |send| {
        let mut buf = [0u8; 64];
        for (i, frame) in frames.iter().enumerate() {
            send(std::slice::from_ref(frame))?;
            if sink.recv(&mut buf).is_err() {
                return Ok(i as u32);
            }
        }
        Ok(limit)
    })?;
    setups::uninstall(&env, &topology, installed)?;
    Ok(arrived)
}

/// Measures `setup` with a pool of `addresses`.
pub fn sample(
    env: &Env,
    plan: &Plan,
    setup: Setup,
    addresses: usize,
    round: usize,
) -> Result<Sample> {
    let first_refusal = first_refusal(env, plan, setup, addresses)?;
    let capacity = capacity(setup, addresses);
    let (topology, installed, env) = installed(env, setup, addresses)?;
    newflow::start_sink(&topology.external)?;
    let (at_98, at_99) = (capacity * 98 / 100, capacity * 99 / 100);
    let fill = frames(&topology, 0..at_98)?;
    let timed = frames(&topology, at_98..at_99)?;
    let before = newflow::settle(&topology.external)?;
    let (fill_sent, _) = newflow::in_pod(&topology, plan, |send| send(&fill))?;
    let after_fill = newflow::settle(&topology.external)?;
    let (sent, took) = newflow::in_pod(&topology, plan, |send| send(&timed))?;
    let arrived = newflow::settle(&topology.external)?.saturating_sub(after_fill);
    setups::uninstall(&env, &topology, installed)?;
    Ok(Sample {
        setup: setup.name(),
        addresses,
        round,
        capacity,
        first_refusal,
        filled: (
            fill_sent,
            after_fill.saturating_sub(before) as f64 / fill_sent.max(1) as f64,
        ),
        // Per flow sent: a refused flow cost its search too.
        ns_per_flow_at_99: took.as_nanos() as f64 / sent.max(1) as f64,
        delivered_at_99: arrived as f64 / sent.max(1) as f64,
    })
}
