//! What kube-proxy and the CNI portmap plugin write on a real node, for the standard
//! [`Topology`](crate::Topology): Services (ClusterIP, NodePort with either external traffic
//! policy) and hostPorts, rendered with the chain layout of their upstream sources and loaded
//! into the node namespace with the same tools they use.
//!
//! - [`iptables`]: kube-proxy's iptables mode (`KUBE-SERVICES`, `KUBE-SVC-*`, `KUBE-SEP-*`,
//!   `KUBE-EXT-*`, `KUBE-NODEPORTS`, `KUBE-MARK-MASQ`, `KUBE-POSTROUTING`, `KUBE-FORWARD`),
//!   kubernetes/kubernetes `pkg/proxy/iptables/proxier.go`.
//! - [`nftables`]: kube-proxy's nftables mode (table `ip kube-proxy`, the `service-ips` and
//!   `service-nodeports` verdict maps, `nodeport-ips`), `pkg/proxy/nftables/proxier.go`.
//! - [`portmap`]: hostPorts as containernetworking/plugins `plugins/meta/portmap` writes them
//!   (`CNI-HOSTPORT-DNAT`, `CNI-DN-*`, `CNI-HOSTPORT-SETMARK`, `CNI-HOSTPORT-MASQ`).
//!
//! [`standard_services`] and [`standard_host_ports`] are the ones the end-to-end tests use; the
//! addresses are in [`svc`]. Only the layout matters to the kernel, so the generators write
//! what those programs would write for these objects, not byte for byte (chain-name hashes
//! differ: see [`hash_name`]).

pub mod iptables;
pub mod nftables;
pub mod portmap;

use std::hash::{Hash, Hasher};
use std::net::{Ipv4Addr, SocketAddrV4};

use anyhow::{Context, Result};

use crate::netns::Netns;
use crate::topology::{addr, set_sysctl};

/// kube-proxy's masquerade mark (`--masquerade-bit 14`, its default).
pub const MASQUERADE_MARK: u32 = 0x4000;

/// The cluster's pod CIDR as kube-proxy's local-traffic detector knows it (`--cluster-cidr`):
/// sources inside it are pods, whose traffic to a ClusterIP is not marked for masquerade.
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";

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

/// A transport protocol of a Service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// Both, TCP first.
    pub const BOTH: [Protocol; 2] = [Protocol::Tcp, Protocol::Udp];

    /// The lowercase name iptables and nft use.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// `spec.externalTrafficPolicy` of a NodePort.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrafficPolicy {
    /// Any endpoint; the source is masqueraded (kube-proxy's mark) in case it crosses nodes.
    Cluster,
    /// Only this node's endpoints; the client's source is kept.
    Local,
}

/// One endpoint of a Service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Address and port.
    pub addr: SocketAddrV4,
    /// Whether it runs on this node (what `Local` policy dispatches to).
    pub local: bool,
}

/// One port of a Service (kube-proxy works per service port).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// The port's name (`spec.ports[].name`).
    pub port_name: String,
    /// Its protocol.
    pub protocol: Protocol,
    /// `spec.clusterIP`.
    pub cluster_ip: Ipv4Addr,
    /// `spec.ports[].port`.
    pub port: u16,
    /// `spec.ports[].nodePort` and the external traffic policy, for a NodePort Service.
    pub node_port: Option<(u16, TrafficPolicy)>,
    /// Its ready endpoints.
    pub endpoints: Vec<Endpoint>,
}

impl ServicePort {
    /// `namespace/name:port`, kube-proxy's `ServicePortName` string (its comments say this).
    pub fn display_name(&self) -> String {
        format!("{}/{}:{}", self.namespace, self.name, self.port_name)
    }

    /// The endpoints `Local` policy uses.
    pub fn local_endpoints(&self) -> Vec<Endpoint> {
        self.endpoints.iter().copied().filter(|e| e.local).collect()
    }
}

/// A Service with one port per protocol, both towards the same endpoints.
fn service(
    name: &str,
    cluster_ip: Ipv4Addr,
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
        addr: SocketAddrV4::new(ip, svc::POD_PORT),
        local,
    };
    let mut all = Vec::new();
    all.extend(service(
        "internet-echo",
        svc::INTERNET_ECHO,
        None,
        &[at(addr::INTERNET, false)],
    ));
    all.extend(service(
        "private-echo",
        svc::PRIVATE_ECHO,
        None,
        &[at(addr::PRIVATE, false)],
    ));
    all.extend(service(
        "pod2-echo",
        svc::POD2_ECHO,
        None,
        &[at(addr::POD2, true)],
    ));
    all.extend(service(
        "nodeport-local",
        Ipv4Addr::new(10, 96, 0, 30),
        Some((svc::NODEPORT_LOCAL, TrafficPolicy::Local)),
        &[at(addr::POD, true)],
    ));
    all.extend(service(
        "nodeport-cluster",
        Ipv4Addr::new(10, 96, 0, 31),
        Some((svc::NODEPORT_CLUSTER, TrafficPolicy::Cluster)),
        &[at(addr::POD2, true)],
    ));
    all
}

