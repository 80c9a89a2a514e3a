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

/// Median ns per flow inside the programs of each setup that has them (eBPF).
fn program_medians(samples: &[Sample]) -> BTreeMap<&str, f64> {
    let mut by_setup: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.fill.is_empty()) {
        if let Some(ns) = s.program_ns_per_flow {
            by_setup.entry(&s.setup).or_default().push(ns);
        }
    }
    by_setup
        .into_iter()
        .map(|(setup, values)| (setup, median(values)))
        .collect()
}

/// Per round, `setup`'s cost above no-NAT over masq-nftables' (each round's setups ran
/// interleaved, so the round's own no-NAT figure is the base): the ratios, in round order.
fn round_ratios(samples: &[Sample], setup: &str) -> Vec<f64> {
    let rounds: std::collections::BTreeSet<usize> = samples.iter().map(|s| s.round).collect();
    let of = |round: usize, name: &str| {
        samples
            .iter()
            .find(|s| s.round == round && s.setup == name && s.fill.is_empty())
            .map(|s| s.ns_per_flow)
    };
    rounds
        .into_iter()
        .filter_map(|round| {
            let base = of(round, "no-nat")?;
            let nft = of(round, "masq-nftables")? - base;
            Some((of(round, setup)? - base) / nft)
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
         | setup | ns per new flow | above no-nat | share of masq-nftables' cost | median of the rounds' shares | in masq's programs |\n|---|---:|---:|---:|---:|---:|"
    );
    let programs = program_medians(samples);
    for (setup, ns) in &rows {
        let above = base.map(|b| ns - b);
        let share = above.zip(nft_cost).map(|(a, n)| a / n);
        let per_round = median(round_ratios(samples, setup));
        let _ = writeln!(
            md,
            "| {setup} | {ns:.0} | {} | {} | {} | {} |",
            above.map_or("-".into(), |a| format!("{a:.0}")),
            share.map_or("-".into(), |r| format!("{r:.2}")),
            if per_round.is_nan() {
                "-".into()
            } else {
                format!("{per_round:.2}")
            },
            programs
                .get(setup.as_str())
                .map_or("-".into(), |p| format!("{p:.0}")),
        );
    }
    let _ = writeln!(
        md,
        "\nThe rounds' shares pair each setup with the no-NAT and masq-nftables samples of its \
         own round (interleaved), which takes out the drift between rounds. \"In masq's \
         programs\": ns per flow inside the programs on the uplink's egress hook, from a pass \
         of 20,000 more new flows with the kernel's BPF statistics on (not the measured pass)."
    );
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(setup: &str, round: usize, ns_per_flow: f64) -> Sample {
        Sample {
            setup: setup.into(),
            round,
            sent: 1,
            delivered: 1,
            per_second: 0.0,
            ns_per_flow,
            fill: Vec::new(),
            fill_delivered: Vec::new(),
            program_ns_per_flow: None,
        }
    }

    #[test]
    fn each_round_is_its_own_base() {
        // Round 2's whole path is 1,000 ns slower; the costs above it are the same.
        let samples = [
            sample("no-nat", 1, 3000.0),
            sample("masq-nftables", 1, 7000.0),
            sample("masq-ebpf", 1, 5000.0),
            sample("masq-ebpf", 2, 6000.0),
            sample("no-nat", 2, 4000.0),
            sample("masq-nftables", 2, 8000.0),
            // A round without masq-nftables gives no ratio.
            sample("no-nat", 3, 3000.0),
            sample("masq-ebpf", 3, 3500.0),
        ];
        assert_eq!(round_ratios(&samples, "masq-ebpf"), [0.5, 0.5]);
    }
}
