//! What is installed, read back with `nft -j list table inet masq`, reduced to a [`Shape`] that
//! can be compared with the shape the model would produce. Handles, counter values and nft's
//! one-flag-as-a-string shorthand are left out of the comparison; everything else counts.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::Value;

use super::json;
use super::model::{
    NftFamily, RuleSpec, Ruleset, CHAIN, MARK_CHAIN, MARK_PRIORITY, SRCNAT_PRIORITY,
};

/// The comparable content of masq's table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Shape {
    /// Sets by name.
    pub sets: BTreeMap<String, SetShape>,
    /// Chains by name.
    pub chains: BTreeMap<String, ChainShape>,
}

/// One set: its declaration and elements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetShape {
    /// `ipv4_addr`, `ipv6_addr`, … (a concatenation as its JSON text).
    pub set_type: String,
    /// `interval`, … sorted.
    pub flags: BTreeSet<String>,
    /// The elements.
    pub elements: BTreeSet<Elem>,
}

/// A set element.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Elem {
    /// A prefix (a single address is a full-length prefix).
    Net(IpNet),
    /// Anything else (a range, an element with options), as its JSON text: never desired, so
    /// its presence is drift.
    Other(String),
}

/// One chain: its hook (for a base chain) and rules in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainShape {
    /// `(type, hook, priority, policy)` of a base chain.
    pub base: Option<(String, String, i64, String)>,
    /// Rules in evaluation order.
    pub rules: Vec<RuleShape>,
}

/// One rule, normalised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleShape {
    /// The statements as JSON, counters zeroed.
    pub expr: Value,
    /// The rule's comment.
    pub comment: Option<String>,
}

/// The packet and byte counts of one installed rule.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RuleCounter {
    /// The rule's comment: the decision step it implements (see `model::reason`).
    pub comment: Option<String>,
    /// Packets matched.
    pub packets: u64,
    /// Bytes matched.
    pub bytes: u64,
}

/// The installed table.
#[derive(Clone, Debug, Default)]
pub struct Live {
    /// What it contains.
    pub shape: Shape,
    /// Counters of the rules of the postrouting chain, in order.
    pub counters: Vec<RuleCounter>,
}

impl Shape {
    /// The shape the kernel holds once `ruleset` is installed.
    pub fn expected(ruleset: &Ruleset) -> Shape {
        let sets = ruleset
            .sets
            .iter()
            .map(|spec| {
                let set = SetShape {
                    set_type: spec.family.set_type().to_string(),
                    flags: BTreeSet::from(["interval".to_string()]),
                    elements: spec.elements.iter().copied().map(Elem::Net).collect(),
                };
                (spec.name.clone(), set)
            })
            .collect();
        let mut chains = BTreeMap::from([(
            CHAIN.to_string(),
            ChainShape {
                base: Some(base_chain()),
                rules: rule_shapes(&ruleset.rules),
            },
        )]);
        if !ruleset.mark_rules.is_empty() {
            chains.insert(
                MARK_CHAIN.to_string(),
                ChainShape {
                    base: Some(mark_chain()),
                    rules: rule_shapes(&ruleset.mark_rules),
                },
            );
        }
        Shape { sets, chains }
    }

    /// Set elements plus rules of all chains.
    pub fn entries(&self) -> usize {
        let elements: usize = self.sets.values().map(|s| s.elements.len()).sum();
        let rules: usize = self.chains.values().map(|c| c.rules.len()).sum();
        elements + rules
    }
}

/// How `nft` reports the postrouting base chain of the model.
pub fn base_chain() -> (String, String, i64, String) {
    (
        "nat".into(),
        "postrouting".into(),
        i64::from(SRCNAT_PRIORITY),
        "accept".into(),
    )
}

/// How `nft` reports the prerouting chain that marks connections for egress routing.
pub fn mark_chain() -> (String, String, i64, String) {
    (
        "filter".into(),
        "prerouting".into(),
        i64::from(MARK_PRIORITY),
        "accept".into(),
    )
}

fn rule_shapes(rules: &[RuleSpec]) -> Vec<RuleShape> {
    rules
        .iter()
        .map(|spec| RuleShape {
            expr: normalise(
                serde_json::to_value(json::statements(spec)).expect("statements serialize"),
            ),
            comment: Some(spec.comment.to_string()),
        })
        .collect()
}

