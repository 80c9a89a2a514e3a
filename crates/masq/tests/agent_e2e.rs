//! The real `masq agent` binary, end to end, on every datapath (issue 3).
//!
//! Each test builds its own pod / pod2 / node / external topology (masq-testbed, unique network
//! namespaces removed on drop, also on failure), its own kubelet-style ConfigMap volume, runs
//! the agent inside the node namespace and checks the source address the external side sees
//! over TCP, UDP and ping. Every scenario runs once per datapath (see `datapaths!` at the
//! bottom), so a failure names both. Before and after each test the root namespace is read, only
//! read, to prove the agent never installed anything there.

use std::cell::Cell;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use masq_agent::status::Status;
use masq_testbed::probe::{tcp_source, TcpEchoServer, TcpSession};
use masq_testbed::{addr, agent, AgentProcess, ConfigMapDir, Netns, Probes, Topology};

const MASQ: &str = env!("CARGO_BIN_EXE_masq");

/// What the agent is asked to install, and how to look at what it installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Datapath {
    Nftables,
    /// iptables through the nf_tables backend (the host binary's default).
    IptablesNft,
    /// iptables through the legacy backend, chosen by the agent because kubelet's hint chain
    /// exists there (as on a node whose kubelet uses iptables-legacy).
    IptablesLegacy,
}

impl Datapath {
    fn flag(self) -> &'static str {
        match self {
            Datapath::Nftables => "nftables",
            Datapath::IptablesNft | Datapath::IptablesLegacy => "iptables",
        }
    }

    /// Programs the tests run for this datapath, besides `ip`.
    fn programs(self) -> &'static [&'static str] {
        match self {
            Datapath::Nftables => &["nft", "ping"],
            Datapath::IptablesNft => &["nft", "ping", "iptables-nft-save"],
            Datapath::IptablesLegacy => &["nft", "ping", "iptables-legacy-save"],
        }
    }

    /// The iptables programs' suffix (`iptables-<suffix>-save`).
    fn iptables_backend(self) -> Option<&'static str> {
        match self {
            Datapath::Nftables => None,
            Datapath::IptablesNft => Some("nft"),
            Datapath::IptablesLegacy => Some("legacy"),
        }
    }

    /// Makes the node look like this datapath's host before the agent starts.
    fn prepare(self, node: &Netns) -> Result<()> {
        if self == Datapath::IptablesLegacy {
            run_ok(
                node,
                "iptables-legacy",
                &["-t", "mangle", "-N", "KUBE-IPTABLES-HINT"],
            )?;
        }
        Ok(())
    }

    /// Removes the datapath's objects behind the agent's back, as another tool would.
    fn break_datapath(self, node: &Netns) -> Result<()> {
        match self.iptables_backend() {
            None => run_ok(node, "nft", &["delete", "table", "inet", "masq"]),
            Some(b) => run_ok(
                node,
                &format!("iptables-{b}"),
                &["-t", "nat", "-F", "IP-MASQ-AGENT"],
            ),
        }
    }
}

/// What masq owns in one namespace, read with the command-line tools.
#[derive(Debug, PartialEq, Eq)]
struct Installed {
    /// `inet masq` exists.
    nft_table: bool,
    /// Rules in the `inet masq` table (handles listed by `nft -a`).
    nft_rules: usize,
    /// The `IP-MASQ-AGENT` chain exists in the nat table (either backend).
    ipt_chain: bool,
    /// Rules in that chain.
    ipt_rules: usize,
    /// `-A POSTROUTING ... -j IP-MASQ-AGENT` lines.
    ipt_jumps: usize,
    /// The iptables backends (`nft`, `legacy`) holding the chain.
    ipt_backends: Vec<&'static str>,
}

