//! A VPC-native node (docs/vpc-native.md): the pod's IP is a VPC address on the node's secondary
//! interface, and policy routing sends the pod's traffic out of that interface, while the node's
//! public side (the default route of the main table) is the primary interface.
//!
//! ```text
//!  pod  10.0.1.20/32 ── vpod  169.254.1.1 │ node                     │
//!  pod2 10.0.1.21/32 ── vpod2 169.254.1.1 │ eth0 172.30.0.1 ── eth0 172.30.0.2   internet
//!  (default via 169.254.1.1)              │   main: default via .2   │ lo: 203.0.113.10
//!                                         │                          │ (routes back only 172.30.0.0/24)
//!                                         │ eth1 10.0.0.10  ── eth0 10.0.0.1     vpc
//!                                         │   table 2: default via   │ lo: 10.0.2.10
//!                                         │   10.0.0.1 dev eth1      │ 10.0.1.20 via 10.0.0.10
//!                                         │ eth2 10.0.3.10  ── eth1 10.0.3.1
//!                                         │   table 3: default via   │ 10.0.1.21 via 10.0.3.10
//!                                         │   10.0.3.1 dev eth2      │
//!  ip rule 512:  to <pod> lookup main          (like the AWS VPC CNI)
//!  ip rule 1536: from 10.0.1.20 lookup 2, from 10.0.1.21 lookup 3
//! ```
//!
//! Two secondary interfaces (ENIs), one pod on each.
//!
//! [`VpcTopology::dual_stack`] adds the same layout in IPv6 ([`vpc_addr6`]): the pods' VPC
//! addresses in fd00:10:1::/64 behind a link-local gateway (fe80::1, as IPv6 VPC CNIs do), the
//! primary uplink fd00:172:30::/64 (the internet host 2001:db8::10 routes back only there), the
//! secondary ones fd00:10::/64 and fd00:10:3::/64 with `ip -6` tables 2 and 3 and rules 512 and
//! 1536. IPv6 has no `rp_filter`; without masq the pods reach the VPC but not the internet in
//! both families.
//!
//! Without masq the pod cannot reach the internet: its packets leave through eth1 and the VPC
//! side has no route there (plain masquerading would not help either, eth1's address is no
//! better). The node uses strict reverse-path filtering on its uplinks, as cloud images do.
//! Dropping it removes every namespace.

use anyhow::{Context, Result};

use crate::netns::{veth, Netns};
use crate::topology::set_sysctl;

/// The fixed addresses of the VPC topology.
pub mod vpc_addr {
    use std::net::Ipv4Addr;

    /// The pod: a VPC address of the secondary interface's subnet range.
    pub const POD: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 20);
    /// The second pod, on the second secondary interface.
    pub const POD2: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 21);
    /// The pod CIDR of the node (`--pod-cidr`).
    pub const POD_CIDR: &str = "10.0.1.0/24";
    /// The pod's gateway, on the node's end of the pod's veth (as the AWS VPC CNI does it).
    pub const POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
    /// The node's primary address (the public side): what masqueraded traffic must carry.
    pub const PRIMARY: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 1);
    /// The internet side's end of the primary uplink.
    pub const PRIMARY_GATEWAY: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 2);
    /// The node's address on the secondary interface.
    pub const SECONDARY: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 10);
    /// The VPC router, the secondary interface's gateway.
    pub const VPC_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    /// An internet host (TEST-NET-3).
    pub const INTERNET: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
    /// A host inside the VPC (in 10.0.0.0/8, a non-masquerade destination).
    pub const VPC_PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 10);
    /// The routing table of the secondary interface.
    pub const ENI_TABLE: &str = "2";
    /// The node's address on the second secondary interface.
    pub const SECONDARY2: Ipv4Addr = Ipv4Addr::new(10, 0, 3, 10);
    /// The VPC router on the second secondary interface.
    pub const VPC_GATEWAY2: Ipv4Addr = Ipv4Addr::new(10, 0, 3, 1);
    /// The routing table of the second secondary interface.
    pub const ENI_TABLE2: &str = "3";
}

/// The IPv6 addresses of [`VpcTopology::dual_stack`], one for each of [`vpc_addr`]'s.
pub mod vpc_addr6 {
    use std::net::Ipv6Addr;

