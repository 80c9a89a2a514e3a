//! Desired states shared by the iptables tests.
#![allow(dead_code)]

use std::time::Duration;

use ipnet::IpNet;
use masq_config::Config;
use masq_datapath::{Desired, NodeSettings};

/// The 11 reserved ranges, masq's default `nonMasqueradeCIDRs`.
pub const RESERVED: [&str; 11] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "240.0.0.0/4",
];

/// RFC 1918 only: kubernetes-sigs/ip-masq-agent's default.
pub const RFC1918: [&str; 3] = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"];

pub fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|s| s.parse().expect("test CIDR")).collect()
}

/// A config with these `nonMasqueradeCIDRs` and every other key at its default.
pub fn config(cidrs: &[&str]) -> Config {
    Config {
        non_masquerade_cidrs: nets(cidrs),
        masq_link_local: false,
        masq_link_local_ipv6: false,
        resync_interval: Duration::from_secs(60),
        cidr_limit: 16384,
        non_masquerade_src_cidrs: Vec::new(),
    }
}

pub fn desired(config: Config) -> Desired {
    Desired {
        config,
        node: NodeSettings::default(),
    }
}
