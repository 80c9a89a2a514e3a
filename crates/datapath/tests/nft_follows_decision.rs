//! The generated nftables rules make the same decision as `masq_decision::Policy` for arbitrary
//! packets and configs (STYLE: "render is apply", and a tracer walks the rules). Pure: no kernel.
//!
//! Known, intended difference: without `--pod-cidr` the netfilter datapaths are destination-only
//! like kubernetes-sigs/ip-masq-agent, so the node's own addresses are not generated as sources.
//!
//! The property is shown able to fail: `dropping_any_exemption_fails_the_property` runs it
//! against rulesets with one exemption removed and expects a counterexample for each.

mod decision_support;

use std::net::IpAddr;

use decision_support::{assert_caught, cidrs, config, packet, v4_cidr};
use masq_config::Config;
use masq_datapath::nft::{reason, Ruleset, Verdict};
use masq_datapath::{Desired, NodeSettings};
use masq_decision::{Action, NodeContext, Policy, Reason};
use proptest::prelude::*;

/// One config, node and packet.
#[derive(Clone, Debug)]
struct Case {
    config: Config,
    node: NodeSettings,
    local: Vec<IpAddr>,
    src: IpAddr,
    dst: IpAddr,
}

fn case() -> impl Strategy<Value = Case> {
    let node =
        (cidrs(), prop::option::of(v4_cidr())).prop_map(|(pod_cidrs, native_routing_cidr)| {
            NodeSettings {
                pod_cidrs,
                native_routing_cidr,
                enable_ipv6: true,
                ..NodeSettings::default()
            }
        });
    (config(), node, packet()).prop_map(|(config, node, (src, dst, local))| Case {
        config,
        node,
        local,
        src,
        dst,
    })
}

fn reason_of(comment: &str) -> Reason {
    match comment {
        c if c == reason::NON_MASQUERADE_SRC => Reason::NonMasqueradeSrc,
        c if c == reason::NOT_A_POD => Reason::NotAPod,
        c if c == reason::LINK_LOCAL => Reason::LinkLocal,
        c if c == reason::NON_MASQUERADE_CIDR => Reason::NonMasqueradeCidr,
        c if c == reason::LOCAL => Reason::Local,
        c if c == reason::MASQUERADE_CIDR => Reason::MasqueradeCidr,
        c if c == reason::MASQUERADE => Reason::Default,
        other => panic!("rule with unknown comment {other:?}"),
    }
}

/// A ruleset with one exemption taken out, to show the property notices.
#[derive(Clone, Copy, Debug)]
enum Drop {
    /// Every rule of one decision step (by its comment).
    Step(&'static str),
    /// The first element of the IPv4 `nonMasqueradeCIDRs` set.
    OneDestination,
    /// Every element of the sets of destinations `masqueradeCIDRs` decide.
    ForcedSets,
}

impl Drop {
    const ALL: [Drop; 8] = [
        Drop::Step(reason::NON_MASQUERADE_SRC),
        Drop::Step(reason::NOT_A_POD),
        Drop::Step(reason::LINK_LOCAL),
        Drop::Step(reason::NON_MASQUERADE_CIDR),
        Drop::Step(reason::LOCAL),
        Drop::Step(reason::MASQUERADE_CIDR),
        Drop::OneDestination,
        Drop::ForcedSets,
    ];

    fn apply(self, ruleset: &mut Ruleset) {
        match self {
            Drop::Step(comment) => ruleset.rules.retain(|rule| rule.comment != comment),
            Drop::ForcedSets => {
                for set in &mut ruleset.sets {
                    if set.name.starts_with("masq-dst-") {
                        set.elements.clear();
                    }
                }
            }
            Drop::OneDestination => {
                if let Some(set) = ruleset.sets.iter_mut().find(|s| s.name == "nonmasq-dst-v4") {
                    if !set.elements.is_empty() {
                        set.elements.remove(0);
                    }
                }
            }
        }
    }
}

/// The property: the first rule the packet matches gives the policy's action and reason.
fn check(case: &Case, drop: Option<Drop>) -> Result<(), TestCaseError> {
    let (src, dst) = (case.src, case.dst);
    // Destination-only without pod CIDRs: the node's own sources are out of scope (see top).
    prop_assume!(!case.node.pod_cidrs.is_empty() || !case.local.contains(&src));
    let policy = Policy::new(
        &case.config,
        &NodeContext {
            local_addrs: case.local.clone(),
            ..case.node.decision_context()
        },
    );
    let want = policy.decide(Some(src), dst);
    let mut rules = Ruleset::build(&Desired {
        config: case.config.clone(),
        node: case.node.clone(),
    });
    if let Some(drop) = drop {
        drop.apply(&mut rules);
    }
    let (action, why) = match rules.evaluate(src, dst, &case.local) {
        Some(rule) => (
            match rule.verdict {
                Verdict::Return => Action::Keep,
                Verdict::Masquerade { .. } | Verdict::Snat { .. } => Action::Masquerade,
                Verdict::RestoreMark(_) | Verdict::SetMark(_) => {
                    panic!("a mark verdict in the postrouting chain: {rule:?}")
                }
            },
            reason_of(rule.comment),
        ),
        None => (Action::Keep, Reason::NotAPod),
    };
    prop_assert_eq!(
        (action, why),
        (want.action, want.reason),
        "disagreement: {} -> {}: the rules say {:?}, the policy {:?}",
        src,
        dst,
        (action, why),
        want
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn rules_and_policy_agree(case in case()) {
        check(&case, None)?;
    }
}

#[test]
fn dropping_any_exemption_fails_the_property() {
    for drop in Drop::ALL {
        let what = format!("without {drop:?}");
        assert_caught(&what, case(), |case| check(&case, Some(drop)));
    }
}
