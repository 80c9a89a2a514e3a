//! The one transaction that turns what is installed into what the model wants.
//!
//! Sets are edited element by element, so a config change never empties a set; the chain is
//! flushed and refilled only when its rules differ. Everything goes into one batch, which the
//! kernel commits atomically: packets see the old ruleset or the new one, nothing in between.
//! When only set elements differ (a config change), the change is kept as plain element edits,
//! which `netlink` sends without `nft` (see there why); [`Change::into_batch`] is the same
//! transaction for `nft`.

use ipnet::IpNet;
use nftables::batch::Batch;
use nftables::schema::{FlushObject, NfCmd, NfListObject};

use super::json;
use super::live::{Elem, Shape};
use super::model::{Ruleset, CHAIN, MARK_CHAIN};
use super::netlink::SetEdit;

/// One transaction.
#[derive(Debug)]
pub enum Change {
    /// Table, chains and set declarations are as wanted: only these elements change.
    Elements(Vec<SetEdit>),
    /// Anything else, as the batch for `nft -j -f -`.
    Batch(Batch<'static>),
}

impl Change {
    /// The transaction as a batch for `nft -j -f -`.
    pub fn into_batch(self) -> Batch<'static> {
        match self {
            Change::Batch(batch) => batch,
            Change::Elements(edits) => {
                let mut batch = Batch::new();
                batch.add(NfListObject::Table(json::table()));
                for edit in edits {
                    let prefixes =
                        |nets: &[IpNet]| nets.iter().map(|n| json::element(*n)).collect();
                    if !edit.delete.is_empty() {
                        let stale = json::elements(&edit.set, prefixes(&edit.delete));
                        batch.delete(NfListObject::Element(stale));
                    }
                    if !edit.add.is_empty() {
                        let missing = json::elements(&edit.set, prefixes(&edit.add));
                        batch.add(NfListObject::Element(missing));
                    }
                }
                batch
            }
        }
    }
}

/// The transaction that makes `installed` (None: no table) equal to `want`, the shape of
/// `ruleset`, or None when it already is.
pub fn plan(ruleset: &Ruleset, want: &Shape, installed: Option<&Shape>) -> Option<Change> {
    if installed == Some(want) {
        return None;
    }
    if let Some(edits) = installed.and_then(|have| element_edits(want, have)) {
        return Some(Change::Elements(edits));
    }
    Some(Change::Batch(batch(ruleset, want, installed)))
}

/// The edits that turn `have` into `want` when nothing but the prefixes in its sets differ.
fn element_edits(want: &Shape, have: &Shape) -> Option<Vec<SetEdit>> {
    if want.chains != have.chains || want.sets.len() != have.sets.len() {
        return None;
    }
    let prefix = |elem: &Elem| match elem {
        Elem::Net(net) => Some(*net),
        Elem::Other(_) => None,
    };
    let mut edits = Vec::new();
    for (name, wanted) in &want.sets {
        let current = have.sets.get(name)?;
        if current.set_type != wanted.set_type || current.flags != wanted.flags {
            return None;
        }
        let delete = current
            .elements
            .difference(&wanted.elements)
            .map(prefix)
            .collect::<Option<Vec<_>>>()?;
        let add = wanted
            .elements
            .difference(&current.elements)
            .map(prefix)
            .collect::<Option<Vec<_>>>()?;
        if !delete.is_empty() || !add.is_empty() {
            edits.push(SetEdit {
                set: name.clone(),
                delete,
                add,
            });
        }
    }
    Some(edits)
}

