//! Egress routing on iptables: the `mangle` chain [`IPT_EGRESS_CHAIN`] that marks, before the
//! routing decision, the connections the nat chain will masquerade (see `docs/vpc-native.md`).
//!
//! Its rules, in the form `iptables-save` prints them:
//! 1. a packet of a connection marked earlier (a later packet or a reply) gets the mark back;
//! 2. anything but the first packet of a connection leaves the chain;
//! 3. the exemptions of the nat chain (sources, link-local, non-masquerade CIDRs) and local
//!    destinations (the nat chain's jump skips those) leave the chain; `masqueradeCIDRs`
//!    ranges are marked in the nat chain's order, after the local destinations;
//! 4. what is left, from a pod (each `--pod-cidr`, or any source), is marked, packet and
//!    connection.
//!
//! `PREROUTING` of `mangle` jumps to it once. The chain is masq's own (no upstream layout to
//! keep), so it is replaced whole in one `iptables-restore --noflush` commit like the nat chain.

use masq_decision::{Action, Exemption, FamilyPolicy, Pods};

use super::forced;
use crate::names::IPT_EGRESS_CHAIN;
use crate::Desired;

/// Comment of every rule of the chain and of its jump.
const COMMENT: &str = "masq: egress routing";

/// The rules of the egress chain for one family; empty without egress routing.
pub fn chain_rules(desired: &Desired, policy: &FamilyPolicy) -> Vec<String> {
    let node = &desired.node;
    let Some(routing) = node.active_egress_routing() else {
        return Vec::new();
    };
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
    let local = || rule(" -m addrtype --dst-type LOCAL", "RETURN");
    let ordered = forced::order(&policy.destinations);
    let mut pods = vec![String::new()];
    for exemption in policy.exemptions() {
        match exemption {
            Exemption::Sources(sources) => {
                for src in sources.as_written() {
                    rules.push(rule(&format!(" -s {src}"), "RETURN"));
                }
            }
            // As in the nat chain: only pod sources get the marking rules below.
            Exemption::NotAPod(Pods::Cidrs(cidrs)) => {
                pods = cidrs
                    .as_written()
                    .iter()
                    .map(|n| format!(" -s {n}"))
                    .collect();
            }
            Exemption::NotAPod(Pods::AllButTheNode) => {}
            // As in the nat chain, forced ranges and the exempt entries inside them first,
            // longest first (see `forced`); a forced range is marked and goes on, the mark
            // stays whatever RETURN follows. Local destinations must leave before: the nat
            // chain never sees them.
            Exemption::LinkLocal(link_local) => {
                if !ordered.first.is_empty() {
                    rules.push(local());
                }
                for (dst, action) in &ordered.first {
                    match action {
                        Action::Keep => rules.push(rule(&format!(" -d {dst}"), "RETURN")),
                        Action::Masquerade => {
                            for source in &pods {
                                let matches = format!("{source} -d {dst}");
                                rules.push(rule(&matches, &format!("MARK --set-xmark {mark}")));
                                let target = format!("CONNMARK --set-xmark {mark}");
                                rules.push(rule(&matches, &target));
                            }
                        }
                    }
                }
                if link_local.exempt {
                    rules.push(rule(&format!(" -d {}", link_local.range), "RETURN"));
                }
            }
            Exemption::Destinations(_) => {
                for dst in &ordered.rest {
                    rules.push(rule(&format!(" -d {dst}"), "RETURN"));
                }
            }
            // The nat chain's jump skips local destinations; here a rule does.
            Exemption::Local(_) => {
                if ordered.first.is_empty() {
                    rules.push(local());
                }
            }
        }
    }
    for source in pods {
        rules.push(rule(&source, &format!("MARK --set-xmark {mark}")));
        rules.push(rule(&source, &format!("CONNMARK --set-xmark {mark}")));
    }
    rules
}

/// The `mangle PREROUTING` jump to the chain, as `iptables-save` prints it.
pub fn jump_rule() -> String {
    format!("-A PREROUTING -m comment --comment \"{COMMENT}\" -j {IPT_EGRESS_CHAIN}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Interface, NodeSettings};

    fn desired(pod_cidrs: &[&str]) -> Desired {
        Desired {
            config: masq_config::Config {
                non_masquerade_cidrs: vec!["10.0.0.0/8".parse().unwrap()],
                ..masq_config::Config::default()
            },
            node: NodeSettings {
                pod_cidrs: pod_cidrs.iter().map(|c| c.parse().unwrap()).collect(),
                interfaces: vec![Interface {
                    name: "eth0".into(),
                    index: 2,
                    addrs: Vec::new(),
                }],
                uplinks: vec![crate::Uplink::eni()],
                ..NodeSettings::default()
            },
        }
    }

    #[test]
    fn marks_after_the_same_exemptions_as_the_nat_chain() {
        let d = desired(&["10.0.1.0/24"]);
        let rules = chain_rules(&d, &d.policy().v4);
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
        assert!(chain_rules(&d, &d.policy().v6)
            .iter()
            .all(|r| !r.contains(" -s ")));
    }

    #[test]
    fn nothing_without_an_egress_interface() {
        let mut d = desired(&[]);
        d.node.interfaces.clear();
        assert!(chain_rules(&d, &d.policy().v4).is_empty());
    }
}