/// The hostPorts of the end-to-end tests: [`svc::HOST_PORT`] (TCP and UDP) to the first pod.
pub fn standard_host_ports() -> Vec<portmap::HostPort> {
    Protocol::BOTH
        .iter()
        .map(|&protocol| portmap::HostPort {
            protocol,
            host_port: svc::HOST_PORT,
            container: SocketAddrV4::new(addr::POD, svc::POD_PORT),
            container_prefix: 24,
        })
        .collect()
}

/// How kube-proxy runs on the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyMode {
    /// `--proxy-mode iptables` through `iptables-<backend>-restore` (`nft` or `legacy`).
    Iptables {
        /// The iptables backend, as in the program names.
        backend: &'static str,
    },
    /// `--proxy-mode nftables`.
    Nftables,
}

/// Loads kube-proxy's rules for `services` into `node` in `mode`, after what kube-proxy needs of
/// the kernel: `bridge-nf-call-iptables` (pod-to-pod Service traffic crosses the node's bridge,
/// and its replies must meet conntrack to be un-DNATed). Fails when the kernel lacks
/// br_netfilter, which kube-proxy requires too.
pub fn install_kube_proxy(node: &Netns, mode: ProxyMode, services: &[ServicePort]) -> Result<()> {
    set_sysctl(node, "net/bridge/bridge-nf-call-iptables", "1")
        .context("kube-proxy needs br_netfilter (net.bridge.bridge-nf-call-iptables)")?;
    match mode {
        ProxyMode::Iptables { backend } => restore(node, backend, &iptables::ruleset(services)),
        ProxyMode::Nftables => nft_load(node, &nftables::ruleset(services, &[addr::NODE])),
    }
}

/// What kube-proxy (in `mode`) and portmap own in `node`, as their tools list it: every line of
/// `iptables-<backend>-save` (nat and filter) that names a `KUBE-` or `CNI-` chain, or the
/// nftables table. Taken before and after a test, it shows whether anyone else touched them.
pub fn snapshot(node: &Netns, mode: ProxyMode) -> Result<String> {
    match mode {
        ProxyMode::Iptables { backend } => {
            let program = format!("iptables-{backend}-save");
            let mut lines = Vec::new();
            for table in ["nat", "filter"] {
                let save = node.exec(&program, &["-t", table])?;
                lines.extend(
                    save.lines()
                        .filter(|l| l.contains("KUBE-") || l.contains("CNI-"))
                        .map(|l| format!("{table}: {l}")),
                );
            }
            Ok(lines.join("\n"))
        }
        ProxyMode::Nftables => node.exec("nft", &["list", "table", "ip", nftables::TABLE]),
    }
}

/// Loads the portmap plugin's rules for `host_ports` into `node` through
/// `iptables-<backend>-restore`, as the plugin's iptables mode does.
pub fn install_host_ports(
    node: &Netns,
    backend: &str,
    host_ports: &[portmap::HostPort],
) -> Result<()> {
    restore(
        node,
        backend,
        &portmap::ruleset("cbr0", "0123456789abcdef-pod", host_ports),
    )
}

/// `iptables-<backend>-restore --noflush` of `payload` inside `node`.
pub fn restore(node: &Netns, backend: &str, payload: &str) -> Result<()> {
    let program = format!("iptables-{backend}-restore");
    pipe(node, &program, &["--noflush"], payload)
}

/// `nft -f -` of `payload` inside `node`.
pub fn nft_load(node: &Netns, payload: &str) -> Result<()> {
    pipe(node, "nft", &["-f", "-"], payload)
}

fn pipe(node: &Netns, program: &str, args: &[&str], payload: &str) -> Result<()> {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = node
        .command(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    child
        .stdin
        .take()
        .context("no stdin")?
        .write_all(payload.as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "in {}: {program} {args:?} failed: {}\n--- payload ---\n{payload}",
        node.name(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// `len` characters of a base32 hash of `parts`, as kube-proxy and portmap name their
/// per-object chains. They take SHA-256 or SHA-512; the kernel only needs the names to be
/// unique and stable, so a std hash (fixed keys, stable within a Rust release) does here
/// without pulling a digest crate into the test bed.
pub fn hash_name(parts: &[&str], len: usize) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(len);
    let mut round = 0u64;
    while out.len() < len {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (round, parts).hash(&mut hasher);
        let mut bits = hasher.finish();
        // 12 characters of 5 bits each from one 64-bit hash.
        for _ in 0..12 {
            if out.len() == len {
                break;
            }
            out.push(char::from(ALPHABET[(bits & 31) as usize]));
            bits >>= 5;
        }
        round += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_unique_and_sized() {
        let a = hash_name(&["default/a:tcp", "tcp"], 16);
        assert_eq!(a, hash_name(&["default/a:tcp", "tcp"], 16));
        assert_ne!(a, hash_name(&["default/a:udp", "udp"], 16));
        assert_eq!(a.len(), 16);
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()));
        assert_eq!(hash_name(&["x"], 8).len(), 8);
    }

    #[test]
    fn standard_services_cover_each_case_over_tcp_and_udp() {
        let all = standard_services();
        assert_eq!(all.len(), 10);
        let node_ports: Vec<_> = all.iter().filter_map(|s| s.node_port).collect();
        assert!(node_ports.contains(&(svc::NODEPORT_LOCAL, TrafficPolicy::Local)));
        assert!(node_ports.contains(&(
            node_port(svc::NODEPORT_CLUSTER, Protocol::Udp),
            TrafficPolicy::Cluster
        )));
    }
}