/// The whole batch: table, chains and sets as needed, then elements and rules.
fn batch(ruleset: &Ruleset, want: &Shape, installed: Option<&Shape>) -> Batch<'static> {
    let empty = Shape::default();
    let have = installed.unwrap_or(&empty);
    let mut batch = Batch::new();
    // `add table` creates it when missing and is a no-op otherwise: the table is never flushed,
    // so a restarted agent adopts what it finds.
    batch.add(NfListObject::Table(json::table()));

    // Sets to remove: not in the model (a feature turned off), of the wrong kind (someone
    // recreated it), or holding elements masq never writes (a range) that are simpler to
    // replace with the set than to delete one by one. Rules may reference them, so the chains
    // go first.
    let doomed_sets: Vec<&String> = have
        .sets
        .iter()
        .filter(|(name, set)| match want.sets.get(*name) {
            None => true,
            Some(wanted) => {
                wanted.set_type != set.set_type
                    || wanted.flags != set.flags
                    || set.elements.iter().any(|e| matches!(e, Elem::Other(_)))
            }
        })
        .map(|(name, _)| name)
        .collect();
    // masq's chains: the postrouting one always, the prerouting one with egress routing. Any
    // other chain in the table (someone added it, or egress routing was turned off) goes.
    let mut owned = vec![(CHAIN, json::base_chain(), &ruleset.rules)];
    if !ruleset.mark_rules.is_empty() {
        owned.push((MARK_CHAIN, json::mark_chain(), &ruleset.mark_rules));
    }
    let foreign_chains: Vec<&String> = have
        .chains
        .keys()
        .filter(|c| !want.chains.contains_key(*c))
        .collect();
    for name in &foreign_chains {
        flush_chain(&mut batch, name);
    }
    let mut refill = Vec::new();
    for (name, declaration, rules) in owned {
        let want_chain = &want.chains[name];
        let chain = have.chains.get(name);
        let chain_base_ok = chain.is_some_and(|c| c.base == want_chain.base);
        let rewrite_rules = !chain_base_ok
            || chain.is_some_and(|c| c.rules != want_chain.rules)
            || !doomed_sets.is_empty();
        if chain.is_some() && !chain_base_ok {
            // A chain's hook cannot be changed in place.
            flush_chain(&mut batch, name);
            batch.delete(NfListObject::Chain(json::chain_ref(name)));
        } else if chain.is_some() && rewrite_rules {
            flush_chain(&mut batch, name);
        }
        if !chain_base_ok {
            batch.add(NfListObject::Chain(declaration));
        }
        if rewrite_rules {
            refill.push((name, rules));
        }
    }
    for name in &foreign_chains {
        batch.delete(NfListObject::Chain(json::chain_ref(name)));
    }
    for name in &doomed_sets {
        batch.delete(NfListObject::Set(Box::new(json::set_ref(name))));
    }

    for spec in &ruleset.sets {
        let current = have
            .sets
            .get(&spec.name)
            .filter(|_| !doomed_sets.contains(&&spec.name));
        let Some(current) = current else {
            batch.add(NfListObject::Set(Box::new(json::set(spec))));
            continue;
        };
        let wanted = &want.sets[&spec.name].elements;
        // Deletions before additions: an interval set refuses an element that overlaps one
        // still present (10.0.0.0/8 replaced by 10.0.0.0/9). Inside one batch the order is
        // invisible to packets.
        let stale: Vec<_> = current
            .elements
            .difference(wanted)
            .filter_map(element_expression)
            .collect();
        if !stale.is_empty() {
            batch.delete(NfListObject::Element(json::elements(&spec.name, stale)));
        }
        let missing: Vec<_> = wanted
            .difference(&current.elements)
            .filter_map(element_expression)
            .collect();
        if !missing.is_empty() {
            batch.add(NfListObject::Element(json::elements(&spec.name, missing)));
        }
    }

    for (chain, rules) in refill {
        for spec in rules {
            batch.add(NfListObject::Rule(json::rule(chain, spec)));
        }
    }
    batch
}

fn flush_chain(batch: &mut Batch<'static>, name: &str) {
    batch.add_cmd(NfCmd::Flush(FlushObject::Chain(json::chain_ref(name))));
}

