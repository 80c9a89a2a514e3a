//! The configurations measured against each other, and how each is installed in the node
//! namespace of a fresh topology.
//!
//! - `no-nat`: no rules at all, so no conntrack in the node either: the physical reference.
//! - `ip-masq-agent-iptables`: the chain kubernetes-sigs/ip-masq-agent writes (one RETURN rule
//!   per CIDR, then MASQUERADE, jumped to from nat POSTROUTING), loaded with
//!   `iptables-restore --noflush` as upstream does. No agent runs ([`crate::peers`]).
//! - `plain-nftables`: a hand-written minimal ruleset: an interval set and `masquerade`.
//! - `masq-<datapath>`: the real `masq agent` binary with that `--datapath`, fed through a
//!   kubelet-style ConfigMap directory. A set too big for the agent's config file (1 MiB, the
//!   ConfigMap limit) is installed by the same datapath code called as a library instead
//!   ([`crate::library`]), with no agent running; the sample says so.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use masq_testbed::{addr, AgentProcess, ConfigMapDir, Netns, Topology};

use crate::family::Family;
use crate::{cidrs, library, peers, pin, procfs};

/// One configuration under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setup {
    /// No NAT rules at all.
    NoNat,
    /// No NAT rules, but conntrack tracking every forwarded flow (one `ct state` rule): what
    /// netfilter pays before any NAT.
    Conntrack,
    /// kubernetes-sigs/ip-masq-agent's linear iptables chain, installed without an agent.
    UpstreamIptables,
    /// A minimal nftables masquerade with an interval set, installed without an agent.
    PlainNftables,
    /// The same with `fully-random` ports (masq's port behaviour): what that promise costs.
    PlainNftablesFullyRandom,
    /// The masq agent with this `--datapath` value.
    Masq(&'static str),
    /// masq's eBPF programs attached as clsact filters instead of TCX links, installed by the
    /// datapath code as a library ([`crate::library`], no agent): what TCX itself changes.
    /// Opt-in: only when `--only` names it.
    MasqEbpfClsact,
}

/// Every masq datapath the benchmark knows; those the agent cannot load are skipped with the
/// reason it gave.
pub const MASQ_DATAPATHS: [&str; 3] = ["nftables", "iptables", "ebpf"];

impl Setup {
    /// The name used in results.
    pub fn name(&self) -> String {
        match self {
            Setup::NoNat => "no-nat".into(),
            Setup::Conntrack => "conntrack-only".into(),
            Setup::UpstreamIptables => "ip-masq-agent-iptables".into(),
            Setup::PlainNftables => "plain-nftables".into(),
            Setup::PlainNftablesFullyRandom => "plain-nftables-fully-random".into(),
            Setup::Masq(datapath) => format!("masq-{datapath}"),
            Setup::MasqEbpfClsact => "masq-ebpf-clsact".into(),
        }
    }

    /// Whether masq's eBPF programs do the work.
    pub fn is_ebpf(&self) -> bool {
        matches!(self, Setup::Masq("ebpf") | Setup::MasqEbpfClsact)
    }

    /// Whether the non-masquerade CIDR count means anything for it.
    pub fn has_cidrs(&self) -> bool {
        !matches!(self, Setup::NoNat | Setup::Conntrack)
    }

    /// The source the external side should see from the pod over `family`: the node's address
    /// whenever something masquerades.
    pub fn expected_source(&self, family: Family) -> std::net::IpAddr {
        match self {
            Setup::NoNat | Setup::Conntrack => family.pod(),
            _ => family.node(),
        }
    }
}

/// Paths and CPUs every installation needs.
#[derive(Clone, Debug)]
pub struct Env {
    /// The `masq` binary.
    pub masq: PathBuf,
    /// Where to pin the agent.
    pub agent_cpu: Option<usize>,
    /// The eBPF pin directory, on the run's private bpffs (`--bpf-pin-dir` of the agent and of
    /// `masq cleanup`); `Err` says why there is none, and the eBPF datapath is then skipped.
    pub bpf_pin_dir: std::result::Result<PathBuf, String>,
    /// More `masq agent` flags for the agents started (e.g. `--port-range`).
    pub agent_args: Vec<String>,
}

impl Env {
    /// `--bpf-pin-dir <dir>` when the run has a private bpffs.
    fn pin_dir_args(&self) -> Vec<String> {
        match &self.bpf_pin_dir {
            Ok(dir) => vec!["--bpf-pin-dir".into(), dir.to_string_lossy().into_owned()],
            Err(_) => Vec::new(),
        }
    }