impl Installed {
    fn read(ns: &Netns) -> Result<Installed> {
        let tables = run_ok_stdout(ns, "nft", &["list", "tables"])?;
        let nft_table = tables.lines().any(|l| l.trim() == "table inet masq");
        let nft_rules = if nft_table {
            let table = run_ok_stdout(ns, "nft", &["-a", "list", "table", "inet", "masq"])?;
            table.lines().filter(|l| is_nft_rule(l)).count()
        } else {
            0
        };
        let mut save = String::new();
        let mut ipt_backends = Vec::new();
        for backend in ["nft", "legacy"] {
            let program = format!("iptables-{backend}-save");
            // A backend whose kernel module is not loaded prints nothing or fails: it holds no rules.
            if let Ok(out) = ns.command(&program).args(["-t", "nat"]).output() {
                let text = String::from_utf8_lossy(&out.stdout);
                if text.lines().any(|l| l.starts_with(":IP-MASQ-AGENT ")) {
                    ipt_backends.push(backend);
                }
                save.push_str(&text);
            }
        }
        Ok(Installed {
            nft_table,
            nft_rules,
            ipt_chain: save.lines().any(|l| l.starts_with(":IP-MASQ-AGENT ")),
            ipt_rules: save
                .lines()
                .filter(|l| l.starts_with("-A IP-MASQ-AGENT "))
                .count(),
            ipt_jumps: save
                .lines()
                .filter(|l| l.starts_with("-A POSTROUTING ") && l.contains("-j IP-MASQ-AGENT"))
                .count(),
            ipt_backends,
        })
    }

    fn nothing(&self) -> bool {
        !self.nft_table && !self.ipt_chain && self.ipt_jumps == 0
    }
}

/// A rule line of `nft -a list`: ends with a handle and is not a table, chain or set header.
fn is_nft_rule(line: &str) -> bool {
    let line = line.trim();
    let header = ["table ", "chain ", "set ", "map "]
        .iter()
        .any(|h| line.starts_with(h));
    line.contains("# handle ") && !header
}

/// One test's world: topology, config volume, probes and the agent in the node namespace.
/// Fields drop in order: the agent is killed before its namespace goes.
struct Bed {
    agent: Option<AgentProcess>,
    probes: Probes,
    config: ConfigMapDir,
    topology: Topology,
    datapath: Datapath,
    pod_cidr: String,
    logs: tempfile::TempDir,
    starts: Cell<u32>,
}

impl Bed {
    /// The topology and probes, the config volume holding `config` (None: no file), and the
    /// datapath's host prepared; no agent yet.
    fn new(datapath: Datapath, config: Option<&str>) -> Result<Bed> {
        let topology = Topology::new()?;
        datapath.prepare(&topology.node)?;
        let hosts: Vec<IpAddr> = addr::EXTERNAL_HOSTS.iter().map(|&h| h.into()).collect();
        let probes = Probes::start(&topology.external, &hosts, 8080)?;
        let config = match config {
            Some(text) => ConfigMapDir::with(text)?,
            None => ConfigMapDir::new()?,
        };
        Ok(Bed {
            agent: None,
            probes,
            config,
            topology,
            datapath,
            pod_cidr: addr::POD_CIDR.to_string(),
            logs: tempfile::tempdir()?,
            starts: Cell::new(0),
        })
    }

    /// A bed whose agent runs `config` and is ready.
    fn ready(datapath: Datapath, config: &str) -> Result<Bed> {
        let mut bed = Bed::new(datapath, Some(config))?;
        bed.start_agent()?;
        bed.wait_ready()?;
        Ok(bed)
    }

    /// Starts `masq agent` in the node namespace and keeps it as the bed's agent.
    fn start_agent(&mut self) -> Result<()> {
        self.agent = Some(self.spawn_agent()?);
        Ok(())
    }

