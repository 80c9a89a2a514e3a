//! `masq-bench`: masq against its peers on the namespace topology, in one run.
//!
//! Configurations (see [`setups`]): no NAT, kubernetes-sigs/ip-masq-agent's iptables chain,
//! plain nftables masquerade, and the masq agent with each datapath it can load. Measures (see
//! issue 6): new TCP connections/s and UDP flows/s, one-stream throughput, request/response
//! latency, each with several non-masquerade CIDR counts ([`dataplane`]), over IPv4 and, at the
//! smallest count, IPv6 on the dual-stack topology ([`family`]); config-change
//! latency, agent memory and CPU ([`control`]); reload under load ([`reload`]). Rounds are
//! interleaved (each round measures every setup, in a rotated order) and summarized by medians
//! ([`report`]). The packet-generator parts measure the cost of a new flow ([`newflow`]) and
//! one pod's flows towards one destination through one and two SNAT addresses ([`pools`]).
//!
//! Needs root. Everything happens in network namespaces created by masq-testbed and removed
//! afterwards; every load is bounded in count and time.

mod cidrs;
mod clients;
mod control;
mod dataplane;
mod family;
mod library;
mod newflow;
mod peers;
mod pin;
mod pools;
mod procfs;
mod progstats;
mod reload;
mod report;
mod servers;
mod setups;
mod throughput;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::json;

use crate::dataplane::Load;
use crate::family::Family;
use crate::setups::{Env, Setup};

/// Benchmarks masq against no NAT, ip-masq-agent's iptables chain and plain nftables, on
/// throwaway network namespaces.
#[derive(Debug, Parser)]
#[command(name = "masq-bench")]
struct Args {
    /// Where to write results.json and RESULTS.md.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// Interleaved rounds; medians are taken over them.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Non-masquerade CIDR counts for the data plane.
    #[arg(long, value_delimiter = ',', default_value = "10,1000,100000")]
    sizes: Vec<usize>,
    /// Address families of the data-plane part (4, 6 or both); the other parts are IPv4 only.
    #[arg(long, value_delimiter = ',', default_value = "4,6", value_parser = Family::parse)]
    families: Vec<Family>,
    /// IPv6 non-masquerade CIDR counts for the data plane (IPv6 rows compare the families at
    /// the smallest set; the CIDR-count scaling is measured with IPv4).
    #[arg(long, value_delimiter = ',', default_value = "10")]
    ipv6_sizes: Vec<usize>,
    /// CIDR counts for the config-change timings (the last one also gets the one-CIDR change).
    #[arg(long, value_delimiter = ',', default_value = "10,10000,100000")]
    control_sizes: Vec<usize>,
    /// Config changes in the reload-under-load run.
    #[arg(long, default_value_t = 100)]
    reload_changes: usize,
    /// CIDRs in each reload-under-load config.
    #[arg(long, default_value_t = 1000)]
    reload_cidrs: usize,
    /// Client threads for the connection and flow bursts.
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// Most connections (or flows) per burst.
    #[arg(long, default_value_t = 100_000)]
    max_flows: u64,
    /// Longest burst, seconds.
    #[arg(long, default_value_t = 2.0)]
    burst_seconds: f64,
    /// One-stream throughput duration, seconds.
    #[arg(long, default_value_t = 2)]
    stream_seconds: u32,
    /// Timed round trips for the latency test.
    #[arg(long, default_value_t = 5000)]
    round_trips: usize,
    /// Only these setups (names as in the results, comma-separated). `masq-ebpf-clsact` (the
    /// eBPF programs on clsact filters instead of TCX) runs only when named here, and so does
    /// `conntrack-only` in the data-plane part (it is always in the new-flow part).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Skip the data plane, control plane, reload, newflows, fill (the pool-fill runs of the
    /// newflows part) or pools (SNAT pools, one pod, one destination) parts.
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
    /// New flows per sample of the packet-generator part (each packet a new flow).
    #[arg(long, default_value_t = 100_000)]
    newflows: u32,

    /// One more flag for every masq agent of the run (repeatable), e.g. `--agent-arg=--egress-mark=0`
    /// to measure what a promise costs.
    #[arg(long = "agent-arg", allow_hyphen_values = true)]
    agent_args: Vec<String>,

