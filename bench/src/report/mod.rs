//! Medians, ratios to the no-NAT baseline, the targets judged met or missed, and the
//! two results files (JSON for scripts, Markdown for people).
//!
//! The summary and its types are here; `targets` judges the targets, `markdown`
//! writes the report for people.

mod markdown;
mod newflows;
mod paired;
mod pool_section;
mod targets;

use std::collections::BTreeSet;

use serde::Serialize;

use crate::{control, dataplane, newflow, pools, reload};
pub use markdown::{ebpf_md_link, markdown};
use targets::targets;

/// Where and how the run happened.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// CPUs online (nproc).
    pub nproc: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// `uname -r`.
    pub kernel: String,
    /// UTC, RFC 3339.
    pub date_utc: String,
    /// 1-minute load average when the run started.
    pub load_average_at_start: f64,
    /// Whether other jobs shared the machine during the run (`--shared`).
    pub shared: bool,
    /// `iptables -V` (its backend matters: nf_tables or legacy).
    pub iptables: String,
    /// `nft -v`.
    pub nft: String,
}

/// Everything the run produced.
#[derive(Debug, Serialize)]
pub struct Results {
    /// The machine.
    pub machine: Machine,
    /// The command line, the load and the pinning.
    pub settings: serde_json::Value,
    /// Setups that could not run, with the reason.
    pub skipped: Vec<(String, String)>,
    /// Samples that failed, with the error.
    pub errors: Vec<String>,
    /// Every data-plane sample.
    pub dataplane: Vec<dataplane::Sample>,
    /// Every control-plane sample.
    pub control: Vec<control::Sample>,
    /// Every reload-under-load run.
    pub reload: Vec<reload::Sample>,
    /// Every sample of the packet-generator part (new flows).
    pub newflows: Vec<newflow::Sample>,
    /// Every sample of the SNAT-pool part (one pod, one destination).
    pub pools: Vec<pools::Sample>,
    /// Medians and targets, computed from the samples above.
    pub summary: Summary,
}

/// Medians per (setup, CIDR count) and the targets.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// Data-plane medians.
    pub dataplane: Vec<DataplaneMedian>,
    /// Control-plane medians.
    pub control: Vec<ControlMedian>,
    /// The targets.
    pub targets: Vec<Target>,
}

/// Medians of one (address family, setup, CIDR count).
#[derive(Clone, Debug, Serialize)]
pub struct DataplaneMedian {
    /// Setup name.
    pub setup: String,
    /// Address family of the traffic: `ipv4` or `ipv6`.
    pub family: String,
    /// Non-masquerade CIDRs.
    pub cidrs: usize,
    /// Samples (rounds).
    pub samples: usize,
    /// New TCP connections per second.
    pub tcp_per_second: f64,
    /// New UDP flows per second.
    pub udp_per_second: f64,
    /// One-stream TCP throughput, Gbit/s.
    pub throughput_gbps: f64,
    /// Request/response latency p50, µs.
    pub p50_us: f64,
    /// Request/response latency p99, µs.
    pub p99_us: f64,
    /// Install time, s.
    pub install_seconds: f64,
    /// Ratios to the no-NAT medians of the same family (tcp, udp, throughput, p50, p99).
    pub vs_no_nat: [f64; 5],
    /// Failed connections and flows over all samples.
    pub failures: u64,
    /// How the setup was installed (`agent`, `rules`, `library`).
    pub installed_by: String,
    /// Lowest and highest TCP connection rate over the rounds: the noise.
    pub tcp_range: (f64, f64),
    /// Lowest and highest UDP flow rate over the rounds.
    pub udp_range: (f64, f64),
    /// Conntrack `insert_failed` in the node over all samples (each drops a new flow's packet).
    pub conntrack_insert_failed: u64,
}

