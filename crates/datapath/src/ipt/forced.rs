//! `masqueradeCIDRs` in chains that stop at the first rule that matches. The longest prefix
//! across both destination lists must decide, so the forced ranges, and every exempt entry
//! inside one of them, come first, longest prefix first: the first of them a destination meets
//! is its longest match among them. The other exempt entries follow in the order written, as
//! kubernetes-sigs/ip-masq-agent writes them; a destination that reaches them matches no forced
//! range, so their order changes nothing.

use ipnet::IpNet;
use masq_decision::{Action, Destinations};

/// The destination rules of one family, in chain order.
pub(super) struct Ordered {
    /// Forced ranges (`Masquerade`) and the exempt entries inside them (`Keep`), longest
    /// first; empty without `masqueradeCIDRs`.
    pub first: Vec<(IpNet, Action)>,
    /// The other exempt entries, as written.
    pub rest: Vec<IpNet>,
}

/// Splits the destinations of step 5 into what goes before the exempt rules and the rest.
pub(super) fn order(destinations: &Destinations) -> Ordered {
    let forced = destinations.masquerade.as_written();
    let inside = |keep: &IpNet| forced.iter().any(|f| f != keep && f.contains(keep));
    let (nested, rest): (Vec<IpNet>, Vec<IpNet>) = destinations
        .keep
        .as_written()
        .iter()
        .partition(|keep| inside(keep));
    let mut first: Vec<(IpNet, Action)> = nested
        .into_iter()
        .map(|n| (n, Action::Keep))
        .chain(forced.iter().map(|n| (*n, Action::Masquerade)))
        .collect();
    // Stable: entries of one length keep their written order; they are apart anyway.
    first.sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix_len()));
    first.dedup();
    Ordered { first, rest }
}

#[cfg(test)]
mod tests {
    use masq_config::Config;
    use masq_decision::{CompiledPolicy, NodeContext};

    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    #[test]
    fn forced_ranges_and_the_exempt_entries_inside_them_come_first_longest_first() {
        let config = Config {
            non_masquerade_cidrs: nets(&["10.0.0.0/8", "10.5.3.0/24", "172.16.0.0/12"]),
            masquerade_cidrs: nets(&["10.5.0.0/16", "10.5.3.128/25"]),
            ..Config::default()
        };
        let policy = CompiledPolicy::compile(&config, &NodeContext::default());
        let ordered = order(&policy.v4.destinations);
        let first: Vec<(String, Action)> = ordered
            .first
            .iter()
            .map(|(n, a)| (n.to_string(), *a))
            .collect();
        assert_eq!(
            first,
            [
                ("10.5.3.128/25".to_string(), Action::Masquerade),
                ("10.5.3.0/24".to_string(), Action::Keep),
                ("10.5.0.0/16".to_string(), Action::Masquerade),
            ]
        );
        assert_eq!(ordered.rest, nets(&["10.0.0.0/8", "172.16.0.0/12"]));
    }
}
