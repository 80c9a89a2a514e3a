//! masq's `ip rule`s: `fwmark MARK/MARK lookup TABLE priority PRIORITY protocol 109`, one per
//! address family, that send the connections masq marked for masquerading through the egress
//! interface (docs/vpc-native.md). The netfilter datapaths mark connections, the eBPF datapath the
//! replies of the flows it steered (so they pass strict reverse-path filtering); this module
//! owns the rules for both, and finds the uplinks the eBPF datapath steers from.
//!
//! The rules are managed with `ip -j rule` in the caller's network namespace. masq's rules
//! carry routing protocol [`RULE_PROTOCOL`]: that is how a restarted agent adopts them, how
//! stale ones (another mark or priority) are found, and how `masq cleanup` removes them
//! without the config. A rule with masq's exact selector but no protocol (a kernel before
//! 4.17 drops the attribute) counts as masq's too, so it is never duplicated.
//!
//! Ordering makes every change safe: [`IpRules::add_missing`] runs before the datapath starts
//! marking, [`IpRules::remove_stale`] after it stopped; a rule without marked packets changes
//! nothing.

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;

use crate::names::RULE_PROTOCOL;
use crate::{Error, NodeSettings};

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
    let mut text = format!("\n# egress routing: masqueraded traffic leaves through {interface}\n");
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

/// What a rule sync did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleChange {
    /// A rule was added or deleted.
    pub changed: bool,
}

/// The `ip` program that edits rules in the caller's namespace.
#[derive(Clone, Debug)]
pub struct IpRules {
    program: String,
}

impl Default for IpRules {
    fn default() -> Self {
        IpRules::new()
    }
}

impl IpRules {
    /// Runs `ip` from `PATH`.
    pub fn new() -> IpRules {
        IpRules {
            program: "ip".into(),
        }
    }

    /// Interfaces holding an IPv4 unicast default route in any routing table (and, with
    /// `ipv6`, an IPv6 one): a VPC-native node's uplinks (the primary in `main`, each ENI in its
    /// own table).
    pub fn default_route_interfaces(&self, ipv6: bool) -> Result<BTreeSet<String>, Error> {
        let mut uplinks = self.default_routes_of("-4")?;
        if ipv6 {
            uplinks.extend(self.default_routes_of("-6")?);
        }
        Ok(uplinks)
    }

    fn default_routes_of(&self, family: &str) -> Result<BTreeSet<String>, Error> {
        let text = self.run(&[
            family, "-j", "route", "show", "table", "all", "type", "unicast",
        ])?;
        let routes: Value = serde_json::from_str(text.trim()).map_err(|e| Error::Command {
            program: self.program.clone(),
            message: format!("reading `ip {family} -j route show table all`: {e}"),
        })?;
        Ok(routes
            .as_array()
            .into_iter()
            .flatten()
            .filter(|route| route["dst"] == "default")
            .filter_map(|route| route["dev"].as_str().map(str::to_string))
            .collect())
    }