    /// The masq binary (default: next to this one).
    #[arg(long)]
    masq: Option<PathBuf>,
    /// Do not pin threads and processes to CPUs.
    #[arg(long)]
    no_pin: bool,
    /// Say in the results that other jobs shared the machine during the run.
    #[arg(long)]
    shared: bool,
    /// A quick check of the harness (one round, tiny counts, well under a minute).
    #[arg(long)]
    smoke: bool,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("masq-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let mut args = Args::parse();
    if args.smoke {
        args.rounds = 1;
        args.sizes = vec![10, 100];
        args.control_sizes = vec![10, 100];
        args.reload_changes = 3;
        args.reload_cidrs = 10;
        args.threads = 2;
        args.max_flows = 300;
        args.burst_seconds = 0.5;
        args.stream_seconds = 1;
        args.round_trips = 200;
        args.newflows = 2000;
    }
    if args.rounds == 0 || args.sizes.is_empty() || args.control_sizes.is_empty() {
        bail!("--rounds, --sizes and --control-sizes need at least one value");
    }
    if let Some(reason) = masq_testbed::unmet(&["nft", "iptables", "iptables-restore"]) {
        bail!("cannot run: {reason}");
    }
    let ipv6_rows =
        args.families.contains(&Family::V6) && !args.skip.iter().any(|s| s == "dataplane");
    if ipv6_rows {
        if let Some(reason) = masq_testbed::unmet(&["ip6tables", "ip6tables-restore"]) {
            bail!("cannot run the IPv6 rows (--families 4 leaves them out): {reason}");
        }
    }
    masq_testbed::netns::sweep_stale();
    // Before any thread starts: every thread and process of the run (agents, `masq cleanup`, the
    // library syncs) inherits this mount namespace and its bpffs, so eBPF pins never reach the
    // host's /sys/fs/bpf and vanish with the run. Unmounted when `bpffs` drops at the end.
    let bpffs = masq_testbed::PrivateBpffs::mount();
    let plan = pin::Plan::detect(args.no_pin);
    let env = Env {
        masq: setups::find_masq(args.masq.as_deref())?,
        agent_cpu: plan.agent,
        bpf_pin_dir: match &bpffs {
            Ok(mount) => Ok(mount.pin_dir()),
            Err(e) => Err(format!("{e:#}")),
        },
        agent_args: args.agent_args.clone(),
    };
    let load = Load {
        threads: args.threads,
        max_flows: args.max_flows,
        burst_seconds: args.burst_seconds,
        stream_seconds: args.stream_seconds,
        round_trips: args.round_trips,
    };
    let machine = machine(args.shared);
    let started = std::time::Instant::now();

    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    let mut skipped = Vec::new();
    let mut masq = Vec::new();
    for datapath in setups::MASQ_DATAPATHS {
        let setup = Setup::Masq(datapath);
        if !wanted(&setup.name()) {
            continue;
        }
        match setups::masq_unavailable(&env, datapath) {
            None => masq.push(datapath),
            Some(why) => {
                eprintln!("skipping {}: {why}", setup.name());
                skipped.push((setup.name(), why));
            }
        }
    }
    let mut all: Vec<Setup> = [Setup::NoNat, Setup::UpstreamIptables, Setup::PlainNftables]
        .into_iter()
        .filter(|s| wanted(&s.name()))
        .collect();
    all.extend(masq.iter().map(|d| Setup::Masq(d)));
    // Opt-in: the eBPF programs on clsact instead of TCX.
    if args.only.iter().any(|o| o == "masq-ebpf-clsact") {
        match setups::masq_unavailable(&env, "ebpf") {
            None => all.push(Setup::MasqEbpfClsact),
            Some(why) => skipped.push((Setup::MasqEbpfClsact.name(), why)),
        }
    }

    // The new-flow part always has conntrack alone; the data plane when `--only` names it: the
    // cost of a stateful node without any NAT, the floor for the NAT setups' ratios.
    let mut dataplane_setups = all.clone();
    if args.only.iter().any(|o| o == "conntrack-only") {
        dataplane_setups.insert(1.min(all.len()), Setup::Conntrack);
    }

    let mut errors = Vec::new();
    let mut dataplane_samples = Vec::new();
    let mut control_samples = Vec::new();
    let mut reload_samples = Vec::new();
    let mut newflow_samples = Vec::new();
    let mut pool_samples = Vec::new();
    let mut newflow_setups = vec![Setup::NoNat, Setup::Conntrack];
    newflow_setups.extend(all.iter().filter(|s| !matches!(s, Setup::NoNat)));
    // Only here: what masq's port behaviour costs a plain masquerade, per new flow.
    newflow_setups.push(Setup::PlainNftablesFullyRandom);
    newflow_setups.retain(|s| wanted(&s.name()));
    for round in 1..=args.rounds {
        if !args.skip.iter().any(|s| s == "newflows") {
            let mut order = newflow_setups.clone();
            let shift = (round - 1) % order.len().max(1);
            order.rotate_left(shift);
            for setup in order {
                eprintln!(
                    "[{:>4.0}s] round {round}: new flows through {}",
                    started.elapsed().as_secs_f64(),
                    setup.name()
                );
                match newflow::sample(&env, &plan, setup, args.newflows, round) {
                    Ok(sample) => {
                        eprintln!(
                            "         {:.0} flows/s, {:.0} ns per flow",
                            sample.per_second, sample.ns_per_flow
                        );
                        newflow_samples.push(sample);
                    }
                    Err(e) => record(
                        &mut errors,
                        format!("round {round}, new flows through {}: {e:#}", setup.name()),
                    ),
                }
                if !matches!(setup, Setup::Masq(_)) || args.skip.iter().any(|s| s == "fill") {
                    continue;
                }
                match newflow::fill_sample(&env, &plan, setup, round) {
                    Ok(sample) => {
                        eprintln!(
                            "         pool filled by tenths: {:?} ns per flow",
                            sample.fill.iter().map(|v| v.round()).collect::<Vec<_>>()
                        );
                        newflow_samples.push(sample);
                    }
                    Err(e) => record(
                        &mut errors,
                        format!("round {round}, pool fill of {}: {e:#}", setup.name()),
                    ),
                }
            }
        }
        if !args.skip.iter().any(|s| s == "pools") {
            let mut order: Vec<&str> = ["ebpf", "nftables"]
                .into_iter()
                .filter(|d| masq.contains(d))
                .collect();
            let shift = (round - 1) % order.len().max(1);
            order.rotate_left(shift);
            for datapath in order {
                for addresses in [1, 2] {
                    eprintln!(
                        "[{:>4.0}s] round {round}: masq-{datapath}, one pod to one destination, \
                         {addresses} SNAT address(es)",
                        started.elapsed().as_secs_f64()
                    );
                    match pools::sample(&env, &plan, Setup::Masq(datapath), addresses, round) {
                        Ok(sample) => {
                            eprintln!(
                                "         first refusal after {} flows (capacity {}), {:.0} ns \
                                 per new flow at 99 %",
                                sample.first_refusal, sample.capacity, sample.ns_per_flow_at_99
                            );
                            pool_samples.push(sample);
                        }
                        Err(e) => record(
                            &mut errors,
                            format!(
                                "round {round}, pools of masq-{datapath} with {addresses} \
                                 address(es): {e:#}"
                            ),
                        ),
                    }
                }
            }
        }
        let dataplane_sizes = [(Family::V4, &args.sizes), (Family::V6, &args.ipv6_sizes)]
            .into_iter()
            .filter(|(family, _)| args.families.contains(family))
            .flat_map(|(family, sizes)| sizes.iter().map(move |&size| (family, size)));
        if !args.skip.iter().any(|s| s == "dataplane") {
            for (family, size) in dataplane_sizes {
                // Rotate the order each round so no setup always runs first (or right after
                // the 100,000-rule iptables install).
                let mut order = dataplane_setups.clone();
                let shift = (round - 1) % order.len().max(1);
                order.rotate_left(shift);
                for setup in order {
                    eprintln!(
                        "[{:>4.0}s] round {round}: {} with {size} {} CIDRs",
                        started.elapsed().as_secs_f64(),
                        setup.name(),
                        family.name()
                    );
                    match dataplane::sample(&env, &plan, &load, setup, family, size, round) {
                        Ok(sample) => {
                            eprintln!(
                                "         tcp {:.0}/s udp {:.0}/s {:.2} Gbit/s p50 {:.1} µs p99 {:.1} µs (install {:.2} s)",
                                sample.tcp.per_second, sample.udp.per_second, sample.throughput_gbps,
                                sample.latency.p50_us, sample.latency.p99_us, sample.install_seconds
                            );
                            dataplane_samples.push(sample);
                        }
                        Err(e) => record(
                            &mut errors,
                            format!(
                                "round {round}, {} with {size} {} CIDRs: {e:#}",
                                setup.name(),
                                family.name()
                            ),
                        ),
                    }
                }
            }
        }
        if !args.skip.iter().any(|s| s == "control") {
            for datapath in &masq {
                eprintln!(
                    "[{:>4.0}s] round {round}: control plane of masq-{datapath}",
                    started.elapsed().as_secs_f64()
                );
                match control::sample(&env, &plan, datapath, &args.control_sizes, round) {
                    Ok(sample) => {
                        for c in &sample.apply {
                            eprintln!(
                                "         apply {} CIDRs: {:?} ms (sync {:?} ms)",
                                c.cidrs, c.applied_ms, c.sync_ms
                            );
                        }
                        control_samples.push(sample);
                    }
                    Err(e) => record(
                        &mut errors,
                        format!("round {round}, control plane of masq-{datapath}: {e:#}"),
                    ),
                }
            }
        }
    }
    if !args.skip.iter().any(|s| s == "reload") {
        for datapath in &masq {
            eprintln!(
                "[{:>4.0}s] reload under load: masq-{datapath}",
                started.elapsed().as_secs_f64()
            );
            match reload::sample(
                &env,
                &plan,
                datapath,
                args.reload_changes,
                args.reload_cidrs,
            ) {
                Ok(sample) => {
                    eprintln!("         {sample:?}");
                    reload_samples.push(sample);
                }
                Err(e) => record(
                    &mut errors,
                    format!("reload under load of masq-{datapath}: {e:#}"),
                ),
            }
        }
    }

    let summary = report::summarize(
        &dataplane_samples,
        &control_samples,
        &reload_samples,
        &skipped,
    );
    let command: Vec<String> = std::env::args().collect();
    let results = report::Results {
        machine,
        settings: json!({
            "command": command.join(" "),
            "rounds": args.rounds,
            "sizes": args.sizes,
            "families": args.families.iter().map(|f| f.name()).collect::<Vec<_>>(),
            "ipv6_sizes": args.ipv6_sizes,
            "control_sizes": args.control_sizes,
            "reload_changes": args.reload_changes,
            "reload_cidrs": args.reload_cidrs,
            "load": format!(
                "{} client threads, bursts of at most {} flows or {} s, iperf3 {} s, {} round trips",
                load.threads, load.max_flows, load.burst_seconds, load.stream_seconds, load.round_trips
            ),
            "pinning": plan.describe(),
            "throughput_tool": throughput::tool(),
            "duration_seconds": started.elapsed().as_secs_f64(),
        }),
        skipped,
        errors,
        dataplane: dataplane_samples,
        control: control_samples,
        reload: reload_samples,
        newflows: newflow_samples,
        pools: pool_samples,
        summary,
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let json_path = args.out.join("results.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&results)? + "\n")
        .with_context(|| format!("writing {}", json_path.display()))?;
    let md_path = args.out.join("RESULTS.md");
    let ebpf_md = report::ebpf_md_link(&args.out);
    std::fs::write(&md_path, report::markdown(&results, &ebpf_md))
        .with_context(|| format!("writing {}", md_path.display()))?;
    eprintln!(
        "wrote {} and {} in {:.0} s",
        json_path.display(),
        md_path.display(),
        started.elapsed().as_secs_f64()
    );
    if !results.errors.is_empty() {
        bail!(
            "{} samples failed (listed in the results)",
            results.errors.len()
        );
    }
    Ok(())
}

fn record(errors: &mut Vec<String>, error: String) {
    eprintln!("error: {error}");
    errors.push(error);
}

fn machine(shared: bool) -> report::Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let first_line = |program: &str, args: &[&str]| {
        std::process::Command::new(program)
            .args(args)
            .output()
            .map(|o| {
                let text = String::from_utf8_lossy(&o.stdout).into_owned();
                text.lines().next().unwrap_or_default().trim().to_string()
            })
            .unwrap_or_default()
    };
    report::Machine {
        nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model: cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name")?.split(':').nth(1))
            .unwrap_or("unknown")
            .trim()
            .to_string(),
        kernel: first_line("uname", &["-r"]),
        date_utc: first_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        load_average_at_start: std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or(f64::NAN),
        shared,
        iptables: first_line("iptables", &["-V"]),
        nft: first_line("nft", &["-v"]),
    }
}
