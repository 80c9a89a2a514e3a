//! Desired states shared by the iptables tests.
#![allow(dead_code)]

use ipnet::IpNet;
use masq_config::Config;
use masq_datapath::{Desired, NodeSettings};

/// RFC 1918 only: kubernetes-sigs/ip-masq-agent's default.
pub const RFC1918: [&str; 3] = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"];

pub fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|s| s.parse().expect("test CIDR")).collect()
}

/// A config with these `nonMasqueradeCIDRs` and every other key at its default.
pub fn config(cidrs: &[&str]) -> Config {
    Config {
        non_masquerade_cidrs: nets(cidrs),
        ..Config::default()
    }
}

pub fn desired(config: Config) -> Desired {
    Desired {
        config,
        node: NodeSettings::default(),
    }
}
