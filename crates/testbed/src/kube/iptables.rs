//! kube-proxy's iptables mode as an `iptables-restore --noflush` payload, with the chain layout
//! of kubernetes/kubernetes `pkg/proxy/iptables/proxier.go` (`syncProxyRules`,
//! `writeServiceToEndpointRules`, `iptablesJumpChains`):
//!
//! ```text
//! nat    PREROUTING, OUTPUT ─▶ KUBE-SERVICES ─┬▶ KUBE-SVC-x (ClusterIP) ─▶ KUBE-SEP-y (DNAT)
//!                                             └▶ KUBE-NODEPORTS (dst LOCAL, last) ─▶ KUBE-EXT-x
//!        KUBE-EXT-x: Cluster policy: KUBE-MARK-MASQ, then KUBE-SVC-x
//!                    Local policy: pods and the node's own traffic to KUBE-SVC-x, the rest
//!                    to KUBE-SVL-x (this node's endpoints), unmarked
//!        POSTROUTING ─▶ KUBE-POSTROUTING: unmarked return; clear the mark; MASQUERADE
//! filter FORWARD ─▶ KUBE-FORWARD: drop INVALID, accept marked and established
//! ```
//!
//! kube-proxy adds its jumps with `iptables -I` (prepended) outside the restore; here they are
//! `-I` lines of the same payload. `MARK --or-mark 0x4000` is what the kernel shows as
//! `--set-xmark 0x4000/0x4000`, and `--xor-mark` as `--set-xmark 0x4000/0x0`.
//!
//! The IPv6 proxier writes the same chains for its Services, with `/128` hosts and the IPv6
//! cluster CIDR, through `ip6tables-restore`.

use std::fmt::Write;

use super::{hash_name, Endpoint, Family, ServicePort, TrafficPolicy, MASQUERADE_MARK};

/// The chains kube-proxy owns in the nat table, besides the per-service ones.
pub const NAT_CHAINS: [&str; 4] = [
    "KUBE-SERVICES",
    "KUBE-NODEPORTS",
    "KUBE-POSTROUTING",
    "KUBE-MARK-MASQ",
];

/// `KUBE-SVC-<hash>`: dispatch to every endpoint (Cluster policy).
pub fn svc_chain(port: &ServicePort) -> String {
    format!("KUBE-SVC-{}", port_hash(port))
}

/// `KUBE-SVL-<hash>`: dispatch to this node's endpoints (Local policy).
pub fn svl_chain(port: &ServicePort) -> String {
    format!("KUBE-SVL-{}", port_hash(port))
}

/// `KUBE-EXT-<hash>`: NodePort (external) traffic, before its policy chain.
pub fn ext_chain(port: &ServicePort) -> String {
    format!("KUBE-EXT-{}", port_hash(port))
}

/// `KUBE-SEP-<hash>`: one endpoint's DNAT.
pub fn sep_chain(port: &ServicePort, endpoint: &Endpoint) -> String {
    let protocol = port.protocol.name();
    let endpoint = endpoint.addr.to_string();
    let name = port.display_name();
    format!("KUBE-SEP-{}", hash_name(&[&name, protocol, &endpoint], 16))
}

fn port_hash(port: &ServicePort) -> String {
    hash_name(&[&port.display_name(), port.protocol.name()], 16)
}

