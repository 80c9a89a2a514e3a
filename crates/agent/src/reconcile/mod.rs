//! The one task that owns the agent's state. Triggers (a config-directory event, a netlink
//! change, the resync timer) all end in [`Reconciler::reconcile`]: re-read the config, and if it
//! is valid, hand the desired state to the datapath, which diffs and repairs. An invalid config
//! never reaches the datapath; the last good one stays installed.
//!
//! The task's loop is in `run`, what it publishes for `/status` in `publish`.

mod publish;
mod run;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use masq_config::{Config, ConfigFile, ParseOptions, Source};
use masq_datapath::{Datapath, Desired, Family, Kind, NodeSettings};

use crate::admin::Shared;
use crate::memory;
use crate::metrics::{DatapathLabel, ResultLabel};
use crate::node::NodeFacts;
use crate::snat_status::SnatSummary;
use crate::status::{InstalledSummary, InterfaceSummary};
use publish::{egress_summary, summarize, unix_now};
pub use run::run;

/// How long to wait after a file or netlink event for the burst to end (kubelet's swap is a
/// few events within microseconds); well inside the one-second promise for applying a change.
const DEBOUNCE: Duration = Duration::from_millis(50);
/// How often the datapath's upkeep runs: the eBPF NAT table's shortest timeout is 10 s (a
/// closed TCP flow), so expired pairs are gone within half of that.
const HOUSEKEEPING: Duration = Duration::from_secs(5);
/// Retry delay after a failed sync, doubled each time up to the resync interval.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// Everything `masq agent` was told on its command line, validated.
#[derive(Clone, Debug)]
pub struct AgentSettings {
    /// `--config` or `--config-dir`.
    pub config: Source,
    /// `--enable-ipv6`, `--rfc1918-defaults`.
    pub parse_options: ParseOptions,
    /// The flags that shape the datapath; `interfaces` is filled in from netlink.
    pub node: NodeSettings,
    /// `--interfaces`, when given.
    pub interfaces: Option<Vec<String>>,
    /// `--metrics-addr`.
    pub metrics_addr: SocketAddr,
    /// Why this datapath (shown by `masq status`).
    pub datapath_reason: String,
}

/// A flag the node contradicts (a `--snat-ip` that is not one of its addresses), found at
/// start: invalid input, like a flag that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidFlags(pub String);

/// What the agent refuses of `--snat-ip` at start, one error line each: an address that is not
/// the node's, and an IPv6 pool the `kind` datapath would not spread (iptables:
/// [`NodeSettings::snat_pool_on`] says why) rather than quietly cut to its first address. A pool
/// from `--snat-ips-from-interface` follows the node and is cut instead, with a warning in the
/// log and `masq status`.
pub fn check_snat_ips(
    node: &NodeSettings,
    facts: &NodeFacts,
    kind: Kind,
) -> Result<(), InvalidFlags> {
    let mut problems: Vec<String> = node
        .snat_ips
        .iter()
        .filter(|ip| !facts.local_addrs.contains(ip))
        .map(|ip| {
            format!(
                "--snat-ip: \"{ip}\" is not an address of this node (add it to an interface, \
                 or leave it out)"
            )
        })
        .collect();
    let given = node.snat_pool(Family::V6).len();
    if !node.snat_ips.is_empty() && node.snat_pool_on(kind, Family::V6).len() < given {
        problems.push(format!(
            "--snat-ip: the {} datapath cannot spread IPv6 pods over {given} addresses (its \
             cluster match hashes only the first 32 bits of an IPv6 address); give one IPv6 \
             --snat-ip, or use --datapath nftables or ebpf",
            kind.as_str()
        ));
    }
    match problems.is_empty() {
        true => Ok(()),
        false => Err(InvalidFlags(problems.join("\n"))),
    }
}

/// Why a reconcile runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// Agent start.
    Start,
    /// Something changed in the config directory.
    ConfigEvent,
    /// A link, address or route changed.
    NodeChange,
    /// The periodic drift-repair resync, or a retry after a failure.
    Resync,
}

