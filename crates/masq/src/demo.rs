//! `masq demo`: the whole product in one minute, on a throwaway topology.
//!
//! Builds pod / node / external namespaces (masq-testbed), starts this very binary as
//! `masq agent` inside the node namespace with a sample ConfigMap, sends TCP, UDP and ping from
//! the pod to a masqueraded, a kept and a link-local destination, and prints what the far side
//! saw. Everything is removed afterwards, also on failure (the namespaces are dropped). Nothing
//! outside those namespaces is touched.

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use masq_decision::{Action, NodeContext, Policy};
use masq_testbed::{addr, netns, AgentProcess, ConfigMapDir, PrivateBpffs, Probes, Topology};

use crate::flags::DatapathChoice;

/// The sample ConfigMap: the VPC (10.0.0.0/8) keeps pod IPs; everything else, the TEST-NET
/// "internet" hosts included, is masqueraded; the metadata server stays link-local.
const SAMPLE_CONFIG: &str = "\
nonMasqueradeCIDRs:
  - 10.0.0.0/8
masqLinkLocal: false
resyncInterval: 60s
";

/// The destinations shown, with what each stands for.
const DESTINATIONS: [(IpAddr, &str); 3] = [
    (IpAddr::V4(addr::INTERNET), "internet"),
    (IpAddr::V4(addr::PRIVATE), "VPC peer"),
    (IpAddr::V4(addr::METADATA), "metadata"),
];

/// Runs the demo; exit 0 when every destination was treated as the config says.
pub fn run(datapath: DatapathChoice) -> Result<ExitCode> {
    if let Some(reason) = masq_testbed::unmet(&["nft"]) {
        bail!("masq demo {reason}");
    }
    netns::sweep_stale();
    // Before any thread starts: the agent and `masq cleanup`, started from this thread, inherit
    // the private bpffs, so eBPF pins never reach the host's /sys/fs/bpf.
    let bpffs = PrivateBpffs::mount()?;
    let pin_dir = bpffs.pin_dir().to_string_lossy().into_owned();
    let binary = std::env::current_exe().context("finding the masq binary")?;
    let config = ConfigMapDir::with(SAMPLE_CONFIG)?;
    let topology = Topology::new()?;
    println!(
        "topology: pod {} and node {} (namespaces {}, {}), external {} (namespace {})",
        addr::POD,
        addr::NODE,
        topology.pod.name(),
        topology.node.name(),
        addr::INTERNET,
        topology.external.name()
    );
    println!(
        "config ({}):\n{}",
        config.config_path().display(),
        indent(SAMPLE_CONFIG)
    );

    let log = config.config_path().with_file_name("agent.log");
    let args: Vec<String> = [
        "--config",
        &config.config_path().to_string_lossy(),
        "--datapath",
        datapath_name(datapath),
        "--pod-cidr",
        addr::POD_CIDR,
        "--bpf-pin-dir",
        &pin_dir,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut agent = AgentProcess::start(&topology.node, &binary, &args, &log)?;
    let took = agent.wait_ready(&topology.node, Duration::from_secs(20))?;
    let status = masq_testbed::agent::get(
        &topology.node,
        masq_testbed::agent::METRICS_ADDR.parse()?,
        "/status",
    )?
    .map(|(_, body)| body)
    .unwrap_or_default();
    let status: masq_agent::status::Status = serde_json::from_str(&status).unwrap_or_default();
    println!(
        "agent ready after {} ms; datapath {} ({})\n",
        took.as_millis(),
        status.datapath,
        status.datapath_reason
    );

    let parsed = masq_config::parse(SAMPLE_CONFIG.as_bytes(), &Default::default())
        .context("the sample config")?;
    let policy = Policy::new(
        &parsed.config,
        &NodeContext {
            pod_cidrs: vec![addr::POD_CIDR.parse()?],
            ..Default::default()
        },
    );
    let hosts: Vec<IpAddr> = DESTINATIONS.iter().map(|(ip, _)| *ip).collect();
    let probes = Probes::start(&topology.external, &hosts, 8080)?;

    println!(
        "{:<17} {:<9} {:<11} {:<20} {:<14} {:<14} {:<14} ok",
        "DESTINATION", "ROLE", "DECISION", "REASON", "TCP SOURCE", "UDP SOURCE", "PING SOURCE"
    );
    let mut all_ok = true;
    for (dst, role) in DESTINATIONS {
        let verdict = policy.decide(Some(IpAddr::V4(addr::POD)), dst);
        let expected = match verdict.action {
            Action::Masquerade => IpAddr::V4(addr::NODE),
            Action::Keep => IpAddr::V4(addr::POD),
        };
        let seen = probes.sources(&topology.pod, dst)?;
        let ok = [seen.tcp, seen.udp, seen.icmp]
            .iter()
            .all(|s| *s == expected);
        all_ok &= ok;
        let action = match verdict.action {
            Action::Masquerade => "masquerade",
            Action::Keep => "keep",
        };
        let reason = serde_json::to_value(verdict.reason)?
            .as_str()
            .unwrap_or_default()
            .to_string();
        println!(
            "{:<17} {:<9} {:<11} {:<20} {:<14} {:<14} {:<14} {}",
            dst.to_string(),
            role,
            action,
            reason,
            seen.tcp.to_string(),
            seen.udp.to_string(),
            seen.icmp.to_string(),
            if ok { "yes" } else { "NO" }
        );
    }

    if status.datapath == "ebpf" {
        let nat = topology
            .node
            .command(&binary.to_string_lossy())
            .args(["nat", "list", "--bpf-pin-dir", &pin_dir])
            .output()?;
        println!(
            "\nmasq nat list (the eBPF NAT table):\n{}",
            indent(&String::from_utf8_lossy(&nat.stdout))
        );
    }

    agent.terminate()?;
    let cleanup = topology
        .node
        .command(&binary.to_string_lossy())
        .args(["cleanup", "--bpf-pin-dir", &pin_dir])
        .output()?;
    if !cleanup.status.success() {
        bail!(
            "masq cleanup failed: {}",
            String::from_utf8_lossy(&cleanup.stderr).trim()
        );
    }
    println!("\nagent stopped, `masq cleanup` run, namespaces removed; the root namespace was never touched.");
    drop(topology);
    drop(bpffs);
    if all_ok {
        Ok(ExitCode::SUCCESS)
    } else {
        bail!("some destinations were not treated as the config says (see the table)")
    }
}

fn datapath_name(choice: DatapathChoice) -> &'static str {
    match choice {
        DatapathChoice::Auto => "auto",
        DatapathChoice::Ebpf => "ebpf",
        DatapathChoice::Nftables => "nftables",
        DatapathChoice::Iptables => "iptables",
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}
