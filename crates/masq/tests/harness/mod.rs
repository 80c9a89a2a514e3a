//! The end-to-end harness: a [`Bed`] per test (topology, ConfigMap volume, probes and the
//! real `masq agent` in the node namespace), what a datapath installed ([`Installed`]), and
//! [`run`], which wraps every scenario in two read-only checks of the root namespace.
//! Shared by the end-to-end test files; a new datapath is a new [`Datapath`] variant.

use std::cell::Cell;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use masq_agent::status::Status;
use masq_testbed::probe::tcp_source;
use masq_testbed::{
    addr, agent, AgentProcess, ConfigMapDir, Netns, PrivateBpffs, Probes, Topology, TopologyBuilder,
};

mod ebpf;

pub use ebpf::{attach_cni, both_hooks};

pub const MASQ: &str = env!("CARGO_BIN_EXE_masq");

/// What the agent is asked to install, and how to look at what it installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Datapath {
    Nftables,
    /// iptables through the nf_tables backend (the host binary's default).
    IptablesNft,
    /// iptables through the legacy backend, chosen by the agent because kubelet's hint chain
    /// exists there (as on a node whose kubelet uses iptables-legacy).
    IptablesLegacy,
    /// tc programs pinned on a bpffs private to the test's thread (see [`Datapath::prepare`]).
    Ebpf,
}

impl Datapath {
    /// The one of [`Datapath::damages`] the agent's 5-second check between resyncs catches.
    pub fn damage_caught_between_resyncs(self) -> &'static str {
        match self {
            Datapath::Nftables => "table deleted",
            Datapath::IptablesNft | Datapath::IptablesLegacy => "jump removed",
            Datapath::Ebpf => "egress link detached",
        }
    }

    pub fn flag(self) -> &'static str {
        match self {
            Datapath::Nftables => "nftables",
            Datapath::IptablesNft | Datapath::IptablesLegacy => "iptables",
            Datapath::Ebpf => "ebpf",
        }
    }

    /// Programs the tests run for this datapath, besides `ip`.
    pub fn programs(self) -> &'static [&'static str] {
        match self {
            Datapath::Nftables => &["nft", "ping"],
            Datapath::IptablesNft => &["nft", "ping", "iptables-nft-save"],
            Datapath::IptablesLegacy => &["nft", "ping", "iptables-legacy-save"],
            // `tc` is how the datapath (and `Installed`) sees clsact filters.
            Datapath::Ebpf => &["nft", "ping", "bpftool", "tc"],
        }
    }

    /// The iptables programs' suffix (`iptables-<suffix>-save`).
    pub fn iptables_backend(self) -> Option<&'static str> {
        match self {
            Datapath::Nftables | Datapath::Ebpf => None,
            Datapath::IptablesNft => Some("nft"),
            Datapath::IptablesLegacy => Some("legacy"),
        }
    }

    /// Makes the node look like this datapath's host before the agent starts. For eBPF, the
    /// calling thread (the test's) moves into its own mount namespace with a fresh bpffs: the
    /// agents and `masq` commands it starts afterwards inherit it, pins survive a `kill -9`,
    /// and nothing reaches the host's /sys/fs/bpf. Keep the returned value for the whole test.
    pub fn prepare(self, node: &Netns) -> Result<Option<PrivateBpffs>> {
        match self {
            Datapath::IptablesLegacy => {
                run_ok(
                    node,
                    "iptables-legacy",
                    &["-t", "mangle", "-N", "KUBE-IPTABLES-HINT"],
                )?;
                Ok(None)
            }
            Datapath::Ebpf => Ok(Some(PrivateBpffs::mount()?)),
            Datapath::Nftables | Datapath::IptablesNft => Ok(None),
        }
    }

    /// Two ways another tool damages this datapath behind the agent's back, each with the
    /// destination that shows it and the source that destination sees once repaired.
    /// `pin_dir` is the eBPF datapath's `--bpf-pin-dir` (ignored by the others).
    pub fn damages(self, pin_dir: Option<&Path>) -> Vec<Damage> {
        let nft = |args: &[&str]| owned("nft", args);
        let ipt = |args: &[&str]| {
            let backend = self.iptables_backend().unwrap_or("nft");
            owned(&format!("iptables-{backend}"), args)
        };
        let (internet, private) = (IpAddr::from(addr::INTERNET), IpAddr::from(addr::PRIVATE));
        let (node, pod) = (IpAddr::from(addr::NODE), IpAddr::from(addr::POD));
        match self {
            Datapath::Nftables => vec![
                Damage {
                    what: "table deleted",
                    command: nft(&["delete", "table", "inet", "masq"]),
                    dst: internet,
                    repaired: node,
                },
                Damage {
                    what: "set element deleted",
                    command: nft(&[
                        "delete",
                        "element",
                        "inet",
                        "masq",
                        "nonmasq-dst-v4",
                        "{ 10.0.0.0/8 }",
                    ]),
                    dst: private,
                    repaired: pod,
                },
            ],
            Datapath::IptablesNft | Datapath::IptablesLegacy => vec![
                Damage {
                    what: "chain flushed",
                    command: ipt(&["-t", "nat", "-F", "IP-MASQ-AGENT"]),
                    dst: internet,
                    repaired: node,
                },
                Damage {
                    what: "jump removed",
                    command: ipt(&["-t", "nat", "-F", "POSTROUTING"]),
                    dst: internet,
                    repaired: node,
                },
            ],
            Datapath::Ebpf => {
                ebpf::damages(pin_dir.expect("the eBPF datapath has a pin directory"))
            }
        }
    }
}

