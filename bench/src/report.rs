//! Medians, ratios to the no-NAT baseline, the targets judged met or missed, and the
//! two results files (JSON for scripts, Markdown for people).

use std::collections::BTreeSet;
use std::fmt::Write;

use serde::Serialize;

use crate::{control, dataplane, reload};

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

/// Medians of one (setup, CIDR count).
#[derive(Clone, Debug, Serialize)]
pub struct DataplaneMedian {
    /// Setup name.
    pub setup: String,
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
    /// Ratios to the no-NAT medians (tcp, udp, throughput, p50, p99).
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
    let keys: BTreeSet<(String, usize)> = dataplane
        .iter()
        .map(|s| (s.setup.clone(), s.cidrs))
        .collect();
    let mut medians: Vec<DataplaneMedian> = keys
        .into_iter()
        .map(|(setup, cidrs)| {
            let of: Vec<&dataplane::Sample> = dataplane
                .iter()
                .filter(|s| s.setup == setup && s.cidrs == cidrs)
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
                cidrs,
            }
        })
        .collect();
    if let Some(base) = medians.iter().find(|m| m.setup == "no-nat").cloned() {
        for m in &mut medians {
            m.vs_no_nat = [
                m.tcp_per_second / base.tcp_per_second,
                m.udp_per_second / base.udp_per_second,
                m.throughput_gbps / base.throughput_gbps,
                m.p50_us / base.p50_us,
                m.p99_us / base.p99_us,
            ];
        }
    }
    medians.sort_by_key(|m| (setup_order(&m.setup), m.cidrs));

    let control_setups: BTreeSet<String> = control.iter().map(|s| s.setup.clone()).collect();
    let control_medians: Vec<ControlMedian> = control_setups
        .into_iter()
        .map(|setup| control_median(&setup, control))
        .collect();

    let targets = targets(&medians, &control_medians, reload, skipped);
    Summary {
        dataplane: medians,
        control: control_medians,
        targets,
    }
}

