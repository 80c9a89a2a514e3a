//! Which source ports translated flows get: the operator's `--port-range` list (or the
//! default, every unprivileged port but the NodePort range), less the ports the node itself
//! receives on (its listening sockets and the hostPorts, kept current by the agent).
//!
//! A translated port equal to one the node listens on sends the replies of an inbound flow to
//! the wrong place (cilium/cilium #34041: a hostPort's replies went to a masqueraded pod), so
//! every datapath leaves those ports out: eBPF drops them from its port table, netfilter gets
//! the ranges split around them (see docs/snat-pools.md for what that costs).

use std::collections::BTreeSet;

/// An inclusive range of source ports for translated connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    /// First port, inclusive.
    pub first: u16,
    /// Last port, inclusive.
    pub last: u16,
}

impl PortRange {
    /// Whether `port` lies inside the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    /// How many ports it holds.
    pub fn len(&self) -> u32 {
        u32::from(self.last.saturating_sub(self.first)) + 1
    }

    /// Never empty (a range holds at least its first port); for clippy's `len` convention.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether the two share a port.
    pub fn overlaps(&self, other: &PortRange) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// The Kubernetes NodePort range (`--service-node-port-range`'s default), the default of
/// `--nodeport-range`.
pub const DEFAULT_NODEPORT_RANGE: PortRange = PortRange {
    first: 30000,
    last: 32767,
};

/// The ports netfilter's fully-random masquerade draws from for an unprivileged source port.
pub const UNPRIVILEGED: PortRange = PortRange {
    first: 1024,
    last: 65535,
};

/// `ranges` less `ports`: sorted, merged where adjacent or overlapping, split around each port.
pub fn subtract(ranges: &[PortRange], ports: &BTreeSet<u16>) -> Vec<PortRange> {
    let mut sorted = ranges.to_vec();
    sorted.sort();
    let mut merged: Vec<PortRange> = Vec::new();
    for range in sorted {
        match merged.last_mut() {
            Some(last) if u32::from(range.first) <= u32::from(last.last) + 1 => {
                last.last = last.last.max(range.last);
            }
            _ => merged.push(range),
        }
    }
    let mut out = Vec::new();
    for range in merged {
        let mut first = u32::from(range.first);
        for &port in ports.range(range.first..=range.last) {
            if u32::from(port) > first {
                out.push(PortRange {
                    first: first as u16,
                    last: port - 1,
                });
            }
            first = u32::from(port) + 1;
        }
        if first <= u32::from(range.last) {
            out.push(PortRange {
                first: first as u16,
                last: range.last,
            });
        }
    }
    out
}

/// The default ranges: every unprivileged port less `nodeports`.
pub fn default_ranges(nodeports: PortRange) -> Vec<PortRange> {
    subtract(
        &[UNPRIVILEGED],
        &(nodeports.first..=nodeports.last).collect(),
    )
}

/// Total ports of `ranges` (assumed disjoint).
pub fn count(ranges: &[PortRange]) -> u32 {
    ranges.iter().map(PortRange::len).sum()
}

/// `ranges` as the flag spells them: `1024-29999,32768-65535`.
pub fn list_text(ranges: &[PortRange]) -> String {
    let parts: Vec<String> = ranges.iter().map(ToString::to_string).collect();
    parts.join(",")
}

/// Parses a port list: `1024-29999,32768-65535`, or single `N` or `A-B` entries; ports 1–65535,
/// no entry ending before it starts, none overlapping another. Errors name the list and the
/// entry at fault (the caller adds the flag).
pub fn parse_list(text: &str) -> Result<Vec<PortRange>, String> {
    let mut ranges: Vec<PortRange> = Vec::new();
    for part in text.split(',').map(str::trim) {
        let port = |s: &str| {
            let s = s.trim();
            s.parse::<u16>()
                .ok()
                .filter(|p| *p > 0 && s.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| {
                    format!("{text:?}: {s:?} is not a port (1-65535; e.g. 1024-29999,32768-65535)")
                })
        };
        let range = match part.split_once('-') {
            Some((first, last)) => PortRange {
                first: port(first)?,
                last: port(last)?,
            },
            None => {
                let single = port(part)?;
                PortRange {
                    first: single,
                    last: single,
                }
            }
        };
        if range.first > range.last {
            return Err(format!(
                "{text:?}: {part:?} is empty (it ends before it starts)"
            ));
        }
        if let Some(other) = ranges.iter().find(|r| r.overlaps(&range)) {
            return Err(format!("{text:?}: {part:?} overlaps {other}"));
        }
        ranges.push(range);
    }
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pr(first: u16, last: u16) -> PortRange {
        PortRange { first, last }
    }

    #[test]
    fn the_default_leaves_out_the_nodeport_range() {
        assert_eq!(
            default_ranges(DEFAULT_NODEPORT_RANGE),
            [pr(1024, 29999), pr(32768, 65535)]
        );
        assert_eq!(count(&default_ranges(DEFAULT_NODEPORT_RANGE)), 61744);
    }

    #[test]
    fn subtracting_splits_around_each_port_and_merges_neighbours() {
        let reserved: BTreeSet<u16> = [1024, 8080, 8081, 9000, 65535].into();
        assert_eq!(
            subtract(&[pr(9000, 9100), pr(1024, 8999)], &reserved),
            [pr(1025, 8079), pr(8082, 8999), pr(9001, 9100)]
        );
        assert_eq!(subtract(&[pr(65535, 65535)], &reserved), []);
        assert_eq!(subtract(&[pr(1, 65535)], &BTreeSet::new()), [pr(1, 65535)]);
    }

    proptest::proptest! {
        /// A port is in the result exactly when it is in a range and not reserved.
        #[test]
        fn subtract_keeps_exactly_the_free_ports(
            ranges in proptest::collection::vec((0u16..200, 0u16..50), 0..6),
            reserved in proptest::collection::btree_set(0u16..260, 0..20),
            probe in 0u16..260,
        ) {
            let ranges: Vec<PortRange> =
                ranges.iter().map(|&(f, l)| pr(f, f + l)).collect();
            let out = subtract(&ranges, &reserved);
            let want = ranges.iter().any(|r| r.contains(probe)) && !reserved.contains(&probe);
            proptest::prop_assert_eq!(out.iter().any(|r| r.contains(probe)), want);
            for pair in out.windows(2) {
                proptest::prop_assert!(u32::from(pair[0].last) + 1 < u32::from(pair[1].first));
            }
        }
    }

    #[test]
    fn lists_parse_like_ip_masq_agents_to_ports() {
        assert_eq!(
            parse_list("1024-29999,32768-65535").unwrap(),
            [pr(1024, 29999), pr(32768, 65535)]
        );
        assert_eq!(parse_list("5000").unwrap(), [pr(5000, 5000)]);
        assert_eq!(parse_list(" 1-2 , 4 ").unwrap(), [pr(1, 2), pr(4, 4)]);
        for (bad, why) in [
            ("", "is not a port"),
            ("0-10", "is not a port"),
            ("10-5", "is empty"),
            ("1-70000", "is not a port"),
            ("a-b", "is not a port"),
            ("+1-2", "is not a port"),
            ("1-10,5-20", "overlaps 1-10"),
            ("1-2-3", "is not a port"),
        ] {
            let err = parse_list(bad).unwrap_err();
            assert!(err.starts_with(&format!("{bad:?}: ")), "{err}");
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }
}