/// A program and its arguments, owned.
fn owned(program: &str, args: &[&str]) -> (String, Vec<String>) {
    (
        program.to_string(),
        args.iter().map(|a| a.to_string()).collect(),
    )
}

/// A change made behind the agent's back (see [`Datapath::damages`]).
pub struct Damage {
    /// What was done, for messages.
    pub what: &'static str,
    /// The program and its arguments, run in the node namespace.
    pub command: (String, Vec<String>),
    /// A destination whose source the damage changes...
    pub dst: IpAddr,
    /// ...and the source it sees with the rules intact.
    pub repaired: IpAddr,
}

impl Damage {
    /// Does it, in the node namespace.
    pub fn apply(&self, node: &Netns) -> Result<()> {
        let args: Vec<&str> = self.command.1.iter().map(String::as_str).collect();
        run_ok(node, &self.command.0, &args)
    }
}

/// What masq owns in one namespace, read with the command-line tools.
#[derive(Debug, PartialEq, Eq)]
pub struct Installed {
    /// `inet masq` exists.
    pub nft_table: bool,
    /// Rules in the `inet masq` table (handles listed by `nft -a`).
    pub nft_rules: usize,
    /// The `IP-MASQ-AGENT` chain exists in the nat table (either backend).
    pub ipt_chain: bool,
    /// Rules in that chain.
    pub ipt_rules: usize,
    /// `-A POSTROUTING ... -j IP-MASQ-AGENT` lines.
    pub ipt_jumps: usize,
    /// The iptables backends (`nft`, `legacy`) holding the chain.
    pub ipt_backends: Vec<&'static str>,
    /// Files under the eBPF pin directory, relative and sorted (`links/eth0-egress`,
    /// `maps-v3/masq_config`, ...); empty without a pin directory.
    pub bpf_pins: Vec<String>,
    /// Hooks of the namespace's interfaces running one of masq's programs (`eth0 egress`),
    /// TCX or clsact; only looked at when there is a pin directory.
    pub bpf_hooks: Vec<String>,
}

impl Installed {
    /// What masq owns in `ns`; `pin_dir` is the eBPF datapath's pin directory, if it runs.
    pub fn read(ns: &Netns, pin_dir: Option<&Path>) -> Result<Installed> {
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
            bpf_pins: pin_dir.map(ebpf::pinned_files).unwrap_or_default(),
            bpf_hooks: match pin_dir {
                Some(_) => ebpf::hooks(Some(ns))?,
                None => Vec::new(),
            },
        })
    }

    pub fn nothing(&self) -> bool {
        !self.nft_table
            && !self.ipt_chain
            && self.ipt_jumps == 0
            && self.bpf_pins.is_empty()
            && self.bpf_hooks.is_empty()
    }
}

/// A rule line of `nft -a list`: ends with a handle and is not a table, chain or set header.
pub fn is_nft_rule(line: &str) -> bool {
    let line = line.trim();
    let header = ["table ", "chain ", "set ", "map "]
        .iter()
        .any(|h| line.starts_with(h));
    line.contains("# handle ") && !header
}

/// One test's world: topology, config volume, probes and the agent in the node namespace.
/// Fields drop in order: the agent is killed before its namespace goes, and the private bpffs
/// (eBPF only) is unmounted last.
pub struct Bed {
    pub agent: Option<AgentProcess>,
    pub probes: Probes,
    pub config: ConfigMapDir,
    pub topology: Topology,
    pub datapath: Datapath,
    /// `--datapath` of the agents started from now on (default: the datapath's own flag).
    pub datapath_flag: &'static str,
    pub pod_cidr: String,
    /// More `masq agent` flags (e.g. `--port-range`), for the agents started from now on.
    pub agent_args: Vec<String>,
    /// The agents started from now on read the volume with `--config-dir` (every `ip-masq*`
    /// key) instead of `--config` (the `ip-masq-agent` key).
    pub config_dir: bool,
    pub logs: tempfile::TempDir,
    pub starts: Cell<u32>,
    pub bpffs: Option<PrivateBpffs>,
}

