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
//! kube-proxy runs one proxier per IP family: a Service's family is its ClusterIP's, and the
//! IPv6 ones get the same layout through `ip6tables-restore` or in table `ip6 kube-proxy`.
//!
//! [`standard_services`] and [`standard_host_ports`] are the ones the end-to-end tests use; the
//! addresses are in [`svc`]. Only the layout matters to the kernel, so the generators write
//! what those programs would write for these objects, not byte for byte (chain-name hashes
//! differ: see [`hash_name`]).

pub mod iptables;
pub mod nftables;
pub mod portmap;
mod standard;

pub use standard::{
    node_port, standard_host_ports, standard_host_ports6, standard_services, standard_services6,
    svc, svc6,
};

use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, Result};

use crate::netns::Netns;
use crate::topology::{addr, addr6, set_sysctl};

/// kube-proxy's masquerade mark (`--masquerade-bit 14`, its default).
pub const MASQUERADE_MARK: u32 = 0x4000;

/// The cluster's pod CIDR as kube-proxy's local-traffic detector knows it (`--cluster-cidr`):
/// sources inside it are pods, whose traffic to a ClusterIP is not marked for masquerade.
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";

/// The IPv6 pod CIDR of a dual-stack cluster, around [`crate::addr6::POD_CIDR`].
pub const CLUSTER_CIDR6: &str = "fd00:10:244::/48";

/// The IP family of one kube-proxy proxier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of `ip`.
    pub fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The cluster CIDR of this family ([`CLUSTER_CIDR`] or [`CLUSTER_CIDR6`]).
    pub fn cluster_cidr(self) -> &'static str {
        match self {
            Family::V4 => CLUSTER_CIDR,
            Family::V6 => CLUSTER_CIDR6,
        }
    }

    /// The prefix length of one host.
    pub fn host_prefix(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    /// `iptables` or `ip6tables`, the stem of the tools' names.
    pub fn iptables(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }

    /// The nftables family (`ip`, `ip6`), also the keyword of its address matches.
    pub fn nft(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }

    /// The nftables type of one address.
    pub fn nft_addr_type(self) -> &'static str {
        match self {
            Family::V4 => "ipv4_addr",
            Family::V6 => "ipv6_addr",
        }
    }
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
    /// Address and port, of the Service's family.
    pub addr: SocketAddr,
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
    /// `spec.clusterIP` (or one of `spec.clusterIPs`): its family is the proxier's.
    pub cluster_ip: IpAddr,
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

    /// The family of its ClusterIP, so of the proxier that writes its rules.
    pub fn family(&self) -> Family {
        Family::of(self.cluster_ip)
    }

    /// The endpoints `Local` policy uses.
    pub fn local_endpoints(&self) -> Vec<Endpoint> {
        self.endpoints.iter().copied().filter(|e| e.local).collect()
    }
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
///
/// The IPv4 proxier's rules are always loaded, as on a single-stack node; the IPv6 proxier's
/// (and `bridge-nf-call-ip6tables`) when `services` has IPv6 ones, as on a dual-stack node.
pub fn install_kube_proxy(node: &Netns, mode: ProxyMode, services: &[ServicePort]) -> Result<()> {
    set_sysctl(node, "net/bridge/bridge-nf-call-iptables", "1")
        .context("kube-proxy needs br_netfilter (net.bridge.bridge-nf-call-iptables)")?;
    let of = |family| -> Vec<ServicePort> {
        services
            .iter()
            .filter(|s| s.family() == family)
            .cloned()
            .collect()
    };
    install_proxier(node, mode, Family::V4, &of(Family::V4), addr::NODE.into())?;
    let services6 = of(Family::V6);
    if !services6.is_empty() {
        set_sysctl(node, "net/bridge/bridge-nf-call-ip6tables", "1")?;
        install_proxier(node, mode, Family::V6, &services6, addr6::NODE.into())?;
    }
    Ok(())
}

/// One family's proxier: `services` (all of `family`), with `node_ip` as its NodePort address.
fn install_proxier(
    node: &Netns,
    mode: ProxyMode,
    family: Family,
    services: &[ServicePort],
    node_ip: IpAddr,
) -> Result<()> {
    match mode {
        ProxyMode::Iptables { backend } => {
            let program = format!("{}-{backend}-restore", family.iptables());
            let payload = iptables::ruleset(family, services);
            node.pipe(&program, &["--noflush"], &payload)
        }
        ProxyMode::Nftables => nft_load(node, &nftables::ruleset(family, services, &[node_ip])),
    }
}

/// What kube-proxy's `family` proxier (in `mode`) and portmap own in `node`, as their tools list
/// it: every line of `iptables-<backend>-save` (or `ip6tables-…`; nat and filter) that names a
/// `KUBE-` or `CNI-` chain, or the nftables table. Taken before and after a test, it shows
/// whether anyone else touched them.
pub fn snapshot(node: &Netns, mode: ProxyMode, family: Family) -> Result<String> {
    match mode {
        ProxyMode::Iptables { backend } => {
            let program = format!("{}-{backend}-save", family.iptables());
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
        ProxyMode::Nftables => node.exec("nft", &["list", "table", family.nft(), nftables::TABLE]),
    }
}

/// Loads the portmap plugin's rules for `host_ports` into `node` through
/// `iptables-<backend>-restore`, and those of IPv6 containers through
/// `ip6tables-<backend>-restore`, as the plugin's iptables mode does.
pub fn install_host_ports(
    node: &Netns,
    backend: &str,
    host_ports: &[portmap::HostPort],
) -> Result<()> {
    for family in [Family::V4, Family::V6] {
        let ports: Vec<portmap::HostPort> = host_ports
            .iter()
            .filter(|p| p.family() == family)
            .copied()
            .collect();
        if ports.is_empty() {
            continue;
        }
        let payload = portmap::ruleset("cbr0", "0123456789abcdef-pod", &ports);
        let program = format!("{}-{backend}-restore", family.iptables());
        node.pipe(&program, &["--noflush"], &payload)?;
    }
    Ok(())
}

/// `iptables-<backend>-restore --noflush` of `payload` inside `node`.
pub fn restore(node: &Netns, backend: &str, payload: &str) -> Result<()> {
    let program = format!("iptables-{backend}-restore");
    node.pipe(&program, &["--noflush"], payload)
}

/// `nft -f -` of `payload` inside `node`.
pub fn nft_load(node: &Netns, payload: &str) -> Result<()> {
    node.pipe("nft", &["-f", "-"], payload)
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
        // The IPv6 side has the same NodePorts (one nodePort per dual-stack Service).
        let node_ports6: Vec<_> = standard_services6()
            .iter()
            .filter_map(|s| s.node_port)
            .collect();
        assert_eq!(node_ports6, node_ports);
        assert!(standard_services6()
            .iter()
            .all(|s| s.family() == Family::V6 && s.endpoints.iter().all(|e| e.addr.is_ipv6())));
    }
}
