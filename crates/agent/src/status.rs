//! What the agent knows about itself, served as JSON on `/status` and printed by `masq status`.

use ipnet::IpNet;
use masq_datapath::ebpf::HookOrder;
use serde::{Deserialize, Serialize};

/// A snapshot of the agent's state. Field names are part of `masq status -o json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The datapath in use (`ebpf`, `nftables`, `iptables`).
    pub datapath: String,
    /// Why this datapath was chosen (the `auto` reasoning, or "requested").
    pub datapath_reason: String,
    /// First sync done and the datapath matches the desired config.
    pub ready: bool,
    /// The config file watched (`--config`), or the directory (`--config-dir`).
    pub config_path: String,
    /// The config files the last valid config was read from, in merge order.
    #[serde(default)]
    pub config_files: Vec<String>,
    /// The config the datapath should hold (the last valid one), if any.
    pub desired: Option<DesiredSummary>,
    /// What the datapath reported after the last sync.
    pub installed: Option<InstalledSummary>,
    /// The current config file problem, if the file on disk is invalid.
    pub last_config_error: Option<String>,
    /// The last datapath failure, if the last sync failed.
    pub last_sync_error: Option<String>,
    /// Egress interfaces and their addresses.
    pub interfaces: Vec<InterfaceSummary>,
    /// Where masqueraded traffic leaves and how it is steered there (None: egress routing off
    /// or no egress interface known).
    #[serde(default)]
    pub egress: Option<EgressSummary>,
    /// The SNAT pools, the source ports in effect and the reserved ports (None before the
    /// first sync).
    #[serde(default)]
    pub snat: Option<crate::snat_status::SnatSummary>,
    /// What the datapath found but does not own (e.g. a chain another agent left behind).
    pub findings: Vec<String>,
    /// eBPF: every program on each tc hook masq uses, in the order the kernel runs them, masq's
    /// marked (read at start and at each resync).
    #[serde(default)]
    pub hooks: Vec<HookOrder>,
    /// Event counters since start.
    pub counters: Counters,
}

/// The desired state, in the config's own terms. The CIDRs are kept parsed (as strings in
/// JSON): a list of 61,278 took 2.7 MiB as strings, 1.1 MiB this way.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DesiredSummary {
    /// `nonMasqueradeCIDRs` plus the native-routing CIDR, as configured.
    pub non_masquerade_cidrs: Vec<IpNet>,
    /// `nonMasqueradeSrcCIDRs`.
    pub non_masquerade_src_cidrs: Vec<IpNet>,
    /// `masqueradeCIDRs`.
    #[serde(default)]
    pub masquerade_cidrs: Vec<IpNet>,
    /// `masqLinkLocal`.
    pub masq_link_local: bool,
    /// `masqLinkLocalIPv6`.
    pub masq_link_local_ipv6: bool,
    /// `resyncInterval` in seconds.
    pub resync_interval_seconds: f64,
    /// `--pod-cidr` values.
    pub pod_cidrs: Vec<IpNet>,
}

/// The installed state as the datapath last reported it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InstalledSummary {
    /// The kernel held exactly the desired state after the last sync or check.
    pub matches_desired: bool,
    /// Rules, set elements or map entries installed.
    pub entries: usize,
    /// Unix time of the last successful sync.
    pub synced_at_unix: f64,
}

/// One egress interface.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InterfaceSummary {
    /// Interface name.
    pub name: String,
    /// Its addresses, primary first.
    pub addresses: Vec<String>,
}

/// Egress routing (docs/vpc-native.md): the interface masqueraded flows leave through.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EgressSummary {
    /// The egress interface.
    pub interface: String,
    /// The fwmark bits, e.g. `0x1000`.
    pub mark: String,
    /// Priority of masq's `ip rule`.
    pub rule_priority: u32,
    /// The routing table marked connections look up (254 is `main`).
    pub table: u32,
    /// A node setting that breaks egress routing (strict `rp_filter`), if any.
    pub warning: Option<String>,
}

/// Counters since the agent started.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// Successful config loads after a change.
    pub config_reloads_ok: u64,
    /// Rejected config files.
    pub config_reloads_failed: u64,
    /// Datapath syncs run.
    pub syncs: u64,
    /// Datapath syncs that failed.
    pub sync_failures: u64,
    /// Drift found and repaired.
    pub drift_repairs: u64,
}

