//! kube-proxy's nftables mode as an `nft -f` payload, with the layout of kubernetes/kubernetes
//! `pkg/proxy/nftables/proxier.go` (`nftablesBaseChains`, `nftablesJumpChains`,
//! `setupNFTables`, `syncProxyRules`):
//!
//! ```text
//! table ip kube-proxy
//!   nat-prerouting (dstnat), nat-output (-100) ─▶ services
//!     services: ip daddr . l4proto . dport vmap @service-ips     ─▶ service-<svc> (ClusterIP)
//!               ip daddr @nodeport-ips l4proto . dport vmap @service-nodeports ─▶ external-<svc>
//!     external-<svc>: Cluster policy: jump mark-for-masquerade, goto service-<svc>
//!                     Local policy: pods and the node to service-<svc>, the rest to local-<svc>
//!     service-/local-<svc>: numgen random vmap ─▶ endpoint-<svc>__<ip>/<port> (DNAT)
//!   nat-postrouting (srcnat) ─▶ masquerading: unmarked return; clear the mark; masquerade
//! ```
//!
//! Its filter chains (`endpoints-check`, `firewall-check`) only reject traffic to Services
//! without endpoints and enforce LoadBalancer source ranges; these Services need neither.
//! `nodeport-ips` holds the node's primary address: kube-proxy's nftables mode defaults
//! `--nodeport-addresses` to `primary`. nft does not accept `dstnat` as a priority for the
//! output hook of an `ip` table; -100 is its value.
//!
//! The IPv6 proxier writes the same table as `ip6 kube-proxy`, with `ip6` matches and the IPv6
//! cluster CIDR.

use std::fmt::Write;
use std::net::IpAddr;

use super::{hash_name, Endpoint, Family, ServicePort, TrafficPolicy, MASQUERADE_MARK};

/// The table, `ip kube-proxy` (and `ip6 kube-proxy`).
pub const TABLE: &str = "kube-proxy";

/// `service-<hash>-<ns>/<name>/<proto>/<port>`: dispatch to every endpoint.
pub fn service_chain(port: &ServicePort) -> String {
    format!("service-{}", base(port))
}

/// `local-...`: dispatch to this node's endpoints.
pub fn local_chain(port: &ServicePort) -> String {
    format!("local-{}", base(port))
}

/// `external-...`: NodePort traffic, before its policy chain.
pub fn external_chain(port: &ServicePort) -> String {
    format!("external-{}", base(port))
}

/// `endpoint-...__<ip>/<port>`: one endpoint's DNAT. An IPv6 address's `:` is not allowed in
/// a chain name; kube-proxy writes it as `.`, and so does this.
pub fn endpoint_chain(port: &ServicePort, endpoint: &Endpoint) -> String {
    let name = format!(
        "{}/{}/{}/{}__{}/{}",
        port.namespace,
        port.name,
        port.protocol.name(),
        port.port_name,
        endpoint.addr.ip().to_string().replace(':', "."),
        endpoint.addr.port()
    );
    format!("endpoint-{}-{name}", hash_name(&[&name], 8))
}

/// kube-proxy's chain-name base: a short hash, then the readable service-port name (`/` is
/// allowed in nft names and not in Kubernetes ones, so these never clash with fixed chains).
fn base(port: &ServicePort) -> String {
    let name = format!(
        "{}/{}/{}/{}",
        port.namespace,
        port.name,
        port.protocol.name(),
        port.port_name
    );
    format!("{}-{name}", hash_name(&[&name], 8))
}