impl Live {
    /// Parses the output of `nft -j list table …`.
    pub fn parse(text: &str) -> Result<Live, String> {
        let doc: Value = serde_json::from_str(text).map_err(|e| format!("invalid json: {e}"))?;
        let objects = doc
            .get("nftables")
            .and_then(Value::as_array)
            .ok_or("no \"nftables\" array")?;
        let mut live = Live::default();
        for object in objects {
            if let Some(set) = object.get("set") {
                let name = str_field(set, "name")?;
                live.shape.sets.insert(name, parse_set(set));
            } else if let Some(chain) = object.get("chain") {
                let name = str_field(chain, "name")?;
                let base = chain.get("hook").map(|hook| {
                    (
                        chain["type"].as_str().unwrap_or_default().to_string(),
                        hook.as_str().unwrap_or_default().to_string(),
                        chain["prio"].as_i64().unwrap_or_default(),
                        chain["policy"].as_str().unwrap_or("accept").to_string(),
                    )
                });
                let entry = live.shape.chains.entry(name).or_insert(ChainShape {
                    base: None,
                    rules: Vec::new(),
                });
                entry.base = base;
            } else if let Some(rule) = object.get("rule") {
                let chain = str_field(rule, "chain")?;
                let comment = rule
                    .get("comment")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                let expr = rule.get("expr").cloned().unwrap_or(Value::Null);
                if chain == CHAIN {
                    let (packets, bytes) = counter_of(&expr);
                    live.counters.push(RuleCounter {
                        comment: comment.clone(),
                        packets,
                        bytes,
                    });
                }
                // `nft` lists a chain before its rules.
                let entry = live.shape.chains.entry(chain).or_insert(ChainShape {
                    base: None,
                    rules: Vec::new(),
                });
                entry.rules.push(RuleShape {
                    expr: normalise(expr),
                    comment,
                });
            }
        }
        Ok(live)
    }
}

fn str_field(object: &Value, key: &str) -> Result<String, String> {
    object
        .get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| format!("object without \"{key}\": {object}"))
}

fn parse_set(set: &Value) -> SetShape {
    let set_type = match &set["type"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let flags = match &set["flags"] {
        Value::Array(flags) => flags
            .iter()
            .map(|f| f.as_str().unwrap_or_default().to_string())
            .collect(),
        Value::String(flag) => BTreeSet::from([flag.clone()]),
        _ => BTreeSet::new(),
    };
    let elements = match &set["elem"] {
        Value::Array(elements) => elements.iter().map(parse_elem).collect(),
        _ => BTreeSet::new(),
    };
    SetShape {
        set_type,
        flags,
        elements,
    }
}

fn parse_elem(elem: &Value) -> Elem {
    let net = match elem {
        Value::String(addr) => addr.parse::<IpAddr>().ok().map(IpNet::from),
        Value::Object(map) => map.get("prefix").and_then(|p| {
            let addr = p["addr"].as_str()?.parse::<IpAddr>().ok()?;
            let len = u8::try_from(p["len"].as_u64()?).ok()?;
            IpNet::new(addr, len).ok()
        }),
        _ => None,
    };
    match net {
        // Only an aligned prefix is what the model would write.
        Some(net) if net.trunc() == net => Elem::Net(net),
        _ => Elem::Other(elem.to_string()),
    }
}

fn counter_of(expr: &Value) -> (u64, u64) {
    expr.as_array()
        .into_iter()
        .flatten()
        .find_map(|stmt| {
            let counter = stmt.get("counter")?;
            Some((counter["packets"].as_u64()?, counter["bytes"].as_u64()?))
        })
        .unwrap_or_default()
}

/// Removes what differs between what masq writes and what `nft` lists for the same rule:
/// counter values, and a one-element `flags` list that `nft` prints as a bare string.
pub fn normalise(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, value)| {
                    let value = match (key.as_str(), value) {
                        ("counter", _) => Value::Null,
                        ("flags", Value::Array(mut flags)) if flags.len() == 1 => {
                            flags.pop().expect("one flag")
                        }
                        (_, value) => normalise(value),
                    };
                    (key, value)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(normalise).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_nft_lists() {
        let text = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
 {"table": {"family": "inet", "name": "masq", "handle": 1}},
 {"set": {"family": "inet", "name": "nonmasq-dst-v4", "table": "masq", "type": "ipv4_addr", "handle": 2, "flags": ["interval"], "elem": [{"prefix": {"addr": "10.0.0.0", "len": 8}}, "192.0.2.7", {"range": ["10.1.0.0", "10.1.0.9"]}]}},
 {"chain": {"family": "inet", "table": "masq", "name": "postrouting", "handle": 1, "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}},
 {"rule": {"family": "inet", "table": "masq", "chain": "postrouting", "handle": 5, "comment": "local", "expr": [{"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["daddr"]}}, "right": "local"}}, {"counter": {"packets": 3, "bytes": 180}}, {"return": null}]}}]}"#;
        let live = Live::parse(text).unwrap();
        let set = &live.shape.sets["nonmasq-dst-v4"];
        assert_eq!(set.set_type, "ipv4_addr");
        assert!(set
            .elements
            .contains(&Elem::Net("10.0.0.0/8".parse().unwrap())));
        assert!(set
            .elements
            .contains(&Elem::Net("192.0.2.7/32".parse().unwrap())));
        assert!(matches!(set.elements.iter().last(), Some(Elem::Other(_))));
        let chain = &live.shape.chains[CHAIN];
        assert_eq!(chain.base, Some(base_chain()));
        assert_eq!(chain.rules[0].expr[1], serde_json::json!({"counter": null}));
        assert_eq!(
            chain.rules[0].expr[0]["match"]["left"]["fib"]["flags"],
            "daddr"
        );
        assert_eq!(live.counters[0].packets, 3);
        assert_eq!(live.counters[0].bytes, 180);
    }
}
