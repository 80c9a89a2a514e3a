//! Kernel tests of egress routing (docs/vpc-native.md, issue 8) for the netfilter datapaths (and the
//! eBPF one through its clsact fallback), on the VPC-native topology of masq-testbed: the pod's
//! address lives on the node's secondary interface and its policy route leaves there, while
//! masqueraded traffic must leave through the primary interface with the primary address. Needs root, `nft`, `iptables` and `ping`
//! (`masq_testbed::require`). Everything happens inside the test's namespaces.

use std::net::IpAddr;

use masq_config::Config;
use masq_datapath::ebpf::{AttachMode, Ebpf};
use masq_datapath::ipt::{Backend, Iptables};
use masq_datapath::nft::Nftables;
use masq_datapath::{Datapath, Desired, Interface, NodeSettings, Routed, Uplink};
use masq_testbed::vpc::{PRIMARY_IF, SECONDARY2_IF, SECONDARY_IF};
use masq_testbed::{vpc_addr, Netns, Probes, VpcTopology};

const PORT: u16 = 8080;
const PRIMARY: IpAddr = IpAddr::V4(vpc_addr::PRIMARY);
const POD: IpAddr = IpAddr::V4(vpc_addr::POD);

/// What every test here needs besides root.
const NEEDS: &[&str] = &["nft", "iptables-nft", "ping"];

/// The VPC is kept; everything else (TEST-NET included) is masqueraded.
fn desired(topology: &VpcTopology) -> Desired {
    Desired {
        config: Config {
            non_masquerade_cidrs: vec!["10.0.0.0/8".parse().unwrap()],
            ..Config::default()
        },
        node: NodeSettings {
            pod_cidrs: vec![vpc_addr::POD_CIDR.parse().unwrap()],
            // What the agent learns from netlink: the main table's default route is eth0, the
            // ENIs' tables 2 and 3 hold eth1's and eth2's.
            interfaces: vec![primary_interface(&topology.node)],
            uplinks: vec![
                uplink(PRIMARY_IF, 254),
                uplink(SECONDARY_IF, 2),
                uplink(SECONDARY2_IF, 3),
            ],
            ..NodeSettings::default()
        },
    }
}

/// One link of the node as `ip -s -j link show` reports it (sysfs would show the root
/// namespace's links: it follows the mount, not the network namespace).
fn link(node: &Netns, name: &str) -> serde_json::Value {
    let text = node.ip(&["-s", "-j", "link", "show", "dev", name]).unwrap();
    let links: serde_json::Value = serde_json::from_str(&text).unwrap();
    links[0].clone()
}

fn uplink(name: &str, table: u32) -> Uplink {
    Uplink {
        name: name.into(),
        tables: vec![table],
    }
}

fn primary_interface(node: &Netns) -> Interface {
    Interface {
        name: PRIMARY_IF.into(),
        index: link(node, PRIMARY_IF)["ifindex"].as_u64().unwrap() as u32,
        addrs: vec![PRIMARY],
    }
}

struct Bed {
    topology: VpcTopology,
    internet: Probes,
    vpc: Probes,
}

impl Bed {
    fn new() -> Bed {
        masq_testbed::netns::sweep_stale();
        let topology = VpcTopology::new().unwrap();
        let internet =
            Probes::start(&topology.internet, &[vpc_addr::INTERNET.into()], PORT).unwrap();
        let vpc = Probes::start(&topology.vpc, &[vpc_addr::VPC_PEER.into()], PORT).unwrap();
        Bed {
            topology,
            internet,
            vpc,
        }
    }

    fn in_node<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.topology.node.enter(f).unwrap()
    }

    fn to_internet(&self) -> IpAddr {
        let seen = self
            .internet
            .sources(&self.topology.pod, vpc_addr::INTERNET.into())
            .unwrap();
        seen.agreed()
            .unwrap_or_else(|| panic!("protocols disagree: {seen:?}"))
    }

    fn to_vpc(&self) -> IpAddr {
        let seen = self
            .vpc
            .sources(&self.topology.pod, vpc_addr::VPC_PEER.into())
            .unwrap();
        seen.agreed()
            .unwrap_or_else(|| panic!("protocols disagree: {seen:?}"))
    }

    /// masq's `ip rule`s in the node, as `ip rule show` prints them.
    fn masq_rules(&self) -> Vec<String> {
        let text = self.topology.node.ip(&["rule", "show"]).unwrap();
        text.lines()
            .filter(|l| l.contains("proto 109"))
            .map(str::to_string)
            .collect()
    }

    /// Which interface a packet left through, from the node's link counters: the VPC side
    /// answers nothing for the internet, so a success proves the path.
    fn tx_packets(&self, interface: &str) -> u64 {
        link(&self.topology.node, interface)["stats64"]["tx"]["packets"]
            .as_u64()
            .unwrap()
    }
}

/// Opens a fresh datapath with masq's `ip rule`s around it, as the agent does (a new one stands
/// for a restarted agent).
type Open = fn() -> Box<dyn Datapath>;