/// The whole table of `family`'s proxier (every one of `services` and `nodeport_ips` is of that
/// family). Chains come before the maps and rules that name them, because nft checks references
/// as it reads.
pub fn ruleset(family: Family, services: &[ServicePort], nodeport_ips: &[IpAddr]) -> String {
    debug_assert!(services.iter().all(|s| s.family() == family));
    let (nft, addr_type) = (family.nft(), family.nft_addr_type());
    let mark = format!("{MASQUERADE_MARK:#x}");
    let mut out = format!("table {nft} {TABLE} {{\n\tcomment \"rules for kube-proxy\"\n");
    chain(
        &mut out,
        "mark-for-masquerade",
        None,
        &[format!("meta mark set meta mark | {mark}")],
    );
    chain(
        &mut out,
        "masquerading",
        None,
        &[
            format!("meta mark & {mark} == 0 return"),
            // Cleared so a packet that goes through the stack again is not masqueraded twice.
            format!("meta mark set meta mark ^ {mark}"),
            "masquerade fully-random".into(),
        ],
    );
    for port in services {
        service_chains(&mut out, family, port);
    }

    let ips: Vec<String> = nodeport_ips.iter().map(|ip| ip.to_string()).collect();
    let _ = writeln!(
        out,
        "\tset nodeport-ips {{\n\t\ttype {addr_type}\n\t\tcomment \"IPs that accept NodePort \
         traffic\"\n\t\telements = {{ {} }}\n\t}}",
        ips.join(", ")
    );
    let cluster_ips: Vec<String> = services
        .iter()
        .map(|p| {
            format!(
                "{} . {} . {} : goto {}",
                p.cluster_ip,
                p.protocol.name(),
                p.port,
                service_chain(p)
            )
        })
        .collect();
    verdict_map(
        &mut out,
        "service-ips",
        &format!("{addr_type} . inet_proto . inet_service"),
        "ClusterIP, ExternalIP and LoadBalancer IP traffic",
        &cluster_ips,
    );
    let node_ports: Vec<String> = services
        .iter()
        .filter_map(|p| {
            let (node_port, _) = p.node_port?;
            Some(format!(
                "{} . {node_port} : goto {}",
                p.protocol.name(),
                external_chain(p)
            ))
        })
        .collect();
    verdict_map(
        &mut out,
        "service-nodeports",
        "inet_proto . inet_service",
        "NodePort traffic",
        &node_ports,
    );
    chain(
        &mut out,
        "services",
        None,
        &[
            format!("{nft} daddr . meta l4proto . th dport vmap @service-ips"),
            format!("{nft} daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports"),
        ],
    );
    chain(
        &mut out,
        "nat-prerouting",
        Some("type nat hook prerouting priority dstnat; policy accept;"),
        &["jump services".into()],
    );
    chain(
        &mut out,
        "nat-output",
        Some("type nat hook output priority -100; policy accept;"),
        &["jump services".into()],
    );
    chain(
        &mut out,
        "nat-postrouting",
        Some("type nat hook postrouting priority srcnat; policy accept;"),
        &["jump masquerading".into()],
    );
    out.push_str("}\n");
    out
}

fn service_chains(out: &mut String, family: Family, port: &ServicePort) {
    let p = port.protocol.name();
    let (nft, cluster_cidr) = (family.nft(), family.cluster_cidr());
    for endpoint in &port.endpoints {
        let ip = endpoint.addr.ip();
        chain(
            out,
            &endpoint_chain(port, endpoint),
            None,
            &[
                // Hairpin: an endpoint reaching itself through the Service is masqueraded.
                format!("{nft} saddr {ip} jump mark-for-masquerade"),
                format!("meta l4proto {p} dnat to {}", endpoint.addr),
            ],
        );
    }
    let service = service_chain(port);
    let mut rules = vec![format!(
        // Off-cluster traffic to the ClusterIP is masqueraded (the local-traffic detector).
        "{nft} daddr {} {p} dport {} {nft} saddr != {cluster_cidr} jump mark-for-masquerade",
        port.cluster_ip, port.port
    )];
    rules.push(dispatch(port, &port.endpoints));
    chain(out, &service, None, &rules);

    match port.node_port {
        Some((_, TrafficPolicy::Cluster)) => chain(
            out,
            &external_chain(port),
            None,
            &["jump mark-for-masquerade".into(), format!("goto {service}")],
        ),
        Some((_, TrafficPolicy::Local)) => {
            let local = port.local_endpoints();
            let mut rules = vec![
                format!("{nft} saddr {cluster_cidr} goto {service} comment \"short-circuit pod traffic\""),
                "fib saddr type local jump mark-for-masquerade comment \"masquerade local traffic\""
                    .into(),
                format!("fib saddr type local goto {service} comment \"short-circuit local traffic\""),
            ];
            if !local.is_empty() {
                chain(out, &local_chain(port), None, &[dispatch(port, &local)]);
                rules.push(format!("goto {}", local_chain(port)));
            }
            chain(out, &external_chain(port), None, &rules);
        }
        None => {}
    }
}