    /// Starts another `masq agent` in the node namespace (a fresh log file per start).
    fn spawn_agent(&self) -> Result<AgentProcess> {
        self.starts.set(self.starts.get() + 1);
        let log = self
            .logs
            .path()
            .join(format!("agent-{}.log", self.starts.get()));
        let args: Vec<String> = [
            "--config",
            &self.config.config_path().to_string_lossy(),
            "--datapath",
            self.datapath.flag(),
            "--pod-cidr",
            &self.pod_cidr,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        AgentProcess::start(&self.topology.node, &PathBuf::from(MASQ), &args, &log)
    }

    fn wait_ready(&mut self) -> Result<Duration> {
        let agent = self.agent.as_mut().context("no agent started")?;
        agent.wait_ready(&self.topology.node, Duration::from_secs(10))
    }

    fn agent(&mut self) -> &mut AgentProcess {
        self.agent.as_mut().expect("the agent was started")
    }

    fn take_agent(&mut self) -> AgentProcess {
        self.agent.take().expect("the agent was started")
    }

    fn log(&self) -> String {
        self.agent
            .as_ref()
            .map(AgentProcess::log_text)
            .unwrap_or_default()
    }

    /// The source `dst` sees from `pod` over TCP, UDP and ping; fails if they disagree.
    fn source_from(&self, pod: &Netns, dst: impl Into<IpAddr>) -> Result<IpAddr> {
        let dst = dst.into();
        let seen = self.probes.sources(pod, dst)?;
        seen.agreed().with_context(|| {
            format!(
                "from {}: the protocols disagree about {dst}: {seen:?}",
                pod.name()
            )
        })
    }

    /// The source `dst` sees from the first pod.
    fn source_of(&self, dst: impl Into<IpAddr>) -> Result<IpAddr> {
        self.source_from(&self.topology.pod, dst)
    }

    /// The source `dst` sees on a fresh TCP connection from the first pod (cheapest probe).
    fn tcp_source_of(&self, dst: impl Into<IpAddr>) -> Result<IpAddr> {
        tcp_source(&self.topology.pod, self.probes.tcp_addr(dst.into()))
    }

    /// Polls fresh TCP connections every 20 ms until `dst` sees `expected`; returns how long
    /// that took, or fails after `bound`.
    fn wait_for_source(
        &self,
        dst: impl Into<IpAddr>,
        expected: impl Into<IpAddr>,
        bound: Duration,
    ) -> Result<Duration> {
        let server = self.probes.tcp_addr(dst.into());
        wait_for_source(&self.topology.pod, server, expected.into(), bound)
            .with_context(|| self.log())
    }

    fn get(&self, path: &str) -> Result<(u16, String)> {
        agent::get(&self.topology.node, agent::METRICS_ADDR.parse()?, path)?
            .with_context(|| format!("the agent does not answer {path}:\n{}", self.log()))
    }

    fn status(&self) -> Result<Status> {
        let (_, body) = self.get("/status")?;
        serde_json::from_str(&body).with_context(|| format!("/status: {body}"))
    }

    fn metrics(&self) -> Result<String> {
        Ok(self.get("/metrics")?.1)
    }

    /// `/readyz`: Some(code) once the admin server answers.
    fn readyz(&self) -> Result<Option<u16>> {
        Ok(
            agent::get(&self.topology.node, agent::METRICS_ADDR.parse()?, "/readyz")?
                .map(|(c, _)| c),
        )
    }

    fn installed(&self) -> Result<Installed> {
        Installed::read(&self.topology.node)
    }

    /// `masq <args>` inside the node namespace.
    fn masq(&self, args: &[&str]) -> Result<Output> {
        self.topology
            .node
            .command(MASQ)
            .args(args)
            .output()
            .context("running masq")
    }
}

/// Polls fresh TCP connections from `pod` to `server` every 20 ms until the server sees
/// `expected`; returns how long that took, or fails after `bound`.
fn wait_for_source(
    pod: &Netns,
    server: SocketAddr,
    expected: IpAddr,
    bound: Duration,
) -> Result<Duration> {
    let started = Instant::now();
    let mut last = None;
    while started.elapsed() < bound {
        // A probe can fail while rules change (a lost SYN); the next one tells.
        if let Ok(seen) = tcp_source(pod, server) {
            if seen == expected {
                return Ok(started.elapsed());
            }
            last = Some(seen);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("{server} still saw {last:?}, not {expected}, after {bound:?}")
}

/// Runs `during` while another thread opens a fresh TCP connection from `pod` to `server`
/// every 20 ms; returns what `during` returned and the source seen by each probe (an error
/// when a probe got no answer).
fn probing_while<T>(
    pod: &Netns,
    server: SocketAddr,
    during: impl FnOnce() -> T,
) -> (T, Vec<Result<IpAddr, String>>) {
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let prober = scope.spawn(|| {
            let mut seen = Vec::new();
            while !done.load(Ordering::Relaxed) {
                seen.push(tcp_source(pod, server).map_err(|e| format!("{e:#}")));
                std::thread::sleep(Duration::from_millis(20));
            }
            seen
        });
        let result = during();
        done.store(true, Ordering::Relaxed);
        (result, prober.join().expect("the prober does not panic"))
    })
}

/// The value of an unlabelled metric in a Prometheus exposition.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn run_ok(ns: &Netns, program: &str, args: &[&str]) -> Result<()> {
    run_ok_stdout(ns, program, args).map(drop)
}

