//! A packet walk through iptables rules given as `iptables-restore` text, the way the kernel
//! runs them: first match wins, `RETURN` goes back to the caller, `MARK`/`CONNMARK` go on to
//! the next rule, `MASQUERADE`/`SNAT` end the walk. It reads exactly what `masq render
//! --datapath iptables` prints, the POSTROUTING and PREROUTING jumps included (printed as
//! comments there), and refuses any match or target it does not know, so a rendering cannot
//! pass by using something the walk ignores.
//!
//! `-m statistic` draws at random: the walk follows both branches and returns every outcome.
//! `-m cluster` is computed as the kernel does (`jhash` of the source, of an IPv6 source its
//! first 32 bits, scaled to the total).

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use masq_datapath::ipt::save::rule_words;
use masq_datapath::{pool, Family};

/// One packet opening a connection.
#[derive(Clone, Copy, Debug)]
pub struct Packet<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// `tcp`, `udp` or `icmp`.
    pub protocol: &'static str,
    /// The node's addresses: what `addrtype --dst-type LOCAL` answers from.
    pub local: &'a [IpAddr],
}

/// How a walk through a table's base chain ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Outcome {
    /// `MASQUERADE` or `SNAT` ran.
    pub translated: bool,
    /// The address `SNAT --to-source` gave (None: MASQUERADE, or no translation).
    pub to_source: Option<IpAddr>,
    /// The packet mark when the walk ended.
    pub mark: u32,
}

#[derive(Debug, Clone, PartialEq)]
enum Match {
    Source(bool, IpNet),
    Destination(bool, IpNet),
    Protocol(String),
    Random,
    /// `-m cluster`: the source's bucket is in the mask.
    Cluster {
        total: u32,
        mask: u32,
        seed: u32,
    },
    DestinationLocal(bool),
    ConnMark {
        value: u32,
        mask: u32,
    },
    StateNew(bool),
}

#[derive(Debug, Clone, PartialEq)]
enum Target {
    Return,
    Translate(Option<IpAddr>),
    Mark { value: u32, mask: u32 },
    ConnMark { value: u32, mask: u32 },
    Jump(String),
}

#[derive(Debug, Clone, PartialEq)]
struct Rule {
    matches: Vec<Match>,
    target: Target,
}

/// The rules of every chain, by (family, table, chain), in order.
#[derive(Debug, Default)]
pub struct Rules {
    chains: BTreeMap<(Family, String, String), Vec<Rule>>,
}

impl Rules {
    /// Reads `masq render --datapath iptables` output: sections headed `# iptables-restore` or
    /// `# ip6tables-restore`, tables opened by `*TABLE`, rules as `-A` lines or as the `# -A`
    /// comment lines that show the jumps. Panics on anything it does not understand.
    pub fn parse(text: &str) -> Rules {
        let mut rules = Rules::default();
        let mut family = None;
        let mut table = None;
        for line in text.lines() {
            if line.starts_with("# iptables-restore") {
                family = Some(Family::V4);
            } else if line.starts_with("# ip6tables-restore") {
                family = Some(Family::V6);
            } else if let Some(name) = line.strip_prefix('*') {
                table = Some(name.to_string());
            }
            let rule = line.strip_prefix("# ").unwrap_or(line);
            if let Some(spec) = rule.strip_prefix("-A ") {
                let (chain, rest) = spec.split_once(' ').expect("-A CHAIN RULE");
                let key = (
                    family.expect("a rule before any restore header"),
                    table.clone().expect("a rule before any *table"),
                    chain.to_string(),
                );
                rules
                    .chains
                    .entry(key)
                    .or_default()
                    .push(parse_rule(rest, line));
            }
        }
        rules
    }

    /// Every way the base chain `chain` of `table` can end for `packet` (several only where
    /// `-m statistic` draws); a chain absent or run to its end leaves the packet untranslated.
    pub fn walk(&self, table: &str, chain: &str, packet: &Packet) -> Vec<Outcome> {
        let family = Family::of_addr(&packet.dst);
        let start = Outcome {
            translated: false,
            to_source: None,
            mark: 0,
        };
        let mut ends: Vec<Outcome> = self
            .run(family, table, chain, 0, packet, start, 0)
            .into_iter()
            .map(|(outcome, _)| outcome)
            .collect();
        ends.sort();
        ends.dedup();
        ends
    }