/// The reconciler's state. Owned by one task; the admin server reads [`Shared`].
pub struct Reconciler {
    settings: AgentSettings,
    datapath: Option<Box<dyn Datapath>>,
    /// The datapath's kind (what it installs of the SNAT pools differs).
    kind: Kind,
    shared: Arc<Shared>,
    node: NodeFacts,
    /// The reserved ports inside the configured port ranges (see [`crate::reserved`]).
    reserved: BTreeSet<u16>,
    /// The config files last read (none: absent), to ignore events that change nothing.
    last_read: Option<Vec<ConfigFile>>,
    /// The last valid config while it is not the installed one (see [`Reconciler::config`]):
    /// one copy of a long CIDR list between syncs instead of two.
    pending_config: Option<Config>,
    /// The desired state of the last successful sync.
    installed: Option<Desired>,
    retry: Option<Duration>,
    next_resync: Instant,
}

impl Reconciler {
    /// A reconciler that has installed nothing yet.
    pub fn new(settings: AgentSettings, datapath: Box<dyn Datapath>, shared: Arc<Shared>) -> Self {
        shared
            .metrics
            .datapath_info
            .get_or_create(&DatapathLabel {
                datapath: datapath.kind().as_str(),
            })
            .set(1);
        shared.update(|s| {
            s.datapath = datapath.kind().as_str().to_string();
            s.datapath_reason = settings.datapath_reason.clone();
            s.config_path = settings.config.path().display().to_string();
        });
        Reconciler {
            settings,
            kind: datapath.kind(),
            datapath: Some(datapath),
            shared,
            node: NodeFacts::default(),
            reserved: BTreeSet::new(),
            last_read: None,
            pending_config: None,
            installed: None,
            retry: None,
            next_resync: Instant::now(),
        }
    }

    /// The last valid config: the pending one, or else the installed one.
    fn config(&self) -> Option<&Config> {
        self.pending_config
            .as_ref()
            .or(self.installed.as_ref().map(|installed| &installed.config))
    }

    /// When the next resync (or retry) is due.
    pub fn next_resync(&self) -> Instant {
        self.next_resync
    }

    /// Replaces what netlink said about the node; returns whether anything changed.
    pub fn set_node(&mut self, facts: NodeFacts) -> bool {
        if facts == self.node {
            return false;
        }
        tracing::info!(
            interfaces = ?facts.egress.iter().map(|i| &i.name).collect::<Vec<_>>(),
            uplinks = ?facts.uplinks.iter().map(|u| format!("{} (tables {:?})", u.name, u.tables)).collect::<Vec<_>>(),
            "node interfaces, addresses or routes changed"
        );
        self.shared.update(|s| {
            s.interfaces = facts
                .egress
                .iter()
                .map(|i| InterfaceSummary {
                    name: i.name.clone(),
                    addresses: i.addrs.iter().map(|a| a.to_string()).collect(),
                })
                .collect()
        });
        self.node = facts;
        true
    }

    /// Replaces the ports the node receives on; returns whether the datapath must change (only
    /// ports inside the configured ranges matter).
    pub fn set_reserved(&mut self, ports: BTreeSet<u16>) -> bool {
        let ranges = self.settings.node.base_port_ranges();
        let inside: BTreeSet<u16> = ports
            .into_iter()
            .filter(|p| ranges.iter().any(|r| r.contains(*p)))
            .collect();
        if inside == self.reserved {
            return false;
        }
        tracing::info!(ports = ?inside, "reserved ports changed (node sockets, hostPorts); they are never translated source ports");
        self.reserved = inside;
        true
    }

    /// Re-reads the config and, when there is a valid one, syncs the datapath to it.
    pub async fn reconcile(&mut self, trigger: Trigger) {
        self.reconcile_config(trigger).await;
        // Last, once the copies of the previous set (installed state, status) are dropped too.
        memory::release_freed();
    }

    async fn reconcile_config(&mut self, trigger: Trigger) {
        self.read_config();
        let Some(config) = self.config().cloned() else {
            // First start with an invalid config: install nothing, stay not ready.
            self.schedule(Duration::from_secs(60));
            return;
        };
        let desired = Desired {
            node: NodeSettings {
                interfaces: self.node.egress.clone(),
                local_addrs: self.node.local_addrs.clone(),
                reserved_ports: self.reserved.clone(),
                uplinks: self.node.uplinks.clone(),
                ..self.settings.node.clone()
            },
            config,
        };
        if trigger == Trigger::ConfigEvent && self.installed.as_ref() == Some(&desired) {
            self.pending_config = None; // The installed state holds the same config.
            return; // An event that changed nothing we install (e.g. a comment).
        }
        self.sync(desired).await;
        if matches!(trigger, Trigger::Start | Trigger::Resync) {
            self.look_around().await;
        }
    }