fn datapaths() -> [(&'static str, Open); 2] {
    [
        ("nftables", || Box::new(Routed::new(Nftables::new()))),
        ("iptables", || {
            Box::new(Routed::new(Iptables::new(Backend::Nft)))
        }),
    ]
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn masqueraded_traffic_leaves_through_the_primary_interface() {
    masq_testbed::require(NEEDS);
    for (name, open) in datapaths() {
        let bed = Bed::new();
        bed.topology.allow_marked_replies().unwrap();
        let want = desired(&bed.topology);
        let mut datapath = open();
        let report = bed.in_node(|| datapath.sync(&want)).unwrap();
        assert!(report.changed, "{name}");
        assert!(
            bed.in_node(|| {
                let d = &mut datapath;
                d.matches(&want)
            })
            .unwrap(),
            "{name}"
        );
        assert_eq!(
            bed.masq_rules(),
            ["1000:\tfrom all fwmark 0x1000/0x1000 lookup main proto 109"],
            "{name}"
        );
        let again = bed.in_node(|| datapath.sync(&want)).unwrap();
        assert!(!again.changed, "{name}: a second sync changed something");

        let secondary_before = bed.tx_packets(SECONDARY_IF);
        assert_eq!(bed.to_internet(), PRIMARY, "{name}: TCP, UDP and ping");
        assert_eq!(bed.to_vpc(), POD, "{name}: the VPC keeps seeing the pod");
        assert!(
            bed.tx_packets(SECONDARY_IF) > secondary_before,
            "{name}: VPC traffic still leaves through {SECONDARY_IF}"
        );

        bed.in_node(|| datapath.cleanup()).unwrap();
        assert!(bed.masq_rules().is_empty(), "{name}: cleanup left a rule");
        let nft = bed.topology.node.exec("nft", &["list", "ruleset"]).unwrap();
        assert!(!nft.contains("masq"), "{name}: cleanup left\n{nft}");
        let save = bed.topology.node.exec("iptables-nft-save", &[]).unwrap();
        assert!(
            !save.contains("IP-MASQ-EGRESS"),
            "{name}: cleanup left\n{save}"
        );
        assert!(
            bed.internet
                .sources(&bed.topology.pod, vpc_addr::INTERNET.into())
                .is_err(),
            "{name}: without masq the internet is out of reach again"
        );
    }
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn a_removed_rule_or_chain_is_repaired_and_counted_as_drift() {
    masq_testbed::require(NEEDS);
    for (name, open) in datapaths() {
        let bed = Bed::new();
        bed.topology.allow_marked_replies().unwrap();
        let want = desired(&bed.topology);
        let mut datapath = open();
        bed.in_node(|| datapath.sync(&want)).unwrap();
        bed.topology
            .node
            .ip(&["rule", "del", "priority", "1000"])
            .unwrap();
        assert!(
            !bed.in_node(|| {
                let d = &mut datapath;
                d.matches(&want)
            })
            .unwrap(),
            "{name}"
        );
        let report = bed.in_node(|| datapath.sync(&want)).unwrap();
        assert!(
            report.changed && report.drift_repaired,
            "{name}: {report:?}"
        );
        assert_eq!(bed.masq_rules().len(), 1, "{name}");
        assert_eq!(bed.to_internet(), PRIMARY, "{name}");

        // The marking chain (or its jump) removed by someone else.
        let node = &bed.topology.node;
        if name == "nftables" {
            node.exec("nft", &["flush", "chain", "inet", "masq", "prerouting"])
                .unwrap();
            node.exec("nft", &["delete", "chain", "inet", "masq", "prerouting"])
                .unwrap();
        } else {
            let jump = [
                "-t",
                "mangle",
                "-D",
                "PREROUTING",
                "-m",
                "comment",
                "--comment",
            ];
            let mut args = jump.to_vec();
            args.extend(["masq: egress routing", "-j", "IP-MASQ-EGRESS"]);
            node.exec("iptables-nft", &args).unwrap();
        }
        let report = bed.in_node(|| datapath.sync(&want)).unwrap();
        assert!(
            report.changed && report.drift_repaired,
            "{name}: {report:?}"
        );
        assert_eq!(bed.to_internet(), PRIMARY, "{name}");

        // A datapath that starts later (an agent restart) adopts all of it.
        let mut restarted = open();
        let report = bed.in_node(|| restarted.sync(&want)).unwrap();
        assert!(!report.changed, "{name}: adoption rewrote something");
        bed.in_node(|| restarted.cleanup()).unwrap();
    }
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn strict_reverse_path_filtering_drops_replies_unless_the_mark_counts() {
    masq_testbed::require(NEEDS);
    let bed = Bed::new();
    let want = desired(&bed.topology);
    let mut datapath = Routed::new(Nftables::new());
    bed.in_node(|| datapath.sync(&want)).unwrap();
    // The reply's reverse-path lookup (from the pod to the internet host) hits the pod's own
    // rule, which points at eth1, not eth0 where the reply arrived.
    assert!(bed
        .internet
        .sources(&bed.topology.pod, vpc_addr::INTERNET.into())
        .is_err());
    bed.topology.allow_marked_replies().unwrap();
    assert_eq!(bed.to_internet(), PRIMARY);
    bed.in_node(|| datapath.cleanup()).unwrap();
}

#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn without_an_egress_interface_nothing_is_marked_or_routed() {
    masq_testbed::require(NEEDS);
    let bed = Bed::new();
    let mut want = desired(&bed.topology);
    want.node.interfaces.clear();
    let mut nft = Routed::new(Nftables::new());
    bed.in_node(|| nft.sync(&want)).unwrap();
    let mut ipt = Routed::new(Iptables::new(Backend::Nft));
    bed.in_node(|| ipt.sync(&want)).unwrap();
    assert!(bed.masq_rules().is_empty());
    let listing = bed
        .topology
        .node
        .exec("nft", &["list", "table", "inet", "masq"])
        .unwrap();
    assert!(!listing.contains("prerouting"), "{listing}");
    // Egress routing turned on later, then off again: the rule and chains come and go.
    let with = desired(&bed.topology);
    bed.in_node(|| nft.sync(&with)).unwrap();
    assert_eq!(bed.masq_rules().len(), 1);
    bed.in_node(|| nft.sync(&want)).unwrap();
    assert!(bed.masq_rules().is_empty());
    assert!(bed.in_node(|| nft.matches(&want)).unwrap());
    bed.in_node(|| ipt.cleanup()).unwrap();
    bed.in_node(|| nft.cleanup()).unwrap();
}

/// A Service: its cluster IP (kept: inside 10.0.0.0/8) is DNATed before routing to a backend
/// that is masqueraded. nftables decides after DNAT, like the postrouting chain, so the flow is
/// marked and leaves through the primary interface. (The iptables `mangle` chain runs before
/// DNAT; docs/vpc-native.md says to keep the service range in `nonMasqueradeCIDRs`, which the
/// default set does.)
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn nftables_decides_on_the_destination_after_service_dnat() {
    masq_testbed::require(NEEDS);
    let bed = Bed::new();
    bed.topology.allow_marked_replies().unwrap();
    let want = desired(&bed.topology);
    let mut nft = Routed::new(Nftables::new());
    bed.in_node(|| nft.sync(&want)).unwrap();
    let service = "table ip svc {
        chain prerouting {
            type nat hook prerouting priority dstnat; policy accept;
            ip daddr 10.96.0.10 tcp dport 80 dnat to 203.0.113.10:8080
        }
    }";
    bed.topology
        .node
        .pipe("nft", &["-f", "-"], service)
        .unwrap();
    let cluster_ip = std::net::SocketAddr::new([10, 96, 0, 10].into(), 80);
    let seen = masq_testbed::probe::tcp_source(&bed.topology.pod, cluster_ip).unwrap();
    assert_eq!(seen, PRIMARY);
    bed.in_node(|| nft.cleanup()).unwrap();
}

/// The eBPF datapath on kernels without TCX: every hook, the steering program on the
/// secondary interface included, is a clsact filter, and steering works the same.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn ebpf_steering_works_through_the_clsact_fallback() {
    masq_testbed::require(NEEDS);
    let bpffs = masq_testbed::PrivateBpffs::mount().expect("a private bpffs");
    let bed = Bed::new();
    bed.topology.allow_marked_replies().unwrap();
    let want = desired(&bed.topology);
    let mut datapath = Routed::new(Ebpf::new(bpffs.pin_dir()).with_attach_mode(AttachMode::Clsact));
    let report = bed.in_node(|| datapath.sync(&want)).unwrap();
    assert!(report.changed);
    let filters = |iface: &str, dir: &str| {
        bed.topology
            .node
            .exec("tc", &["filter", "show", "dev", iface, dir])
            .unwrap()
    };
    assert!(filters(PRIMARY_IF, "egress").contains("masq_egress"));
    assert!(filters(PRIMARY_IF, "ingress").contains("masq_ingress"));
    assert!(filters(SECONDARY_IF, "egress").contains("masq_steer"));
    assert!(filters(SECONDARY2_IF, "egress").contains("masq_steer"));
    assert_eq!(bed.masq_rules().len(), 1, "the rule for steered replies");

    assert_eq!(bed.to_internet(), PRIMARY, "TCP, UDP and ping");
    assert_eq!(bed.to_vpc(), POD, "the VPC keeps seeing the pod");

    bed.in_node(|| datapath.cleanup()).unwrap();
    for (iface, dir) in [
        (PRIMARY_IF, "egress"),
        (PRIMARY_IF, "ingress"),
        (SECONDARY_IF, "egress"),
        (SECONDARY2_IF, "egress"),
    ] {
        assert!(
            !filters(iface, dir).contains("masq_"),
            "cleanup left a filter on {iface} {dir}"
        );
    }
    assert!(!bpffs.pin_dir().exists(), "cleanup left the pins");
    assert!(bed.masq_rules().is_empty(), "cleanup left the rule");
}