/// Control-plane medians of one masq datapath.
#[derive(Clone, Debug, Serialize)]
pub struct ControlMedian {
    /// Setup name.
    pub setup: String,
    /// Samples (rounds).
    pub samples: usize,
    /// (CIDRs, applied ms, datapath sync ms, agent CPU s incl. helpers) for each set size.
    pub apply: Vec<(usize, f64, f64, f64)>,
    /// Replacing one CIDR in the largest set: applied ms, sync ms.
    pub change_one: (f64, f64),
    /// RSS idle with an empty list, MiB.
    pub rss_idle_empty_mib: f64,
    /// RSS idle with the largest set, MiB.
    pub rss_idle_largest_mib: f64,
    /// Peak RSS, MiB.
    pub peak_rss_mib: f64,
    /// Idle CPU with the largest set, percent of one CPU.
    pub idle_cpu_percent: f64,
    /// Sets too big for the config file: (CIDRs, library install ms, library change-one ms,
    /// one read-back of the installed state ms).
    pub library: Vec<(usize, f64, f64, f64)>,
}

/// One target of the issue.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    /// The target as the issue states it.
    pub target: String,
    /// Which setup.
    pub setup: String,
    /// What was measured.
    pub measured: String,
    /// `met`, `missed`, or `not measured`.
    pub verdict: String,
    /// Why, for a miss or a gap.
    pub note: String,
}

