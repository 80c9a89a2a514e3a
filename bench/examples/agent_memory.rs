//! The agent's memory, stage by stage: RSS (anonymous and file-backed apart) and peak RSS of a
//! `masq agent` started with an empty list, then given the most /32s a ConfigMap holds, then
//! one of them changed. The control-plane benchmark reports the same VmRSS/VmHWM figures; this
//! tool exists to profile them quickly, one datapath at a time.
//!
//! `sudo target/release/examples/agent_memory [ebpf|nftables|iptables] [CIDRS] [HOLD_SECONDS]`
//!
//! With HOLD_SECONDS, it pauses that long after each stage (its pid is printed) so that
//! /proc/PID/smaps or a heap profiler attached with `heaptrack -p PID` can look at it.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use masq_testbed::{addr, AgentProcess, ConfigMapDir, Netns, PrivateBpffs, Topology};

/// 100.64.0.0, every other address: no two fillers merge into a shorter prefix.
const FILLER_BASE: u32 = 0x6440_0000;
/// The largest config file the agent accepts.
const CONFIG_LIMIT: usize = 1 << 20;

fn config_yaml(count: usize, last: &str) -> String {
    let mut yaml = format!(
        "resyncInterval: 1h\ncidrLimit: {}\nnonMasqueradeCIDRs: [",
        count.max(16384) + 16
    );
    for index in 0..count {
        let host = Ipv4Addr::from(FILLER_BASE + 2 * index as u32);
        let _ = write!(yaml, "{host}/32,");
    }
    yaml.push_str(last);
    yaml.push_str("]\n");
    yaml
}

fn most_that_fit() -> usize {
    let (mut low, mut high) = (0, 200_000);
    while low + 1 < high {
        let mid = (low + high) / 2;
        if config_yaml(mid, "203.0.113.0/24").len() <= CONFIG_LIMIT {
            low = mid;
        } else {
            high = mid;
        }
    }
    low
}

fn status_kib(pid: u32) -> Result<Vec<(String, u64)>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let keys = ["VmRSS", "RssAnon", "RssFile", "VmHWM"];
    Ok(text
        .lines()
        .filter_map(|line| {
            let (key, rest) = line.split_once(':')?;
            let kib = rest.split_whitespace().next()?.parse().ok()?;
            keys.contains(&key).then(|| (key.to_string(), kib))
        })
        .collect())
}

fn report(stage: &str, pid: u32, hold: Duration) -> Result<()> {
    std::thread::sleep(Duration::from_millis(500));
    let fields: Vec<String> = status_kib(pid)?
        .iter()
        .map(|(key, kib)| format!("{key} {:.1}", *kib as f64 / 1024.0))
        .collect();
    println!("{stage:<28} MiB: {}", fields.join("  "));
    if !hold.is_zero() {
        println!("  holding {hold:?} (pid {pid})");
        std::thread::sleep(hold);
    }
    Ok(())
}

fn syncs(node: &Netns) -> Result<u64> {
    let address = masq_testbed::agent::METRICS_ADDR.parse()?;
    let (_, text) = masq_testbed::agent::get(node, address, "/metrics")?
        .context("the agent's /metrics did not answer")?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("masq_sync_duration_seconds_count "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64)
}

fn apply(node: &Netns, config: &mut ConfigMapDir, yaml: &str) -> Result<Duration> {
    let before = syncs(node)?;
    let started = Instant::now();
    config.update(yaml)?;
    while started.elapsed() < Duration::from_secs(120) {
        if syncs(node)? > before {
            return Ok(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    bail!("no sync within 120 s")
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let datapath = args.first().map_or("ebpf", String::as_str).to_string();
    let count = match args.get(1) {
        Some(n) => n.parse().context("CIDRS")?,
        None => most_that_fit(),
    };
    let hold = Duration::from_secs(args.get(2).map_or(Ok(0), |s| s.parse())?);
    let masq = std::env::var_os("MASQ").map_or_else(
        || {
            let exe = std::env::current_exe().expect("own path");
            exe.parent()
                .and_then(|p| p.parent())
                .expect("target dir")
                .join("masq")
        },
        PathBuf::from,
    );

    let bpffs = PrivateBpffs::mount()?;
    let topology = Topology::new()?;
    let mut config = ConfigMapDir::with(&config_yaml(0, "203.0.113.0/24"))?;
    let log = config.config_path().with_file_name("agent.log");
    let mut agent_args: Vec<String> = vec![
        "--config".into(),
        config.config_path().to_string_lossy().into_owned(),
        "--datapath".into(),
        datapath.clone(),
        "--pod-cidr".into(),
        addr::POD_CIDR.into(),
    ];
    if datapath == "ebpf" {
        agent_args.push("--bpf-pin-dir".into());
        agent_args.push(bpffs.pin_dir().to_string_lossy().into_owned());
    }
    let mut agent = AgentProcess::start(&topology.node, &masq, &agent_args, &log)?;
    agent.wait_ready(&topology.node, Duration::from_secs(60))?;
    let pid = agent.pid();
    println!("masq agent --datapath {datapath}, pid {pid}, {count} CIDRs");
    report("started, 1 CIDR", pid, hold)?;

    let large = config_yaml(count, "203.0.113.0/24");
    let took = apply(&topology.node, &mut config, &large)?;
    report(&format!("{count} CIDRs ({took:.0?})"), pid, hold)?;
    let took = apply(
        &topology.node,
        &mut config,
        &config_yaml(count, "198.18.0.0/32"),
    )?;
    report(&format!("change one ({took:.0?})"), pid, hold)?;
    let took = apply(
        &topology.node,
        &mut config,
        &config_yaml(0, "203.0.113.0/24"),
    )?;
    report(&format!("back to 1 CIDR ({took:.0?})"), pid, hold)?;

    let status = agent.terminate()?;
    if !status.success() {
        bail!("the agent exited with {status}");
    }
    if datapath == "ebpf" {
        let _ = std::fs::remove_dir_all(bpffs.pin_dir());
    }
    Ok(())
}
