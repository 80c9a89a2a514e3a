//! Egress routing on iptables: the `mangle` chain [`IPT_EGRESS_CHAIN`] that marks, before the
//! routing decision, the connections the nat chain will masquerade (see `docs/vpc-native.md`).
//!
//! Its rules, in the form `iptables-save` prints them:
//! 1. a packet of a connection marked earlier (a later packet or a reply) gets the mark back;
//! 2. anything but the first packet of a connection leaves the chain;
//! 3. the exemptions of the nat chain (sources, link-local, non-masquerade CIDRs) and local
//!    destinations (the nat chain's jump skips those) leave the chain;
//! 4. what is left, from a pod (each `--pod-cidr`, or any source), is marked, packet and
//!    connection.
//!
//! `PREROUTING` of `mangle` jumps to it once. The chain is masq's own (no upstream layout to
//! keep), so it is replaced whole in one `iptables-restore --noflush` commit like the nat chain.

use ipnet::IpNet;

use super::render::Family;
use crate::names::IPT_EGRESS_CHAIN;
use crate::Desired;

/// Comment of every rule of the chain and of its jump.
const COMMENT: &str = "masq: egress routing";

/// The rules of the egress chain for one family; empty without egress routing.
pub fn chain_rules(desired: &Desired, family: Family) -> Vec<String> {
    let node = &desired.node;
    let Some(routing) = node.active_egress_routing() else {
        return Vec::new();
    };
    let config = &desired.config;
    let chain = IPT_EGRESS_CHAIN;
    let mark = format!("{:#x}/{:#x}", routing.mark, routing.mark);
    let rule = |matches: &str, target: &str| {
        format!("-A {chain}{matches} -m comment --comment \"{COMMENT}\" -j {target}")
    };
    let mut rules = vec![
        rule(
            &format!(" -m connmark --mark {mark}"),
            &format!("MARK --set-xmark {mark}"),
        ),
        rule(" -m conntrack ! --ctstate NEW", "RETURN"),
    ];
    for src in config
        .non_masquerade_src_cidrs
        .iter()
        .filter(|n| holds(family, n))
    {
        rules.push(rule(&format!(" -s {src}"), "RETURN"));
    }
    let masq_link_local = match family {
        Family::V4 => config.masq_link_local,
        Family::V6 => config.masq_link_local_ipv6,
    };
    let link_local: IpNet = match family {
        Family::V4 => "169.254.0.0/16".parse().expect("valid literal"),
        Family::V6 => "fe80::/10".parse().expect("valid literal"),
    };
    let destinations = (!masq_link_local)
        .then_some(link_local)
        .into_iter()
        .chain(config.non_masquerade_cidrs.iter().copied())
        .chain(node.native_routing_cidr)
        .filter(|n| holds(family, n));
    for dst in destinations {
        rules.push(rule(&format!(" -d {dst}"), "RETURN"));
    }
    rules.push(rule(" -m addrtype --dst-type LOCAL", "RETURN"));
    let sources: Vec<String> = if node.pod_cidrs.is_empty() {
        vec![String::new()]
    } else {
        node.pod_cidrs
            .iter()
            .filter(|n| holds(family, n))
            .map(|n| format!(" -s {n}"))
            .collect()
    };
    for source in sources {
        rules.push(rule(&source, &format!("MARK --set-xmark {mark}")));
        rules.push(rule(&source, &format!("CONNMARK --set-xmark {mark}")));
    }
    rules
}

/// The `mangle PREROUTING` jump to the chain, as `iptables-save` prints it.
pub fn jump_rule() -> String {
    format!("-A PREROUTING -m comment --comment \"{COMMENT}\" -j {IPT_EGRESS_CHAIN}")
}

/// The `iptables-restore --noflush` payload that replaces the chain with `rules` and fixes the
/// jump with `extra` lines, in one commit.
pub fn restore_payload(rules: &[String], extra: &[String]) -> String {
    let mut text = format!("*mangle\n:{IPT_EGRESS_CHAIN} - [0:0]\n");
    for line in rules.iter().chain(extra) {
        text.push_str(line);
        text.push('\n');
    }
    text.push_str("COMMIT\n");
    text
}

/// The payload that removes the chain and the given jumps to it.
pub fn removal_payload(jumps: &[String], chain_exists: bool) -> String {
    let mut text = String::from("*mangle\n");
    for jump in jumps {
        text.push_str(&jump.replacen("-A ", "-D ", 1));
        text.push('\n');
    }
    if chain_exists {
        text.push_str(&format!(
            ":{IPT_EGRESS_CHAIN} - [0:0]\n-X {IPT_EGRESS_CHAIN}\n"
        ));
    }
    text.push_str("COMMIT\n");
    text
}

fn holds(family: Family, net: &IpNet) -> bool {
    matches!(
        (family, net),
        (Family::V4, IpNet::V4(_)) | (Family::V6, IpNet::V6(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Interface, NodeSettings};

    fn desired(pod_cidrs: &[&str]) -> Desired {
        Desired {
            config: masq_config::Config {
                non_masquerade_cidrs: vec!["10.0.0.0/8".parse().unwrap()],
                masq_link_local: false,
                masq_link_local_ipv6: false,
                resync_interval: std::time::Duration::from_secs(60),
                cidr_limit: 16384,
                non_masquerade_src_cidrs: Vec::new(),
            },
            node: NodeSettings {
                pod_cidrs: pod_cidrs.iter().map(|c| c.parse().unwrap()).collect(),
                interfaces: vec![Interface {
                    name: "eth0".into(),
                    index: 2,
                    addrs: Vec::new(),
                }],
                ..NodeSettings::default()
            },
        }
    }

    #[test]
    fn marks_after_the_same_exemptions_as_the_nat_chain() {
        let rules = chain_rules(&desired(&["10.0.1.0/24"]), Family::V4);
        let c = "-m comment --comment \"masq: egress routing\"";
        assert_eq!(
            rules,
            vec![
                format!("-A IP-MASQ-EGRESS -m connmark --mark 0x1000/0x1000 {c} -j MARK --set-xmark 0x1000/0x1000"),
                format!("-A IP-MASQ-EGRESS -m conntrack ! --ctstate NEW {c} -j RETURN"),
                format!("-A IP-MASQ-EGRESS -d 169.254.0.0/16 {c} -j RETURN"),
                format!("-A IP-MASQ-EGRESS -d 10.0.0.0/8 {c} -j RETURN"),
                format!("-A IP-MASQ-EGRESS -m addrtype --dst-type LOCAL {c} -j RETURN"),
                format!("-A IP-MASQ-EGRESS -s 10.0.1.0/24 {c} -j MARK --set-xmark 0x1000/0x1000"),
                format!("-A IP-MASQ-EGRESS -s 10.0.1.0/24 {c} -j CONNMARK --set-xmark 0x1000/0x1000"),
            ]
        );
        assert!(chain_rules(&desired(&["10.0.1.0/24"]), Family::V6)
            .iter()
            .all(|r| !r.contains(" -s ")));
    }

    #[test]
    fn nothing_without_an_egress_interface() {
        let mut d = desired(&[]);
        d.node.interfaces.clear();
        assert!(chain_rules(&d, Family::V4).is_empty());
    }
}
