//! One test's world ([`Bed`]): topology, ConfigMap volume, probes and the real `masq agent` in
//! the node namespace, with the ways a scenario starts agents, asks them (`/status`,
//! `/metrics`, `/readyz`, `masq` commands) and sees the source a destination gets.

use std::cell::Cell;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use anyhow::{Context, Result};
use masq_agent::status::Status;
use masq_testbed::probe::tcp_source;
use masq_testbed::{
    addr, agent, AgentProcess, ConfigMapDir, Netns, PrivateBpffs, Probes, Topology, TopologyBuilder,
};

use super::{probing_while, wait_for_source, Damage, Datapath, Installed, MASQ};

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

    /// Kills the agent with SIGKILL and starts another, while a prober in the pod opens a new
    /// connection to `server` every 20 ms: the sources those connections got.
    pub fn kill9_and_restart_while_probing(
        &mut self,
        server: std::net::SocketAddr,
    ) -> Result<Vec<Result<IpAddr, String>>> {
        let crashed = self.take_agent();
        let (restarted, seen) = probing_while(&self.topology.pod, server, || {
            crashed.kill9();
            let mut agent = self.spawn_agent()?;
            agent.wait_ready(&self.topology.node, Duration::from_secs(10))?;
            anyhow::Ok(agent)
        });
        self.agent = Some(restarted?);
        Ok(seen)
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
