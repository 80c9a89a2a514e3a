//! The one task that owns the agent's state. Triggers (a config-directory event, a netlink
//! change, the resync timer) all end in [`Reconciler::reconcile`]: re-read the config, and if it
//! is valid, hand the desired state to the datapath, which diffs and repairs. An invalid config
//! never reaches the datapath; the last good one stays installed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use masq_config::{Config, ParseOptions};
use masq_datapath::{Datapath, Desired, NodeSettings};
use tokio::sync::mpsc;

use crate::admin::{self, Shared};
use crate::metrics::{DatapathLabel, Metrics, ResultLabel};
use crate::node::{self, NodeFacts};
use crate::status::{DesiredSummary, EgressSummary, InstalledSummary, InterfaceSummary, Status};
use crate::{memory, signals, watch};

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
    /// `--config`.
    pub config_path: PathBuf,
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
    shared: Arc<Shared>,
    node: NodeFacts,
    /// The file content last read (`None`: absent), to ignore events that change nothing.
    last_bytes: Option<Option<Vec<u8>>>,
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
            s.config_path = settings.config_path.display().to_string();
        });
        Reconciler {
            settings,
            datapath: Some(datapath),
            shared,
            node: NodeFacts::default(),
            last_bytes: None,
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
        tracing::info!(interfaces = ?facts.egress.iter().map(|i| &i.name).collect::<Vec<_>>(), "node interfaces or addresses changed");
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
        let path = &self.settings.config_path;
        let bytes = match std::fs::read(path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("reading {}: {e}", path.display())),
        };
        let bytes = match bytes {
            Ok(b) => b,
            Err(message) => return self.reject(message),
        };
        if self.last_bytes.as_ref() == Some(&bytes) {
            return;
        }
        let first = self.last_bytes.is_none();
        self.last_bytes = Some(bytes.clone());
        let parsed = masq_config::parse(
            bytes.as_deref().unwrap_or_default(),
            &self.settings.parse_options,
        );
        match parsed {
            Ok(loaded) => {
                for warning in &loaded.warnings {
                    tracing::warn!(config = %path.display(), "{warning}");
                }
                if !first {
                    tracing::info!(config = %path.display(), "config changed; applying");
                }
                let m = &self.shared.metrics;
                m.config_reloads
                    .get_or_create(&ResultLabel { result: "success" })
                    .inc();
                m.config_error.set(0);
                m.config_last_success.set(unix_now());
                m.cidrs_installed
                    .set(loaded.config.non_masquerade_cidrs.len() as i64);
                self.shared.update(|s| {
                    s.last_config_error = None;
                    s.counters.config_reloads_ok += 1;
                });
                self.pending_config = Some(loaded.config);
            }
            Err(e) => self.reject(e.to_string()),
        }
    }

    fn reject(&mut self, message: String) {
        let kept = if self.config().is_some() {
            "keeping the last valid config"
        } else {
            "nothing installed until a valid config appears"
        };
        tracing::error!(config = %self.settings.config_path.display(), "invalid config, {kept}: {}", message.replace('\n', "; "));
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
        // Moved to the blocking thread and back: no second copy of a long list.
        let (desired, result) = self
            .on_datapath(move |datapath| {
                let result = datapath.sync(&desired);
                (desired, result)
            })
            .await;
        let elapsed = started.elapsed();
        let m = &self.shared.metrics;
        m.sync_duration.observe(elapsed.as_secs_f64());
        match result {
            Ok(report) => {
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
                if let Some(warning) = egress.as_ref().and_then(|e| e.warning.as_ref()) {
                    let known = self.shared.read(|s| {
                        s.egress.as_ref().and_then(|e| e.warning.as_ref()) == Some(warning)
                    });
                    if !known {
                        tracing::warn!("{warning}");
                    }
                }
                self.shared.update(|s| {
                    s.egress = egress;
                    s.ready = true;
                    s.desired = Some(summary);
                    s.installed = Some(InstalledSummary {
                        matches_desired: true,
                        entries: report.installed_entries,
                        synced_at_unix: unix_now(),
                    });
                    s.last_sync_error = None;
                    s.counters.syncs += 1;
                    s.counters.drift_repairs += u64::from(report.drift_repaired);
                });
                self.retry = None;
                self.schedule(desired.config.resync_interval);
                self.installed = Some(desired);
                // What it held is installed now (the config only changes in this task).
                self.pending_config = None;
            }
            Err(e) => {
                let retry = self
                    .retry
                    .map_or(FIRST_RETRY, |r| (r * 2).min(desired.config.resync_interval));
                tracing::error!(
                    retry_in_s = retry.as_secs_f64(),
                    "datapath sync failed: {e}"
                );
                m.sync_failures.inc();
                self.shared.update(|s| {
                    s.ready = false;
                    s.last_sync_error = Some(e.to_string());
                    s.counters.syncs += 1;
                    s.counters.sync_failures += 1;
                    if let Some(i) = s.installed.as_mut() {
                        i.matches_desired = false;
                    }
                });
                self.retry = Some(retry);
                self.schedule(retry);
            }
        }
    }

    fn schedule(&mut self, after: Duration) {
        self.next_resync = Instant::now() + after;
    }
}

