//! The compiled decision ([`FamilyPolicy`], docs/decision.md) as the programs read it: which
//! tries and flags `decide()`/`decide6()` consult, and what each destination-policy entry
//! answers. Nothing of the decision is written in the programs themselves: the link-local range,
//! `masqueradeCIDRs` and the native-routing CIDR are all entries rendered here.

use std::collections::BTreeMap;

use ipnet::IpNet;
use masq_decision::{Action, FamilyPolicy, Pods, Reason as Why};

use super::tries::Prefix;
use super::types::Reason;
use crate::Error;

/// The counter a packet the decision settles for `why` lands in: the reason `decide()` returns.
pub fn counter_of(why: Why) -> Reason {
    match why {
        Why::NonMasqueradeSrc => Reason::KeepNonMasqSrc,
        Why::NotAPod => Reason::KeepNotAPod,
        Why::LinkLocal => Reason::KeepLinkLocal,
        Why::NonMasqueradeCidr => Reason::KeepNonMasqDst,
        Why::Local => Reason::KeepLocal,
        Why::MasqueradeCidr | Why::Default => Reason::TranslatedEgress,
    }
}

/// The reasons a destination-policy entry can carry.
const DESTINATION_REASONS: [Why; 3] = [Why::LinkLocal, Why::NonMasqueradeCidr, Why::MasqueradeCidr];

/// The value of a destination-policy entry (`masq_dst_policy`): `decide()` returns it when it
/// keeps, and goes on to the node-address check on `MASQ_TRANSLATED_EGRESS`.
pub fn destination_value(why: Why) -> u8 {
    u8::try_from(counter_of(why) as u32).expect("reasons fit in a byte")
}

/// The reason a destination-policy value stands for; `None` for a value masq never writes.
pub fn destination_reason(value: u8) -> Option<Why> {
    DESTINATION_REASONS
        .into_iter()
        .find(|why| destination_value(*why) == value)
}

/// A destination-policy trie's entries as the values written.
pub(crate) fn encode<N: Prefix>(entries: &BTreeMap<N, Why>) -> BTreeMap<N, u8> {
    entries
        .iter()
        .map(|(net, why)| (*net, destination_value(*why)))
        .collect()
}

/// A destination-policy trie's entries as read back (`map` names it in the error about a value
/// masq never writes).
pub(crate) fn decode<N: Prefix>(
    raw: BTreeMap<N, u8>,
    map: &str,
) -> Result<BTreeMap<N, Why>, Error> {
    raw.into_iter()
        .map(|(net, value)| match destination_reason(value) {
            Some(why) => Ok((net, why)),
            None => Err(Error::Unsupported(format!(
                "{map} holds {net} with the unknown verdict {value}"
            ))),
        })
        .collect()
}

/// Steps 4 and 5 as the destination-policy trie: every prefix of
/// [`FamilyPolicy::destination_entries`] with the reason its longest match decides.
pub fn destinations(policy: &FamilyPolicy) -> impl Iterator<Item = (IpNet, Why)> + '_ {
    policy
        .destination_entries()
        .into_iter()
        .map(|(net, action)| (net, policy.destination_reason(&net, action)))
}

/// Step 3: the pod CIDRs when pods are given by CIDR (the programs then test the source
/// against them, `MASQ_CFG_POD_CIDRS`); `None` when every source but the node's is a pod.
pub fn pod_cidrs(policy: &FamilyPolicy) -> Option<&[IpNet]> {
    match &policy.pods {
        Pods::Cidrs(cidrs) => Some(cidrs.as_written()),
        Pods::AllButTheNode => None,
    }
}

/// What an entry's reason does: `masquerade-cidr` masquerades, the others keep.
pub fn action_of(why: Why) -> Action {
    match counter_of(why) {
        Reason::TranslatedEgress => Action::Masquerade,
        _ => Action::Keep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_values_round_trip_and_are_the_c_reasons() {
        for why in DESTINATION_REASONS {
            assert_eq!(destination_reason(destination_value(why)), Some(why));
        }
        assert_eq!(destination_value(Why::LinkLocal), 6, "MASQ_KEEP_LINK_LOCAL");
        assert_eq!(destination_value(Why::NonMasqueradeCidr), 7);
        assert_eq!(destination_value(Why::MasqueradeCidr), 0);
        assert_eq!(destination_reason(1), None);
    }

    #[test]
    fn every_decision_reason_has_a_counter() {
        for why in Why::ALL {
            let keeps = !matches!(why, Why::MasqueradeCidr | Why::Default);
            assert_eq!(action_of(why) == Action::Keep, keeps, "{why:?}");
        }
    }
}