/// Only prefixes: a set holding anything else is replaced whole, not edited.
fn element_expression(elem: &Elem) -> Option<nftables::expr::Expression<'static>> {
    match elem {
        Elem::Net(net) => Some(json::element(*net)),
        Elem::Other(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::nft::live::ChainShape;
    use crate::nft::reason;
    use crate::{Desired, NodeSettings};

    fn ruleset(cidrs: &[&str]) -> Ruleset {
        ruleset_on(cidrs, NodeSettings::default())
    }

    /// A node whose main-table default route is eth0: egress routing on.
    fn with_egress(cidrs: &[&str]) -> Ruleset {
        let node = NodeSettings {
            interfaces: vec![crate::Interface {
                name: "eth0".into(),
                index: 2,
                addrs: Vec::new(),
            }],
            uplinks: vec![crate::Uplink::eni()],
            ..NodeSettings::default()
        };
        ruleset_on(cidrs, node)
    }

    fn ruleset_on(cidrs: &[&str], node: NodeSettings) -> Ruleset {
        Ruleset::build(&Desired {
            config: masq_config::Config {
                non_masquerade_cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
                ..masq_config::Config::default()
            },
            node,
        })
    }

    fn plan(ruleset: &Ruleset, installed: Option<&Shape>) -> Option<Change> {
        super::plan(ruleset, &Shape::expected(ruleset), installed)
    }

    /// The batch as a list of (command, object kind) pairs.
    fn commands(change: Change) -> Vec<(String, String)> {
        let json = serde_json::to_value(change.into_batch().to_nftables()).unwrap();
        json["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|cmd| {
                let (verb, object) = cmd.as_object().unwrap().iter().next().unwrap();
                let kind = object.as_object().unwrap().keys().next().unwrap();
                (verb.clone(), kind.clone())
            })
            .collect()
    }

    fn pair(verb: &str, kind: &str) -> (String, String) {
        (verb.to_string(), kind.to_string())
    }

    #[test]
    fn nothing_to_do_when_installed_matches() {
        let rules = ruleset(&["10.0.0.0/8"]);
        assert!(plan(&rules, Some(&Shape::expected(&rules))).is_none());
    }

    #[test]
    fn an_empty_kernel_gets_table_chain_sets_then_rules() {
        let rules = ruleset(&["10.0.0.0/8"]);
        let cmds = commands(plan(&rules, None).unwrap());
        let mut expected = vec![pair("add", "table"), pair("add", "chain")];
        expected.extend(rules.sets.iter().map(|_| pair("add", "set")));
        expected.extend(rules.rules.iter().map(|_| pair("add", "rule")));
        assert_eq!(cmds, expected);
    }

    #[test]
    fn a_cidr_change_only_edits_elements_deleting_first() {
        let installed = Shape::expected(&ruleset(&["10.0.0.0/8", "192.168.0.0/16"]));
        let change = plan(
            &ruleset(&["10.0.0.0/9", "192.168.0.0/16"]),
            Some(&installed),
        )
        .unwrap();
        let Change::Elements(edits) = &change else {
            panic!("not an element change: {change:?}");
        };
        assert_eq!(
            edits,
            &vec![SetEdit {
                set: "nonmasq-dst-v4".into(),
                delete: vec!["10.0.0.0/8".parse().unwrap()],
                add: vec!["10.0.0.0/9".parse().unwrap()],
            }]
        );
        let json: Value = serde_json::to_value(change.into_batch().to_nftables()).unwrap();
        let cmds = json["nftables"].as_array().unwrap();
        assert_eq!(cmds.len(), 3, "{json}");
        assert_eq!(cmds[1]["delete"]["element"]["elem"][0]["prefix"]["len"], 8);
        assert_eq!(cmds[2]["add"]["element"]["elem"][0]["prefix"]["len"], 9);
    }

    #[test]
    fn an_edited_chain_is_flushed_and_refilled_in_the_same_batch() {
        let rules = ruleset(&["10.0.0.0/8"]);
        let mut installed = Shape::expected(&rules);
        let chain = installed.chains.get_mut(CHAIN).unwrap();
        chain.rules.remove(0);
        installed.chains.insert(
            "intruder".into(),
            ChainShape {
                base: None,
                rules: Vec::new(),
            },
        );
        let cmds = commands(plan(&rules, Some(&installed)).unwrap());
        let mut expected = vec![
            pair("add", "table"),
            pair("flush", "chain"),
            pair("flush", "chain"),
            pair("delete", "chain"),
        ];
        expected.extend(rules.rules.iter().map(|_| pair("add", "rule")));
        assert_eq!(cmds, expected);
    }

    #[test]
    fn egress_routing_adds_its_chain_and_turning_it_off_removes_it() {
        let on = with_egress(&["10.0.0.0/8"]);
        let cmds = commands(plan(&on, None).unwrap());
        let chains = cmds.iter().filter(|c| **c == pair("add", "chain")).count();
        assert_eq!(chains, 2, "{cmds:?}");
        assert_eq!(
            cmds.iter().filter(|c| **c == pair("add", "rule")).count(),
            on.rules.len() + on.mark_rules.len()
        );

        let off = ruleset(&["10.0.0.0/8"]);
        let cmds = commands(plan(&off, Some(&Shape::expected(&on))).unwrap());
        assert_eq!(
            cmds,
            vec![
                pair("add", "table"),
                pair("flush", "chain"),
                pair("delete", "chain")
            ],
            "only the prerouting chain goes; postrouting is untouched"
        );
    }

    #[test]
    fn the_mark_chain_applies_the_postrouting_exemptions_to_new_connections() {
        let on = with_egress(&["10.0.0.0/8"]);
        let comments: Vec<&str> = on.mark_rules.iter().map(|r| r.comment).collect();
        let mut expected = vec![reason::EGRESS_RESTORE, reason::ESTABLISHED];
        expected.extend(
            on.rules
                .iter()
                .map(|r| r.comment)
                .filter(|c| *c != reason::MASQUERADE),
        );
        expected.push(reason::EGRESS_MARK);
        assert_eq!(comments, expected);
        assert_eq!(
            on.mark_rules.last().unwrap().verdict,
            crate::nft::Verdict::SetMark(crate::EgressRouting::DEFAULT_MARK)
        );
        assert!(ruleset(&["10.0.0.0/8"]).mark_rules.is_empty());
    }
}
