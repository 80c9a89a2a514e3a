//! The data plane's per-round ratios: each sample's TCP and UDP rates over the no-NAT sample of
//! the same round, family and CIDR count. The setups of a round run back to back, so this takes
//! out the drift between rounds that the ratio of medians keeps (on a noisy host no-NAT's own
//! rate moves by ±20 % between rounds).

use std::collections::BTreeMap;
use std::fmt::Write;

use super::median;
use crate::dataplane::Sample;

/// (family, setup, CIDRs) → per-round (TCP, UDP) ratios to the round's no-NAT.
type Ratios<'a> = BTreeMap<(&'a str, &'a str, usize), Vec<(f64, f64)>>;

fn ratios(samples: &[Sample]) -> Ratios<'_> {
    let mut out: Ratios = BTreeMap::new();
    for s in samples.iter().filter(|s| s.setup != "no-nat") {
        let base = samples
            .iter()
            .find(|b| b.setup == "no-nat" && b.round == s.round && b.family == s.family);
        if let Some(base) = base {
            out.entry((&s.family, &s.setup, s.cidrs))
                .or_default()
                .push((
                    s.tcp.per_second / base.tcp.per_second,
                    s.udp.per_second / base.udp.per_second,
                ));
        }
    }
    out
}

/// Median (lowest–highest) as percentages.
fn spread(values: Vec<f64>) -> String {
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(0.0, f64::max);
    format!(
        "{:.0}% ({:.0}–{:.0})",
        median(values) * 100.0,
        lo * 100.0,
        hi * 100.0
    )
}

/// Appends the table to `md`; nothing without pairs.
pub fn section(md: &mut String, samples: &[Sample]) {
    let all = ratios(samples);
    if all.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "\n### Paired with the same round's no-NAT\n\nMedian over the rounds of each sample's rate \
         over the no-NAT sample of its own round (lowest–highest in brackets).\n\n\
         | family | setup | CIDRs | rounds | TCP conn/s vs no-NAT | UDP flows/s vs no-NAT |\n\
         |---|---|---:|---:|---:|---:|"
    );
    for ((family, setup, cidrs), pairs) in all {
        let _ = writeln!(
            md,
            "| {family} | {setup} | {cidrs} | {} | {} | {} |",
            pairs.len(),
            spread(pairs.iter().map(|p| p.0).collect()),
            spread(pairs.iter().map(|p| p.1).collect()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_sample_is_divided_by_its_own_rounds_no_nat() {
        let sample = |setup: &str, round, tcp, udp| {
            let mut s = crate::report::tests::sample(setup, "ipv4", tcp);
            s.round = round;
            s.udp.per_second = udp;
            s
        };
        let samples = [
            sample("no-nat", 1, 100.0, 1000.0),
            sample("masq-ebpf", 1, 90.0, 950.0),
            sample("no-nat", 2, 50.0, 500.0),
            sample("masq-ebpf", 2, 49.0, 400.0),
        ];
        let got = &ratios(&samples)[&("ipv4", "masq-ebpf", 10)];
        assert_eq!(got, &vec![(0.9, 0.95), (0.98, 0.8)]);
        let mut md = String::new();
        section(&mut md, &samples);
        assert!(
            md.contains("| ipv4 | masq-ebpf | 10 | 2 | 94% (90–98) | 88% (80–95) |"),
            "{md}"
        );
    }
}