    /// Runs `chain` from rule `from`; each result says whether the walk ended for good
    /// (`true`: a translation) or returned to the caller.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        family: Family,
        table: &str,
        chain: &str,
        from: usize,
        packet: &Packet,
        mut state: Outcome,
        depth: usize,
    ) -> Vec<(Outcome, bool)> {
        assert!(depth < 8, "jumps nest too deep at {chain}");
        let key = (family, table.to_string(), chain.to_string());
        let Some(rules) = self.chains.get(&key) else {
            return vec![(state, false)];
        };
        for (index, rule) in rules.iter().enumerate().skip(from) {
            let mut random = false;
            let mut holds = true;
            for m in &rule.matches {
                match matches(m, packet) {
                    Some(true) => {}
                    Some(false) => holds = false,
                    None => random = true,
                }
            }
            if !holds {
                continue;
            }
            let mut ends = Vec::new();
            if random {
                // Not drawn: on to the next rule.
                ends.extend(self.run(family, table, chain, index + 1, packet, state, depth));
            }
            match &rule.target {
                Target::Return => ends.push((state, false)),
                Target::Translate(to_source) => ends.push((
                    Outcome {
                        translated: true,
                        to_source: *to_source,
                        ..state
                    },
                    true,
                )),
                Target::Mark { value, mask } => {
                    state.mark = (state.mark & !mask) ^ value;
                    if !random {
                        continue;
                    }
                    let after = self.run(family, table, chain, index + 1, packet, state, depth);
                    ends.extend(after);
                }
                // The connection's mark does not change this packet's walk here.
                Target::ConnMark { .. } => {
                    if !random {
                        continue;
                    }
                    let after = self.run(family, table, chain, index + 1, packet, state, depth);
                    ends.extend(after);
                }
                Target::Jump(callee) => {
                    for (after, ended) in
                        self.run(family, table, callee, 0, packet, state, depth + 1)
                    {
                        if ended {
                            ends.push((after, true));
                        } else {
                            let rest =
                                self.run(family, table, chain, index + 1, packet, after, depth);
                            ends.extend(rest);
                        }
                    }
                }
            }
            return ends;
        }
        vec![(state, false)]
    }
}

/// Whether a match holds for the first packet of a connection: `None` for a random draw.
fn matches(m: &Match, packet: &Packet) -> Option<bool> {
    Some(match m {
        Match::Source(negate, net) => net.contains(&packet.src) != *negate,
        Match::Destination(negate, net) => net.contains(&packet.dst) != *negate,
        Match::Protocol(protocol) => protocol == packet.protocol,
        Match::Random => return None,
        Match::Cluster { total, mask, seed } => {
            // xt_cluster hashes one 32-bit word of an IPv6 source, its first
            // (`NF_CT_TUPLE_L3SIZE / sizeof(__u32)` words): not the whole address.
            let bytes = match packet.src {
                IpAddr::V4(v4) => v4.octets().to_vec(),
                IpAddr::V6(v6) => v6.octets()[..4].to_vec(),
            };
            let bucket = pool::reciprocal_scale(pool::jhash(&bytes, *seed), *total);
            mask & (1 << bucket) != 0
        }
        Match::DestinationLocal(negate) => packet.local.contains(&packet.dst) != *negate,
        // A new connection carries no connection mark yet.
        Match::ConnMark { value, .. } => *value == 0,
        Match::StateNew(negate) => !*negate,
    })
}