    /// Runs `f` on the datapath on a blocking thread (every datapath call is a syscall or a
    /// helper program) and puts the datapath back: one task owns it, so calls never overlap.
    async fn on_datapath<R: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut dyn Datapath) -> R + Send + 'static,
    ) -> R {
        let mut datapath = self
            .datapath
            .take()
            .expect("the datapath is returned after every call");
        let (datapath, out) = tokio::task::spawn_blocking(move || {
            let out = f(&mut *datapath);
            (datapath, out)
        })
        .await
        .expect("a datapath call does not panic");
        self.datapath = Some(datapath);
        out
    }

    /// The datapath's periodic upkeep (eBPF NAT garbage collection) and its quick check that
    /// nothing was unhooked or deleted since the last sync (a resync at once if something was);
    /// failures are logged only, the next round tries again.
    pub async fn housekeeping(&mut self) {
        if self.installed.is_none() {
            return;
        }
        let result = self
            .on_datapath(move |datapath| datapath.housekeeping())
            .await;
        match result {
            Ok(Some(summary)) => tracing::debug!("{summary}"),
            Ok(None) => {}
            Err(e) => tracing::warn!("datapath housekeeping failed: {e}"),
        }
        match self.on_datapath(|datapath| datapath.intact()).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!("the datapath is not as the last sync left it; repairing now");
                self.reconcile(Trigger::Resync).await;
            }
            Err(e) => tracing::warn!("checking the datapath between syncs failed: {e}"),
        }
    }

    /// Asks the datapath what it found but does not own; read-only, so only on start and resync.
    async fn look_around(&mut self) {
        let Some(desired) = self.installed.clone() else {
            return;
        };
        let (findings, hooks) = self
            .on_datapath(move |datapath| (datapath.findings(&desired), datapath.hook_order()))
            .await;
        if self.shared.read(|s| s.findings != findings) {
            for finding in &findings {
                tracing::warn!("{finding}");
            }
        }
        self.shared.update(|s| {
            s.findings = findings;
            s.hooks = hooks;
        });
    }

    fn read_config(&mut self) {
        let source = &self.settings.config;
        let files = match source.read() {
            Ok(files) => files,
            Err(e) => return self.reject(e.to_string()),
        };
        if self.last_read.as_ref() == Some(&files) {
            return;
        }
        let first = self.last_read.is_none();
        let parsed = source
            .parse(&files, &self.settings.parse_options)
            .map_err(|e| e.to_string());
        self.last_read = Some(files);
        let path = source.path().display();
        match parsed {
            Ok(merged) => {
                for warning in &merged.warnings {
                    tracing::warn!(config = %path, "{warning}");
                }
                if !first {
                    tracing::info!(config = %path, files = merged.files.len(), "config changed; applying");
                }
                let m = &self.shared.metrics;
                m.config_reloads
                    .get_or_create(&ResultLabel { result: "success" })
                    .inc();
                m.config_error.set(0);
                m.config_last_success.set(unix_now());
                let c = &merged.config;
                m.cidrs_installed
                    .set((c.non_masquerade_cidrs.len() + c.masquerade_cidrs.len()) as i64);
                let files = merged
                    .files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect();
                self.shared.update(|s| {
                    s.last_config_error = None;
                    s.config_files = files;
                    s.counters.config_reloads_ok += 1;
                });
                self.pending_config = Some(merged.config);
            }
            Err(message) => self.reject(message),
        }
    }

    fn reject(&mut self, message: String) {
        let kept = if self.config().is_some() {
            "keeping the last valid config"
        } else {
            "nothing installed until a valid config appears"
        };
        tracing::error!(config = %self.settings.config.path().display(), "invalid config, {kept}: {}", message.replace('\n', "; "));
        let m = &self.shared.metrics;
        m.config_reloads
            .get_or_create(&ResultLabel { result: "failure" })
            .inc();
        m.config_error.set(1);
        self.shared.update(|s| {
            s.last_config_error = Some(message);
            s.counters.config_reloads_failed += 1;
        });
    }

    async fn sync(&mut self, desired: Desired) {
        let started = Instant::now();
        // Moved to the blocking thread and back: no second copy of a long list. Readiness is
        // the kernel matching the desired state, asked right after the sync.
        let (desired, result) = self
            .on_datapath(move |datapath| {
                let result = datapath
                    .sync(&desired)
                    .map(|report| (report, datapath.matches(&desired)));
                (desired, result)
            })
            .await;
        let elapsed = started.elapsed();
        let m = &self.shared.metrics;
        m.sync_duration.observe(elapsed.as_secs_f64());
        match result {
            Ok((report, matched)) => {
                let mismatch = match matched {
                    Ok(true) => None,
                    Ok(false) => {
                        Some("the kernel does not hold what the sync just installed".to_string())
                    }
                    Err(e) => Some(format!("reading the datapath back after the sync: {e}")),
                };
                if report.drift_repaired {
                    tracing::warn!("the datapath had been changed by someone else; repaired");
                    m.drift_repairs.inc();
                }
                if report.changed {
                    tracing::info!(
                        entries = report.installed_entries,
                        took_ms = elapsed.as_secs_f64() * 1e3,
                        "datapath updated"
                    );
                }
                m.datapath_entries.set(report.installed_entries as i64);
                let summary = summarize(&desired);
                let egress = egress_summary(&desired.node);
                let snat = SnatSummary::of(&desired.node, self.kind);
                if let Some(warning) = &snat.warning {
                    let known = self.shared.read(|s| {
                        s.snat.as_ref().and_then(|n| n.warning.as_ref()) == Some(warning)
                    });
                    if !known {
                        tracing::warn!("{warning}");
                    }
                }
                if let Some(warning) = egress.as_ref().and_then(|e| e.warning.as_ref()) {
                    let known = self.shared.read(|s| {
                        s.egress.as_ref().and_then(|e| e.warning.as_ref()) == Some(warning)
                    });
                    if !known {
                        tracing::warn!("{warning}");
                    }
                }
                let matches = mismatch.is_none();
                self.shared.update(|s| {
                    s.egress = egress;
                    s.snat = Some(snat);
                    s.ready = matches;
                    s.desired = Some(summary);
                    s.installed = Some(InstalledSummary {
                        matches_desired: matches,
                        entries: report.installed_entries,
                        synced_at_unix: unix_now(),
                    });
                    s.last_sync_error = mismatch.clone();
                    s.counters.syncs += 1;
                    s.counters.drift_repairs += u64::from(report.drift_repaired);
                });
                match mismatch {
                    None => {
                        self.retry = None;
                        self.schedule(desired.config.resync_interval);
                    }
                    Some(why) => {
                        let retry = self.backoff(desired.config.resync_interval);
                        tracing::error!(retry_in_s = retry.as_secs_f64(), "not ready: {why}");
                    }
                }
                self.installed = Some(desired);
                // What it held is installed now (the config only changes in this task).
                self.pending_config = None;
            }
            Err(e) => {
                let retry = self.backoff(desired.config.resync_interval);
                tracing::error!(
                    retry_in_s = retry.as_secs_f64(),
                    "datapath sync failed: {e}"
                );
                self.shared.metrics.sync_failures.inc();
                self.shared.update(|s| {
                    s.ready = false;
                    s.last_sync_error = Some(e.to_string());
                    s.counters.syncs += 1;
                    s.counters.sync_failures += 1;
                    if let Some(i) = s.installed.as_mut() {
                        i.matches_desired = false;
                    }
                });
            }
        }
    }

    /// Schedules a retry: soon after the first failure, then twice as late each time, up to
    /// the resync interval. Returns the delay.
    fn backoff(&mut self, resync_interval: Duration) -> Duration {
        let retry = self
            .retry
            .map_or(FIRST_RETRY, |r| (r * 2).min(resync_interval));
        self.retry = Some(retry);
        self.schedule(retry);
        retry
    }

    fn schedule(&mut self, after: Duration) {
        self.next_resync = Instant::now() + after;
    }
}

#[cfg(test)]
mod tests;
