//! The model as nft syntax, close to what `nft list table inet masq` prints, and loadable with
//! `nft -f` (a test loads it and checks the kernel then matches the desired state).

use std::fmt::Write;

use super::model::{Cond, Family, NftFamily, RuleSpec, Ruleset, Verdict, CHAIN, MARK_CHAIN};
use std::net::IpAddr;

use crate::names::NFT_TABLE;
use crate::{pool, PortRange};

/// The whole table as text.
pub fn ruleset_text(ruleset: &Ruleset) -> String {
    let mut out = format!("table inet {NFT_TABLE} {{\n");
    for set in &ruleset.sets {
        let _ = writeln!(out, "\tset {} {{", set.name);
        let _ = writeln!(out, "\t\ttype {}", set.family.set_type());
        out.push_str("\t\tflags interval\n");
        if !set.elements.is_empty() {
            let elements: Vec<String> = set.elements.iter().map(|e| e.to_string()).collect();
            let _ = writeln!(
                out,
                "\t\telements = {{ {} }}",
                elements.join(",\n\t\t\t     ")
            );
        }
        out.push_str("\t}\n\n");
    }
    let _ = writeln!(out, "\tchain {CHAIN} {{");
    out.push_str("\t\ttype nat hook postrouting priority srcnat; policy accept;\n");
    rules_text(&mut out, &ruleset.rules);
    out.push_str("\t}\n");
    if !ruleset.mark_rules.is_empty() {
        let _ = writeln!(out, "\n\tchain {MARK_CHAIN} {{");
        out.push_str("\t\ttype filter hook prerouting priority dstnat + 10; policy accept;\n");
        rules_text(&mut out, &ruleset.mark_rules);
        out.push_str("\t}\n");
    }
    out.push_str("}\n");
    out
}

fn rules_text(out: &mut String, rules: &[RuleSpec]) {
    for rule in rules {
        let mut words: Vec<String> = rule.conds.iter().map(cond_text).collect();
        words.push("counter".into());
        words.push(verdict_text(&rule.verdict));
        words.push(format!("comment \"{}\"", rule.comment));
        let _ = writeln!(out, "\t\t{}", words.join(" "));
    }
}

fn cond_text(cond: &Cond) -> String {
    match cond {
        Cond::SaddrInSet {
            family,
            set,
            negate,
        } => {
            let op = if *negate { "!= " } else { "" };
            format!("{} saddr {op}@{set}", family.payload())
        }
        Cond::DaddrInSet {
            family,
            set,
            negate,
        } => {
            let op = if *negate { "!= " } else { "" };
            format!("{} daddr {op}@{set}", family.payload())
        }
        Cond::DaddrIn(net) => {
            let family = Family::of_net(net);
            format!("{} daddr {net}", family.payload())
        }
        Cond::DaddrLocal => "fib daddr type local".into(),
        Cond::Nfproto(family) => format!("meta nfproto {}", family.nfproto()),
        Cond::TcpOrUdp => "meta l4proto { tcp, udp }".into(),
        Cond::PortShare { size, of } => format!("numgen random mod {of} < {size}"),
        Cond::CtMarkHas(mark) => format!("ct mark & {mark:#010x} == {mark:#010x}"),
        Cond::CtStateNotNew => "ct state != new".into(),
    }
}

fn verdict_text(verdict: &Verdict) -> String {
    let ports = |p: &Option<PortRange>| match p {
        Some(p) => format!(":{}-{}", p.first, p.last),
        None => String::new(),
    };
    match verdict {
        Verdict::Return => "return".into(),
        Verdict::RestoreMark(mark) => format!("meta mark set meta mark | {mark:#010x}"),
        Verdict::SetMark(mark) => {
            format!("meta mark set meta mark | {mark:#010x} ct mark set ct mark | {mark:#010x}")
        }
        Verdict::Masquerade { ports: None } => "masquerade fully-random".into(),
        Verdict::Masquerade { ports: p } => format!("masquerade to {} fully-random", ports(p)),
        Verdict::Snat { pool, ports: p } => {
            let family = Family::of_addr(&pool[0]).payload();
            let to = match pool.as_slice() {
                [IpAddr::V4(a)] => a.to_string(),
                // An IPv6 address followed by a port needs brackets.
                [IpAddr::V6(a)] if p.is_some() => format!("[{a}]"),
                [IpAddr::V6(a)] => a.to_string(),
                _ => {
                    let elements: Vec<String> = pool
                        .iter()
                        .enumerate()
                        .map(|(i, a)| format!("{i} : {a}"))
                        .collect();
                    format!(
                        "jhash {family} saddr mod {} seed {:#x} map {{ {} }}",
                        pool.len(),
                        pool::HASH_SEED,
                        elements.join(", ")
                    )
                }
            };
            format!("snat {family} to {to}{} fully-random", ports(p))
        }
    }
}
