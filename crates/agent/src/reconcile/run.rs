//! The agent's one task: triggers in, reconciles out, until SIGTERM or SIGINT.

use std::sync::{Arc, RwLock};

use anyhow::{Context, Result};
use masq_datapath::Datapath;
use tokio::sync::mpsc;

use super::{AgentSettings, Reconciler, Trigger, DEBOUNCE, HOUSEKEEPING};
use crate::admin::{self, Shared};
use crate::metrics::Metrics;
use crate::status::Status;
use crate::{node, signals, watch};

/// Drains a burst of events so one reconcile covers them all.
async fn settle(rx: &mut mpsc::UnboundedReceiver<()>) {
    tokio::time::sleep(DEBOUNCE).await;
    while rx.try_recv().is_ok() {}
}

/// The node's reserved ports, read on a blocking thread (a netlink dump and helper programs).
async fn read_reserved() -> std::collections::BTreeSet<u16> {
    tokio::task::spawn_blocking(|| crate::reserved::read().all())
        .await
        .unwrap_or_default()
}

/// Reads the node over netlink again; returns whether anything changed.
async fn rediscover(reconciler: &mut Reconciler, wanted: Option<&[String]>, ipv6: bool) -> bool {
    match node::discover(wanted, ipv6).await {
        Ok(facts) => reconciler.set_node(facts),
        Err(e) => {
            tracing::error!("reading the node's interfaces and routes: {e:#}");
            false
        }
    }
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
    let _watch = watch::watch_dir(&settings.config.watched_dir(), config_tx);
    let (node_tx, mut node_rx) = mpsc::unbounded_channel();
    node::watch(node_tx)?;

    tokio::pin!(shutdown);
    let wanted = settings.interfaces.clone();
    let ipv6 = settings.node.enable_ipv6;
    let facts = node::discover(wanted.as_deref(), ipv6).await?;
    super::check_snat_ips(&settings.node, &facts, datapath.kind())?;
    let mut reconciler = Reconciler::new(settings, datapath, shared);
    reconciler.set_node(facts);
    reconciler.set_reserved(read_reserved().await);
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
                if rediscover(&mut reconciler, wanted.as_deref(), ipv6).await {
                    reconciler.reconcile(Trigger::NodeChange).await;
                }
            }
            () = resync => {
                // Also here: a notification lost to a full socket buffer must not leave a
                // stale uplink until the next change.
                rediscover(&mut reconciler, wanted.as_deref(), ipv6).await;
                reconciler.reconcile(Trigger::Resync).await;
            }
            _ = upkeep.tick() => {
                reconciler.housekeeping().await;
                // Listening sockets and hostPorts change without a netlink event: polled.
                if reconciler.set_reserved(read_reserved().await) {
                    reconciler.reconcile(Trigger::NodeChange).await;
                }
            }
        }
    }
}
