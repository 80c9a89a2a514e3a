//! How much of a flow's cost is spent inside masq's own programs: the kernel's per-program run
//! time and run count (`BPF_ENABLE_STATS`, kernel ≥ 5.8) for the programs on the node
//! uplink's egress hook.
//!
//! Statistics cost two clock reads per program run, so they are enabled only around a pass of
//! their own, never around a measured one. They are enabled through a file descriptor: the
//! kernel turns them off again when it is closed, also when the benchmark dies, and nothing
//! else on the machine changes.

use std::time::Duration;

use anyhow::{Context, Result};
use aya::programs::{loaded_programs, TcAttachType};
use aya::sys::{enable_stats, Stats};
use masq_datapath::ebpf::HookOrder;
use masq_testbed::topology::NODE_UPLINK;
use masq_testbed::Netns;

/// Run time and run count, summed over the programs on the uplink's egress hook.
#[derive(Clone, Copy, Debug, Default)]
struct Totals {
    run_time: Duration,
    runs: u64,
}

fn egress_totals(node: &Netns) -> Result<Totals> {
    let order = node.enter(|| HookOrder::read(NODE_UPLINK, TcAttachType::Egress))??;
    let ids: Vec<u32> = order.programs.iter().filter_map(|p| p.id).collect();
    let mut totals = Totals::default();
    for info in loaded_programs() {
        let info = info.context("listing the loaded programs")?;
        if ids.contains(&info.id()) {
            totals.run_time += info.run_time();
            totals.runs += info.run_count();
        }
    }
    Ok(totals)
}

/// Runs `pass` with statistics on; returns the ns the uplink's egress programs spent per run
/// during it, and how many runs that is. `None` when no program runs there (a netfilter
/// setup) or the pass ran none.
pub fn egress_ns_per_run(node: &Netns, pass: impl FnOnce() -> Result<()>) -> Result<Option<f64>> {
    let _stats = enable_stats(Stats::RunTime).context("BPF_ENABLE_STATS")?;
    let before = egress_totals(node)?;
    pass()?;
    let after = egress_totals(node)?;
    let runs = after.runs.saturating_sub(before.runs);
    if runs == 0 {
        return Ok(None);
    }
    let ns = after.run_time.saturating_sub(before.run_time).as_nanos() as f64;
    Ok(Some(ns / runs as f64))
}
