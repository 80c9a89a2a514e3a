//! masq's `ip rule`s: `fwmark MARK/MARK lookup TABLE priority PRIORITY protocol 109`, one per
//! address family, that send the connections masq marked for masquerading through the egress
//! interface (docs/vpc-native.md). The netfilter datapaths mark connections, the eBPF datapath the
//! replies of the flows it steered (so they pass strict reverse-path filtering). The rules are
//! the same whichever datapath runs, so no datapath manages them: [`Routed`] wraps the one that
//! runs and keeps the rules around its syncs, and [`IpRules`] reads and edits them over netlink.
//!
//! masq's rules carry routing protocol [`RULE_PROTOCOL`]: that is how a restarted agent adopts
//! them, how stale ones (another mark or priority) are found, and how `masq cleanup` removes
//! them without the config. A rule with masq's exact selector but no protocol (a kernel before
//! 4.17 drops the attribute) counts as masq's too, so it is never duplicated.
//!
//! Ordering makes every change safe: [`IpRules::add_missing`] runs before the datapath starts
//! marking, [`IpRules::remove_stale`] after it stopped; a rule without marked packets changes
//! nothing.

mod routed;
mod rules;

use crate::names::RULE_PROTOCOL;
use crate::NodeSettings;
pub use routed::Routed;
pub use rules::IpRules;

/// One policy-routing rule masq wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PolicyRule {
    /// `true` for `ip -6 rule`.
    pub ipv6: bool,
    /// `ip rule` priority.
    pub priority: u32,
    /// The fwmark bits (also the mask).
    pub mark: u32,
    /// The table looked up.
    pub table: u32,
}

impl PolicyRule {
    /// The arguments after `ip [-6] rule add|del`.
    fn selector_args(&self) -> Vec<String> {
        vec![
            "priority".into(),
            self.priority.to_string(),
            "fwmark".into(),
            format!("{:#x}/{:#x}", self.mark, self.mark),
            "lookup".into(),
            self.table.to_string(),
        ]
    }

    /// As `ip rule show` prints it, for logs and `masq render`.
    pub fn text(&self) -> String {
        let family = if self.ipv6 { "ip -6" } else { "ip" };
        format!(
            "{family} rule add {} protocol {RULE_PROTOCOL}",
            self.selector_args().join(" ")
        )
    }
}

/// The rules `node` wants: none unless egress routing is on and an egress interface is known;
/// IPv6 only with `--enable-ipv6`.
pub fn desired_rules(node: &NodeSettings) -> Vec<PolicyRule> {
    let Some(routing) = node.active_egress_routing() else {
        return Vec::new();
    };
    let families: &[bool] = if node.enable_ipv6 {
        &[false, true]
    } else {
        &[false]
    };
    families
        .iter()
        .map(|&ipv6| PolicyRule {
            ipv6,
            priority: routing.rule_priority,
            mark: routing.mark,
            table: routing.table,
        })
        .collect()
}

/// The rules as comment lines for `masq render` (empty without egress routing).
pub fn render_rules(node: &NodeSettings) -> String {
    let rules = desired_rules(node);
    if rules.is_empty() {
        return String::new();
    }
    let interface = node.egress_interface().unwrap_or_default();
    let mut text = format!(
        "\n# egress routing (on a node with a secondary uplink): masqueraded traffic leaves \
         through {interface}\n"
    );
    for rule in rules {
        text.push_str(&format!("# {}\n", rule.text()));
    }
    text
}

/// Why replies to masqueraded connections would be dropped on `interface`, if they would:
/// strict reverse-path filtering (`rp_filter` 1, the larger of `all` and the interface counts)
/// checks a reply's source with the pod's own policy route, which points at another interface,
/// unless `src_valid_mark` lets the restored mark take masq's rule. Reads `/proc/sys` of the
/// caller's namespace; `None` when the settings are fine or cannot be read.
pub fn reverse_path_warning(interface: &str) -> Option<String> {
    let read = |scope: &str, key: &str| -> Option<u8> {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{scope}/{key}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let rp_filter = read("all", "rp_filter")?.max(read(interface, "rp_filter")?);
    let valid_mark = read("all", "src_valid_mark")?.max(read(interface, "src_valid_mark")?);
    (rp_filter == 1 && valid_mark == 0).then(|| {
        format!(
            "strict rp_filter on {interface} drops replies to masqueraded pod traffic: set \
             net.ipv4.conf.{interface}.src_valid_mark=1 (or rp_filter=2, loose)"
        )
    })
}

/// The node's secondary uplinks ([`NodeSettings::uplinks`]), what the eBPF datapath steers
/// from: every uplink but the egress interface, also one in the datapath's `--interfaces` list
/// (the egress interface wins: README, "Datapaths"), and none while egress routing is off.
pub fn secondary_uplinks(node: &NodeSettings) -> Vec<String> {
    if node.active_egress_routing().is_none() {
        return Vec::new();
    }
    let mut names: Vec<String> = node
        .uplinks
        .iter()
        .map(|uplink| uplink.name.clone())
        .filter(|name| Some(name.as_str()) != node.egress_interface())
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EgressRouting, Interface, Uplink};

    #[test]
    fn rules_need_an_egress_interface_and_follow_the_families() {
        let mut node = NodeSettings::default();
        assert!(desired_rules(&node).is_empty(), "no egress interface known");
        node.interfaces.push(Interface {
            name: "eth0".into(),
            index: 2,
            addrs: Vec::new(),
        });
        node.enable_ipv6 = true;
        assert!(desired_rules(&node).is_empty(), "no secondary uplink");
        node.uplinks = vec![Uplink::eni()];
        let rules = desired_rules(&node);
        assert_eq!(rules.len(), 2);
        assert_eq!(
            rules[0].text(),
            "ip rule add priority 1000 fwmark 0x1000/0x1000 lookup 254 protocol 109"
        );
        assert!(rules[1].ipv6);
        node.egress_routing = None;
        assert!(desired_rules(&node).is_empty(), "--egress-mark 0");
        node.egress_routing = Some(EgressRouting {
            table: 100,
            ..EgressRouting::default()
        });
        assert_eq!(desired_rules(&node)[0].table, 100);
    }

    #[test]
    fn secondary_uplinks_are_the_other_default_route_interfaces() {
        let mut node = NodeSettings {
            // As the agent lists them: by interface index, not by name.
            uplinks: [("eth0", 254), ("eth2", 3), ("eth1", 2)]
                .map(|(name, table)| Uplink {
                    name: name.into(),
                    tables: vec![table],
                })
                .into(),
            ..NodeSettings::default()
        };
        assert!(secondary_uplinks(&node).is_empty(), "no egress interface");
        node.interfaces.push(Interface {
            name: "eth0".into(),
            index: 2,
            addrs: Vec::new(),
        });
        assert_eq!(secondary_uplinks(&node), ["eth1", "eth2"]);
        // --egress-interface wins over the list: eth0 is listed, and steered.
        node.egress_interface = Some("eth2".into());
        assert_eq!(secondary_uplinks(&node), ["eth0", "eth1"]);
        node.egress_routing = None;
        assert!(secondary_uplinks(&node).is_empty(), "--egress-mark 0");
    }
}
