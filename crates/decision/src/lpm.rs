//! Longest-prefix verdicts flattened: given prefixes that each carry an action, the addresses
//! where each action wins, as non-overlapping CIDRs. An interval set cannot hold nested
//! prefixes, so nftables gets the outcome of the longest match rather than the prefixes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::Action;

/// An inclusive range of addresses of one family, as integers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    first: u128,
    last: u128,
}

fn span(net: &IpNet) -> Span {
    match net {
        IpNet::V4(n) => Span {
            first: u32::from(n.network()).into(),
            last: u32::from(n.broadcast()).into(),
        },
        IpNet::V6(n) => Span {
            first: n.network().into(),
            last: n.broadcast().into(),
        },
    }
}

/// A prefix holding the walk's position, and where its next own addresses begin (`None`: it
/// has none left).
struct Open {
    span: Span,
    action: Action,
    from: Option<u128>,
}

/// The addresses where `wanted` is the action of the longest prefix of `entries` holding them,
/// as the fewest non-overlapping CIDRs, sorted. The entries are of one family, without two
/// equal prefixes.
pub(crate) fn winning(entries: &[(IpNet, Action)], wanted: Action) -> Vec<IpNet> {
    let Some(v4) = entries.first().map(|(n, _)| n.addr().is_ipv4()) else {
        return Vec::new();
    };
    let mut sorted: Vec<(Span, u8, Action)> = entries
        .iter()
        .map(|(net, action)| (span(&net.trunc()), net.prefix_len(), *action))
        .collect();
    // Outer prefixes before the ones they hold: by start, then shortest first.
    sorted.sort_by_key(|(s, len, _)| (s.first, *len));
    let mut spans = Vec::new();
    let mut open: Vec<Open> = Vec::new();
    for (inner, _, action) in sorted {
        close(&mut open, Some(inner.first), wanted, &mut spans);
        // Prefixes nest or are apart: what is still open holds `inner`.
        if let Some(parent) = open.last_mut() {
            if let Some(from) = parent.from.filter(|f| *f < inner.first) {
                if parent.action == wanted {
                    spans.push(Span {
                        first: from,
                        last: inner.first - 1,
                    });
                }
            }
            parent.from = inner.last.checked_add(1);
        }
        open.push(Open {
            span: inner,
            action,
            from: Some(inner.first),
        });
    }
    close(&mut open, None, wanted, &mut spans);
    let nets: Vec<IpNet> = spans.into_iter().flat_map(|s| cidrs_of(s, v4)).collect();
    crate::merge_cidrs(&nets)
}

/// Ends the open prefixes that end before `until` (all of them for `None`), keeping their last
/// own addresses when their action is `wanted`.
fn close(open: &mut Vec<Open>, until: Option<u128>, wanted: Action, spans: &mut Vec<Span>) {
    while let Some(top) = open.last() {
        if until.is_some_and(|start| start <= top.span.last) {
            return;
        }
        let top = open.pop().expect("just looked at");
        if let Some(from) = top.from.filter(|f| *f <= top.span.last) {
            if top.action == wanted {
                spans.push(Span {
                    first: from,
                    last: top.span.last,
                });
            }
        }
    }
}

/// The CIDRs covering exactly `span`, largest first from its start.
fn cidrs_of(span: Span, v4: bool) -> Vec<IpNet> {
    let bits: u32 = if v4 { 32 } else { 128 };
    let mut out = Vec::new();
    let mut first = span.first;
    loop {
        // The last address of the block of 2^log addresses at `first` (aligned there, so no
        // overflow; 2^128 only at 0).
        let block_last = |log: u32| {
            first
                + if log == 128 {
                    u128::MAX
                } else {
                    (1u128 << log) - 1
                }
        };
        let mut log = first.trailing_zeros().min(bits);
        while block_last(log) > span.last {
            log -= 1;
        }
        let addr = if v4 {
            IpAddr::V4(Ipv4Addr::from(first as u32))
        } else {
            IpAddr::V6(Ipv6Addr::from(first))
        };
        out.push(IpNet::new(addr, (bits - log) as u8).expect("a valid prefix length"));
        let end = block_last(log);
        if end >= span.last {
            return out;
        }
        first = end + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> IpNet {
        text.parse().unwrap()
    }

    fn names(nets: &[IpNet]) -> Vec<String> {
        nets.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn an_inner_prefix_punches_a_hole_the_next_one_fills_again() {
        let entries = [
            (net("10.0.0.0/8"), Action::Keep),
            (net("10.5.0.0/16"), Action::Masquerade),
            (net("10.5.3.0/24"), Action::Keep),
        ];
        assert_eq!(
            names(&winning(&entries, Action::Masquerade)),
            [
                "10.5.0.0/23",
                "10.5.2.0/24",
                "10.5.4.0/22",
                "10.5.8.0/21",
                "10.5.16.0/20",
                "10.5.32.0/19",
                "10.5.64.0/18",
                "10.5.128.0/17"
            ]
        );
        let kept = winning(&entries, Action::Keep);
        assert!(kept
            .iter()
            .any(|n| n.contains(&"10.5.3.1".parse::<IpAddr>().unwrap())));
        assert!(!kept
            .iter()
            .any(|n| n.contains(&"10.5.4.1".parse::<IpAddr>().unwrap())));
        assert!(kept.contains(&net("10.0.0.0/14")));
    }

    #[test]
    fn the_whole_address_space_and_its_edges() {
        let entries = [
            (net("0.0.0.0/0"), Action::Masquerade),
            (net("255.255.255.255/32"), Action::Keep),
            (net("0.0.0.0/32"), Action::Keep),
        ];
        assert_eq!(
            names(&winning(&entries, Action::Keep)),
            ["0.0.0.0/32", "255.255.255.255/32"]
        );
        assert_eq!(winning(&entries, Action::Masquerade).len(), 62);
        let v6 = [
            (net("::/0"), Action::Keep),
            (net("ffff::/16"), Action::Masquerade),
        ];
        assert_eq!(names(&winning(&v6, Action::Masquerade)), ["ffff::/16"]);
        assert_eq!(winning(&v6, Action::Keep).len(), 16);
        assert!(winning(&[], Action::Keep).is_empty());
    }

    #[test]
    fn cidrs_of_a_span_cover_it_exactly() {
        let v4 = |a: &str| u128::from(u32::from(a.parse::<Ipv4Addr>().unwrap()));
        let got = cidrs_of(
            Span {
                first: v4("10.0.0.1"),
                last: v4("10.0.0.6"),
            },
            true,
        );
        assert_eq!(
            names(&got),
            ["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"]
        );
        assert_eq!(
            names(&cidrs_of(
                Span {
                    first: 0,
                    last: u128::MAX
                },
                false
            )),
            ["::/0"]
        );
    }
}
