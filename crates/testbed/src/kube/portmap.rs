//! hostPorts as the CNI portmap plugin's iptables mode writes them
//! (containernetworking/plugins `plugins/meta/portmap/portmap_iptables.go`, `chain.go`):
//!
//! ```text
//! nat PREROUTING, OUTPUT (appended, after kube-proxy's jumps)
//!       -m addrtype --dst-type LOCAL ─▶ CNI-HOSTPORT-DNAT
//!     CNI-HOSTPORT-DNAT (one entry per container and protocol, prepended: the newest wins)
//!       -m multiport --destination-ports … ─▶ CNI-DN-<hash of network name + container id>
//!     CNI-DN-<hash>: per hostPort, mark hairpin (from the container's subnet) and localhost
//!       connections via CNI-HOSTPORT-SETMARK, then DNAT to the container
//!     POSTROUTING (prepended) ─▶ CNI-HOSTPORT-MASQ: MASQUERADE what carries the 0x2000 mark
//! ```
//!
//! Traffic from outside the node is not marked: the container sees the client's address.
//!
//! For an IPv6 container the plugin writes the same chains with `ip6tables`, without the
//! localhost rule (IPv6 has no `route_localnet`: `::1` cannot be DNATed off the host), and
//! with the bracketed `[address]:port` DNAT target.

use std::fmt::Write;
use std::net::SocketAddr;

use super::{hash_name, Family, Protocol};

/// The plugin's mark (`markMasqBit` 13, its default).
pub const MARK: u32 = 0x2000;

/// One `hostPort` of a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostPort {
    /// Its protocol.
    pub protocol: Protocol,
    /// The port on every local address of the node.
    pub host_port: u16,
    /// The container's address and port; its family is the rules' (iptables or ip6tables).
    pub container: SocketAddr,
    /// The prefix length of the container's network (hairpin traffic comes from it).
    pub container_prefix: u8,
}

/// `CNI-DN-<hash>` of one container, 28 characters like the plugin's (which takes SHA-512
/// in hex; any stable hash names the chain as well).
pub fn dnat_chain(network: &str, container_id: &str) -> String {
    let hash = hash_name(&[network, container_id], 21).to_lowercase();
    format!("CNI-DN-{hash}")
}

impl HostPort {
    /// The family of its container's address.
    pub fn family(&self) -> Family {
        Family::of(self.container.ip())
    }
}

/// The payload for `iptables-restore --noflush` (or `ip6tables-restore`: every one of `ports`
/// is of one family): the shared chains and the container's chain.
pub fn ruleset(network: &str, container_id: &str, ports: &[HostPort]) -> String {
    debug_assert!(ports.windows(2).all(|w| w[0].family() == w[1].family()));
    let dn = dnat_chain(network, container_id);
    let mark = format!("{MARK:#x}");
    let mut out = String::from("*nat\n");
    for chain in [
        "CNI-HOSTPORT-SETMARK",
        "CNI-HOSTPORT-MASQ",
        "CNI-HOSTPORT-DNAT",
        dn.as_str(),
    ] {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    let _ = writeln!(
        out,
        "-A CNI-HOSTPORT-SETMARK -m comment --comment \"CNI portfwd masquerade mark\" \
         -j MARK --set-xmark {mark}/{mark}"
    );
    let _ = writeln!(
        out,
        "-A CNI-HOSTPORT-MASQ -m mark --mark {mark}/{mark} -j MASQUERADE"
    );
    // Prepended, "otherwise it is stomped on by the masquerading rules" of bridge plugins.
    out.push_str(
        "-I POSTROUTING -m comment --comment \"CNI portfwd requiring masquerade\" \
         -j CNI-HOSTPORT-MASQ\n",
    );
    for hook in ["PREROUTING", "OUTPUT"] {
        let _ = writeln!(
            out,
            "-A {hook} -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT"
        );
    }
    let comment = format!("dnat name: \\\"{network}\\\" id: \\\"{container_id}\\\"");
    for protocol in Protocol::BOTH {
        let dports: Vec<String> = ports
            .iter()
            .filter(|p| p.protocol == protocol)
            .map(|p| p.host_port.to_string())
            .collect();
        if dports.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "-I CNI-HOSTPORT-DNAT -m comment --comment \"{comment}\" -m multiport -p {} \
             --destination-ports {} -j {dn}",
            protocol.name(),
            dports.join(",")
        );
    }
    for port in ports {
        let base = format!(
            "-A {dn} -p {} --dport {}",
            port.protocol.name(),
            port.host_port
        );
        let subnet = format!("{}/{}", port.container.ip(), port.container_prefix);
        // The mark rules come first: hairpin (the container's own network), then localhost
        // (IPv4 only, as the plugin's `fillDnatRules` writes it).
        let _ = writeln!(out, "{base} -s {subnet} -j CNI-HOSTPORT-SETMARK");
        if port.family() == Family::V4 {
            let _ = writeln!(out, "{base} -s 127.0.0.1 -j CNI-HOSTPORT-SETMARK");
        }
        let _ = writeln!(out, "{base} -j DNAT --to-destination {}", port.container);
    }
    out.push_str("COMMIT\n");
    out
}