/// The whole payload of `family`'s proxier (every one of `services` is of that family): the
/// filter table's `KUBE-FORWARD`, then the nat table.
pub fn ruleset(family: Family, services: &[ServicePort]) -> String {
    debug_assert!(services.iter().all(|s| s.family() == family));
    let mark = format!("{MASQUERADE_MARK:#x}");
    let mut out = String::new();
    out.push_str("*filter\n:KUBE-FORWARD - [0:0]\n");
    out.push_str(
        "-I FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD\n",
    );
    out.push_str("-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n");
    let _ = writeln!(
        out,
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" \
         -m mark --mark {mark}/{mark} -j ACCEPT"
    );
    out.push_str(
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" \
         -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\nCOMMIT\n",
    );

    out.push_str("*nat\n");
    for chain in NAT_CHAINS.iter().map(|c| c.to_string()).chain(
        services
            .iter()
            .flat_map(|port| service_chains(port).into_iter()),
    ) {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    for hook in ["OUTPUT", "PREROUTING"] {
        let _ = writeln!(
            out,
            "-I {hook} -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"
        );
    }
    out.push_str(
        "-I POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n",
    );
    let _ = writeln!(
        out,
        "-A KUBE-POSTROUTING -m mark ! --mark {mark}/{mark} -j RETURN"
    );
    // Cleared so a packet that goes through the stack again is not masqueraded twice.
    let _ = writeln!(out, "-A KUBE-POSTROUTING -j MARK --xor-mark {mark}");
    out.push_str(
        "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" \
         -j MASQUERADE --random-fully\n",
    );
    let _ = writeln!(out, "-A KUBE-MARK-MASQ -j MARK --or-mark {mark}");
    for port in services {
        service_rules(&mut out, family, port);
    }
    // kube-proxy: "this must be the last rule in this chain" (NodePorts on every local address;
    // for IPv6 not on ::1, where they "never work").
    let not_localhost = match family {
        Family::V4 => "",
        Family::V6 => " ! -d ::1/128",
    };
    let _ = writeln!(
        out,
        "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must \
         be the last rule in this chain\" -m addrtype --dst-type LOCAL{not_localhost} -j KUBE-NODEPORTS"
    );
    out.push_str("COMMIT\n");
    out
}

/// The per-service chains one port needs, in the order kube-proxy declares them.
pub fn service_chains(port: &ServicePort) -> Vec<String> {
    let mut chains = Vec::new();
    if port.node_port.is_some() {
        chains.push(ext_chain(port));
    }
    chains.push(svc_chain(port));
    if matches!(port.node_port, Some((_, TrafficPolicy::Local))) {
        chains.push(svl_chain(port));
    }
    chains.extend(port.endpoints.iter().map(|e| sep_chain(port, e)));
    chains
}

fn service_rules(out: &mut String, family: Family, port: &ServicePort) {
    let name = port.display_name();
    let p = port.protocol.name();
    let (svc, ext) = (svc_chain(port), ext_chain(port));
    let (host, cluster_cidr) = (family.host_prefix(), family.cluster_cidr());
    let cluster_ip = format!(
        "-m comment --comment \"{name} cluster IP\" -m {p} -p {p} -d {}/{host} --dport {}",
        port.cluster_ip, port.port
    );
    let _ = writeln!(out, "-A KUBE-SERVICES {cluster_ip} -j {svc}");
    if let Some((node_port, _)) = port.node_port {
        let _ = writeln!(
            out,
            "-A KUBE-NODEPORTS -m comment --comment \"{name}\" -m {p} -p {p} --dport {node_port} -j {ext}"
        );
    }
    // Off-cluster traffic to the ClusterIP is masqueraded (the local-traffic detector).
    let _ = writeln!(
        out,
        "-A {svc} {cluster_ip} ! -s {cluster_cidr} -j KUBE-MARK-MASQ"
    );
    endpoint_dispatch(out, port, &svc, &port.endpoints);

    match port.node_port {
        Some((_, TrafficPolicy::Cluster)) => {
            let _ = writeln!(
                out,
                "-A {ext} -m comment --comment \"masquerade traffic for {name} external \
                 destinations\" -j KUBE-MARK-MASQ"
            );
            let _ = writeln!(out, "-A {ext} -j {svc}");
        }
        Some((_, TrafficPolicy::Local)) => {
            let svl = svl_chain(port);
            let _ = writeln!(
                out,
                "-A {ext} -m comment --comment \"pod traffic for {name} external destinations\" \
                 -s {cluster_cidr} -j {svc}"
            );
            let _ = writeln!(
                out,
                "-A {ext} -m comment --comment \"masquerade LOCAL traffic for {name} external \
                 destinations\" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ"
            );
            let _ = writeln!(
                out,
                "-A {ext} -m comment --comment \"route LOCAL traffic for {name} external \
                 destinations\" -m addrtype --src-type LOCAL -j {svc}"
            );
            let local = port.local_endpoints();
            if !local.is_empty() {
                let _ = writeln!(out, "-A {ext} -j {svl}");
                endpoint_dispatch(out, port, &svl, &local);
            }
        }
        None => {}
    }

    for endpoint in &port.endpoints {
        let sep = sep_chain(port, endpoint);
        // Hairpin: an endpoint reaching itself through the Service is masqueraded.
        let _ = writeln!(
            out,
            "-A {sep} -m comment --comment \"{name}\" -s {}/{host} -j KUBE-MARK-MASQ",
            endpoint.addr.ip()
        );
        let _ = writeln!(
            out,
            "-A {sep} -m comment --comment \"{name}\" -m {p} -p {p} -j DNAT --to-destination {}",
            endpoint.addr
        );
    }
}

/// One rule per endpoint, each taken with probability 1/(endpoints left), the last always.
fn endpoint_dispatch(out: &mut String, port: &ServicePort, chain: &str, endpoints: &[Endpoint]) {
    let name = port.display_name();
    for (i, endpoint) in endpoints.iter().enumerate() {
        let left = endpoints.len() - i;
        let statistic = if left > 1 {
            format!(
                " -m statistic --mode random --probability {:.10}",
                1.0 / left as f64
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "-A {chain} -m comment --comment \"{name} -> {}\"{statistic} -j {}",
            endpoint.addr,
            sep_chain(port, endpoint)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::{standard_services, svc, svc6, Protocol};
    use super::*;
    use crate::netns::Netns;

    fn chain_rules<'a>(save: &'a str, chain: &str) -> Vec<&'a str> {
        let prefix = format!("-A {chain} ");
        save.lines().filter(|l| l.starts_with(&prefix)).collect()
    }

    /// The payload loads (both backends where present) and the kernel holds the layout:
    /// every chain, jumps from the hooks, the mark rules and one DNAT per endpoint.
    #[test]
    #[cfg_attr(masq_unprivileged, ignore = "needs root")]
    fn the_kernel_holds_kube_proxys_layout() {
        crate::require(&["iptables-nft-restore"]);
        let services = standard_services();
        let ns = Netns::new("kubeipt").unwrap();
        super::super::restore(&ns, "nft", &ruleset(Family::V4, &services)).unwrap();
        let save = ns.exec("iptables-nft-save", &[]).unwrap();
        for chain in NAT_CHAINS {
            assert!(
                save.contains(&format!(":{chain} ")),
                "{chain} missing:\n{save}"
            );
        }
        for hook in ["PREROUTING", "OUTPUT"] {
            let jumps = chain_rules(&save, hook);
            assert!(jumps[0].ends_with("-j KUBE-SERVICES"), "{jumps:?}");
        }
        assert!(chain_rules(&save, "POSTROUTING")[0].ends_with("-j KUBE-POSTROUTING"));
        let masq = chain_rules(&save, "KUBE-MARK-MASQ");
        assert_eq!(
            masq,
            ["-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000"]
        );
        let post = chain_rules(&save, "KUBE-POSTROUTING");
        assert_eq!(post.len(), 3, "{post:?}");
        assert!(post[1].ends_with("--set-xmark 0x4000/0x0"), "{post:?}");
        assert!(
            post[2].ends_with("-j MASQUERADE --random-fully"),
            "{post:?}"
        );
        let services_chain = chain_rules(&save, "KUBE-SERVICES");
        assert!(services_chain
            .last()
            .unwrap()
            .ends_with("-j KUBE-NODEPORTS"));
        assert_eq!(services_chain.len(), services.len() + 1);
        let dnats = save.lines().filter(|l| l.contains("-j DNAT")).count();
        assert_eq!(dnats, services.len(), "one endpoint each");
        assert_eq!(chain_rules(&save, "KUBE-FORWARD").len(), 3);

        let local = services
            .iter()
            .find(|s| s.node_port == Some((svc::NODEPORT_LOCAL, TrafficPolicy::Local)))
            .unwrap();
        assert_eq!(local.protocol, Protocol::Tcp);
        let ext = chain_rules(&save, &ext_chain(local));
        assert_eq!(ext.len(), 4, "{ext:?}");
        assert!(ext[3].ends_with(&format!("-j {}", svl_chain(local))));
        assert!(
            !ext.iter()
                .any(|r| r.contains("KUBE-MARK-MASQ") && !r.contains("src-type")),
            "Local policy marks only the node's own traffic: {ext:?}"
        );
    }

    /// The IPv6 proxier's payload loads through `ip6tables-nft-restore`: `/128` hosts, the IPv6
    /// cluster CIDR and bracketed DNAT targets.
    #[test]
    #[cfg_attr(masq_unprivileged, ignore = "needs root")]
    fn the_kernel_holds_the_ipv6_proxiers_layout() {
        crate::require(&["ip6tables-nft-restore"]);
        let services = super::super::standard_services6();
        let ns = Netns::new("kubeipt6").unwrap();
        let payload = ruleset(Family::V6, &services);
        ns.pipe("ip6tables-nft-restore", &["--noflush"], &payload)
            .unwrap();
        let save = ns.exec("ip6tables-nft-save", &["-t", "nat"]).unwrap();
        let services_chain = chain_rules(&save, "KUBE-SERVICES");
        assert_eq!(services_chain.len(), services.len() + 1, "{save}");
        let cluster_ip = format!("-d {}/128", svc6::INTERNET_ECHO);
        assert!(services_chain[0].contains(&cluster_ip), "{save}");
        assert!(save.contains("! -s fd00:10:244::/48"), "{save}");
        let dnat = format!("--to-destination [{}]:8080", crate::addr6::INTERNET);
        assert!(save.contains(&dnat), "{save}");
        let nodeports = services_chain.last().unwrap();
        assert!(
            nodeports.contains("! -d ::1/128") && nodeports.ends_with("-j KUBE-NODEPORTS"),
            "{save}"
        );
        assert_eq!(chain_rules(&save, "KUBE-NODEPORTS").len(), 4, "{save}");
    }
}
