//! A VPC-native node (SPEC section 4): the pod's IP is a VPC address on the node's secondary
//! interface, and policy routing sends the pod's traffic out of that interface, while the node's
//! public side (the default route of the main table) is the primary interface.
//!
//! ```text
//!  pod 10.0.1.20/32 ── vpod 169.254.1.1 │ node                      │
//!  (default via 169.254.1.1)            │ eth0 172.30.0.1 ── eth0 172.30.0.2   internet
//!                                       │   main: default via .2    │ lo: 203.0.113.10
//!                                       │                           │ (routes back only 172.30.0.0/24)
//!                                       │ eth1 10.0.0.10  ── eth0 10.0.0.1     vpc
//!                                       │   table 2: default via    │ lo: 10.0.2.10
//!                                       │   10.0.0.1 dev eth1       │ 10.0.1.0/24 via 10.0.0.10
//!  ip rule 512:  to 10.0.1.20 lookup main      (like the AWS VPC CNI)
//!  ip rule 1536: from 10.0.1.20 lookup 2
//! ```
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
}

/// The primary uplink of the node (the default route of the main table).
pub const PRIMARY_IF: &str = "eth0";
/// The secondary uplink of the node, where the pod's address lives.
pub const SECONDARY_IF: &str = "eth1";

/// Four namespaces wired as in the module docs. Dropping it removes them all.
#[derive(Debug)]
pub struct VpcTopology {
    /// The pod, [`vpc_addr::POD`].
    pub pod: Netns,
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
        let topology = VpcTopology {
            pod: Netns::new("vpod")?,
            node: Netns::new("vnode")?,
            internet: Netns::new("inet")?,
            vpc: Netns::new("vpc")?,
        };
        topology.wire().context("building the VPC topology")?;
        Ok(topology)
    }

    fn wire(&self) -> Result<()> {
        use vpc_addr::*;
        let (pod, node) = (&self.pod, &self.node);
        let s = |a: std::net::Ipv4Addr| a.to_string();

        veth(node, "vpod", pod, "eth0")?;
        node.ip(&["addr", "add", &format!("{POD_GATEWAY}/32"), "dev", "vpod"])?;
        node.ip(&["route", "add", &format!("{POD}/32"), "dev", "vpod"])?;
        pod.ip(&["addr", "add", &format!("{POD}/32"), "dev", "eth0"])?;
        pod.ip(&["route", "add", &s(POD_GATEWAY), "dev", "eth0"])?;
        pod.ip(&["route", "add", "default", "via", &s(POD_GATEWAY)])?;

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
        veth(node, SECONDARY_IF, vpc, "eth0")?;
        node.ip(&[
            "addr",
            "add",
            &format!("{SECONDARY}/24"),
            "dev",
            SECONDARY_IF,
        ])?;
        vpc.ip(&["addr", "add", &format!("{VPC_GATEWAY}/24"), "dev", "eth0"])?;
        vpc.ip(&["addr", "add", &format!("{VPC_PEER}/32"), "dev", "lo"])?;
        vpc.ip(&["route", "add", POD_CIDR, "via", &s(SECONDARY)])?;
        node.ip(&[
            "route",
            "add",
            "default",
            "via",
            &s(VPC_GATEWAY),
            "dev",
            SECONDARY_IF,
            "onlink",
            "table",
            ENI_TABLE,
        ])?;
        node.ip(&[
            "rule",
            "add",
            "to",
            &s(POD),
            "lookup",
            "main",
            "priority",
            "512",
        ])?;
        node.ip(&[
            "rule",
            "add",
            "from",
            &s(POD),
            "lookup",
            ENI_TABLE,
            "priority",
            "1536",
        ])?;

        set_sysctl(node, "net/ipv4/ip_forward", "1")?;
        for scope in ["all", "default", PRIMARY_IF, SECONDARY_IF, "vpod"] {
            set_sysctl(node, &format!("net/ipv4/conf/{scope}/rp_filter"), "1")?;
        }
        for ns in [internet, vpc] {
            for scope in ["all", "default", "eth0"] {
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
    fn without_masq_the_pod_reaches_the_vpc_but_not_the_internet() {
        if let Some(reason) = crate::skip_reason(&["ping"]) {
            eprintln!("skipped: {reason}");
            return;
        }
        let topology = VpcTopology::new().unwrap();
        let vpc = Probes::start(&topology.vpc, &[vpc_addr::VPC_PEER.into()], 8080).unwrap();
        let seen = vpc
            .sources(&topology.pod, vpc_addr::VPC_PEER.into())
            .unwrap();
        assert_eq!(seen.agreed(), Some(vpc_addr::POD.into()));

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
}