impl Bed {
    /// The topology and probes, the config volume holding `config` (None: no file), and the
    /// datapath's host prepared; no agent yet.
    pub fn new(datapath: Datapath, config: Option<&str>) -> Result<Bed> {
        Bed::on(Topology::builder(), datapath, config)
    }

    /// [`Bed::new`] on a topology built by `topology` (IPv6 too, say): probes on every
    /// external host it has.
    pub fn on(topology: TopologyBuilder, datapath: Datapath, config: Option<&str>) -> Result<Bed> {
        let topology = topology.build()?;
        let bpffs = datapath.prepare(&topology.node)?;
        let hosts: Vec<IpAddr> = topology.external_hosts();
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
            datapath_flag: datapath.flag(),
            pod_cidr: addr::POD_CIDR.to_string(),
            agent_args: Vec::new(),
            config_dir: false,
            logs: tempfile::tempdir()?,
            starts: Cell::new(0),
            bpffs,
        })
    }

    /// The datapath's damages (see [`Datapath::damages`]), for this bed's pin directory.
    pub fn damages(&self) -> Vec<Damage> {
        self.datapath.damages(self.pin_dir().as_deref())
    }

    /// The eBPF datapath's `--bpf-pin-dir` (None for the other datapaths).
    pub fn pin_dir(&self) -> Option<PathBuf> {
        self.bpffs.as_ref().map(PrivateBpffs::pin_dir)
    }

    /// `--bpf-pin-dir DIR` for the eBPF datapath, nothing for the others.
    pub fn pin_dir_args(&self) -> Vec<String> {
        self.pin_dir()
            .map(|dir| {
                vec![
                    "--bpf-pin-dir".to_string(),
                    dir.to_string_lossy().into_owned(),
                ]
            })
            .unwrap_or_default()
    }

    /// A bed whose agent runs `config` and is ready.
    pub fn ready(datapath: Datapath, config: &str) -> Result<Bed> {
        let mut bed = Bed::new(datapath, Some(config))?;
        bed.start_agent()?;
        bed.wait_ready()?;
        Ok(bed)
    }

    /// Starts `masq agent` in the node namespace and keeps it as the bed's agent.
    pub fn start_agent(&mut self) -> Result<()> {
        self.agent = Some(self.spawn_agent()?);
        Ok(())
    }

    /// Starts another `masq agent` in the node namespace (a fresh log file per start).
    pub fn spawn_agent(&self) -> Result<AgentProcess> {
        self.starts.set(self.starts.get() + 1);
        let log = self.log_path(self.starts.get());
        let (flag, path) = match self.config_dir {
            true => ("--config-dir", self.config.dir().to_path_buf()),
            false => ("--config", self.config.config_path()),
        };
        let mut args: Vec<String> = [
            flag,
            &path.to_string_lossy(),
            "--datapath",
            self.datapath_flag,
            "--pod-cidr",
            &self.pod_cidr,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(self.pin_dir_args());
        args.extend(self.agent_args.iter().cloned());
        AgentProcess::start(&self.topology.node, &PathBuf::from(MASQ), &args, &log)
    }

    pub fn wait_ready(&mut self) -> Result<Duration> {
        let agent = self.agent.as_mut().context("no agent started")?;
        agent.wait_ready(&self.topology.node, Duration::from_secs(10))
    }

    pub fn agent(&mut self) -> &mut AgentProcess {
        self.agent.as_mut().expect("the agent was started")
    }

    pub fn take_agent(&mut self) -> AgentProcess {
        self.agent.take().expect("the agent was started")
    }

    /// `error`, followed by the agent's log.
    pub fn with_log(&self, error: anyhow::Error) -> anyhow::Error {
        anyhow::anyhow!("{error:#}\n--- agent log ---\n{}", self.log())
    }

    /// The log of the `n`th agent started on this bed (from 1), also after it exited.
    pub fn log_of_start(&self, n: u32) -> String {
        std::fs::read_to_string(self.log_path(n)).unwrap_or_default()
    }

    fn log_path(&self, n: u32) -> PathBuf {
        self.logs.path().join(format!("agent-{n}.log"))
    }

    pub fn log(&self) -> String {
        self.agent
            .as_ref()
            .map(AgentProcess::log_text)
            .unwrap_or_default()
    }

    /// The source `dst` sees from `pod` over TCP, UDP and ping; fails if they disagree.
    pub fn source_from(&self, pod: &Netns, dst: impl Into<IpAddr>) -> Result<IpAddr> {
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
    pub fn source_of(&self, dst: impl Into<IpAddr>) -> Result<IpAddr> {
        self.source_from(&self.topology.pod, dst)
    }

    /// The source `dst` sees on a fresh TCP connection from the first pod (cheapest probe).
    pub fn tcp_source_of(&self, dst: impl Into<IpAddr>) -> Result<IpAddr> {
        tcp_source(&self.topology.pod, self.probes.tcp_addr(dst.into()))
    }

    /// Polls fresh TCP connections every 20 ms until `dst` sees `expected`; returns how long
    /// that took, or fails after `bound`.
    pub fn wait_for_source(
        &self,
        dst: impl Into<IpAddr>,
        expected: impl Into<IpAddr>,
        bound: Duration,
    ) -> Result<Duration> {
        let server = self.probes.tcp_addr(dst.into());
        wait_for_source(&self.topology.pod, server, expected.into(), bound)
            .map_err(|e| self.with_log(e))
    }

    pub fn get(&self, path: &str) -> Result<(u16, String)> {
        agent::get(&self.topology.node, agent::METRICS_ADDR.parse()?, path)?
            .with_context(|| format!("the agent does not answer {path}:\n{}", self.log()))
    }

    pub fn status(&self) -> Result<Status> {
        let (_, body) = self.get("/status")?;
        serde_json::from_str(&body).with_context(|| format!("/status: {body}"))
    }

    pub fn metrics(&self) -> Result<String> {
        Ok(self.get("/metrics")?.1)
    }

    /// `/readyz`: Some(code) once the admin server answers.
    pub fn readyz(&self) -> Result<Option<u16>> {
        Ok(
            agent::get(&self.topology.node, agent::METRICS_ADDR.parse()?, "/readyz")?
                .map(|(c, _)| c),
        )
    }

    pub fn installed(&self) -> Result<Installed> {
        Installed::read(&self.topology.node, self.pin_dir().as_deref())
    }

    /// `masq <args> --bpf-pin-dir DIR` (eBPF only) inside the node namespace: for the
    /// commands that take the flag (`cleanup`, `nat list`).
    pub fn masq_with_pins(&self, args: &[&str]) -> Result<Output> {
        let pins = self.pin_dir_args();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(pins.iter().map(String::as_str));
        self.masq(&all)
    }

    /// `masq <args>` inside the node namespace.
    pub fn masq(&self, args: &[&str]) -> Result<Output> {
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
pub fn wait_for_source(
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
pub fn probing_while<T>(
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
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The values of a labelled metric's series whose labels contain `label` (`reason="x"`; an
/// empty `label` takes them all).
pub fn metric_series(text: &str, name: &str, label: &str) -> Vec<f64> {
    text.lines()
        .filter_map(|l| {
            let (labels, value) = l.strip_prefix(name)?.strip_prefix('{')?.split_once("} ")?;
            labels.contains(label).then(|| value.trim().parse().ok())?
        })
        .collect()
}

/// The value of the one series of a labelled metric whose labels contain `label`.
pub fn metric_with(text: &str, name: &str, label: &str) -> Option<f64> {
    match metric_series(text, name, label).as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

pub fn run_ok(ns: &Netns, program: &str, args: &[&str]) -> Result<()> {
    run_ok_stdout(ns, program, args).map(drop)
}

pub fn run_ok_stdout(ns: &Netns, program: &str, args: &[&str]) -> Result<String> {
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
pub fn eventually(bound: Duration, mut check: impl FnMut() -> Result<bool>) -> Result<bool> {
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
pub fn masq_in_root_namespace(datapath: Datapath) -> Vec<String> {
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
    if datapath == Datapath::Ebpf {
        match ebpf::hooks(None) {
            Ok(hooks) => found.extend(hooks.iter().map(|h| format!("a masq program on {h}"))),
            Err(e) => found.push(format!("cannot read the root namespace's hooks: {e:#}")),
        }
        let default_pins = Path::new(masq_datapath::names::BPF_PIN_DIR);
        if default_pins.exists() {
            found.push(format!("{} exists", default_pins.display()));
        }
    }
    found
}

/// Runs one scenario on one datapath, between two checks of the root namespace.
pub fn run(datapath: Datapath, scenario: fn(Datapath) -> Result<()>) {
    masq_testbed::require(datapath.programs());
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
