//! The standard test topology: two pods behind a node, the node behind an "external" side that
//! plays the internet, the VPC and the metadata server.
//!
//! ```text
//!  pod  10.244.1.2 ─┐            node                      external
//!                   ├─ cni0 10.244.1.1 │ eth0 172.30.0.1 ── eth0 172.30.0.2
//!  pod2 10.244.1.3 ─┘  (bridge)        │ default via .2     lo: 203.0.113.10,
//!                                                            198.51.100.10, 10.200.0.10,
//!                                                            169.254.169.254,
//!                                                            client 203.0.113.20
//! ```
//!
//! With [`TopologyBuilder::ipv6`], the same links also carry the addresses of [`addr6`]
//! (pods in fd00:10:244:1::/64, uplink fd00:172:30::/64, external hosts 2001:db8::10 and
//! fd00:200::10).
//!
//! The external side routes only the node's uplink subnet back, plus the pod CIDR when
//! [`TopologyBuilder::route_pods_from_external`] is on (the default), so that traffic that kept
//! its pod source can still be answered and its source observed.

use std::net::IpAddr;

use anyhow::{Context, Result};

use crate::netns::{veth, Netns};

/// The fixed addresses of the topology.
pub mod addr {
    use std::net::Ipv4Addr;

    /// The first pod.
    pub const POD: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
    /// The second pod.
    pub const POD2: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 3);
    /// The pods' gateway, on the node's bridge.
    pub const POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 1);
    /// The node's pod CIDR (`--pod-cidr`).
    pub const POD_CIDR: &str = "10.244.1.0/24";
    /// The node's uplink address: what a masqueraded packet carries as its source.
    pub const NODE: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 1);
    /// The external side's end of the uplink, the node's default gateway.
    pub const EXTERNAL_GATEWAY: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 2);
    /// An "internet" host (TEST-NET-3; in the default non-masquerade set).
    pub const INTERNET: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
    /// A second "internet" host (TEST-NET-2; in the default non-masquerade set).
    pub const INTERNET2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
    /// A host of the private network (in 10.0.0.0/8).
    pub const PRIVATE: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 10);
    /// The cloud metadata server (link-local).
    pub const METADATA: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
    /// Every address served by the external namespace.
    pub const EXTERNAL_HOSTS: [Ipv4Addr; 4] = [INTERNET, INTERNET2, PRIVATE, METADATA];
    /// A client on the external side (TEST-NET-3) that starts flows towards the node and its
    /// pods; masqueraded as a destination unless the config keeps 203.0.113.0/24.
    pub const CLIENT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 20);
}

/// The IPv6 addresses of the topology, present when built with [`TopologyBuilder::ipv6`].
pub mod addr6 {
    use std::net::Ipv6Addr;

    /// The first pod.
    pub const POD: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x244, 1, 0, 0, 0, 2);
    /// The second pod.
    pub const POD2: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x244, 1, 0, 0, 0, 3);
    /// The pods' gateway, on the node's bridge.
    pub const POD_GATEWAY: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x244, 1, 0, 0, 0, 1);
    /// The node's IPv6 pod CIDR.
    pub const POD_CIDR: &str = "fd00:10:244:1::/64";
    /// The node's uplink address.
    pub const NODE: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x172, 0x30, 0, 0, 0, 0, 1);
    /// The external side's end of the uplink, the node's default gateway.
    pub const EXTERNAL_GATEWAY: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x172, 0x30, 0, 0, 0, 0, 2);
    /// An "internet" host (documentation prefix 2001:db8::/32).
    pub const INTERNET: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);
    /// A host of the private network (ULA).
    pub const PRIVATE: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x200, 0, 0, 0, 0, 0, 0x10);
    /// Every IPv6 address served by the external namespace.
    pub const EXTERNAL_HOSTS: [Ipv6Addr; 2] = [INTERNET, PRIVATE];
}

/// The node's uplink interface: the egress interface masq attaches to.
pub const NODE_UPLINK: &str = "eth0";
/// The node's bridge, holding the pod gateway.
pub const NODE_BRIDGE: &str = "cni0";

/// Options of a [`Topology`].
#[derive(Clone, Debug)]
pub struct TopologyBuilder {
    route_pods_from_external: bool,
    ipv6: bool,
}

impl Default for TopologyBuilder {
    fn default() -> Self {
        TopologyBuilder {
            route_pods_from_external: true,
            ipv6: false,
        }
    }
}

impl TopologyBuilder {
    /// Whether the external side has a route back to the pod CIDR (default true). Without it,
    /// traffic that keeps its pod source gets no answer, as in a real overlay network.
    pub fn route_pods_from_external(mut self, route: bool) -> Self {
        self.route_pods_from_external = route;
        self
    }

    /// Whether to add the IPv6 addresses of [`addr6`] as well (default false).
    pub fn ipv6(mut self, ipv6: bool) -> Self {
        self.ipv6 = ipv6;
        self
    }