    /// masq's installed rules of one family (by protocol, or by an exact selector of `wanted`).
    fn installed(&self, ipv6: bool, wanted: &[PolicyRule]) -> Result<Vec<PolicyRule>, Error> {
        let family = if ipv6 { "-6" } else { "-4" };
        let text = self.run(&[family, "-j", "rule", "show"])?;
        let rules: Value = serde_json::from_str(text.trim()).map_err(|e| Error::Command {
            program: self.program.clone(),
            message: format!("reading `ip {family} -j rule show`: {e}"),
        })?;
        Ok(rules
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|rule| parse_rule(rule, ipv6, wanted))
            .collect())
    }

    /// Adds the rules of `wanted` that are missing. Returns whether something was added.
    pub fn add_missing(&self, wanted: &[PolicyRule]) -> Result<RuleChange, Error> {
        let mut change = RuleChange::default();
        for ipv6 in [false, true] {
            let of_family: Vec<PolicyRule> =
                wanted.iter().copied().filter(|r| r.ipv6 == ipv6).collect();
            if of_family.is_empty() {
                continue;
            }
            let installed = self.installed(ipv6, &of_family)?;
            for rule in of_family.iter().filter(|r| !installed.contains(r)) {
                self.edit("add", rule)?;
                tracing::info!(rule = %rule.text(), "egress routing rule added");
                change.changed = true;
            }
        }
        Ok(change)
    }

    /// Deletes masq's rules that are not in `wanted` (all of them when it is empty).
    pub fn remove_stale(&self, wanted: &[PolicyRule]) -> Result<RuleChange, Error> {
        let mut change = RuleChange::default();
        for ipv6 in [false, true] {
            let installed = match self.installed(ipv6, wanted) {
                Ok(installed) => installed,
                // Without `ip` masq cannot have added a rule.
                Err(Error::Unsupported(_)) if wanted.is_empty() => continue,
                // A kernel without IPv6 has no IPv6 rule to remove.
                Err(e) if ipv6 => {
                    tracing::debug!(error = %e, "ip -6 rule unreadable, nothing to remove");
                    continue;
                }
                Err(e) => return Err(e),
            };
            for rule in installed.iter().filter(|r| !wanted.contains(r)) {
                self.edit("del", rule)?;
                tracing::info!(rule = %rule.text(), "egress routing rule removed");
                change.changed = true;
            }
        }
        Ok(change)
    }

    /// Whether exactly `wanted` is installed: nothing missing, nothing stale.
    pub fn matches(&self, wanted: &[PolicyRule]) -> Result<bool, Error> {
        let mut installed = self.installed(false, wanted)?;
        if wanted.iter().any(|r| r.ipv6) {
            installed.extend(self.installed(true, wanted)?);
        }
        installed.sort();
        installed.dedup();
        let mut wanted = wanted.to_vec();
        wanted.sort();
        Ok(installed == wanted)
    }

    fn edit(&self, verb: &str, rule: &PolicyRule) -> Result<(), Error> {
        let family = if rule.ipv6 { "-6" } else { "-4" };
        let mut args: Vec<String> = vec![family.into(), "rule".into(), verb.into()];
        args.extend(rule.selector_args());
        if verb == "add" {
            args.extend(["protocol".into(), RULE_PROTOCOL.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run(&args).map(drop)
    }

    fn run(&self, args: &[&str]) -> Result<String, Error> {
        let output = Command::new(&self.program)
            .args(args)
            .output()
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Error::Unsupported(format!(
                        "{} not found: install iproute2 (egress routing needs `ip rule`)",
                        self.program
                    ))
                } else {
                    Error::Kernel {
                        what: format!("running {}", self.program),
                        source: e,
                    }
                }
            })?;
        if !output.status.success() {
            return Err(Error::Command {
                program: self.program.clone(),
                message: format!(
                    "{}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

/// The secondary uplinks among `uplinks` (see [`IpRules::default_route_interfaces`]): what the
/// eBPF datapath steers from. Every uplink but the egress interface, also one the datapath's
/// `--interfaces` list (the egress interface wins: SPEC section 4), and nothing while egress
/// routing is off.
pub fn secondary_uplinks(node: &NodeSettings, uplinks: &BTreeSet<String>) -> Vec<String> {
    if node.active_egress_routing().is_none() {
        return Vec::new();
    }
    uplinks
        .iter()
        .filter(|name| Some(name.as_str()) != node.egress_interface())
        .cloned()
        .collect()
}

/// One rule of `ip -j rule show` as masq's, or None when it is someone else's.
fn parse_rule(rule: &Value, ipv6: bool, wanted: &[PolicyRule]) -> Option<PolicyRule> {
    let number = |key: &str| -> Option<u32> {
        match rule.get(key)? {
            Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
            Value::String(s) => match s.strip_prefix("0x") {
                Some(hex) => u32::from_str_radix(hex, 16).ok(),
                None => s.parse().ok(),
            },
            _ => None,
        }
    };
    let table = match rule.get("table")?.as_str()? {
        "main" => 254,
        "default" => 253,
        "local" => 255,
        other => other.parse().ok()?,
    };
    let mark = number("fwmark")?;
    let parsed = PolicyRule {
        ipv6,
        priority: number("priority")?,
        mark,
        table,
    };
    // `ip` omits the mask when it is all ones.
    let mask = number("fwmask").unwrap_or(u32::MAX);
    let ours_by_protocol = number("protocol") == Some(u32::from(RULE_PROTOCOL));
    let plain = rule.as_object()?.keys().all(|k| {
        ["priority", "src", "fwmark", "fwmask", "table", "protocol"].contains(&k.as_str())
    });
    let ours_by_selector = plain && mask == mark && wanted.contains(&parsed);
    (ours_by_protocol || ours_by_selector).then_some(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EgressRouting, Interface};

    #[test]
    fn recognises_only_masqs_rules() {
        let shown: Value = serde_json::from_str(
            r#"[{"priority":0,"src":"all","table":"local"},
                {"priority":1000,"src":"all","fwmark":"0x1000","fwmask":"0x1000","table":"main","protocol":"109"},
                {"priority":1001,"src":"all","fwmark":"0x80","fwmask":"0x80","table":"main"},
                {"priority":1000,"src":"all","fwmark":"0x1000","fwmask":"0x1000","table":"7"},
                {"priority":1536,"src":"10.0.1.20","table":"2"}]"#,
        )
        .unwrap();
        let wanted = [PolicyRule {
            ipv6: false,
            priority: 1000,
            mark: 0x1000,
            table: 7,
        }];
        let found: Vec<PolicyRule> = shown
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| parse_rule(r, false, &wanted))
            .collect();
        assert_eq!(
            found,
            vec![
                PolicyRule {
                    ipv6: false,
                    priority: 1000,
                    mark: 0x1000,
                    table: 254
                },
                wanted[0],
            ]
        );
    }

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
        let uplinks: BTreeSet<String> = ["eth0", "eth1", "eth2"].map(String::from).into();
        let mut node = NodeSettings::default();
        assert!(
            secondary_uplinks(&node, &uplinks).is_empty(),
            "no egress interface"
        );
        node.interfaces.push(Interface {
            name: "eth0".into(),
            index: 2,
            addrs: Vec::new(),
        });
        assert_eq!(secondary_uplinks(&node, &uplinks), ["eth1", "eth2"]);
        // --egress-interface wins over the list: eth0 is listed, and steered.
        node.egress_interface = Some("eth2".into());
        assert_eq!(secondary_uplinks(&node, &uplinks), ["eth0", "eth1"]);
        node.egress_routing = None;
        assert!(
            secondary_uplinks(&node, &uplinks).is_empty(),
            "--egress-mark 0"
        );
    }
}
