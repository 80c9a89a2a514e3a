//! `masq render --datapath nftables` output, compared exactly with the files in
//! `tests/golden/`. Set `UPDATE_GOLDEN=1` to rewrite them after an intended change, then review
//! the diff. The last test loads each golden file into a throwaway namespace and checks that
//! the kernel then matches the desired state, so the text is real nft syntax and says exactly
//! what `sync` installs.

use std::path::PathBuf;

use ipnet::IpNet;
use masq_config::Config;
use masq_datapath::nft::Nftables;
use masq_datapath::{Datapath, Desired, NodeSettings, PortRange, Routed};

fn nets(cidrs: &[&str]) -> Vec<IpNet> {
    cidrs.iter().map(|c| c.parse().unwrap()).collect()
}

/// The default config: the 11 reserved ranges, link-local kept.
fn defaults() -> Desired {
    Desired {
        config: Config::default(),
        node: NodeSettings::default(),
    }
}

/// Every option at once: IPv6, overlapping CIDRs, source exemptions, pod CIDRs, a fixed SNAT
/// address, a port range, the native-routing CIDR, and link-local masqueraded for IPv4 only.
fn everything() -> Desired {
    Desired {
        config: Config {
            non_masquerade_cidrs: nets(&[
                "10.0.0.0/8",
                "10.96.0.0/12",
                "192.168.0.0/24",
                "192.168.1.0/24",
                "fd00::/8",
                "2001:db8:1::/48",
            ]),
            masq_link_local: true,
            non_masquerade_src_cidrs: nets(&["10.244.1.128/25", "fd10::/64"]),
            ..Config::default()
        },
        node: NodeSettings {
            pod_cidrs: nets(&["10.244.1.0/24", "fd10::/56"]),
            snat_ips: vec!["172.30.0.100".parse().unwrap()],
            port_ranges: vec![PortRange {
                first: 32768,
                last: 60999,
            }],
            native_routing_cidr: Some("172.16.0.0/12".parse().unwrap()),
            enable_ipv6: true,
            ..NodeSettings::default()
        },
    }
}

/// A VPC-native node (an ENI with its own table): egress routing marks what will be
/// masqueraded (IPv4 and IPv6).
fn egress() -> Desired {
    let mut desired = everything();
    desired.node.egress_interface = Some("eth0".into());
    desired.node.uplinks = vec![masq_datapath::Uplink {
        name: "eth1".into(),
        tables: vec![2],
    }];
    desired
}

/// `masqueradeCIDRs`: a peered subnet inside the VPC range that only accepts node addresses,
/// a subnet inside it that keeps the pod address again, and the metadata server out of
/// link-local; with egress routing, so the mark chain shows the same exemptions.
fn masquerade_cidrs() -> Desired {
    let mut desired = egress();
    desired.config.non_masquerade_cidrs = nets(&["10.0.0.0/8", "10.5.3.0/24", "fd00::/8"]);
    desired.config.masquerade_cidrs = nets(&["10.5.0.0/16", "169.254.169.254/32"]);
    desired.config.masq_link_local = false;
    desired
}

/// A pool of two addresses for IPv4 (the pod's address hashed with `jhash`), IPv6 keeping
/// the interface's address, a port list split around a reserved port (a hostPort).
fn pool() -> Desired {
    let mut desired = defaults();
    desired.node.enable_ipv6 = true;
    desired.node.snat_ips = vec![
        "172.30.0.100".parse().unwrap(),
        "172.30.0.101".parse().unwrap(),
    ];
    desired.node.port_ranges = vec![
        PortRange {
            first: 1024,
            last: 29999,
        },
        PortRange {
            first: 32768,
            last: 65535,
        },
    ];
    desired.node.reserved_ports = [8443].into();
    desired
}

fn cases() -> [(&'static str, Desired); 5] {
    [
        ("nftables-default.nft", defaults()),
        ("nftables-pool.nft", pool()),
        ("nftables-everything.nft", everything()),
        ("nftables-egress.nft", egress()),
        ("nftables-masquerade-cidrs.nft", masquerade_cidrs()),
    ]
}

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

#[test]
fn render_matches_the_golden_files() {
    for (name, desired) in cases() {
        // As `masq render` prints it: masq's `ip rule`s are comments after the table.
        let text = Routed::new(Nftables::new()).render(&desired);
        let path = golden(name);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &text).unwrap();
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
        assert_eq!(
            text, expected,
            "{name} differs; UPDATE_GOLDEN=1 rewrites it"
        );
    }
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn golden_files_load_and_match_in_a_namespace() {
    masq_testbed::require(&["nft"]);
    for (name, desired) in cases() {
        let ns = masq_testbed::Netns::new("render").unwrap();
        let text = std::fs::read_to_string(golden(name)).unwrap();
        ns.pipe("nft", &["-f", "-"], &text)
            .unwrap_or_else(|e| panic!("nft -f rejected {name}: {e:#}"));
        // The rendered `ip rule`s are comments: run them as written.
        for rule in masq_datapath::egress::desired_rules(&desired.node) {
            let text = rule.text();
            let args: Vec<&str> = text.split_whitespace().skip(1).collect();
            ns.ip(&args).unwrap();
        }
        let mut nft = Routed::new(Nftables::new());
        let (matched, report) = ns
            .enter(|| (nft.matches(&desired), nft.sync(&desired)))
            .unwrap();
        assert!(matched.unwrap(), "{name} loaded but does not match");
        assert!(!report.unwrap().changed, "sync would change {name}");
    }
}
