//! The SNAT-pool section of RESULTS.md (issue 16): per setup and pool size, the concurrent
//! flows one pod got towards one destination before the first refusal, and the cost of a new
//! flow at 99 % of what it can hold.

use std::fmt::Write;

use super::median;
use crate::pools::{Sample, POOL_RANGE};

/// Appends the section to `md`; nothing without samples.
pub fn section(md: &mut String, samples: &[Sample]) {
    if samples.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "\n## SNAT pools: one pod, one destination (medians)\n\n\
         UDP flows from one pod's address to one destination port, `--port-range {}-{}` \
         ({} ports an address), `--snat-ip` once or twice. Capacity: what one pod can hold \
         (eBPF falls over to the next address; netfilter cannot). First refusal: flows that \
         arrived, sent one at a time, before the first that did not. At 99 %: ns of CPU per new \
         flow sent from 98 % to 99 % of the capacity, and the share that arrived.\n\n\
         | setup | addresses | capacity | first refusal | ns per new flow at 99 % | arrived at 99 % | rounds |\n\
         |---|---:|---:|---:|---:|---:|---:|",
        POOL_RANGE.0,
        POOL_RANGE.1,
        u32::from(POOL_RANGE.1 - POOL_RANGE.0) + 1
    );
    let mut keys: Vec<(&str, usize)> = samples
        .iter()
        .map(|s| (s.setup.as_str(), s.addresses))
        .collect();
    keys.sort();
    keys.dedup();
    for (setup, addresses) in keys {
        let runs: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.setup == setup && s.addresses == addresses)
            .collect();
        let of = |f: fn(&Sample) -> f64| median(runs.iter().map(|s| f(s)).collect());
        let _ = writeln!(
            md,
            "| {setup} | {addresses} | {} | {:.0} | {:.0} | {:.0} % | {} |",
            runs[0].capacity,
            of(|s| f64::from(s.first_refusal)),
            of(|s| s.ns_per_flow_at_99),
            of(|s| s.delivered_at_99) * 100.0,
            runs.len()
        );
    }
}
