//! The scenarios of `node_mix.rs`, by the part of issue 13 they cover: flows that begin
//! outside and reach a pod ([`inbound`]), the node's own flows beside pod flows
//! ([`host_flows`]), kube-proxy's Services and portmap's hostPorts ([`services`]). Each one
//! checks its property and then shows, with [`sabotage`], that the check fails when the
//! property is broken.
//!
//! The IPv6 scenarios of `agent_e2e`'s `dual_stack` module (NodePorts, hostPorts, the node's
//! flows beside the pods') run the same checks on the addresses of [`Addrs::V6`]; the module
//! is shared with that test binary.

pub mod host_flows;
pub mod inbound;
pub mod sabotage;
pub mod services;

/// The issue's config: the VPC and a peered network are kept, everything else (TEST-NET
/// included, where the external client and the internet host live) is masqueraded.
pub const ISSUE_CONFIG: &str = "nonMasqueradeCIDRs: [10.0.0.0/8, 172.16.0.0/12]\n";

use std::net::IpAddr;

use masq_testbed::kube::Family;
use masq_testbed::{addr, addr6};

/// The addresses of one family a scenario talks about.
#[derive(Clone, Copy, Debug)]
pub struct Addrs {
    /// Its family.
    pub family: Family,
    /// The node's uplink address: NodePorts, hostPorts and the masquerade.
    pub node: IpAddr,
    /// The first pod.
    pub pod: IpAddr,
    /// The second pod.
    pub pod2: IpAddr,
    /// The pods' gateway on the node's bridge, what kube-proxy's masquerade towards a pod gives.
    pub gateway: IpAddr,
    /// An external client that calls the node; a masqueraded destination. IPv6 has no host
    /// of its own for it: the internet host (2001:db8::10) calls.
    pub client: IpAddr,
}

impl Addrs {
    /// IPv4.
    pub const V4: Addrs = Addrs {
        family: Family::V4,
        node: IpAddr::V4(addr::NODE),
        pod: IpAddr::V4(addr::POD),
        pod2: IpAddr::V4(addr::POD2),
        gateway: IpAddr::V4(addr::POD_GATEWAY),
        client: IpAddr::V4(addr::CLIENT),
    };

    /// IPv6.
    pub const V6: Addrs = Addrs {
        family: Family::V6,
        node: IpAddr::V6(addr6::NODE),
        pod: IpAddr::V6(addr6::POD),
        pod2: IpAddr::V6(addr6::POD2),
        gateway: IpAddr::V6(addr6::POD_GATEWAY),
        client: IpAddr::V6(addr6::INTERNET),
    };

    /// The addresses of `family`.
    pub fn of(family: Family) -> Addrs {
        match family {
            Family::V4 => Addrs::V4,
            Family::V6 => Addrs::V6,
        }
    }

    /// The unspecified address of the family, at `port`: what a socket binds.
    pub fn any(&self, port: u16) -> std::net::SocketAddr {
        let ip: IpAddr = match self.family {
            Family::V4 => std::net::Ipv4Addr::UNSPECIFIED.into(),
            Family::V6 => std::net::Ipv6Addr::UNSPECIFIED.into(),
        };
        std::net::SocketAddr::new(ip, port)
    }
}