    /// The pod's VPC address.
    pub const POD: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 1, 0, 0, 0, 0, 0x20);
    /// The second pod's.
    pub const POD2: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 1, 0, 0, 0, 0, 0x21);
    /// The IPv6 pod CIDR of the node (`--pod-cidr`).
    pub const POD_CIDR: &str = "fd00:10:1::/64";
    /// The pods' gateway: a link-local address on the node's end of each pod's veth.
    pub const POD_GATEWAY: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
    /// The node's primary IPv6 address: what masqueraded IPv6 traffic must carry.
    pub const PRIMARY: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x172, 0x30, 0, 0, 0, 0, 1);
    /// The internet side's end of the primary uplink.
    pub const PRIMARY_GATEWAY: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x172, 0x30, 0, 0, 0, 0, 2);
    /// The node's IPv6 address on the secondary interface.
    pub const SECONDARY: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0, 0, 0, 0, 0, 0x10);
    /// The VPC router on the secondary interface.
    pub const VPC_GATEWAY: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0, 0, 0, 0, 0, 1);
    /// The node's IPv6 address on the second secondary interface.
    pub const SECONDARY2: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 3, 0, 0, 0, 0, 0x10);
    /// The VPC router on the second secondary interface.
    pub const VPC_GATEWAY2: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 3, 0, 0, 0, 0, 1);
    /// An internet host (documentation prefix, masqueraded).
    pub const INTERNET: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);
    /// A host inside the VPC (in fd00::/8, a non-masquerade destination).
    pub const VPC_PEER: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 2, 0, 0, 0, 0, 0x10);
}

/// The primary uplink of the node (the default route of the main table).
pub const PRIMARY_IF: &str = "eth0";
/// The secondary uplink of the node, where the pod's address lives.
pub const SECONDARY_IF: &str = "eth1";
/// The second secondary uplink, where the second pod's address lives.
pub const SECONDARY2_IF: &str = "eth2";

/// Four namespaces wired as in the module docs. Dropping it removes them all.
#[derive(Debug)]
pub struct VpcTopology {
    /// The pod, [`vpc_addr::POD`], behind eth1.
    pub pod: Netns,
    /// The second pod, [`vpc_addr::POD2`], behind eth2.
    pub pod2: Netns,
    /// The node: masq runs here.
    pub node: Netns,
    /// The internet: [`vpc_addr::INTERNET`], routes back only to the primary subnet.
    pub internet: Netns,
    /// The VPC: [`vpc_addr::VPC_PEER`], routes the pod range back through eth1.
    pub vpc: Netns,
}

impl VpcTopology {
    /// Creates the namespaces, links, addresses, routes and rules.
    pub fn new() -> Result<VpcTopology> {
        VpcTopology::build(false)
    }

    /// [`VpcTopology::new`] with the IPv6 layout of [`vpc_addr6`] as well.
    pub fn dual_stack() -> Result<VpcTopology> {
        VpcTopology::build(true)
    }

    fn build(ipv6: bool) -> Result<VpcTopology> {
        let topology = VpcTopology {
            pod: Netns::new("vpod")?,
            pod2: Netns::new("vpod2")?,
            node: Netns::new("vnode")?,
            internet: Netns::new("inet")?,
            vpc: Netns::new("vpc")?,
        };
        if ipv6 {
            // Before any link exists, as `Topology` does: without duplicate address detection
            // the addresses (link-local ones too) are usable at once.
            for ns in topology.all() {
                for scope in ["all", "default"] {
                    set_sysctl(ns, &format!("net/ipv6/conf/{scope}/disable_ipv6"), "0")?;
                    set_sysctl(ns, &format!("net/ipv6/conf/{scope}/accept_dad"), "0")?;
                }
            }
        }
        topology.wire().context("building the VPC topology")?;
        if ipv6 {
            topology
                .wire6()
                .context("building the VPC topology's IPv6 side")?;
        }
        Ok(topology)
    }

    fn all(&self) -> [&Netns; 5] {
        [&self.pod, &self.pod2, &self.node, &self.internet, &self.vpc]
    }

