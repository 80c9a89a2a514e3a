//! The Services and hostPorts of the end-to-end tests: [`standard_services`] (IPv4),
//! [`standard_services6`] (their dual-stack IPv6 side) and [`standard_host_ports`] (and
//! [`standard_host_ports6`]), with the addresses and ports of [`svc`] and [`svc6`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{portmap, Endpoint, Protocol, ServicePort, TrafficPolicy};
use crate::topology::{addr, addr6};

/// The addresses and ports of [`standard_services`] and [`standard_host_ports`].
pub mod svc {
    use std::net::Ipv4Addr;

    /// A ClusterIP whose endpoint is the "internet" host ([`crate::addr::INTERNET`]:8080), as
    /// a Service without selector plus a manual EndpointSlice gives.
    pub const INTERNET_ECHO: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
    /// A ClusterIP whose endpoint is the private host ([`crate::addr::PRIVATE`]:8080).
    pub const PRIVATE_ECHO: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 11);
    /// A ClusterIP whose endpoint is the second pod ([`crate::addr::POD2`]:8080).
    pub const POD2_ECHO: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);
    /// The port every ClusterIP above serves (TCP and UDP).
    pub const CLUSTER_PORT: u16 = 80;
    /// A NodePort with `externalTrafficPolicy: Local` towards the first pod's port 8080.
    pub const NODEPORT_LOCAL: u16 = 30080;
    /// A NodePort with `externalTrafficPolicy: Cluster` towards the second pod's port 8080.
    pub const NODEPORT_CLUSTER: u16 = 30081;
    /// A hostPort of the first pod, towards its port 8080.
    pub const HOST_PORT: u16 = 8443;
    /// The port the pods' servers listen on (the endpoints' and the hostPort's target).
    pub const POD_PORT: u16 = 8080;
}

/// The IPv6 ClusterIPs of [`standard_services6`], from the IPv6 service CIDR fd00:10:96::/112;
/// ports as in [`svc`]. A dual-stack Service has one NodePort for both families, so the IPv6
/// NodePorts are [`svc::NODEPORT_LOCAL`] and [`svc::NODEPORT_CLUSTER`] on the node's IPv6
/// address.
pub mod svc6 {
    use std::net::Ipv6Addr;

    /// [`super::svc::INTERNET_ECHO`]'s IPv6 ClusterIP, towards [`crate::addr6::INTERNET`]:8080.
    pub const INTERNET_ECHO: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x96, 0, 0, 0, 0, 0x10);
    /// [`super::svc::POD2_ECHO`]'s IPv6 ClusterIP, towards [`crate::addr6::POD2`]:8080.
    pub const POD2_ECHO: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x96, 0, 0, 0, 0, 0x20);
    /// The IPv6 ClusterIP of the `Local` NodePort Service, towards [`crate::addr6::POD`]:8080.
    pub const NODEPORT_LOCAL: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x96, 0, 0, 0, 0, 0x30);
    /// The IPv6 ClusterIP of the `Cluster` NodePort Service, towards [`crate::addr6::POD2`]:8080.
    pub const NODEPORT_CLUSTER: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x96, 0, 0, 0, 0, 0x31);
}

/// A Service with one port per protocol, both towards the same endpoints.
fn service(
    name: &str,
    cluster_ip: IpAddr,
    node_port: Option<(u16, TrafficPolicy)>,
    endpoints: &[Endpoint],
) -> Vec<ServicePort> {
    Protocol::BOTH
        .iter()
        .enumerate()
        .map(|(i, &protocol)| ServicePort {
            namespace: "default".into(),
            name: name.into(),
            port_name: protocol.name().into(),
            protocol,
            cluster_ip,
            port: svc::CLUSTER_PORT,
            // A NodePort is per service port; the UDP one is the next number.
            node_port: node_port.map(|(port, policy)| (port + 100 * i as u16, policy)),
            endpoints: endpoints.to_vec(),
        })
        .collect()
}