/// The median of `values` (NaN when empty).
pub fn median(mut values: Vec<f64>) -> f64 {
    values.retain(|v| !v.is_nan());
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// Computes the summary from the samples.
pub fn summarize(
    dataplane: &[dataplane::Sample],
    control: &[control::Sample],
    reload: &[reload::Sample],
    skipped: &[(String, String)],
) -> Summary {
    let keys: BTreeSet<(String, String, usize)> = dataplane
        .iter()
        .map(|s| (s.family.clone(), s.setup.clone(), s.cidrs))
        .collect();
    let mut medians: Vec<DataplaneMedian> = keys
        .into_iter()
        .map(|(family, setup, cidrs)| {
            let of: Vec<&dataplane::Sample> = dataplane
                .iter()
                .filter(|s| s.family == family && s.setup == setup && s.cidrs == cidrs)
                .collect();
            let m =
                |f: &dyn Fn(&dataplane::Sample) -> f64| median(of.iter().map(|s| f(s)).collect());
            DataplaneMedian {
                samples: of.len(),
                tcp_per_second: m(&|s| s.tcp.per_second),
                udp_per_second: m(&|s| s.udp.per_second),
                throughput_gbps: m(&|s| s.throughput_gbps),
                p50_us: m(&|s| s.latency.p50_us),
                p99_us: m(&|s| s.latency.p99_us),
                install_seconds: m(&|s| s.install_seconds),
                vs_no_nat: [f64::NAN; 5],
                failures: of.iter().map(|s| s.tcp.failed + s.udp.failed).sum(),
                conntrack_insert_failed: of.iter().map(|s| s.conntrack.insert_failed).sum(),
                tcp_range: of.iter().fold((f64::INFINITY, 0.0), |(lo, hi), s| {
                    (lo.min(s.tcp.per_second), hi.max(s.tcp.per_second))
                }),
                udp_range: of.iter().fold((f64::INFINITY, 0.0), |(lo, hi), s| {
                    (lo.min(s.udp.per_second), hi.max(s.udp.per_second))
                }),
                installed_by: of
                    .iter()
                    .map(|s| s.installed_by.as_str())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect::<Vec<_>>()
                    .join("+"),
                setup,
                family,
                cidrs,
            }
        })
        .collect();
    let bases: Vec<DataplaneMedian> = medians
        .iter()
        .filter(|m| m.setup == "no-nat")
        .cloned()
        .collect();
    for base in bases {
        // Each family against its own no-NAT path: IPv6 rows are ratios to IPv6 without NAT.
        for m in medians.iter_mut().filter(|m| m.family == base.family) {
            m.vs_no_nat = [
                m.tcp_per_second / base.tcp_per_second,
                m.udp_per_second / base.udp_per_second,
                m.throughput_gbps / base.throughput_gbps,
                m.p50_us / base.p50_us,
                m.p99_us / base.p99_us,
            ];
        }
    }
    medians.sort_by_key(|m| (m.family.clone(), setup_order(&m.setup), m.cidrs));

    let control_setups: BTreeSet<String> = control.iter().map(|s| s.setup.clone()).collect();
    let control_medians: Vec<ControlMedian> = control_setups
        .into_iter()
        .map(|setup| control_median(&setup, control))
        .collect();

    // The targets are about the IPv4 rows (the CIDR-count scaling is IPv4 only).
    let ipv4: Vec<DataplaneMedian> = medians
        .iter()
        .filter(|m| m.family == "ipv4")
        .cloned()
        .collect();
    let targets = targets(&ipv4, &control_medians, reload, skipped);
    Summary {
        dataplane: medians,
        control: control_medians,
        targets,
    }
}

fn setup_order(setup: &str) -> usize {
    [
        "no-nat",
        "conntrack-only",
        "ip-masq-agent-iptables",
        "plain-nftables",
        "masq-nftables",
        "masq-iptables",
        "masq-ebpf",
        "masq-ebpf-clsact",
    ]
    .iter()
    .position(|s| *s == setup)
    .unwrap_or(99)
}

fn control_median(setup: &str, control: &[control::Sample]) -> ControlMedian {
    let of: Vec<&control::Sample> = control.iter().filter(|s| s.setup == setup).collect();
    let m = |f: &dyn Fn(&control::Sample) -> f64| median(of.iter().map(|s| f(s)).collect());
    let sizes: Vec<usize> = of
        .first()
        .map(|s| s.apply.iter().map(|c| c.cidrs).collect())
        .unwrap_or_default();
    let apply = sizes
        .iter()
        .enumerate()
        .map(|(i, &cidrs)| {
            let at = |f: &dyn Fn(&control::Change) -> f64| {
                median(of.iter().filter_map(|s| s.apply.get(i)).map(f).collect())
            };
            (
                cidrs,
                at(&|c| c.applied_ms.unwrap_or(f64::NAN)),
                at(&|c| c.sync_ms.unwrap_or(f64::NAN)),
                at(&|c| c.cpu.own + c.cpu.children),
            )
        })
        .collect();
    ControlMedian {
        setup: setup.to_string(),
        samples: of.len(),
        apply,
        change_one: (
            m(&|s| s.change_one.applied_ms.unwrap_or(f64::NAN)),
            m(&|s| s.change_one.sync_ms.unwrap_or(f64::NAN)),
        ),
        rss_idle_empty_mib: m(&|s| s.rss_idle_empty_mib),
        rss_idle_largest_mib: m(&|s| s.rss_idle_largest_mib),
        peak_rss_mib: m(&|s| s.peak_rss_mib),
        idle_cpu_percent: m(&|s| s.idle_cpu_percent),
        library: of
            .first()
            .map(|first| {
                first
                    .library
                    .iter()
                    .enumerate()
                    .map(|(i, l)| {
                        let at = |f: &dyn Fn(&control::LibrarySync) -> f64| {
                            median(of.iter().filter_map(|s| s.library.get(i)).map(f).collect())
                        };
                        (
                            l.cidrs,
                            at(&|l| l.install_ms),
                            at(&|l| l.change_one_ms),
                            at(&|l| l.read_back_ms),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::targets::{ebpf_vs_no_nat, Range};
    use super::*;

    #[test]
    fn medians_of_odd_even_and_empty() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(vec![f64::NAN, 5.0]), 5.0);
        assert!(median(vec![]).is_nan());
    }

    fn row(setup: &str, tcp: f64, tcp_range: Range, udp: f64, udp_range: Range) -> DataplaneMedian {
        DataplaneMedian {
            setup: setup.into(),
            family: "ipv4".into(),
            cidrs: 10,
            samples: 3,
            tcp_per_second: tcp,
            udp_per_second: udp,
            throughput_gbps: 1.0,
            p50_us: 1.0,
            p99_us: 1.0,
            install_seconds: 0.0,
            vs_no_nat: [tcp / 100.0, udp / 100.0, 1.0, 1.0, 1.0],
            failures: 0,
            installed_by: "agent".into(),
            tcp_range,
            udp_range,
            conntrack_insert_failed: 0,
        }
    }

    /// A data-plane sample of round 1 with `tcp` connections/s and nothing else measured.
    pub(crate) fn sample(setup: &str, family: &str, tcp: f64) -> dataplane::Sample {
        dataplane::Sample {
            setup: setup.into(),
            family: family.into(),
            cidrs: if setup == "no-nat" { 0 } else { 10 },
            round: 1,
            install_seconds: 0.0,
            installed_by: "agent".into(),
            observed_source: String::new(),
            tcp: crate::clients::BurstResult {
                per_second: tcp,
                ..Default::default()
            },
            udp: Default::default(),
            throughput_gbps: 1.0,
            latency: Default::default(),
            tcp_sources: (0, 0, 0),
            conntrack: Default::default(),
            ebpf: None,
            agent_cpu_seconds: None,
        }
    }

    #[test]
    fn each_family_is_a_ratio_to_its_own_no_nat_and_the_targets_judge_ipv4() {
        let samples = [
            sample("masq-ebpf", "ipv6", 40.0),
            sample("no-nat", "ipv6", 50.0),
            sample("masq-ebpf", "ipv4", 90.0),
            sample("no-nat", "ipv4", 100.0),
        ];
        let summary = summarize(&samples, &[], &[], &[]);
        let order: Vec<(&str, &str)> = summary
            .dataplane
            .iter()
            .map(|m| (m.family.as_str(), m.setup.as_str()))
            .collect();
        assert_eq!(
            order,
            [
                ("ipv4", "no-nat"),
                ("ipv4", "masq-ebpf"),
                ("ipv6", "no-nat"),
                ("ipv6", "masq-ebpf")
            ]
        );
        assert_eq!(summary.dataplane[1].vs_no_nat[0], 0.9);
        assert_eq!(summary.dataplane[3].vs_no_nat[0], 0.8);
        let ebpf: Vec<&Target> = summary
            .targets
            .iter()
            .filter(|t| t.target.starts_with("eBPF"))
            .collect();
        assert_eq!(ebpf.len(), 1, "{ebpf:?}");
        assert!(ebpf[0].measured.contains("= 90.0% of no-NAT"), "{ebpf:?}");
    }

    #[test]
    fn the_ebpf_target_is_met_inconclusive_or_missed_by_medians_and_ranges() {
        let base = row("no-nat", 100.0, (80.0, 120.0), 100.0, (90.0, 110.0));
        let verdict_for = |ebpf: DataplaneMedian| {
            ebpf_vs_no_nat(&[base.clone(), ebpf], &[])
                .pop()
                .expect("one row")
                .verdict
        };
        assert_eq!(
            verdict_for(row("masq-ebpf", 96.0, (90.0, 99.0), 99.0, (95.0, 101.0))),
            "met"
        );
        assert_eq!(
            verdict_for(row("masq-ebpf", 85.0, (70.0, 90.0), 99.0, (95.0, 101.0))),
            "inconclusive"
        );
        assert_eq!(
            verdict_for(row("masq-ebpf", 85.0, (70.0, 90.0), 30.0, (28.0, 33.0))),
            "missed"
        );
        let skipped = [("masq-ebpf".to_string(), "no bpffs".to_string())];
        let none = ebpf_vs_no_nat(std::slice::from_ref(&base), &skipped);
        assert_eq!(none[0].verdict, "not measured");
        assert!(none[0].note.contains("no bpffs"));
    }
}