    /// This environment with the agent flags `family` needs (`--enable-ipv6` and the IPv6 pod
    /// CIDR for IPv6).
    pub fn for_family(&self, family: Family) -> Env {
        let mut env = self.clone();
        env.agent_args.extend(family.agent_args());
        env
    }
}

/// A setup installed in a topology's node namespace.
pub struct Installed {
    /// The running agent and its config directory, for `masq-*` setups.
    pub agent: Option<(AgentProcess, ConfigMapDir)>,
    /// From the start of the installation to the datapath in place (agent ready).
    pub install_time: Duration,
    /// A masq datapath installed through the library, without the agent (set too big for the
    /// config file).
    pub by_library: bool,
}

/// Installs `setup` for traffic of `family` with exactly `cidr_list` (of that family) as
/// non-masquerade CIDRs. IPv6 needs a topology built with IPv6 ([`Family::topology`]).
pub fn install(
    env: &Env,
    setup: Setup,
    topology: &Topology,
    family: Family,
    cidr_list: &[String],
) -> Result<Installed> {
    let started = Instant::now();
    let env = &env.for_family(family);
    let yaml = cidrs::config_yaml(cidr_list);
    let agent = match setup {
        Setup::NoNat => None,
        Setup::Conntrack => {
            // conntrack runs only for the families whose tables use it.
            let table = match family {
                Family::V4 => "ip",
                Family::V6 => "ip6",
            };
            let ruleset = format!(
                "table {table} masq_bench_ct {{\n  chain forward {{\n    type filter hook \
                 forward priority 0;\n    ct state new counter\n  }}\n}}\n"
            );
            topology
                .node
                .pipe("nft", &["-f", "-"], &ruleset)
                .context("loading the conntrack rule")?;
            None
        }
        Setup::UpstreamIptables => {
            peers::install_upstream_iptables(&topology.node, family, cidr_list)?;
            None
        }
        Setup::PlainNftables | Setup::PlainNftablesFullyRandom => {
            let fully_random = setup == Setup::PlainNftablesFullyRandom;
            let ruleset = peers::plain_nftables(family, cidr_list, fully_random);
            topology
                .node
                .pipe("nft", &["-f", "-"], &ruleset)
                .context("loading the plain nftables ruleset")?;
            None
        }
        Setup::Masq(datapath) if cidrs::fits_in_configmap(&yaml) => {
            Some(start_agent(env, &topology.node, datapath, &yaml)?)
        }
        Setup::Masq(_) | Setup::MasqEbpfClsact => {
            let datapath = match setup {
                Setup::Masq(datapath) => datapath,
                _ => library::EBPF_CLSACT,
            };
            // The eBPF pins outlive the namespaces: `masq cleanup` removes them afterwards.
            library::install(env, &topology.node, family, datapath, cidr_list)?;
            return Ok(Installed {
                agent: None,
                install_time: started.elapsed(),
                by_library: true,
            });
        }
    };
    Ok(Installed {
        agent,
        install_time: started.elapsed(),
        by_library: false,
    })
}

/// Starts `masq agent --datapath <datapath>` in `node` with `yaml` as its ConfigMap, pinned to
/// the agent CPU, and waits until it is ready.
pub fn start_agent(
    env: &Env,
    node: &Netns,
    datapath: &str,
    yaml: &str,
) -> Result<(AgentProcess, ConfigMapDir)> {
    // A sample that failed before its cleanup must not hand its eBPF pins to this one.
    if env.bpf_pin_dir.as_ref().is_ok_and(|dir| dir.exists()) {
        cleanup(env, node)?;
    }
    let config = ConfigMapDir::with(yaml)?;
    let log = config.config_path().with_file_name("agent.log");
    let mut args: Vec<String> = [
        "--config",
        &config.config_path().to_string_lossy(),
        "--datapath",
        datapath,
        "--pod-cidr",
        addr::POD_CIDR,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(env.pin_dir_args());
    args.extend(env.agent_args.iter().cloned());
    // The child inherits the affinity of the thread that spawns it.
    let mut agent = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                pin::current_thread(env.agent_cpu);
                AgentProcess::start(node, &env.masq, &args, &log)
            })
            .join()
            .expect("spawning does not panic")
    })?;
    wait_ready(&mut agent, node).with_context(|| format!("masq agent --datapath {datapath}"))?;
    settle(&agent)?;
    Ok((agent, config))
}