/// The node port of `base` (one of [`svc`]'s) for `protocol`: TCP has `base`, UDP `base + 100`.
pub fn node_port(base: u16, protocol: Protocol) -> u16 {
    match protocol {
        Protocol::Tcp => base,
        Protocol::Udp => base + 100,
    }
}

/// The Services of the end-to-end tests (see [`svc`]), each over TCP and UDP.
pub fn standard_services() -> Vec<ServicePort> {
    let at = |ip: Ipv4Addr, local: bool| Endpoint {
        addr: SocketAddr::new(ip.into(), svc::POD_PORT),
        local,
    };
    let mut all = Vec::new();
    all.extend(service(
        "internet-echo",
        svc::INTERNET_ECHO.into(),
        None,
        &[at(addr::INTERNET, false)],
    ));
    all.extend(service(
        "private-echo",
        svc::PRIVATE_ECHO.into(),
        None,
        &[at(addr::PRIVATE, false)],
    ));
    all.extend(service(
        "pod2-echo",
        svc::POD2_ECHO.into(),
        None,
        &[at(addr::POD2, true)],
    ));
    all.extend(service(
        "nodeport-local",
        Ipv4Addr::new(10, 96, 0, 30).into(),
        Some((svc::NODEPORT_LOCAL, TrafficPolicy::Local)),
        &[at(addr::POD, true)],
    ));
    all.extend(service(
        "nodeport-cluster",
        Ipv4Addr::new(10, 96, 0, 31).into(),
        Some((svc::NODEPORT_CLUSTER, TrafficPolicy::Cluster)),
        &[at(addr::POD2, true)],
    ));
    all
}

/// The IPv6 side of [`standard_services`] made dual-stack (`ipFamilyPolicy:
/// RequireDualStack`), all but the private host's: the same Services, ports and NodePorts,
/// with the IPv6 ClusterIPs of [`svc6`] and the endpoints' IPv6 addresses. kube-proxy's IPv6
/// proxier writes these.
pub fn standard_services6() -> Vec<ServicePort> {
    let at = |ip: Ipv6Addr, local: bool| Endpoint {
        addr: SocketAddr::new(ip.into(), svc::POD_PORT),
        local,
    };
    let mut all = service(
        "internet-echo",
        svc6::INTERNET_ECHO.into(),
        None,
        &[at(addr6::INTERNET, false)],
    );
    all.extend(service(
        "pod2-echo",
        svc6::POD2_ECHO.into(),
        None,
        &[at(addr6::POD2, true)],
    ));
    all.extend(service(
        "nodeport-local",
        svc6::NODEPORT_LOCAL.into(),
        Some((svc::NODEPORT_LOCAL, TrafficPolicy::Local)),
        &[at(addr6::POD, true)],
    ));
    all.extend(service(
        "nodeport-cluster",
        svc6::NODEPORT_CLUSTER.into(),
        Some((svc::NODEPORT_CLUSTER, TrafficPolicy::Cluster)),
        &[at(addr6::POD2, true)],
    ));
    all
}

/// The hostPorts of the end-to-end tests: [`svc::HOST_PORT`] (TCP and UDP) to the first pod.
pub fn standard_host_ports() -> Vec<portmap::HostPort> {
    host_ports(addr::POD.into(), 24)
}

/// [`standard_host_ports`] of a dual-stack pod's IPv6 address: the plugin maps a hostPort for
/// each of the container's addresses, the IPv6 one through ip6tables.
pub fn standard_host_ports6() -> Vec<portmap::HostPort> {
    host_ports(addr6::POD.into(), 64)
}

fn host_ports(pod: IpAddr, prefix: u8) -> Vec<portmap::HostPort> {
    Protocol::BOTH
        .iter()
        .map(|&protocol| portmap::HostPort {
            protocol,
            host_port: svc::HOST_PORT,
            container: SocketAddr::new(pod, svc::POD_PORT),
            container_prefix: prefix,
        })
        .collect()
}