/// `numgen random mod N vmap { 0 : goto endpoint-…, … }`.
fn dispatch(port: &ServicePort, endpoints: &[Endpoint]) -> String {
    let arms: Vec<String> = endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| format!("{i} : goto {}", endpoint_chain(port, e)))
        .collect();
    format!(
        "numgen random mod {} vmap {{ {} }}",
        endpoints.len(),
        arms.join(", ")
    )
}

fn chain(out: &mut String, name: &str, base: Option<&str>, rules: &[String]) {
    let _ = writeln!(out, "\tchain {name} {{");
    if let Some(base) = base {
        let _ = writeln!(out, "\t\t{base}");
    }
    for rule in rules {
        let _ = writeln!(out, "\t\t{rule}");
    }
    out.push_str("\t}\n");
}

fn verdict_map(out: &mut String, name: &str, key: &str, comment: &str, elements: &[String]) {
    let _ = writeln!(
        out,
        "\tmap {name} {{\n\t\ttype {key} : verdict\n\t\tcomment \"{comment}\""
    );
    if !elements.is_empty() {
        let _ = writeln!(out, "\t\telements = {{ {} }}", elements.join(",\n\t\t\t"));
    }
    out.push_str("\t}\n");
}

#[cfg(test)]
mod tests {
    use super::super::{nft_load, standard_services};
    use super::*;
    use crate::netns::Netns;

    /// The payload loads and the kernel holds the maps, the masquerade chains and one
    /// endpoint chain per endpoint.
    #[test]
    #[cfg_attr(masq_unprivileged, ignore = "needs root")]
    fn the_kernel_holds_kube_proxys_table() {
        crate::require(&["nft"]);
        let services = standard_services();
        let ns = Netns::new("kubenft").unwrap();
        let node: IpAddr = [172, 30, 0, 1].into();
        nft_load(&ns, &ruleset(Family::V4, &services, &[node])).unwrap();
        let listed = ns.exec("nft", &["list", "table", "ip", TABLE]).unwrap();
        for name in [
            "map service-ips",
            "map service-nodeports",
            "set nodeport-ips",
            "chain mark-for-masquerade",
            "chain masquerading",
            "chain nat-prerouting",
            "chain nat-output",
            "chain nat-postrouting",
            "masquerade fully-random",
        ] {
            assert!(listed.contains(name), "{name} missing:\n{listed}");
        }
        let endpoints = listed.matches("\tchain endpoint-").count();
        assert_eq!(endpoints, services.len(), "one endpoint each:\n{listed}");
        let externals = listed.matches("\tchain external-").count();
        assert_eq!(externals, 4, "two NodePorts over TCP and UDP:\n{listed}");
        assert_eq!(listed.matches("\tchain local-").count(), 2, "{listed}");
    }

    /// The IPv6 proxier's table loads as `ip6 kube-proxy`, its maps keyed by IPv6 addresses.
    #[test]
    #[cfg_attr(masq_unprivileged, ignore = "needs root")]
    fn the_kernel_holds_the_ipv6_proxiers_table() {
        crate::require(&["nft"]);
        let services = super::super::standard_services6();
        let ns = Netns::new("kubenft6").unwrap();
        let node = IpAddr::from(crate::addr6::NODE);
        nft_load(&ns, &ruleset(Family::V6, &services, &[node])).unwrap();
        let listed = ns.exec("nft", &["list", "table", "ip6", TABLE]).unwrap();
        for text in [
            "type ipv6_addr . inet_proto . inet_service : verdict",
            "ip6 saddr != fd00:10:244::/48",
        ] {
            assert!(listed.contains(text), "{text} missing:\n{listed}");
        }
        let endpoints = listed.matches("\tchain endpoint-").count();
        assert_eq!(endpoints, services.len(), "one endpoint each:\n{listed}");
        assert!(listed.contains("fd00:172:30::1"), "nodeport-ips:\n{listed}");
        let externals = listed.matches("\tchain external-").count();
        assert_eq!(externals, 4, "two NodePorts over TCP and UDP:\n{listed}");
    }
}