fn setup_order(setup: &str) -> usize {
    [
        "no-nat",
        "ip-masq-agent-iptables",
        "plain-nftables",
        "masq-nftables",
        "masq-iptables",
        "masq-ebpf",
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

/// Why the agent's memory grows with the set (from the figures: RSS idle stays at the peak).
const RSS_NOTE: &str = "RSS grows with the set and stays at the reload peak (freed heap is kept \
    by the allocator); during a sync the agent holds the file bytes, the parsed config, the \
    installed and the new desired state, and the whole installed state read back from the kernel \
    (nft JSON parsed into values, or every iptables-save line as a string)";

fn verdict(met: bool) -> String {
    if met { "met" } else { "missed" }.to_string()
}

fn targets(
    medians: &[DataplaneMedian],
    control: &[ControlMedian],
    reload: &[reload::Sample],
    skipped: &[(String, String)],
) -> Vec<Target> {
    let mut out = Vec::new();
    let masq_setups: BTreeSet<&str> = medians
        .iter()
        .map(|m| m.setup.as_str())
        .filter(|s| s.starts_with("masq-"))
        .collect();
    let rate = |setup: &str, smallest: bool| {
        let mut of: Vec<&DataplaneMedian> = medians.iter().filter(|m| m.setup == setup).collect();
        of.sort_by_key(|m| m.cidrs);
        if smallest {
            of.first().copied()
        } else {
            of.last().copied()
        }
    };
    let flat = "new-connection rate flat from the fewest to the most CIDRs (within 5%)";
    for setup in &masq_setups {
        if let (Some(low), Some(high)) = (rate(setup, true), rate(setup, false)) {
            let ratio = high.tcp_per_second / low.tcp_per_second;
            let udp = high.udp_per_second / low.udp_per_second;
            let within = (ratio - 1.0).abs() <= 0.05;
            let ranges_overlap =
                low.tcp_range.0 <= high.tcp_range.1 && high.tcp_range.0 <= low.tcp_range.1;
            let verdict_text = if within {
                verdict(true)
            } else if ranges_overlap && *setup != "masq-iptables" {
                "inconclusive".to_string()
            } else {
                verdict(false)
            };
            out.push(Target {
                target: flat.into(),
                setup: setup.to_string(),
                measured: format!(
                    "TCP {:.0}/s at {} → {:.0}/s at {} ({:+.1}%); UDP {:+.1}%",
                    low.tcp_per_second,
                    low.cidrs,
                    high.tcp_per_second,
                    high.cidrs,
                    (ratio - 1.0) * 100.0,
                    (udp - 1.0) * 100.0
                ),
                verdict: verdict_text,
                note: if within {
                    String::new()
                } else if *setup == "masq-iptables" {
                    "by design: masq's iptables datapath writes ip-masq-agent's layout (one \
                     RETURN rule per CIDR, for in-place migration), so every new connection walks \
                     the whole chain, exactly like the peer; large sets belong on nftables or eBPF"
                        .into()
                } else {
                    format!(
                        "the medians differ by more than 5%, but the run-to-run ranges overlap \
                         (TCP {:.0}-{:.0}/s at {}, {:.0}-{:.0}/s at {}): on this shared 2-CPU \
                         machine the noise is wider than the 5% band, so flatness can be neither \
                         shown nor refuted; no collapse like the iptables chain's is visible",
                        low.tcp_range.0,
                        low.tcp_range.1,
                        low.cidrs,
                        high.tcp_range.0,
                        high.tcp_range.1,
                        high.cidrs
                    )
                },
            });
        }
    }
    if let (Some(low), Some(high)) = (
        rate("ip-masq-agent-iptables", true),
        rate("ip-masq-agent-iptables", false),
    ) {
        out.push(Target {
            target: "…where the iptables peer collapses".into(),
            setup: "ip-masq-agent-iptables".into(),
            measured: format!(
                "TCP {:.0}/s at {} → {:.0}/s at {} ({:.1}% of its 10-CIDR rate)",
                low.tcp_per_second,
                low.cidrs,
                high.tcp_per_second,
                high.cidrs,
                high.tcp_per_second / low.tcp_per_second * 100.0
            ),
            verdict: "reference".into(),
            note: "a peer, not a masq target".into(),
        });
    }
    out.extend(ebpf_vs_no_nat(medians, skipped));
    for c in control {
        let Some(&(fit, applied, sync, _)) = c.apply.last() else {
            continue;
        };
        let fit_note = format!(
            "{fit} CIDRs (the most that fit) applied in {applied:.0} ms (datapath sync {sync:.0} ms)"
        );
        for &(cidrs, install_ms, change_ms, read_ms) in &c.library {
            out.push(Target {
                target: format!("{cidrs} CIDRs applied in under 0.5 s"),
                setup: c.setup.clone(),
                measured: format!(
                    "agent: config rejected; {fit_note}; the datapath sync alone (library) \
                     {install_ms:.0} ms for {cidrs}, {change_ms:.0} ms to change one of them"
                ),
                verdict: if install_ms < 500.0 && change_ms < 500.0 {
                    "missed by the agent (met by the datapath alone)".into()
                } else {
                    "missed".into()
                },
                note: library_note(&c.setup, cidrs, install_ms, change_ms, read_ms),
            });
        }
        if c.library.is_empty() {
            let met = applied < 500.0;
            out.push(Target {
                target: format!("{fit} CIDRs applied in under 0.5 s"),
                setup: c.setup.clone(),
                measured: format!(
                    "{applied:.0} ms from the file change (datapath sync {sync:.0} ms)"
                ),
                verdict: verdict(met),
                note: if met {
                    String::new()
                } else {
                    format!(
                        "the kernel update alone (the agent's sync) takes {sync:.0} ms; the other \
                         {:.0} ms are the 50 ms debounce, reading and parsing the file and \
                         building the desired state",
                        applied - sync
                    )
                },
            });
        } else {
            let met = applied < 500.0;
            out.push(Target {
                target: format!("{fit} CIDRs (the most a ConfigMap holds) applied in under 0.5 s"),
                setup: c.setup.clone(),
                measured: fit_note.clone(),
                verdict: verdict(met),
                note: if met {
                    String::new()
                } else {
                    format!(
                        "the kernel update (the agent's sync) takes {sync:.0} ms; the other {:.0} \
                         ms are the 50 ms debounce, reading and parsing the file and building the \
                         desired state",
                        applied - sync
                    )
                },
            });
        }
        let rss = c.rss_idle_largest_mib.max(c.peak_rss_mib);
        let wanted = c.library.last().map_or(fit, |l| l.0);
        let measured = format!(
            "{:.1} MiB idle, {:.1} MiB peak during reloads, with {fit} CIDRs",
            c.rss_idle_largest_mib, c.peak_rss_mib
        );
        out.push(Target {
            target: format!("agent RSS under 30 MiB with {wanted} CIDRs"),
            setup: c.setup.clone(),
            measured,
            verdict: match (wanted == fit, rss < 30.0) {
                (true, met) => verdict(met),
                (false, true) => format!("not measurable at {wanted} (met at {fit})"),
                (false, false) => format!("not measurable at {wanted} (missed at {fit})"),
            },
            note: if c.setup == "masq-ebpf" && rss >= 30.0 {
                let limit = if wanted != fit {
                    format!(
                        "the agent cannot be given more CIDRs than fit in its 1 MiB config \
                         file; at {fit}: "
                    )
                } else {
                    String::new()
                };
                format!(
                    "{limit}already {:.1} MiB with an empty list (the eBPF datapath's baseline, \
                     not profiled), and the rest grows with the set like the other datapaths'",
                    c.rss_idle_empty_mib
                )
            } else if wanted != fit && rss >= 30.0 {
                format!("the agent cannot be given more CIDRs than fit in its 1 MiB config file; at {fit}: {RSS_NOTE}")
            } else if wanted != fit {
                "the agent cannot be given more CIDRs than fit in its 1 MiB config file".into()
            } else if rss >= 30.0 {
                RSS_NOTE.into()
            } else {
                String::new()
            },
        });
    }
    for r in reload {
        let wrong = r.wrong_source_masqueraded + r.wrong_source_kept;
        out.push(Target {
            target: "zero wrong-source packets and zero failed connections during reloads".into(),
            setup: r.setup.clone(),
            measured: format!(
                "{} changes ({} synced), {} connections: {} failed, {} wrong source",
                r.changes, r.changes_synced, r.connections, r.failed, wrong
            ),
            verdict: verdict(wrong == 0 && r.failed == 0 && r.changes_synced == r.changes),
            note: String::new(),
        });
    }
    out
}

/// Lowest and highest rate over the rounds.
type Range = (f64, f64);

/// The eBPF target of issue 6, one row per CIDR count: TCP and UDP new-flow rates against no NAT.
/// A median under 95% is a miss only when the rate's run-to-run range stays clear of no-NAT's;
/// overlapping ranges on a noisy machine make it inconclusive.
fn ebpf_vs_no_nat(medians: &[DataplaneMedian], skipped: &[(String, String)]) -> Vec<Target> {
    const TARGET: &str = "eBPF new-connection rate ≥ 95% of no-NAT";
    let base = medians.iter().find(|m| m.setup == "no-nat");
    let rows: Vec<&DataplaneMedian> = medians.iter().filter(|m| m.setup == "masq-ebpf").collect();
    let (Some(base), false) = (base, rows.is_empty()) else {
        return vec![Target {
            target: TARGET.into(),
            setup: "masq-ebpf".into(),
            measured: "-".into(),
            verdict: "not measured".into(),
            note: skipped
                .iter()
                .find(|(s, _)| s == "masq-ebpf")
                .map(|(_, why)| format!("the agent could not run the eBPF datapath: {why}"))
                .unwrap_or_else(|| "the eBPF datapath or no-NAT was not part of this run".into()),
        }];
    };
    let overlap = |a: (f64, f64), b: (f64, f64)| a.0 <= b.1 && b.0 <= a.1;
    rows.into_iter()
        .map(|m| {
            let (tcp, udp) = (m.vs_no_nat[0], m.vs_no_nat[1]);
            let short: Vec<(&str, Range, Range)> = [
                ("TCP", tcp, m.tcp_range, base.tcp_range),
                ("UDP", udp, m.udp_range, base.udp_range),
            ]
            .into_iter()
            .filter(|(_, ratio, _, _)| *ratio < 0.95)
            .map(|(name, _, own, reference)| (name, own, reference))
            .collect();
            let verdict = if short.is_empty() {
                verdict(true)
            } else if short
                .iter()
                .all(|(_, own, reference)| overlap(*own, *reference))
            {
                "inconclusive".into()
            } else {
                verdict(false)
            };
            let note = short
                .iter()
                .map(|(name, own, reference)| {
                    format!(
                        "{name} {:.0}-{:.0}/s over the rounds against no-NAT's {:.0}-{:.0}/s ({})",
                        own.0,
                        own.1,
                        reference.0,
                        reference.1,
                        if overlap(*own, *reference) {
                            "the ranges overlap: noise as wide as the gap"
                        } else {
                            "no overlap"
                        }
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            Target {
                target: TARGET.into(),
                setup: if m.installed_by == "library" {
                    "masq-ebpf (library, no agent)".into()
                } else {
                    "masq-ebpf".into()
                },
                measured: format!(
                    "{} CIDRs: TCP {:.0}/s = {:.1}% of no-NAT, UDP {:.0}/s = {:.1}%",
                    m.cidrs,
                    m.tcp_per_second,
                    tcp * 100.0,
                    m.udp_per_second,
                    udp * 100.0
                ),
                verdict,
                note,
            }
        })
        .collect()
}

/// Why a set the agent cannot be given misses (or would meet) the apply target, from the
/// datapath's library sync.
fn library_note(
    setup: &str,
    cidrs: usize,
    install_ms: f64,
    change_ms: f64,
    read_ms: f64,
) -> String {
    let rejected = format!(
        "the agent refuses config files over 1 MiB (the ConfigMap size limit) and {cidrs} IPv4 \
         CIDRs take about {} bytes even in flow-style YAML, so no ConfigMap can carry them.",
        crate::cidrs::config_yaml(&crate::cidrs::fillers(0, cidrs)).len()
    );
    // nftables reads its table back only when the ruleset generation moved (another
    // process committed), so neither timed sync includes a read; the other datapaths read once
    // per sync.
    let reads = if setup == "masq-nftables" {
        format!(
            "no read-back: the table is read only after someone else commits, and one read \
             costs {read_ms:.0} ms"
        )
    } else {
        format!("including one read-back of the installed state, {read_ms:.0} ms")
    };
    if install_ms < 500.0 && change_ms < 500.0 {
        format!(
            "{rejected} The datapath itself is within the target: its sync took {install_ms:.0} \
             ms from empty and {change_ms:.0} ms to change one CIDR ({reads})"
        )
    } else if setup == "masq-nftables" {
        format!(
            "{rejected} The datapath misses too: its sync took {install_ms:.0} ms from empty \
             and {change_ms:.0} ms to change one CIDR ({reads}); creating a set of {cidrs} \
             intervals is nft's own work (parsing them, then the kernel inserting two rbtree \
             elements per CIDR), about 0.5 s on its own"
        )
    } else if setup == "masq-ebpf" {
        format!(
            "{rejected} The datapath misses too: its sync took {install_ms:.0} ms from empty and \
             {change_ms:.0} ms to change one CIDR ({reads})"
        )
    } else {
        format!(
            "{rejected} Even without that limit the datapath misses: its sync took \
             {install_ms:.0} ms from empty and {change_ms:.0} ms to change one CIDR ({reads})"
        )
    }
}

fn fmt(v: f64, digits: usize) -> String {
    if v.is_nan() {
        "-".into()
    } else {
        format!("{v:.digits$}")
    }
}

fn ratio(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else {
        format!("{:.0}%", v * 100.0)
    }
}

/// The Markdown report.
pub fn markdown(results: &Results) -> String {
    let mut md = String::new();
    let m = &results.machine;
    let s = &results.summary;
    let _ = writeln!(md, "# masq benchmark results\n");
    let _ = writeln!(
        md,
        "Generated by `masq-bench` (see `bench/README.md`); every figure below is computed from \
         `results.json` of the same run.\n"
    );
    let _ = writeln!(md, "| | |\n|---|---|");
    let _ = writeln!(md, "| date (UTC) | {} |", m.date_utc);
    let _ = writeln!(md, "| machine | {} CPUs, {} |", m.nproc, m.cpu_model);
    let _ = writeln!(md, "| kernel | {} |", m.kernel);
    let _ = writeln!(md, "| iptables / nft | {} / {} |", m.iptables, m.nft);
    let shared = if m.shared {
        format!(
            "**yes**: other jobs ran on this machine during the run (load average {:.2} at \
             start); absolute figures are noisy, compare setups within the run",
            m.load_average_at_start
        )
    } else {
        format!("no (load average {:.2} at start)", m.load_average_at_start)
    };
    let _ = writeln!(md, "| machine shared | {shared} |");
    for key in ["rounds", "pinning", "load", "throughput_tool", "command"] {
        if let Some(v) = results.settings.get(key) {
            let text = v
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            let _ = writeln!(
                md,
                "| {} | {} |",
                key.replace('_', " "),
                text.replace('|', "\\|")
            );
        }
    }
    let _ = writeln!(md);

    let _ = writeln!(md, "## Targets (issue 6)\n");
    let _ = writeln!(
        md,
        "| target | setup | measured | verdict | why |\n|---|---|---|---|---|"
    );
    for t in &s.targets {
        let _ = writeln!(
            md,
            "| {} | {} | {} | **{}** | {} |",
            t.target, t.setup, t.measured, t.verdict, t.note
        );
    }

    let _ = writeln!(
        md,
        "\n## Data plane (medians of {} rounds)\n",
        rounds(results)
    );
    let _ = writeln!(
        md,
        "From the pod to the \"internet\" host, through the node. None of the N non-masquerade \
         CIDRs covers the destination: every new flow walks them all and is masqueraded. \
         Percentages are ratios to no-nat (for latency, >100% is slower). A masq row marked \
         \"library, no agent\" holds more CIDRs than the agent's 1 MiB config file can: the \
         ruleset was installed by the same datapath code called as a library.\n"
    );
    let _ = writeln!(
        md,
        "| setup | CIDRs | TCP conn/s | (range) | vs no-NAT | UDP flows/s | vs no-NAT | 1 stream Gbit/s | vs no-NAT | p50 µs | p99 µs | p99 vs no-NAT | install s | failed flows | conntrack insert_failed |"
    );
    let _ = writeln!(
        md,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for d in &s.dataplane {
        let _ = writeln!(
            md,
            "| {}{} | {} | {} | {}-{} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            d.setup,
            if d.installed_by == "library" {
                " (library, no agent)"
            } else {
                ""
            },
            if d.setup == "no-nat" {
                "-".to_string()
            } else {
                d.cidrs.to_string()
            },
            fmt(d.tcp_per_second, 0),
            fmt(d.tcp_range.0, 0),
            fmt(d.tcp_range.1, 0),
            ratio(d.vs_no_nat[0]),
            fmt(d.udp_per_second, 0),
            ratio(d.vs_no_nat[1]),
            fmt(d.throughput_gbps, 2),
            ratio(d.vs_no_nat[2]),
            fmt(d.p50_us, 1),
            fmt(d.p99_us, 1),
            ratio(d.vs_no_nat[4]),
            fmt(d.install_seconds, 2),
            d.failures,
            d.conntrack_insert_failed
        );
    }

    if !s.control.is_empty() {
        let _ = writeln!(md, "\n## Control plane (medians)\n");
        let _ = writeln!(
            md,
            "Time from the ConfigMap `..data` swap until new connections show the change and the \
             agent reports the sync (ms), starting from an empty list; in brackets the datapath \
             sync the agent measured; CPU is the agent's plus the helpers it ran (`nft`, \
             `iptables-restore`), seconds.\n"
        );
        let sizes: Vec<usize> = s.control[0].apply.iter().map(|a| a.0).collect();
        let mut header = "| setup |".to_string();
        for size in &sizes {
            let _ = write!(header, " apply {size} |");
        }
        let _ = write!(
            header,
            " change 1 in {} | CPU for {} | RSS idle (empty) MiB | RSS idle ({}) MiB | peak RSS MiB | idle CPU % |",
            sizes.last().unwrap_or(&0),
            sizes.last().unwrap_or(&0),
            sizes.last().unwrap_or(&0)
        );
        let _ = writeln!(md, "{header}");
        let _ = writeln!(md, "|---|{}", "---:|".repeat(sizes.len() + 6));
        for c in &s.control {
            let mut row = format!("| {} |", c.setup);
            for &(_, applied, sync, _) in &c.apply {
                let _ = write!(row, " {} ({}) |", fmt(applied, 0), fmt(sync, 0));
            }
            let cpu = c.apply.last().map_or(f64::NAN, |a| a.3);
            let _ = write!(
                row,
                " {} ({}) | {} | {} | {} | {} | {} |",
                fmt(c.change_one.0, 0),
                fmt(c.change_one.1, 0),
                fmt(cpu, 2),
                fmt(c.rss_idle_empty_mib, 1),
                fmt(c.rss_idle_largest_mib, 1),
                fmt(c.peak_rss_mib, 1),
                fmt(c.idle_cpu_percent, 2)
            );
            let _ = writeln!(md, "{row}");
        }
        let library: Vec<&ControlMedian> =
            s.control.iter().filter(|c| !c.library.is_empty()).collect();
        if !library.is_empty() {
            let _ = writeln!(
                md,
                "\nSets the agent's config file cannot hold (over 1 MiB) were replaced above by \
                 the most that fit; for them, the datapath's own `sync` called as a library in the \
                 node namespace (no file, no parsing, no debounce):\n"
            );
            let _ = writeln!(md, "| setup | CIDRs | install from empty ms | change one ms | one read-back of the installed state ms |\n|---|---:|---:|---:|---:|");
            for c in library {
                for (cidrs, install, change, read) in &c.library {
                    let _ = writeln!(
                        md,
                        "| {} | {cidrs} | {} | {} | {} |",
                        c.setup,
                        fmt(*install, 0),
                        fmt(*change, 0),
                        fmt(*read, 0)
                    );
                }
            }
        }
    }

    if !results.reload.is_empty() {
        let _ = writeln!(md, "\n## Reload under load\n");
        let _ = writeln!(
            md,
            "Config changes alternating between two sets that differ in half their entries (both \
             keep 10.0.0.0/8), each written once the previous one was synced, while two threads \
             open new connections non-stop (1 ms apart) alternately to the masqueraded host \
             203.0.113.10 and the kept host 10.200.0.10; the servers record the source of every \
             connection.\n"
        );
        let _ = writeln!(
            md,
            "| setup | CIDRs | changes (synced) | median change ms | connections | failed | wrong source (masqueraded host) | wrong source (kept host) |\n|---|---:|---:|---:|---:|---:|---:|---:|"
        );
        for r in &results.reload {
            let _ = writeln!(
                md,
                "| {} | {} | {} ({}) | {} | {} | {} | {} | {} |",
                r.setup,
                r.cidrs,
                r.changes,
                r.changes_synced,
                fmt(r.median_change_ms, 0),
                r.connections,
                r.failed,
                r.wrong_source_masqueraded,
                r.wrong_source_kept
            );
        }
    }

    let _ = writeln!(
        md,
        "\n## eBPF per-packet cost (issue 4)\n\nMeasured apart from this run, by the kernel through \
         `BPF_PROG_TEST_RUN` on the egress program (ns per packet for an established and a new \
         flow, with 10, 1,000 and 100,000 CIDRs): see [`bench/ebpf.md`](../ebpf.md) \
         (`cargo bench -p masq-datapath --bench ebpf_test_run`). The eBPF datapath's own counters \
         and NAT table fill after each data-plane sample are in `results.json` \
         (`dataplane[].ebpf`)."
    );

    if !results.skipped.is_empty() || !results.errors.is_empty() {
        let _ = writeln!(md, "\n## Not measured\n");
        for (setup, why) in &results.skipped {
            let _ = writeln!(md, "- {setup}: skipped, {why}");
        }
        for e in &results.errors {
            let _ = writeln!(md, "- error: {e}");
        }
    }
    md
}

fn rounds(results: &Results) -> String {
    results
        .settings
        .get("rounds")
        .map(|v| v.to_string())
        .unwrap_or_else(|| "?".into())
}

#[cfg(test)]
mod tests {
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
