//! Every metric the agent exports, named and described in one place (README: Observability).
//!
//! Datapath-specific series (eBPF counters) are added by the datapath through
//! [`Metrics::registry_mut`] before the registry is shared.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// The `result` label of reloads.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `success` or `failure`.
    pub result: &'static str,
}

/// The `datapath` label of the info gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DatapathLabel {
    /// `ebpf`, `nftables` or `iptables`.
    pub datapath: &'static str,
}

/// The agent's metrics. Cheap to update from any task (all atomics).
pub struct Metrics {
    registry: Registry,
    /// Config files read after a change, by result.
    pub config_reloads: Family<ResultLabel, Counter>,
    /// 1 while the config file on disk is invalid (the last good one stays installed).
    pub config_error: Gauge,
    /// Unix time of the last successful config load.
    pub config_last_success: Gauge<f64, AtomicU64>,
    /// `nonMasqueradeCIDRs` and `masqueradeCIDRs` entries of the installed config, as
    /// `cidrLimit` counts them (link-local not counted).
    pub cidrs_installed: Gauge,
    /// Rules, set elements or map entries the datapath reported installed.
    pub datapath_entries: Gauge,
    /// Duration of each datapath sync.
    pub sync_duration: Histogram,
    /// Datapath syncs that failed.
    pub sync_failures: Counter,
    /// Syncs that found the kernel changed by someone else and repaired it.
    pub drift_repairs: Counter,
    /// 1 for the datapath in use.
    pub datapath_info: Family<DatapathLabel, Gauge>,
    /// 1 once the first sync succeeded and the datapath matches the config.
    pub ready: Gauge,
}

impl Metrics {
    /// Creates and registers every metric under the `masq_` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("masq");
        let m = Metrics {
            config_reloads: Family::default(),
            config_error: Gauge::default(),
            config_last_success: Gauge::default(),
            cidrs_installed: Gauge::default(),
            datapath_entries: Gauge::default(),
            sync_duration: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            sync_failures: Counter::default(),
            drift_repairs: Counter::default(),
            datapath_info: Family::default(),
            ready: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "config_reloads",
            "Config file loads after a change, by result",
            m.config_reloads.clone(),
        );
        registry.register(
            "config_error",
            "1 while the config file is invalid and the last good config stays installed",
            m.config_error.clone(),
        );
        registry.register(
            "config_last_success_timestamp_seconds",
            "Unix time of the last successful config load",
            m.config_last_success.clone(),
        );
        registry.register(
            "cidrs_installed",
            "nonMasqueradeCIDRs and masqueradeCIDRs entries in the installed config",
            m.cidrs_installed.clone(),
        );
        registry.register(
            "datapath_entries",
            "Rules, set elements or map entries installed by the datapath",
            m.datapath_entries.clone(),
        );
        registry.register(
            "sync_duration_seconds",
            "Duration of a datapath sync",
            m.sync_duration.clone(),
        );
        registry.register(
            "sync_failures",
            "Datapath syncs that failed",
            m.sync_failures.clone(),
        );
        registry.register(
            "drift_repairs",
            "Syncs that found the datapath changed by someone else and repaired it",
            m.drift_repairs.clone(),
        );
        registry.register(
            "datapath_info",
            "The datapath in use",
            m.datapath_info.clone(),
        );
        registry.register(
            "ready",
            "1 once the datapath matches the config",
            m.ready.clone(),
        );
        Metrics { registry, ..m }
    }

    /// For datapath-specific collectors, before the metrics are shared.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_metric() {
        let m = Metrics::new();
        m.config_reloads
            .get_or_create(&ResultLabel { result: "failure" })
            .inc();
        m.config_error.set(1);
        let text = m.encode();
        for name in [
            "masq_config_reloads_total{result=\"failure\"} 1",
            "masq_config_error 1",
            "masq_sync_duration_seconds_bucket",
            "masq_drift_repairs_total 0",
            "masq_ready 0",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }
}