fn run_ok_stdout(ns: &Netns, program: &str, args: &[&str]) -> Result<String> {
    let out = ns
        .command(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "in {}: {program} {args:?}: {}",
            ns.name(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls `check` every 20 ms until it holds or `bound` passes.
fn eventually(bound: Duration, mut check: impl FnMut() -> Result<bool>) -> Result<bool> {
    let started = Instant::now();
    while started.elapsed() < bound {
        if check()? {
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(false)
}

/// masq objects visible in the root namespace, read with read-only commands. The rest of the
/// root ruleset belongs to others and may change while the tests run.
fn masq_in_root_namespace(datapath: Datapath) -> Vec<String> {
    let read = |program: &str, args: &[&str]| {
        std::process::Command::new(program)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let mut found = Vec::new();
    if read("nft", &["list", "tables"])
        .lines()
        .any(|l| l.trim() == "table inet masq")
    {
        found.push("nft table inet masq".to_string());
    }
    let mut saves = vec!["iptables-save".to_string()];
    saves.extend(
        datapath
            .iptables_backend()
            .map(|b| format!("iptables-{b}-save")),
    );
    for save in saves {
        if read(&save, &[]).lines().any(|l| l.contains("IP-MASQ")) {
            found.push(format!("an IP-MASQ chain or rule in {save}"));
        }
    }
    found
}

/// Runs one scenario on one datapath, between two checks of the root namespace.
fn run(datapath: Datapath, scenario: fn(Datapath) -> Result<()>) {
    if let Some(reason) = masq_testbed::skip_reason(datapath.programs()) {
        eprintln!("skipped: {reason}");
        return;
    }
    masq_testbed::netns::sweep_stale();
    let before = masq_in_root_namespace(datapath);
    assert!(
        before.is_empty(),
        "the root namespace holds masq objects before the test: {before:?}"
    );
    // The root namespace is checked after a failed assertion too.
    let result = std::panic::catch_unwind(|| scenario(datapath));
    let after = masq_in_root_namespace(datapath);
    assert!(
        after.is_empty(),
        "the root namespace holds masq objects after the test: {after:?}"
    );
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("{e:#}"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// The pod's view with TEST-NET masqueraded and the private network kept.
const VPC_ONLY: &str = "nonMasqueradeCIDRs: [10.0.0.0/8]\n";

mod scenarios {
    use super::*;

    /// Every decision reason on the wire: default (masquerade), non-masquerade-cidr,
    /// link-local (kept by default), non-masquerade-src and local (keep).
    pub fn decision_reasons(datapath: Datapath) -> Result<()> {
        let config = "nonMasqueradeCIDRs: [10.0.0.0/8]\nnonMasqueradeSrcCIDRs: [10.244.1.3/32]\n";
        let bed = Bed::ready(datapath, config)?;
        let (node, pod, pod2) = (
            IpAddr::from(addr::NODE),
            IpAddr::from(addr::POD),
            IpAddr::from(addr::POD2),
        );
        let installed = bed.installed()?;
        let expected_backends: Vec<_> = datapath.iptables_backend().into_iter().collect();
        assert_eq!(installed.ipt_backends, expected_backends, "{installed:?}");
        assert_eq!(
            installed.nft_table,
            datapath == Datapath::Nftables,
            "{installed:?}"
        );
        assert_eq!(bed.source_of(addr::INTERNET)?, node, "default: masquerade");
        assert_eq!(
            bed.source_of(addr::PRIVATE)?,
            pod,
            "non-masquerade-cidr: keep"
        );
        assert_eq!(
            bed.source_of(addr::METADATA)?,
            pod,
            "link-local: kept by default"
        );
        assert_eq!(
            bed.source_from(&bed.topology.pod2, addr::INTERNET)?,
            pod2,
            "non-masquerade-src: keep"
        );

        let local = SocketAddr::new(addr::NODE.into(), 8090);
        let _server = TcpEchoServer::start(&bed.topology.node, &[local])?;
        assert_eq!(tcp_source(&bed.topology.pod, local)?, pod, "local: keep");
        Ok(())
    }

    /// `masqLinkLocal: true` masquerades the metadata server.
    pub fn link_local_masqueraded_when_asked(datapath: Datapath) -> Result<()> {
        let bed = Bed::ready(
            datapath,
            "nonMasqueradeCIDRs: [10.0.0.0/8]\nmasqLinkLocal: true\n",
        )?;
        assert_eq!(bed.source_of(addr::METADATA)?, IpAddr::from(addr::NODE));
        assert_eq!(bed.source_of(addr::PRIVATE)?, IpAddr::from(addr::POD));
        Ok(())
    }

    /// A source outside `--pod-cidr` is not a pod: kept, while the pod is masqueraded.
    pub fn not_a_pod(datapath: Datapath) -> Result<()> {
        let mut bed = Bed::new(datapath, Some(VPC_ONLY))?;
        bed.pod_cidr = format!("{}/32", addr::POD);
        bed.start_agent()?;
        bed.wait_ready()?;
        assert_eq!(
            bed.source_from(&bed.topology.pod2, addr::INTERNET)?,
            IpAddr::from(addr::POD2)
        );
        assert_eq!(bed.source_of(addr::INTERNET)?, IpAddr::from(addr::NODE));
        Ok(())
    }

    /// A `..data` swap reaches the wire in under a second (the time is printed), and a
    /// destination the change does not concern stays masqueraded throughout.
    pub fn live_reload(datapath: Datapath) -> Result<()> {
        let mut bed = Bed::ready(datapath, VPC_ONLY)?;
        assert_eq!(bed.source_of(addr::INTERNET)?, IpAddr::from(addr::NODE));
        let bystander = bed.probes.tcp_addr(addr::INTERNET2.into());
        let changed = bed.probes.tcp_addr(addr::INTERNET.into());
        let (took, bystander_saw) = probing_while(&bed.topology.pod, bystander, || {
            bed.config
                .update("nonMasqueradeCIDRs: [10.0.0.0/8, 203.0.113.0/24]\n")?;
            wait_for_source(
                &bed.topology.pod,
                changed,
                addr::POD.into(),
                Duration::from_secs(3),
            )
        });
        let took = took.with_context(|| bed.log())?;
        eprintln!("reload took {} ms ({datapath:?})", took.as_millis());
        assert!(took < Duration::from_secs(1), "reload took {took:?}");
        let node = Ok(IpAddr::from(addr::NODE));
        assert!(
            !bystander_saw.is_empty() && bystander_saw.iter().all(|s| *s == node),
            "{bystander} saw during the reload: {bystander_saw:?}"
        );
        assert_eq!(bed.source_of(addr::INTERNET)?, IpAddr::from(addr::POD));
        assert_eq!(bed.source_of(addr::INTERNET2)?, IpAddr::from(addr::NODE));
        Ok(())
    }

    /// The file appearing after being absent is applied; deleting it again means the defaults
    /// (whose set holds TEST-NET, so the internet host keeps the pod source).
    pub fn config_file_created_and_deleted(datapath: Datapath) -> Result<()> {
        let mut bed = Bed::new(datapath, None)?;
        bed.start_agent()?;
        bed.wait_ready()?;
        assert_eq!(
            bed.source_of(addr::INTERNET)?,
            IpAddr::from(addr::POD),
            "defaults: keep"
        );
        bed.config.update(VPC_ONLY)?;
        bed.wait_for_source(addr::INTERNET, addr::NODE, Duration::from_secs(3))?;
        bed.config.remove()?;
        bed.wait_for_source(addr::INTERNET, addr::POD, Duration::from_secs(3))?;
        assert_eq!(bed.source_of(addr::INTERNET)?, IpAddr::from(addr::POD));
        Ok(())
    }

    /// An invalid file changes nothing on the wire, shows in /status, /metrics and
    /// `masq status -o json`, and the agent keeps running until a valid file is applied.
    pub fn invalid_config_keeps_the_last_good_one(datapath: Datapath) -> Result<()> {
        let mut bed = Bed::ready(datapath, VPC_ONLY)?;
        bed.config
            .update("nonMasqueradeCIDRs: [10.0.0.1/8, 203.0.113.0/24]\n")?;
        let reported = eventually(Duration::from_secs(3), || {
            Ok(bed.status()?.last_config_error.is_some())
        })?;
        assert!(reported, "no last_config_error in /status:\n{}", bed.log());
        let error = bed.status()?.last_config_error.unwrap_or_default();
        assert!(
            error.contains("10.0.0.0/8"),
            "the error should name the aligned form: {error}"
        );
        assert_eq!(metric(&bed.metrics()?, "masq_config_error"), Some(1.0));
        assert_eq!(
            bed.source_of(addr::INTERNET)?,
            IpAddr::from(addr::NODE),
            "old config: masquerade"
        );
        assert_eq!(
            bed.source_of(addr::PRIVATE)?,
            IpAddr::from(addr::POD),
            "old config: keep"
        );
        assert!(bed.agent().is_running(), "the agent exited:\n{}", bed.log());

        // `masq status` as an operator runs it on the node.
        let out = bed.masq(&["status", "-o", "json"])?;
        assert!(
            out.status.success(),
            "masq status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let status: Status = serde_json::from_slice(&out.stdout)?;
        assert_eq!(status.datapath, datapath.flag());
        assert!(status.ready);
        let desired = status
            .desired
            .context("masq status shows no desired config")?;
        assert_eq!(desired.non_masquerade_cidrs, ["10.0.0.0/8"]);
        assert_eq!(desired.pod_cidrs, [addr::POD_CIDR]);
        assert_eq!(status.last_config_error.as_deref(), Some(error.as_str()));

        bed.config
            .update("nonMasqueradeCIDRs: [10.0.0.0/8, 203.0.113.0/24]\n")?;
        bed.wait_for_source(addr::INTERNET, addr::POD, Duration::from_secs(3))?;
        assert_eq!(bed.status()?.last_config_error, None);
        assert_eq!(metric(&bed.metrics()?, "masq_config_error"), Some(0.0));
        Ok(())
    }

    /// Started with an invalid file: not ready and nothing installed, until a valid one appears.
    pub fn invalid_first_config_installs_nothing(datapath: Datapath) -> Result<()> {
        let mut bed = Bed::new(datapath, Some("resyncInterval: soon\n"))?;
        bed.start_agent()?;
        let answered = eventually(Duration::from_secs(5), || Ok(bed.readyz()?.is_some()))?;
        assert!(answered, "the admin server never answered:\n{}", bed.log());
        // Give a wrong first sync time to happen before looking.
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(bed.readyz()?, Some(503));
        let installed = bed.installed()?;
        assert!(
            installed.nothing(),
            "installed with an invalid config: {installed:?}"
        );
        assert!(bed.agent().is_running(), "the agent exited:\n{}", bed.log());

        bed.config.update(VPC_ONLY)?;
        bed.wait_ready()?;
        assert_eq!(bed.source_of(addr::INTERNET)?, IpAddr::from(addr::NODE));
        Ok(())
    }

    /// `kill -9` and a restart: an open connection keeps its translation (address and port),
    /// new connections are masqueraded at every moment, and the new agent adopts the rules
    /// without duplicating them.
    pub fn kill9_and_restart_keep_connections(datapath: Datapath) -> Result<()> {
        let mut bed = Bed::ready(datapath, VPC_ONLY)?;
        let server = bed.probes.tcp_addr(addr::INTERNET.into());
        let mut session = TcpSession::connect(&bed.topology.pod, server)?;
        let before = session.observed_source()?;
        assert_eq!(before.ip(), IpAddr::from(addr::NODE));
        let installed_before = bed.installed()?;

        let crashed = bed.take_agent();
        let (restarted, seen) = probing_while(&bed.topology.pod, server, || {
            crashed.kill9();
            let mut agent = bed.spawn_agent()?;
            agent.wait_ready(&bed.topology.node, Duration::from_secs(10))?;
            anyhow::Ok(agent)
        });
        bed.agent = Some(restarted?);
        let node = Ok(IpAddr::from(addr::NODE));
        assert!(
            !seen.is_empty() && seen.iter().all(|s| *s == node),
            "new connections during the restart saw: {seen:?}"
        );
        assert_eq!(
            session.observed_source()?,
            before,
            "the open connection changed its source"
        );
        let installed_after = bed.installed()?;
        assert_eq!(
            installed_after, installed_before,
            "the restart changed the rules"
        );
        match datapath.iptables_backend() {
            None => assert!(installed_after.nft_rules > 0),
            Some(_) => assert_eq!(installed_after.ipt_jumps, 1, "{installed_after:?}"),
        }
        assert_eq!(bed.source_of(addr::INTERNET)?, IpAddr::from(addr::NODE));
        Ok(())
    }

    /// SIGTERM: exit 0, and the datapath stays so traffic flows while the pod is replaced.
    pub fn sigterm_leaves_the_datapath(datapath: Datapath) -> Result<()> {
        let mut bed = Bed::ready(datapath, VPC_ONLY)?;
        let installed = bed.installed()?;
        let agent = bed.take_agent();
        let log = agent.log_text();
        let status = agent.terminate()?;
        assert!(status.success(), "the agent exited with {status}:\n{log}");
        assert_eq!(bed.installed()?, installed);
        assert_eq!(bed.source_of(addr::INTERNET)?, IpAddr::from(addr::NODE));
        assert_eq!(bed.source_of(addr::PRIVATE)?, IpAddr::from(addr::POD));
        Ok(())
    }

    /// Someone deletes the table / flushes the chain: repaired within resyncInterval.
    pub fn drift_repaired_within_resync(datapath: Datapath) -> Result<()> {
        let bed = Bed::ready(
            datapath,
            "nonMasqueradeCIDRs: [10.0.0.0/8]\nresyncInterval: 2s\n",
        )?;
        datapath.break_datapath(&bed.topology.node)?;
        assert_eq!(
            bed.tcp_source_of(addr::INTERNET)?,
            IpAddr::from(addr::POD),
            "the break did not take"
        );
        let took = bed.wait_for_source(addr::INTERNET, addr::NODE, Duration::from_secs(4))?;
        eprintln!(
            "drift repaired after {} ms ({datapath:?})",
            took.as_millis()
        );
        let repairs = metric(&bed.metrics()?, "masq_drift_repairs_total").unwrap_or(0.0);
        assert!(repairs >= 1.0, "masq_drift_repairs_total {repairs}");
        assert_eq!(bed.source_of(addr::INTERNET)?, IpAddr::from(addr::NODE));
        Ok(())
    }

    /// `masq cleanup` with the agent stopped removes everything, and can run twice.
    pub fn cleanup_leaves_nothing(datapath: Datapath) -> Result<()> {
        let mut bed = Bed::ready(datapath, VPC_ONLY)?;
        assert!(!bed.installed()?.nothing());
        bed.take_agent().terminate()?;
        for round in ["first", "second"] {
            let out = bed.masq(&["cleanup"])?;
            assert!(
                out.status.success(),
                "{round} cleanup: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let installed = bed.installed()?;
            assert!(
                installed.nothing(),
                "after the {round} cleanup: {installed:?}"
            );
        }
        assert_eq!(bed.source_of(addr::INTERNET)?, IpAddr::from(addr::POD));
        Ok(())
    }
}

/// One `#[test]` per scenario × datapath, named `<datapath>::<scenario>`.
macro_rules! tests_for {
    ($module:ident, $datapath:expr) => {
        mod $module {
            use super::{run, scenarios, Datapath};

            #[test]
            fn decision_reasons() {
                run($datapath, scenarios::decision_reasons)
            }
            #[test]
            fn link_local_masqueraded_when_asked() {
                run($datapath, scenarios::link_local_masqueraded_when_asked)
            }
            #[test]
            fn not_a_pod() {
                run($datapath, scenarios::not_a_pod)
            }
            #[test]
            fn live_reload() {
                run($datapath, scenarios::live_reload)
            }
            #[test]
            fn config_file_created_and_deleted() {
                run($datapath, scenarios::config_file_created_and_deleted)
            }
            #[test]
            fn invalid_config_keeps_the_last_good_one() {
                run($datapath, scenarios::invalid_config_keeps_the_last_good_one)
            }
            #[test]
            fn invalid_first_config_installs_nothing() {
                run($datapath, scenarios::invalid_first_config_installs_nothing)
            }
            #[test]
            fn kill9_and_restart_keep_connections() {
                run($datapath, scenarios::kill9_and_restart_keep_connections)
            }
            #[test]
            fn sigterm_leaves_the_datapath() {
                run($datapath, scenarios::sigterm_leaves_the_datapath)
            }
            #[test]
            fn drift_repaired_within_resync() {
                run($datapath, scenarios::drift_repaired_within_resync)
            }
            #[test]
            fn cleanup_leaves_nothing() {
                run($datapath, scenarios::cleanup_leaves_nothing)
            }
        }
    };
}

// The datapaths under test; adding one is one line.
tests_for!(nftables, Datapath::Nftables);
tests_for!(iptables_nft, Datapath::IptablesNft);
tests_for!(iptables_legacy, Datapath::IptablesLegacy);