impl Status {
    /// The human-readable form of `masq status`.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        let _ = writeln!(
            s,
            "datapath:        {} ({})",
            self.datapath, self.datapath_reason
        );
        let _ = writeln!(s, "ready:           {}", yes_no(self.ready));
        let _ = writeln!(s, "config:          {}", self.config_path);
        for file in &self.config_files {
            let _ = writeln!(s, "config file:     {file}");
        }
        match &self.last_config_error {
            Some(e) => {
                let _ = writeln!(
                    s,
                    "config error:    {}",
                    e.replace('\n', "\n                 ")
                );
            }
            None => {
                let _ = writeln!(s, "config error:    none");
            }
        }
        if let Some(e) = &self.last_sync_error {
            let _ = writeln!(s, "sync error:      {e}");
        }
        match &self.desired {
            Some(d) => {
                let _ = writeln!(
                    s,
                    "desired:         {} non-masquerade CIDRs, {} masquerade CIDRs, {} source exemptions, masqLinkLocal={}, resync {}s",
                    d.non_masquerade_cidrs.len(),
                    d.masquerade_cidrs.len(),
                    d.non_masquerade_src_cidrs.len(),
                    d.masq_link_local,
                    d.resync_interval_seconds
                );
            }
            None => {
                let _ = writeln!(s, "desired:         none (no valid config yet)");
            }
        }
        match &self.installed {
            Some(i) => {
                let _ = writeln!(
                    s,
                    "installed:       {} entries, matches desired: {}",
                    i.entries,
                    yes_no(i.matches_desired)
                );
            }
            None => {
                let _ = writeln!(s, "installed:       nothing");
            }
        }
        for finding in &self.findings {
            let _ = writeln!(s, "found:           {finding}");
        }
        for i in &self.interfaces {
            let _ = writeln!(s, "interface:       {} {}", i.name, i.addresses.join(" "));
        }
        for hook in &self.hooks {
            let _ = writeln!(s, "hook:            {}", hook.text());
        }
        match &self.egress {
            Some(e) => {
                let _ = writeln!(
                    s,
                    "egress:          masqueraded flows leave through {} (fwmark {}/{} lookup table {}, rule priority {})",
                    e.interface, e.mark, e.mark, e.table, e.rule_priority
                );
                if let Some(w) = &e.warning {
                    let _ = writeln!(s, "egress warning:  {w}");
                }
            }
            None => {
                let _ = writeln!(s, "egress:          off (the pods' own routes decide)");
            }
        }
        if let Some(snat) = &self.snat {
            s.push_str(&snat.text());
        }
        let c = &self.counters;
        let _ = writeln!(
            s,
            "counters:        reloads ok {} failed {}, syncs {} failed {}, drift repairs {}",
            c.config_reloads_ok, c.config_reloads_failed, c.syncs, c.sync_failures, c.drift_repairs
        );
        s
    }
}

/// Asks the agent listening on `addr` (its `--metrics-addr`) for its status.
pub fn fetch(addr: &str) -> anyhow::Result<Status> {
    use anyhow::Context;
    let url = format!("http://{addr}/status");
    let body = ureq::get(&url)
        .call()
        .with_context(|| format!("cannot reach the agent at {addr} (is `masq agent` running with --metrics-addr {addr}?)"))?
        .body_mut()
        .read_to_string()
        .with_context(|| format!("reading {url}"))?;
    serde_json::from_str(&body)
        .with_context(|| format!("{url} answered something that is not a masq status"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_names_the_egress_interface_and_its_warning() {
        let mut status = Status::default();
        assert!(status.to_text().contains("egress:          off"));
        status.egress = Some(EgressSummary {
            interface: "eth0".into(),
            mark: "0x1000".into(),
            rule_priority: 1000,
            table: 254,
            warning: Some("strict rp_filter on eth0".into()),
        });
        let text = status.to_text();
        assert!(
            text.contains("masqueraded flows leave through eth0 (fwmark 0x1000/0x1000 lookup table 254, rule priority 1000)"),
            "{text}"
        );
        assert!(
            text.contains("egress warning:  strict rp_filter on eth0"),
            "{text}"
        );
        // An older agent's JSON (no `egress`) still parses.
        let old: Status = serde_json::from_str(
            &serde_json::to_string(&Status::default())
                .unwrap()
                .replace(",\"egress\":null", ""),
        )
        .unwrap();
        assert_eq!(old.egress, None);
    }

    #[test]
    fn the_text_lists_each_hook_in_the_kernels_order() {
        use masq_datapath::ebpf::HookedProgram;
        let program = |name: &str, masq: bool| HookedProgram {
            name: name.into(),
            id: Some(7),
            attach: "tcx".into(),
            masq,
            ..HookedProgram::default()
        };
        let status = Status {
            hooks: vec![HookOrder {
                interface: "eth0".into(),
                hook: "egress".into(),
                programs: vec![
                    program("masq_egress", true),
                    program("cil_to_netdev", false),
                ],
            }],
            ..Status::default()
        };
        let text = status.to_text();
        assert!(
            text.contains(
                "hook:            eth0 egress: 1. masq_egress (masq; tcx, id 7) 2. cil_to_netdev (tcx, id 7)\n"
            ),
            "{text}"
        );
        // An older agent's JSON (no `hooks`) still parses.
        let json = serde_json::to_string(&Status::default())
            .unwrap()
            .replace(",\"hooks\":[]", "");
        assert!(!json.contains("hooks"));
        assert_eq!(serde_json::from_str::<Status>(&json).unwrap().hooks, []);
    }

    #[test]
    fn cidrs_are_strings_in_the_json() {
        let summary = DesiredSummary {
            non_masquerade_cidrs: vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()],
            pod_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
            ..DesiredSummary::default()
        };
        let json = serde_json::to_value(&summary).unwrap();
        assert_eq!(
            json["non_masquerade_cidrs"],
            serde_json::json!(["10.0.0.0/8", "fd00::/8"])
        );
        assert_eq!(json["pod_cidrs"], serde_json::json!(["10.244.0.0/16"]));
        assert_eq!(json["non_masquerade_src_cidrs"], serde_json::json!([]));
        let back: DesiredSummary = serde_json::from_value(json).unwrap();
        assert_eq!(back, summary);
    }
}
