//! Issue 17 on a VPC-native node: the same node with IPv6 pods (`VpcTopology::dual_stack`,
//! `--enable-ipv6` and both pod CIDRs). Each pod's IPv6 traffic to the internet host
//! (2001:db8::10, which routes back only to the primary subnet) must leave through the primary
//! interface with the primary IPv6 address, and its IPv6 traffic to the VPC (fd00::/8, kept)
//! through its own secondary interface with its own address, beside the same for IPv4, on every
//! datapath: the IPv6 policy rule for the nftables and iptables datapaths, the steering program
//! for eBPF. The far side reports the source of every probe (TCP, UDP and ping).
//!
//! The counterfactuals: before the agent, and under an agent with egress routing off
//! (`--egress-mark 0`), the pods' IPv6 probes to the internet get no answer (they leave the
//! secondary interface, towards a VPC that has no way there); after `masq cleanup`, again.

use std::net::IpAddr;

use masq_testbed::vpc::{SECONDARY2_IF, SECONDARY_IF};
use masq_testbed::{vpc_addr, vpc_addr6, Netns, PrivateBpffs, VpcTopology};

use super::{agreed, Bed, POD, POD2, PRIMARY};

/// Both VPC ranges kept; TEST-NET and 2001:db8::/32 masqueraded.
const DUAL: &str = "nonMasqueradeCIDRs: [10.0.0.0/8, fd00::/8]\n";
const PRIMARY6: IpAddr = IpAddr::V6(vpc_addr6::PRIMARY);
const INTERNET6: IpAddr = IpAddr::V6(vpc_addr6::INTERNET);
const VPC_PEER6: IpAddr = IpAddr::V6(vpc_addr6::VPC_PEER);

impl Bed {
    fn dual_stack(bpffs: Option<&PrivateBpffs>) -> Bed {
        masq_testbed::netns::sweep_stale();
        let topology = VpcTopology::dual_stack().unwrap();
        Bed::on(
            topology,
            &[vpc_addr::INTERNET.into(), INTERNET6],
            &[vpc_addr::VPC_PEER.into(), VPC_PEER6],
            DUAL,
            bpffs,
        )
    }

    /// Every pod's IPv6 source as the internet host sees it, or the first failure.
    fn to_internet6(&self) -> anyhow::Result<Vec<IpAddr>> {
        self.pods()
            .iter()
            .map(|(pod, ..)| agreed(&self.internet, pod, INTERNET6))
            .collect()
    }

    /// The pods: namespace, IPv4 and IPv6 address, secondary interface.
    fn pods(&self) -> [(&Netns, IpAddr, IpAddr, &'static str); 2] {
        let t = &self.topology;
        [
            (&t.pod, POD, vpc_addr6::POD.into(), SECONDARY_IF),
            (&t.pod2, POD2, vpc_addr6::POD2.into(), SECONDARY2_IF),
        ]
    }

    /// masq's `ip -6 rule`s (protocol 109).
    fn masq_rules6(&self) -> String {
        let text = self.topology.node.ip(&["-6", "rule", "show"]).unwrap();
        text.lines()
            .filter(|l| l.contains("proto 109"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

pub fn run(datapath: &str) {
    masq_testbed::require(&["nft", "iptables-nft", "ip6tables-nft", "ping"]);
    let bpffs = (datapath == "ebpf").then(|| PrivateBpffs::mount().unwrap());
    let bed = Bed::dual_stack(bpffs.as_ref());
    bed.topology.allow_marked_replies().unwrap();
    assert!(
        bed.to_internet6().is_err(),
        "without masq the pods cannot reach the IPv6 internet"
    );
    let ipv6 = ["--enable-ipv6", "--pod-cidr", vpc_addr6::POD_CIDR];

    // Egress routing off: translated or not, the IPv6 flows leave the secondary interfaces.
    let off = [&ipv6[..], &["--egress-mark", "0"]].concat();
    let agent = bed.start_agent_with(datapath, "agent-off.log", &off);
    let without = bed.to_internet6();
    assert!(
        without.is_err(),
        "{datapath}: without egress routing the IPv6 internet saw {without:?}"
    );
    agent.terminate().unwrap();
    bed.masq(&["cleanup"]);

    let agent = bed.start_agent_with(datapath, "agent-6.log", &ipv6);
    assert_eq!(bed.status().egress.unwrap().interface, "eth0");
    if datapath != "ebpf" {
        let rules = bed.masq_rules6();
        assert!(
            rules.contains("fwmark 0x1000/0x1000"),
            "{datapath}: {rules:?}"
        );
    }
    let seen = bed
        .to_internet6()
        .unwrap_or_else(|e| panic!("{datapath}: {e:#}"));
    assert_eq!(
        seen, [PRIMARY6; 2],
        "{datapath}: TCP, UDP and ping over IPv6 leave with the primary IPv6 address"
    );
    for (pod, ip4, ip6, secondary) in bed.pods() {
        assert_eq!(
            agreed(&bed.internet, pod, vpc_addr::INTERNET.into()).unwrap(),
            PRIMARY,
            "{datapath}: {ip4}"
        );
        let before = bed.tx_packets(secondary);
        assert_eq!(
            agreed(&bed.vpc, pod, VPC_PEER6).unwrap(),
            ip6,
            "{datapath}: the VPC still sees {ip6}"
        );
        assert!(
            bed.tx_packets(secondary) > before,
            "{datapath}: IPv6 VPC traffic of {ip6} still leaves through {secondary}"
        );
    }
    if bpffs.is_some() {
        let listed = bed.masq(&["nat", "list"]);
        let pod_flow = format!("TCP OUT [{}]:", vpc_addr6::POD);
        let translated = format!("XLATE_SRC [{PRIMARY6}]:");
        assert!(
            listed.lines().any(|l| l.starts_with(&pod_flow)
                && l.contains(&translated)
                && l.ends_with(" steered")),
            "no steered IPv6 NAT entry in\n{listed}"
        );
    }
    agent.terminate().unwrap();

    bed.masq(&["cleanup"]);
    assert_eq!(
        bed.masq_rules6(),
        "",
        "{datapath}: cleanup left an IPv6 rule"
    );
    assert!(
        bed.to_internet6().is_err(),
        "{datapath}: after cleanup the IPv6 internet is out of reach again"
    );
}