    /// Creates the namespaces, links, addresses and routes.
    pub fn build(self) -> Result<Topology> {
        let topology = Topology {
            pod: Netns::new("pod")?,
            pod2: Netns::new("pod2")?,
            node: Netns::new("node")?,
            external: Netns::new("ext")?,
            ipv6: self.ipv6,
        };
        if self.ipv6 {
            topology.prepare_ipv6()?;
        }
        topology
            .wire(&self)
            .context("building the pod/node/external topology")?;
        if self.ipv6 {
            topology
                .wire_ipv6(&self)
                .context("adding IPv6 to the topology")?;
        }
        Ok(topology)
    }
}

/// Four namespaces wired as in the module docs. Dropping it removes them all.
#[derive(Debug)]
pub struct Topology {
    /// The first pod, [`addr::POD`].
    pub pod: Netns,
    /// The second pod, [`addr::POD2`].
    pub pod2: Netns,
    /// The node: masq runs here.
    pub node: Netns,
    /// The rest of the world: every address of [`addr::EXTERNAL_HOSTS`].
    pub external: Netns,
    ipv6: bool,
}

impl Topology {
    /// The default topology.
    pub fn new() -> Result<Topology> {
        TopologyBuilder::default().build()
    }

    /// A topology with options.
    pub fn builder() -> TopologyBuilder {
        TopologyBuilder::default()
    }

    /// Every address the external namespace serves: [`addr::EXTERNAL_HOSTS`], plus
    /// [`addr6::EXTERNAL_HOSTS`] with IPv6.
    pub fn external_hosts(&self) -> Vec<IpAddr> {
        let v4 = addr::EXTERNAL_HOSTS.iter().map(|&h| IpAddr::from(h));
        let v6 = addr6::EXTERNAL_HOSTS.iter().map(|&h| IpAddr::from(h));
        v4.chain(v6.filter(|_| self.ipv6)).collect()
    }

    /// Whether the topology has IPv6 addresses.
    pub fn has_ipv6(&self) -> bool {
        self.ipv6
    }

    /// The namespace of the pod with this address, if any.
    pub fn pod_with(&self, ip: IpAddr) -> Option<&Netns> {
        match ip {
            ip if ip == addr::POD || ip == addr6::POD => Some(&self.pod),
            ip if ip == addr::POD2 || ip == addr6::POD2 => Some(&self.pod2),
            _ => None,
        }
    }

    fn wire(&self, options: &TopologyBuilder) -> Result<()> {
        let node = &self.node;
        node.ip(&["link", "add", NODE_BRIDGE, "type", "bridge"])?;
        node.ip(&["link", "set", NODE_BRIDGE, "up"])?;
        let gateway = format!("{}/24", addr::POD_GATEWAY);
        node.ip(&["addr", "add", &gateway, "dev", NODE_BRIDGE])?;
        for (pod, ip, port) in [
            (&self.pod, addr::POD, "vpod"),
            (&self.pod2, addr::POD2, "vpod2"),
        ] {
            veth(node, port, pod, "eth0")?;
            node.ip(&["link", "set", port, "master", NODE_BRIDGE])?;
            pod.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
            pod.ip(&[
                "route",
                "add",
                "default",
                "via",
                &addr::POD_GATEWAY.to_string(),
            ])?;
        }

        let external = &self.external;
        veth(node, NODE_UPLINK, external, "eth0")?;
        node.ip(&[
            "addr",
            "add",
            &format!("{}/24", addr::NODE),
            "dev",
            NODE_UPLINK,
        ])?;
        let gateway = addr::EXTERNAL_GATEWAY.to_string();
        external.ip(&["addr", "add", &format!("{gateway}/24"), "dev", "eth0"])?;
        node.ip(&["route", "add", "default", "via", &gateway])?;

        // On loopback rather than a dummy link: the dummy module is not loaded everywhere.
        for host in addr::EXTERNAL_HOSTS.iter().chain([&addr::CLIENT]) {
            external.ip(&["addr", "add", &format!("{host}/32"), "dev", "lo"])?;
        }
        if options.route_pods_from_external {
            let via = addr::NODE.to_string();
            external.ip(&["route", "add", addr::POD_CIDR, "via", &via])?;
        }

        set_sysctl(node, "net/ipv4/ip_forward", "1")?;
        // Strict reverse-path filtering would drop the pod-sourced packets that the external
        // side cannot route back; the test must see them arrive.
        for ns in [node, external] {
            for scope in ["all", "default", "eth0"] {
                set_sysctl(ns, &format!("net/ipv4/conf/{scope}/rp_filter"), "0")?;
            }
        }
        Ok(())
    }
}

impl Topology {
    /// Before any link exists: without duplicate address detection, links' addresses
    /// (link-local ones included, which neighbour discovery needs) are usable at once instead
    /// of after a second or two, during which forwarded IPv6 traffic is silently dropped.
    fn prepare_ipv6(&self) -> Result<()> {
        for ns in [&self.pod, &self.pod2, &self.node, &self.external] {
            for scope in ["all", "default"] {
                set_sysctl(ns, &format!("net/ipv6/conf/{scope}/disable_ipv6"), "0")?;
                set_sysctl(ns, &format!("net/ipv6/conf/{scope}/accept_dad"), "0")?;
            }
        }
        Ok(())
    }