    /// The IPv6 half of the layout, on the links [`VpcTopology::wire`] made.
    fn wire6(&self) -> Result<()> {
        use vpc_addr6::*;
        let node = &self.node;
        let add = |ns: &Netns, addr: String, dev: &str| {
            ns.ip(&["-6", "addr", "add", &addr, "dev", dev, "nodad"])
        };
        let gateway = POD_GATEWAY.to_string();
        for (pod, ip, port) in [(&self.pod, POD, "vpod"), (&self.pod2, POD2, "vpod2")] {
            add(node, format!("{POD_GATEWAY}/64"), port)?;
            node.ip(&["-6", "route", "add", &format!("{ip}/128"), "dev", port])?;
            add(pod, format!("{ip}/128"), "eth0")?;
            pod.ip(&[
                "-6", "route", "add", "default", "via", &gateway, "dev", "eth0",
            ])?;
        }
        add(node, format!("{PRIMARY}/64"), PRIMARY_IF)?;
        add(&self.internet, format!("{PRIMARY_GATEWAY}/64"), "eth0")?;
        add(&self.internet, format!("{INTERNET}/128"), "lo")?;
        let primary_gateway = PRIMARY_GATEWAY.to_string();
        node.ip(&["-6", "route", "add", "default", "via", &primary_gateway])?;

        add(&self.vpc, format!("{VPC_PEER}/128"), "lo")?;
        let enis = [
            (
                SECONDARY_IF,
                "eth0",
                SECONDARY,
                VPC_GATEWAY,
                vpc_addr::ENI_TABLE,
                POD,
            ),
            (
                SECONDARY2_IF,
                "eth1",
                SECONDARY2,
                VPC_GATEWAY2,
                vpc_addr::ENI_TABLE2,
                POD2,
            ),
        ];
        for (node_if, vpc_if, address, gateway, table, pod) in enis {
            let (address, gateway, pod) =
                (address.to_string(), gateway.to_string(), pod.to_string());
            add(node, format!("{address}/64"), node_if)?;
            add(&self.vpc, format!("{gateway}/64"), vpc_if)?;
            self.vpc
                .ip(&["-6", "route", "add", &format!("{pod}/128"), "via", &address])?;
            node.ip(&[
                "-6", "route", "add", "default", "via", &gateway, "dev", node_if, "table", table,
            ])?;
            node.ip(&[
                "-6", "rule", "add", "to", &pod, "lookup", "main", "priority", "512",
            ])?;
            node.ip(&[
                "-6", "rule", "add", "from", &pod, "lookup", table, "priority", "1536",
            ])?;
        }
        set_sysctl(node, "net/ipv6/conf/all/forwarding", "1")
    }

    fn wire(&self) -> Result<()> {
        use vpc_addr::*;
        let (pod, node) = (&self.pod, &self.node);
        let s = |a: std::net::Ipv4Addr| a.to_string();

        for (pod, ip, port) in [(pod, POD, "vpod"), (&self.pod2, POD2, "vpod2")] {
            veth(node, port, pod, "eth0")?;
            node.ip(&["addr", "add", &format!("{POD_GATEWAY}/32"), "dev", port])?;
            node.ip(&["route", "add", &format!("{ip}/32"), "dev", port])?;
            pod.ip(&["addr", "add", &format!("{ip}/32"), "dev", "eth0"])?;
            pod.ip(&["route", "add", &s(POD_GATEWAY), "dev", "eth0"])?;
            pod.ip(&["route", "add", "default", "via", &s(POD_GATEWAY)])?;
        }

        let internet = &self.internet;
        veth(node, PRIMARY_IF, internet, "eth0")?;
        node.ip(&["addr", "add", &format!("{PRIMARY}/24"), "dev", PRIMARY_IF])?;
        internet.ip(&[
            "addr",
            "add",
            &format!("{PRIMARY_GATEWAY}/24"),
            "dev",
            "eth0",
        ])?;
        internet.ip(&["addr", "add", &format!("{INTERNET}/32"), "dev", "lo"])?;
        node.ip(&["route", "add", "default", "via", &s(PRIMARY_GATEWAY)])?;

        let vpc = &self.vpc;
        vpc.ip(&["addr", "add", &format!("{VPC_PEER}/32"), "dev", "lo"])?;
        let enis = [
            (SECONDARY_IF, "eth0", SECONDARY, VPC_GATEWAY, ENI_TABLE, POD),
            (
                SECONDARY2_IF,
                "eth1",
                SECONDARY2,
                VPC_GATEWAY2,
                ENI_TABLE2,
                POD2,
            ),
        ];
        for (node_if, vpc_if, address, gateway, table, pod) in enis {
            veth(node, node_if, vpc, vpc_if)?;
            node.ip(&["addr", "add", &format!("{address}/24"), "dev", node_if])?;
            vpc.ip(&["addr", "add", &format!("{gateway}/24"), "dev", vpc_if])?;
            vpc.ip(&["route", "add", &format!("{pod}/32"), "via", &s(address)])?;
            node.ip(&[
                "route",
                "add",
                "default",
                "via",
                &s(gateway),
                "dev",
                node_if,
                "onlink",
                "table",
                table,
            ])?;
            node.ip(&[
                "rule",
                "add",
                "to",
                &s(pod),
                "lookup",
                "main",
                "priority",
                "512",
            ])?;
            node.ip(&[
                "rule",
                "add",
                "from",
                &s(pod),
                "lookup",
                table,
                "priority",
                "1536",
            ])?;
        }

        set_sysctl(node, "net/ipv4/ip_forward", "1")?;
        for scope in ["all", "default", PRIMARY_IF, SECONDARY_IF, SECONDARY2_IF] {
            set_sysctl(node, &format!("net/ipv4/conf/{scope}/rp_filter"), "1")?;
        }
        for (ns, links) in [(internet, &["eth0"][..]), (vpc, &["eth0", "eth1"][..])] {
            for scope in ["all", "default"].iter().chain(links) {
                set_sysctl(ns, &format!("net/ipv4/conf/{scope}/rp_filter"), "0")?;
            }
        }
        Ok(())
    }