fn parse_rule(spec: &str, line: &str) -> Rule {
    let words = rule_words(spec);
    let mut matches = Vec::new();
    let mut target = None;
    let mut negate = false;
    let mut i = 0;
    let next = |i: &mut usize| -> &str {
        *i += 1;
        words
            .get(*i)
            .unwrap_or_else(|| panic!("{line}: missing value"))
    };
    while i < words.len() {
        let word = words[i].as_str();
        match word {
            "!" => {
                negate = true;
                i += 1;
                continue;
            }
            "-s" => matches.push(Match::Source(negate, cidr(next(&mut i), line))),
            "-d" => matches.push(Match::Destination(negate, cidr(next(&mut i), line))),
            "-p" => matches.push(Match::Protocol(next(&mut i).to_string())),
            "-m" => {
                let module = next(&mut i).to_string();
                assert!(
                    [
                        "comment",
                        "statistic",
                        "addrtype",
                        "connmark",
                        "conntrack",
                        "cluster"
                    ]
                    .contains(&module.as_str()),
                    "{line}: unknown match module {module}"
                );
            }
            "--comment" => {
                next(&mut i);
            }
            "--mode" => assert_eq!(next(&mut i), "random", "{line}"),
            "--probability" => {
                next(&mut i);
                matches.push(Match::Random);
            }
            "--cluster-local-nodemask" => {
                let mask = hex(next(&mut i), line);
                let total = number_after(&words, i, "--cluster-total-nodes", line);
                let seed = hex(&words[i + 4], line);
                assert_eq!(words[i + 3], "--cluster-hash-seed", "{line}");
                matches.push(Match::Cluster { total, mask, seed });
                i += 4;
            }
            "--dst-type" => {
                assert_eq!(next(&mut i), "LOCAL", "{line}");
                matches.push(Match::DestinationLocal(negate));
            }
            "--mark" if target.is_none() => {
                let (value, mask) = mark(next(&mut i), line);
                matches.push(Match::ConnMark { value, mask });
            }
            "--ctstate" => {
                assert_eq!(next(&mut i), "NEW", "{line}");
                matches.push(Match::StateNew(negate));
            }
            "-j" => {
                let name = next(&mut i).to_string();
                target = Some(match name.as_str() {
                    "RETURN" => Target::Return,
                    "MASQUERADE" => Target::Translate(None),
                    "SNAT" => {
                        assert_eq!(next(&mut i), "--to-source", "{line}");
                        Target::Translate(Some(to_source(next(&mut i), line)))
                    }
                    "MARK" | "CONNMARK" => {
                        assert_eq!(next(&mut i), "--set-xmark", "{line}");
                        let (value, mask) = mark(next(&mut i), line);
                        if name == "MARK" {
                            Target::Mark { value, mask }
                        } else {
                            Target::ConnMark { value, mask }
                        }
                    }
                    "ACCEPT" | "DROP" | "DNAT" | "REJECT" => {
                        panic!("{line}: target {name} is not one masq writes")
                    }
                    chain => Target::Jump(chain.to_string()),
                });
            }
            // Options of the translation targets: where to, not whether.
            "--to-ports" if target == Some(Target::Translate(None)) => {
                next(&mut i);
            }
            "--random-fully" if matches!(target, Some(Target::Translate(_))) => {}
            other => panic!("{line}: unknown word {other:?}"),
        }
        negate = false;
        i += 1;
    }
    Rule {
        matches,
        target: target.unwrap_or_else(|| panic!("{line}: no target")),
    }
}

fn cidr(text: &str, line: &str) -> IpNet {
    text.parse()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .unwrap_or_else(|_| panic!("{line}: {text:?} is not an address"))
}

fn mark(text: &str, line: &str) -> (u32, u32) {
    let hex = |t: &str| u32::from_str_radix(t.trim_start_matches("0x"), 16).unwrap();
    let (value, mask) = text
        .split_once('/')
        .unwrap_or_else(|| panic!("{line}: mark {text:?} is not VALUE/MASK"));
    (hex(value), hex(mask))
}

fn hex(text: &str, line: &str) -> u32 {
    let digits = text
        .strip_prefix("0x")
        .unwrap_or_else(|| panic!("{line}: {text} not hex"));
    u32::from_str_radix(digits, 16).unwrap_or_else(|_| panic!("{line}: {text} not hex"))
}

/// The number after `option`, which must follow the word at `at` (`iptables-save` prints the
/// cluster options in one order).
fn number_after(words: &[String], at: usize, option: &str, line: &str) -> u32 {
    assert_eq!(words[at + 1], option, "{line}");
    words[at + 2]
        .parse()
        .unwrap_or_else(|_| panic!("{line}: bad {option}"))
}

/// The address of `--to-source ADDR[:PORTS]` (`[V6]:PORTS` with a port).
fn to_source(text: &str, line: &str) -> IpAddr {
    let addr = match text.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None if text.matches(':').count() == 1 => text.split(':').next().unwrap_or_default(),
        None => text,
    };
    addr.parse()
        .unwrap_or_else(|_| panic!("{line}: --to-source {text}"))
}