    fn wire_ipv6(&self, options: &TopologyBuilder) -> Result<()> {
        let add = |ns: &Netns, addr: String, dev: &str| {
            ns.ip(&["-6", "addr", "add", &addr, "dev", dev, "nodad"])
        };
        add(
            &self.node,
            format!("{}/64", addr6::POD_GATEWAY),
            NODE_BRIDGE,
        )?;
        for (pod, ip) in [(&self.pod, addr6::POD), (&self.pod2, addr6::POD2)] {
            add(pod, format!("{ip}/64"), "eth0")?;
            pod.ip(&[
                "-6",
                "route",
                "add",
                "default",
                "via",
                &addr6::POD_GATEWAY.to_string(),
            ])?;
        }
        add(&self.node, format!("{}/64", addr6::NODE), NODE_UPLINK)?;
        add(
            &self.external,
            format!("{}/64", addr6::EXTERNAL_GATEWAY),
            "eth0",
        )?;
        let gateway = addr6::EXTERNAL_GATEWAY.to_string();
        self.node
            .ip(&["-6", "route", "add", "default", "via", &gateway])?;
        for host in addr6::EXTERNAL_HOSTS {
            add(&self.external, format!("{host}/128"), "lo")?;
        }
        if options.route_pods_from_external {
            let via = addr6::NODE.to_string();
            self.external
                .ip(&["-6", "route", "add", addr6::POD_CIDR, "via", &via])?;
        }
        set_sysctl(&self.node, "net/ipv6/conf/all/forwarding", "1")
    }
}

/// Writes a per-namespace sysctl (`/proc/sys/net` shows the namespace of the thread that
/// opens it).
pub fn set_sysctl(ns: &Netns, key: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/{key}");
    ns.enter(|| std::fs::write(&path, value))?
        .with_context(|| format!("in {}: writing {value} to {path}", ns.name()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{ping_source, tcp_source, IcmpObserver, Probes};

    fn hosts() -> Vec<IpAddr> {
        addr::EXTERNAL_HOSTS.iter().map(|&h| h.into()).collect()
    }

    #[test]
    #[cfg_attr(masq_unprivileged, ignore = "needs root")]
    fn without_nat_every_host_sees_the_pod() {
        crate::require(&["ping"]);
        let topology = Topology::new().unwrap();
        let probes = Probes::start(&topology.external, &hosts(), 8080).unwrap();
        for host in hosts() {
            let seen = probes.sources(&topology.pod, host).unwrap();
            assert_eq!(seen.agreed(), Some(addr::POD.into()), "to {host}: {seen:?}");
        }
        let seen = probes
            .sources(&topology.pod2, addr::INTERNET.into())
            .unwrap();
        assert_eq!(seen.agreed(), Some(addr::POD2.into()));
        // The node reaches the external side with its uplink address.
        let seen = probes
            .sources(&topology.node, addr::INTERNET.into())
            .unwrap();
        assert_eq!(seen.agreed(), Some(addr::NODE.into()));
        assert_eq!(probes.tcp.seen().len(), hosts().len() + 2);
    }

    #[test]
    #[cfg_attr(masq_unprivileged, ignore = "needs root")]
    fn without_a_route_back_pod_sources_arrive_but_get_no_answer() {
        crate::require(&["ping"]);
        let topology = Topology::builder()
            .route_pods_from_external(false)
            .build()
            .unwrap();
        let observer = IcmpObserver::start(&topology.external).unwrap();
        let internet = IpAddr::from(addr::INTERNET);
        let seen = ping_source(&topology.pod, &observer, internet).unwrap();
        assert_eq!(seen, IpAddr::from(addr::POD));
        let server = std::net::SocketAddr::new(internet, 8081);
        let _tcp = crate::probe::TcpEchoServer::start(&topology.external, &[server]).unwrap();
        assert!(tcp_source(&topology.pod, server).is_err());
    }

    #[test]
    #[cfg_attr(masq_unprivileged, ignore = "needs root")]
    fn ipv6_hosts_see_the_pod_too() {
        crate::require(&["ping"]);
        let topology = Topology::builder().ipv6(true).build().unwrap();
        let probes = Probes::start(&topology.external, &topology.external_hosts(), 8080).unwrap();
        for host in addr6::EXTERNAL_HOSTS {
            let seen = probes.sources(&topology.pod, host.into()).unwrap();
            assert_eq!(
                seen.agreed(),
                Some(addr6::POD.into()),
                "to {host}: {seen:?}"
            );
        }
        let seen = probes
            .sources(&topology.pod2, addr::INTERNET.into())
            .unwrap();
        assert_eq!(seen.agreed(), Some(addr::POD2.into()));
    }
}