/// Waits (at most 5 s) until the agent uses no CPU for 300 ms. It reports ready once its first
/// sync is installed and still works for a moment after (`perf record -p` of an eBPF agent: map
/// updates, BTF parsing and batched map reads, its first housekeeping): 20–50 ms on the CPU the
/// servers share, which a burst started at once counted as the datapath's cost (the
/// `agent_cpu_seconds` of every TCP burst in bench/results/tcx-clsact).
fn settle(agent: &AgentProcess) -> Result<()> {
    let used = || procfs::cpu_time(agent.pid()).map(|t| t.own);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = used()?;
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        let now = used()?;
        if now != last {
            last = now;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= Duration::from_millis(300) {
            return Ok(());
        }
    }
    Ok(())
}

/// Waits until the agent is ready; fails at once when it exits or rejects its config.
fn wait_ready(agent: &mut AgentProcess, node: &Netns) -> Result<()> {
    let address = masq_testbed::agent::METRICS_ADDR.parse()?;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(300) {
        if !agent.is_running() {
            bail!("the agent exited:\n{}", agent.log_text());
        }
        if masq_testbed::agent::readyz(node, address)? {
            return Ok(());
        }
        if let Some((_, body)) = masq_testbed::agent::get(node, address, "/status")? {
            let status: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            if let Some(error) = status.get("last_config_error").and_then(|e| e.as_str()) {
                bail!("the agent rejected its config: {error}");
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("not ready after 300 s:\n{}", agent.log_text())
}

/// Stops the agent and removes what masq installed (`masq cleanup`, also after a library
/// install), so that nothing outlives the namespaces, the node-independent eBPF pins included.
pub fn uninstall(env: &Env, topology: &Topology, installed: Installed) -> Result<()> {
    if let Some((agent, _config)) = installed.agent {
        agent.terminate()?;
        cleanup(env, &topology.node)?;
    } else if installed.by_library {
        cleanup(env, &topology.node)?;
    }
    Ok(())
}

/// `masq cleanup` in `node`, with the run's eBPF pin directory.
pub fn cleanup(env: &Env, node: &Netns) -> Result<()> {
    let out = node
        .command(&env.masq.to_string_lossy())
        .arg("cleanup")
        .args(env.pin_dir_args())
        .output()?;
    if !out.status.success() {
        bail!(
            "masq cleanup failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Whether `masq agent --datapath <datapath>` can run here; the reason when it cannot.
pub fn masq_unavailable(env: &Env, datapath: &str) -> Option<String> {
    if let (Err(why), "ebpf") = (&env.bpf_pin_dir, datapath) {
        return Some(format!("no private bpffs for the pins: {why}"));
    }
    let attempt = || -> Result<()> {
        let topology = Topology::new()?;
        let installed = Installed {
            agent: Some(start_agent(
                env,
                &topology.node,
                datapath,
                &cidrs::config_yaml(&[]),
            )?),
            install_time: Duration::ZERO,
            by_library: false,
        };
        uninstall(env, &topology, installed)
    };
    attempt().err().map(|e| {
        let text = format!("{e:#}");
        // The agent's log follows the first line; keep the line where it says why.
        text.lines()
            .find(|l| l.starts_with("masq:") || l.contains("ERROR"))
            .unwrap_or_else(|| text.lines().next().unwrap_or_default())
            .trim()
            .chars()
            .take(300)
            .collect()
    })
}

/// The path of the `masq` binary: `--masq`, else next to this binary.
pub fn find_masq(given: Option<&Path>) -> Result<PathBuf> {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()?.with_file_name("masq"),
    };
    if !path.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p masq) or pass --masq",
            path.display()
        );
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_expectations() {
        assert_eq!(Setup::Masq("nftables").name(), "masq-nftables");
        assert_eq!(
            Setup::NoNat.expected_source(Family::V4),
            std::net::IpAddr::from(addr::POD)
        );
        assert_eq!(
            Setup::UpstreamIptables.expected_source(Family::V4),
            std::net::IpAddr::from(addr::NODE)
        );
        assert_eq!(
            Setup::Masq("ebpf").expected_source(Family::V6),
            std::net::IpAddr::from(masq_testbed::addr6::NODE)
        );
    }
}
