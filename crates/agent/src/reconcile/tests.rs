//! The reconciler against an in-memory datapath and real config files.

use super::*;
use crate::metrics::Metrics;
use crate::status::Status;
use masq_datapath::{Error, Kind, SyncReport};
use std::path::PathBuf;
use std::sync::{Mutex, RwLock};

/// An in-memory datapath: what it "installed", how often it synced, whether it fails.
#[derive(Clone, Default)]
struct Fake(Arc<Mutex<FakeState>>);
#[derive(Default)]
struct FakeState {
    installed: Option<Desired>,
    syncs: usize,
    fail: bool,
    /// Reports success without installing anything (a datapath that writes what it does not
    /// read back, or is undone at once).
    lies: bool,
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
        if !s.lies {
            s.installed = Some(d.clone());
        }
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
    bed_reading(dir, Source::File(path), Fake::default())
}

/// A bed whose agent reads every `ip-masq*` file of its directory (`path` is the directory).
fn dir_bed() -> Bed {
    let dir = tempfile::tempdir().unwrap();
    let source = Source::Dir(dir.path().to_path_buf());
    bed_reading(dir, source, Fake::default())
}

fn bed_reading(dir: tempfile::TempDir, source: Source, fake: Fake) -> Bed {
    let path = source.path().to_path_buf();
    let settings = AgentSettings {
        config: source,
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
    fn installed(&self) -> Option<Config> {
        let state = self.fake.0.lock().unwrap();
        state.installed.as_ref().map(|d| d.config.clone())
    }
    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path.join(name), text).unwrap();
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

#[tokio::test]
async fn a_sync_the_kernel_does_not_match_is_not_ready_and_retried_soon() {
    let mut b = bed();
    b.fake.0.lock().unwrap().lies = true;
    b.rec.reconcile(Trigger::Start).await;
    let s = b.status();
    assert!(
        !s.ready,
        "readiness follows Datapath::matches, not the sync's word"
    );
    assert_eq!(b.rec.shared.metrics.ready.get(), 0);
    assert!(!s.installed.unwrap().matches_desired);
    assert!(s.last_sync_error.unwrap().contains("does not hold"));
    assert!(b.rec.next_resync() <= Instant::now() + FIRST_RETRY);
    b.fake.0.lock().unwrap().lies = false;
    b.rec.reconcile(Trigger::Resync).await;
    let s = b.status();
    assert!(s.ready && s.installed.unwrap().matches_desired);
    assert_eq!(s.last_sync_error, None);
    assert!(b.rec.next_resync() > Instant::now() + Duration::from_secs(30));
}

// === several files (`--config-dir`) ===

fn nets(list: &[&str]) -> Vec<ipnet::IpNet> {
    list.iter().map(|c| c.parse().unwrap()).collect()
}

#[tokio::test]
async fn a_second_file_is_merged_an_invalid_one_changes_nothing_and_removing_it_goes_back() {
    let mut b = dir_bed();
    b.write("ip-masq-platform", "nonMasqueradeCIDRs: [10.0.0.0/8]");
    b.rec.reconcile(Trigger::Start).await;
    assert_eq!(
        b.installed().unwrap().non_masquerade_cidrs,
        nets(&["10.0.0.0/8"])
    );
    let platform = b.path.join("ip-masq-platform").display().to_string();
    assert_eq!(b.status().config_files, std::slice::from_ref(&platform));

    b.write(
        "ip-masq-tenant",
        "masqueradeCIDRs: [10.5.0.0/16]\nmasqLinkLocal: true",
    );
    b.rec.reconcile(Trigger::ConfigEvent).await;
    let merged = b.installed().unwrap();
    assert_eq!(merged.masquerade_cidrs, nets(&["10.5.0.0/16"]));
    assert!(merged.masq_link_local);
    let tenant = b.path.join("ip-masq-tenant").display().to_string();
    assert_eq!(b.status().config_files, [platform.clone(), tenant.clone()]);

    b.write("ip-masq-tenant", "masqueradeCIDRs: [10.5.0.1/16]");
    b.rec.reconcile(Trigger::ConfigEvent).await;
    assert_eq!(
        b.installed().unwrap(),
        merged,
        "an invalid file changes nothing"
    );
    let error = b.status().last_config_error.unwrap();
    assert!(
        error.starts_with(&format!("{tenant}: masqueradeCIDRs[0]: \"10.5.0.1/16\"")),
        "{error}"
    );
    assert!(error.contains("did you mean 10.5.0.0/16?"), "{error}");
    assert_eq!(b.rec.shared.metrics.config_error.get(), 1);
    assert!(
        b.status().ready,
        "the datapath still holds the last good merge"
    );

    std::fs::remove_file(b.path.join("ip-masq-tenant")).unwrap();
    b.rec.reconcile(Trigger::ConfigEvent).await;
    let back = b.installed().unwrap();
    assert!(back.masquerade_cidrs.is_empty());
    assert!(!back.masq_link_local);
    assert_eq!(b.status().last_config_error, None);
    assert_eq!(b.status().config_files, [platform]);
}

#[tokio::test]
async fn files_not_named_ip_masq_are_ignored() {
    let mut b = dir_bed();
    b.write("ip-masq-a", "masqLinkLocal: true");
    b.write("README", "nonMasqueradeCIDRs: [not a cidr]");
    b.rec.reconcile(Trigger::Start).await;
    assert_eq!(b.installed_link_local(), Some(true));
    assert_eq!(b.status().last_config_error, None);
}

#[test]
fn a_snat_ip_the_node_lacks_is_one_line_naming_flag_and_value() {
    let facts = crate::node::NodeFacts {
        egress: Vec::new(),
        local_addrs: vec!["172.30.0.1".parse().unwrap()],
        uplinks: Vec::new(),
    };
    let mut node = NodeSettings::default();
    assert!(super::check_snat_ips(&node, &facts, Kind::Nftables).is_ok());
    node.snat_ips = vec!["172.30.0.1".parse().unwrap()];
    assert!(super::check_snat_ips(&node, &facts, Kind::Nftables).is_ok());
    node.snat_ips.push("192.0.2.9".parse().unwrap());
    let error = super::check_snat_ips(&node, &facts, Kind::Nftables)
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "--snat-ip: \"192.0.2.9\" is not an address of this node (add it to an interface, or leave it out)"
    );
}

#[test]
fn an_ipv6_pool_iptables_cannot_spread_is_refused() {
    let facts = crate::node::NodeFacts {
        egress: Vec::new(),
        local_addrs: vec![
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        ],
        uplinks: Vec::new(),
    };
    let mut node = NodeSettings {
        enable_ipv6: true,
        snat_ips: vec!["2001:db8::1".parse().unwrap()],
        ..NodeSettings::default()
    };
    assert!(super::check_snat_ips(&node, &facts, Kind::Iptables).is_ok());
    node.snat_ips.push("2001:db8::2".parse().unwrap());
    assert!(super::check_snat_ips(&node, &facts, Kind::Nftables).is_ok());
    assert!(super::check_snat_ips(&node, &facts, Kind::Ebpf).is_ok());
    let error = super::check_snat_ips(&node, &facts, Kind::Iptables)
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("--snat-ip: the iptables datapath cannot spread IPv6 pods over 2"),
        "{error}"
    );
}