    /// Lets reverse-path filtering on the primary interface use the mark of a packet (what
    /// `docs/vpc-native.md` asks operators to set): replies to masqueraded connections then
    /// pass the strict check.
    pub fn allow_marked_replies(&self) -> Result<()> {
        set_sysctl(
            &self.node,
            &format!("net/ipv4/conf/{PRIMARY_IF}/src_valid_mark"),
            "1",
        )
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, SocketAddr};

    use super::*;
    use crate::probe::{ping_source, tcp_source, IcmpObserver, Probes};

    #[test]
    #[cfg_attr(masq_unprivileged, ignore = "needs root")]
    fn without_masq_the_pod_reaches_the_vpc_but_not_the_internet() {
        crate::require(&["ping"]);
        let topology = VpcTopology::new().unwrap();
        let vpc = Probes::start(&topology.vpc, &[vpc_addr::VPC_PEER.into()], 8080).unwrap();
        for (pod, ip) in [
            (&topology.pod, vpc_addr::POD),
            (&topology.pod2, vpc_addr::POD2),
        ] {
            let seen = vpc.sources(pod, vpc_addr::VPC_PEER.into()).unwrap();
            assert_eq!(seen.agreed(), Some(ip.into()));
        }

        let internet = IpAddr::from(vpc_addr::INTERNET);
        let observer = IcmpObserver::start(&topology.internet).unwrap();
        let _tcp = crate::probe::TcpEchoServer::start(
            &topology.internet,
            &[SocketAddr::new(internet, 8080)],
        )
        .unwrap();
        assert!(tcp_source(&topology.pod, SocketAddr::new(internet, 8080)).is_err());
        assert!(
            ping_source(&topology.pod, &observer, internet).is_err(),
            "the pod's packets must not even reach the internet side"
        );
        // The node itself reaches the internet with its primary address.
        let seen = tcp_source(&topology.node, SocketAddr::new(internet, 8080)).unwrap();
        assert_eq!(seen, IpAddr::from(vpc_addr::PRIMARY));
    }

    /// The IPv6 layout: the pods reach the VPC peer with their own IPv6 addresses, not the
    /// internet host; the node reaches it with its primary IPv6 address.
    #[test]
    #[cfg_attr(masq_unprivileged, ignore = "needs root")]
    fn ipv6_without_masq_the_pod_reaches_the_vpc_but_not_the_internet() {
        crate::require(&["ping"]);
        let topology = VpcTopology::dual_stack().unwrap();
        let peer = IpAddr::from(vpc_addr6::VPC_PEER);
        let vpc = Probes::start(&topology.vpc, &[peer], 8080).unwrap();
        for (pod, ip) in [
            (&topology.pod, vpc_addr6::POD),
            (&topology.pod2, vpc_addr6::POD2),
        ] {
            let seen = vpc.sources(pod, peer).unwrap();
            assert_eq!(seen.agreed(), Some(ip.into()), "{seen:?}");
        }
        let internet = SocketAddr::new(vpc_addr6::INTERNET.into(), 8080);
        let _tcp = crate::probe::TcpEchoServer::start(&topology.internet, &[internet]).unwrap();
        assert!(tcp_source(&topology.pod, internet).is_err());
        let seen = tcp_source(&topology.node, internet).unwrap();
        assert_eq!(seen, IpAddr::from(vpc_addr6::PRIMARY));
    }
}