#[cfg(test)]
mod tests {
    use super::super::{install_host_ports, restore, standard_host_ports, standard_host_ports6};
    use super::*;
    use crate::netns::Netns;

    /// The payload loads and the kernel holds the plugin's layout.
    #[test]
    #[cfg_attr(masq_unprivileged, ignore = "needs root")]
    fn the_kernel_holds_the_portmap_layout() {
        crate::require(&["iptables-nft-restore"]);
        let ns = Netns::new("portmap").unwrap();
        let payload = ruleset("cbr0", "abc", &standard_host_ports());
        restore(&ns, "nft", &payload).unwrap();
        let save = ns.exec("iptables-nft-save", &["-t", "nat"]).unwrap();
        let dn = dnat_chain("cbr0", "abc");
        assert_eq!(dn.len(), 28);
        let rules = |chain: &str| {
            let prefix = format!("-A {chain} ");
            save.lines().filter(|l| l.starts_with(&prefix)).count()
        };
        assert_eq!(rules(&dn), 6, "3 per protocol:\n{save}");
        assert_eq!(rules("CNI-HOSTPORT-DNAT"), 2, "{save}");
        assert!(save.contains("id: \\\"abc\\\""), "{save}");
        assert!(save.contains("-A POSTROUTING -m comment --comment \"CNI portfwd requiring masquerade\" -j CNI-HOSTPORT-MASQ"));
        assert!(save.contains("-A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE"));
        assert!(save.contains("-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT"));
    }

    /// The IPv6 payload loads through `ip6tables-nft-restore`: the same chains, the hairpin
    /// rule from the container's /64, no localhost rule, a bracketed DNAT target.
    #[test]
    #[cfg_attr(masq_unprivileged, ignore = "needs root")]
    fn the_kernel_holds_the_ipv6_portmap_layout() {
        crate::require(&["ip6tables-nft-restore"]);
        let ns = Netns::new("portmap6").unwrap();
        install_host_ports(&ns, "nft", &standard_host_ports6()).unwrap();
        let save = ns.exec("ip6tables-nft-save", &["-t", "nat"]).unwrap();
        let dn = dnat_chain("cbr0", "0123456789abcdef-pod");
        let rules: Vec<&str> = save
            .lines()
            .filter(|l| l.starts_with(&format!("-A {dn} ")))
            .collect();
        assert_eq!(rules.len(), 4, "2 per protocol:\n{save}");
        assert!(
            !save.contains("127.0.0.1") && !save.contains("::1"),
            "{save}"
        );
        assert!(save.contains("-s fd00:10:244:1::/64"), "{save}");
        let dnat = format!("--to-destination [{}]:8080", crate::addr6::POD);
        assert!(save.contains(&dnat), "{save}");
        assert!(save.contains("-A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE"));
        let v4 = ns.exec("iptables-nft-save", &["-t", "nat"]).unwrap();
        assert!(!v4.contains("CNI-"), "nothing in the IPv4 tables:\n{v4}");
    }
}