fn summarize(desired: &Desired) -> DesiredSummary {
    let c = &desired.config;
    let mut cidrs = Vec::with_capacity(c.non_masquerade_cidrs.len() + 1);
    cidrs.extend_from_slice(&c.non_masquerade_cidrs);
    cidrs.extend(desired.node.native_routing_cidr);
    DesiredSummary {
        non_masquerade_cidrs: cidrs,
        non_masquerade_src_cidrs: c.non_masquerade_src_cidrs.clone(),
        masq_link_local: c.masq_link_local,
        masq_link_local_ipv6: c.masq_link_local_ipv6,
        resync_interval_seconds: c.resync_interval.as_secs_f64(),
        pod_cidrs: desired.node.pod_cidrs.clone(),
    }
}

/// Egress routing as every datapath installs it: the netfilter ones mark and route, the eBPF one
/// redirects and marks the replies; all use the same rule (docs/vpc-native.md).
fn egress_summary(node: &NodeSettings) -> Option<EgressSummary> {
    let routing = node.active_egress_routing()?;
    let interface = node.egress_interface()?.to_string();
    Some(EgressSummary {
        warning: masq_datapath::egress::reverse_path_warning(&interface),
        interface,
        mark: format!("{:#x}", routing.mark),
        rule_priority: routing.rule_priority,
        table: routing.table,
    })
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// Drains a burst of events so one reconcile covers them all.
async fn settle(rx: &mut mpsc::UnboundedReceiver<()>) {
    tokio::time::sleep(DEBOUNCE).await;
    while rx.try_recv().is_ok() {}
}

/// Runs the agent until SIGTERM or SIGINT. The datapath stays installed when it returns.
pub async fn run(
    settings: AgentSettings,
    datapath: Box<dyn Datapath>,
    metrics: Metrics,
) -> Result<()> {
    // Before anything else: a SIGTERM must never meet the default action.
    let shutdown = signals::shutdown()?;
    let shared = Arc::new(Shared {
        metrics,
        status: RwLock::new(Status::default()),
    });
    let listener = tokio::net::TcpListener::bind(settings.metrics_addr)
        .await
        .with_context(|| format!("--metrics-addr {}: cannot listen", settings.metrics_addr))?;
    tokio::spawn(admin::serve(listener, shared.clone()));

    let (config_tx, mut config_rx) = mpsc::unbounded_channel();
    let _watch = watch::watch_config(&settings.config_path, config_tx);
    let (node_tx, mut node_rx) = mpsc::unbounded_channel();
    node::watch(node_tx)?;

    tokio::pin!(shutdown);
    let wanted = settings.interfaces.clone();
    let ipv6 = settings.node.enable_ipv6;
    let mut reconciler = Reconciler::new(settings, datapath, shared);
    reconciler.set_node(node::discover(wanted.as_deref(), ipv6).await?);
    tracing::info!("agent started");
    reconciler.reconcile(Trigger::Start).await;

    let mut upkeep = tokio::time::interval(HOUSEKEEPING);
    upkeep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let resync = tokio::time::sleep_until(reconciler.next_resync().into());
        tokio::select! {
            signal = &mut shutdown => {
                tracing::info!("{signal}; stopping and leaving the datapath installed");
                return Ok(());
            }
            Some(()) = config_rx.recv() => {
                settle(&mut config_rx).await;
                reconciler.reconcile(Trigger::ConfigEvent).await;
            }
            Some(()) = node_rx.recv() => {
                settle(&mut node_rx).await;
                match node::discover(wanted.as_deref(), ipv6).await {
                    Ok(facts) => if reconciler.set_node(facts) {
                        reconciler.reconcile(Trigger::NodeChange).await;
                    },
                    Err(e) => tracing::error!("reading interfaces after a netlink change: {e:#}"),
                }
            }
            () = resync => reconciler.reconcile(Trigger::Resync).await,
            _ = upkeep.tick() => reconciler.housekeeping().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use masq_datapath::{Error, Kind, SyncReport};
    use std::sync::Mutex;

    /// An in-memory datapath: what it "installed", how often it synced, whether it fails.
    #[derive(Clone, Default)]
    struct Fake(Arc<Mutex<FakeState>>);
    #[derive(Default)]
    struct FakeState {
        installed: Option<Desired>,
        syncs: usize,
        fail: bool,
        unhooked: bool,
    }

    impl Datapath for Fake {
        fn kind(&self) -> Kind {
            Kind::Nftables
        }
        fn render(&self, d: &Desired) -> String {
            format!("{d:?}")
        }
        fn sync(&mut self, d: &Desired) -> Result<SyncReport, Error> {
            let mut s = self.0.lock().unwrap();
            s.syncs += 1;
            if s.fail {
                return Err(Error::Unsupported("injected failure".into()));
            }
            let changed = s.installed.as_ref() != Some(d);
            s.installed = Some(d.clone());
            s.unhooked = false;
            Ok(SyncReport {
                changed,
                drift_repaired: false,
                installed_entries: d.config.non_masquerade_cidrs.len(),
            })
        }
        fn matches(&self, d: &Desired) -> Result<bool, Error> {
            Ok(self.0.lock().unwrap().installed.as_ref() == Some(d))
        }
        fn cleanup(&mut self) -> Result<(), Error> {
            self.0.lock().unwrap().installed = None;
            Ok(())
        }
        fn findings(&self, d: &Desired) -> Vec<String> {
            vec![format!("a foreign chain next to {}", d.node.iptables_chain)]
        }
        fn intact(&self) -> Result<bool, Error> {
            Ok(!self.0.lock().unwrap().unhooked)
        }
    }

    struct Bed {
        _dir: tempfile::TempDir,
        path: PathBuf,
        fake: Fake,
        rec: Reconciler,
    }

    fn bed() -> Bed {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        let fake = Fake::default();
        let settings = AgentSettings {
            config_path: path.clone(),
            parse_options: ParseOptions::default(),
            node: NodeSettings::default(),
            interfaces: None,
            metrics_addr: "127.0.0.1:0".parse().unwrap(),
            datapath_reason: "test".into(),
        };
        let shared = Arc::new(Shared {
            metrics: Metrics::new(),
            status: RwLock::new(Status::default()),
        });
        let rec = Reconciler::new(settings, Box::new(fake.clone()), shared);
        Bed {
            _dir: dir,
            path,
            fake,
            rec,
        }
    }

    impl Bed {
        fn installed_link_local(&self) -> Option<bool> {
            self.fake
                .0
                .lock()
                .unwrap()
                .installed
                .as_ref()
                .map(|d| d.config.masq_link_local)
        }
        fn syncs(&self) -> usize {
            self.fake.0.lock().unwrap().syncs
        }
        fn status(&self) -> Status {
            self.rec.shared.status()
        }
    }

    #[tokio::test]
    async fn a_missing_file_installs_the_defaults_and_becomes_ready() {
        let mut b = bed();
        assert!(!b.status().ready);
        b.rec.reconcile(Trigger::Start).await;
        assert_eq!(b.installed_link_local(), Some(false));
        assert!(b.status().ready);
        assert_eq!(b.rec.shared.metrics.ready.get(), 1);
    }

    #[tokio::test]
    async fn housekeeping_resyncs_at_once_when_a_hook_is_gone() {
        let mut b = bed();
        b.rec.reconcile(Trigger::Start).await;
        b.rec.housekeeping().await;
        assert_eq!(b.syncs(), 1, "intact: no sync");
        b.fake.0.lock().unwrap().unhooked = true;
        b.rec.housekeeping().await;
        assert_eq!(
            b.syncs(),
            2,
            "a hook gone: synced without waiting for the resync"
        );
        assert!(!b.fake.0.lock().unwrap().unhooked, "repaired");
    }

    #[tokio::test]
    async fn findings_reach_the_status_on_start_and_resync() {
        let mut b = bed();
        b.rec.reconcile(Trigger::Start).await;
        assert_eq!(
            b.status().findings,
            ["a foreign chain next to IP-MASQ-AGENT"]
        );
    }

    #[tokio::test]
    async fn an_invalid_first_config_installs_nothing_and_stays_not_ready() {
        let mut b = bed();
        std::fs::write(&b.path, "nonMasqueradeCIDRs: [10.0.0.1/8]").unwrap();
        b.rec.reconcile(Trigger::Start).await;
        assert_eq!(b.syncs(), 0);
        let s = b.status();
        assert!(!s.ready);
        assert!(s.last_config_error.is_some());
        assert_eq!(b.rec.shared.metrics.config_error.get(), 1);
        // A valid config appears: installed, ready, error cleared.
        std::fs::write(&b.path, "masqLinkLocal: true").unwrap();
        b.rec.reconcile(Trigger::ConfigEvent).await;
        assert_eq!(b.installed_link_local(), Some(true));
        assert!(b.status().ready);
        assert_eq!(b.status().last_config_error, None);
        assert_eq!(b.rec.shared.metrics.config_error.get(), 0);
    }

    #[tokio::test]
    async fn an_invalid_change_keeps_the_last_good_config_installed() {
        let mut b = bed();
        std::fs::write(&b.path, "masqLinkLocal: true").unwrap();
        b.rec.reconcile(Trigger::Start).await;
        std::fs::write(&b.path, "nonMasqueradeCIDRs: [10.0.0.1/8]").unwrap();
        b.rec.reconcile(Trigger::ConfigEvent).await;
        assert_eq!(b.installed_link_local(), Some(true));
        let s = b.status();
        assert!(s.ready, "the datapath still matches the last good config");
        assert!(s.last_config_error.unwrap().contains("nonMasqueradeCIDRs"));
        assert_eq!(s.counters.config_reloads_failed, 1);
        // The resync keeps repairing towards the last good config, not the invalid file.
        b.rec.reconcile(Trigger::Resync).await;
        assert_eq!(b.installed_link_local(), Some(true));
    }

    #[tokio::test]
    async fn an_event_that_changes_nothing_does_not_sync() {
        let mut b = bed();
        b.rec.reconcile(Trigger::Start).await;
        b.rec.reconcile(Trigger::ConfigEvent).await;
        assert_eq!(b.syncs(), 1);
        b.rec.reconcile(Trigger::Resync).await;
        assert_eq!(
            b.syncs(),
            2,
            "a resync always asks the datapath to repair drift"
        );
    }

    #[tokio::test]
    async fn a_deleted_file_means_the_defaults() {
        let mut b = bed();
        std::fs::write(&b.path, "masqLinkLocal: true").unwrap();
        b.rec.reconcile(Trigger::Start).await;
        std::fs::remove_file(&b.path).unwrap();
        b.rec.reconcile(Trigger::ConfigEvent).await;
        assert_eq!(b.installed_link_local(), Some(false));
    }

    #[tokio::test]
    async fn a_failed_sync_is_not_ready_and_retried_soon() {
        let mut b = bed();
        b.fake.0.lock().unwrap().fail = true;
        b.rec.reconcile(Trigger::Start).await;
        let s = b.status();
        assert!(!s.ready);
        assert!(s.last_sync_error.unwrap().contains("injected"));
        assert!(b.rec.next_resync() <= Instant::now() + FIRST_RETRY);
        b.fake.0.lock().unwrap().fail = false;
        b.rec.reconcile(Trigger::Resync).await;
        assert!(b.status().ready);
        assert!(b.rec.next_resync() > Instant::now() + Duration::from_secs(30));
    }
}
