//! The new-flow section of RESULTS.md (issue 19): per setup, the median CPU time per new flow,
//! its cost above `no-nat`, and that cost as a share of masq-nftables'; then the cost of a new
//! flow as one destination's pool fills.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::median;
use crate::newflow::Sample;

/// Median ns per flow of each setup, in the order the setups first appear.
fn medians(samples: &[Sample]) -> Vec<(String, f64)> {
    let mut by_setup: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut order = Vec::new();
    for s in samples.iter().filter(|s| s.fill.is_empty()) {
        if !by_setup.contains_key(s.setup.as_str()) {
            order.push(s.setup.clone());
        }
        by_setup.entry(&s.setup).or_default().push(s.ns_per_flow);
    }
    order
        .into_iter()
        .map(|setup| {
            let value = median(by_setup[setup.as_str()].clone());
            (setup, value)
        })
        .collect()
}

/// Appends the section to `md`; nothing without samples.
pub fn section(md: &mut String, samples: &[Sample]) {
    if samples.is_empty() {
        return;
    }
    let rows = medians(samples);
    let get = |name: &str| rows.iter().find(|(s, _)| s == name).map(|(_, v)| *v);
    let base = get("no-nat");
    let nft_cost = get("masq-nftables").zip(base).map(|(n, b)| n - b);
    let _ = writeln!(
        md,
        "\n## New flows, side by side (packet generator, medians)\n\n\
         Every packet is the first of a new UDP flow (AF_PACKET + sendmmsg in the pod, counted \
         at the far side); ns of CPU per flow on the pinned CPU, at saturation.\n\n\
         | setup | ns per new flow | above no-nat | share of masq-nftables' cost |\n|---|---:|---:|---:|"
    );
    for (setup, ns) in &rows {
        let above = base.map(|b| ns - b);
        let share = above.zip(nft_cost).map(|(a, n)| a / n);
        let _ = writeln!(
            md,
            "| {setup} | {ns:.0} | {} | {} |",
            above.map_or("-".into(), |a| format!("{a:.0}")),
            share.map_or("-".into(), |r| format!("{r:.2}")),
        );
    }
    let fills: Vec<&Sample> = samples.iter().filter(|s| !s.fill.is_empty()).collect();
    if fills.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "\nOne destination's port pool of 20,000 ports (`--port-range 40000-59999`) filled by \
         tenths (ns of CPU per new flow sent, and the share of the flows that arrived, medians; the last tenth ends at 99 %):\n\n| setup | {} |\n|---|{}",
        (1..=10).map(|t| format!("{}-{} %", (t - 1) * 10, t * 10)).collect::<Vec<_>>().join(" | "),
        "---:|".repeat(10)
    );
    // Sorted before dedup: the samples come round by round, each setup once a round.
    let mut fill_setups: Vec<&str> = fills.iter().map(|s| s.setup.as_str()).collect();
    fill_setups.sort_unstable();
    fill_setups.dedup();
    for setup in fill_setups {
        let runs: Vec<&&Sample> = fills.iter().filter(|s| s.setup == setup).collect();
        if runs.is_empty() {
            continue;
        }
        let cells = |of: fn(&Sample) -> &Vec<f64>, format: fn(f64) -> String| -> String {
            (0..10)
                .map(|t| {
                    let values: Vec<f64> =
                        runs.iter().filter_map(|s| of(s).get(t).copied()).collect();
                    format(median(values))
                })
                .collect::<Vec<_>>()
                .join(" | ")
        };
        let _ = writeln!(
            md,
            "| {setup}, ns per flow sent | {} |",
            cells(|s| &s.fill, |v| format!("{v:.0}"))
        );
        let _ = writeln!(
            md,
            "| {setup}, share delivered | {} |",
            cells(|s| &s.fill_delivered, |v| format!("{:.0} %", v * 100.0))
        );
    }
}
