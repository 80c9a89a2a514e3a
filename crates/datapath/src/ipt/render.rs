//! The rules as text: pure functions from a [`Desired`] state to the `iptables-restore --noflush`
//! payload kubernetes-sigs/ip-masq-agent writes for the same config.
//!
//! Every rule is written in the canonical form `iptables-save` prints (`-s`, `-d`, `-p` first, then
//! the matches, then the target and its options). Upstream writes the comment first, but the kernel
//! stores the same rule either way, so the text `iptables-save` shows for a chain upstream wrote is
//! exactly what this module renders: adopting, drift detection and `masq status` compare lines.

use std::net::IpAddr;

use ipnet::IpNet;
use masq_decision::{Action, Exemption, FamilyPolicy, Pods};

pub use masq_decision::Family;

use super::forced;
use super::save::NatTable;
use crate::{pool, ports, Desired, PortRange};

/// Comment of every destination exemption (upstream's wording, kept for migration).
pub const NON_MASQ_COMMENT: &str = "ip-masq-agent: local traffic is not subject to MASQUERADE";
/// Comment of the final MASQUERADE rules (upstream's wording).
pub const MASQ_COMMENT: &str =
    "ip-masq-agent: outbound traffic is subject to MASQUERADE (must be last in chain)";
/// Comment of the final rules when `--snat-ip` fixes the translated source (upstream's
/// `snatTarget` wording).
pub const SNAT_COMMENT: &str =
    "ip-masq-agent: outbound traffic is subject to SNAT (must be last in chain)";
/// Comment of the rules that masquerade a `masqueradeCIDRs` range (masq's own, in upstream's
/// style; upstream has no such key).
pub const FORCED_MASQ_COMMENT: &str =
    "ip-masq-agent: traffic to masqueradeCIDRs is subject to MASQUERADE";
/// The same with `--snat-ip`.
pub const FORCED_SNAT_COMMENT: &str =
    "ip-masq-agent: traffic to masqueradeCIDRs is subject to SNAT";
/// Comment of a `nonMasqueradeSrcCIDRs` exemption (masq's own, upstream has no such key).
pub const SRC_EXEMPT_COMMENT: &str =
    "ip-masq-agent: traffic from this source is not subject to MASQUERADE";
/// Every comment written by ip-masq-agent or masq starts with this: how leftovers are recognised.
pub const COMMENT_PREFIX: &str = "ip-masq-agent: ";

/// The protocols upstream's `--to-ports` split applies to; anything else takes the catch-all.
const PORT_PROTOCOLS: [&str; 3] = ["tcp", "udp", "sctp"];

/// The `statistic` match draws a 31-bit random number: probabilities are multiples of 2^-31.
const STATISTIC_SCALE: f64 = 2_147_483_648.0;

/// How iptables spells a [`Family`]: the program of the family.
pub trait IptFamily {
    /// The command prefix: `iptables` or `ip6tables`.
    fn command(self) -> &'static str;
}

impl IptFamily for Family {
    fn command(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }
}

/// What the host's iptables contributes to the text: capabilities and upstream-only flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderOptions {
    /// Append `--random-fully` to the translation rules (iptables 1.6.2 and later).
    pub random_fully: bool,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions { random_fully: true }
    }
}

/// The rules of the chain for one family, each a full `-A CHAIN …` line, in order.
pub fn chain_rules(
    desired: &Desired,
    policy: &FamilyPolicy,
    options: &RenderOptions,
) -> Vec<String> {
    let chain = &desired.node.iptables_chain;
    let mut rules = Vec::new();
    // Every exemption ends in RETURN, so their order among themselves changes nothing but
    // readability; they follow the decision's.
    for exemption in policy.exemptions() {
        match exemption {
            Exemption::Sources(sources) => {
                for src in sources.as_written() {
                    rules.push(format!(
                        "-A {chain} -s {src} -m comment --comment \"{SRC_EXEMPT_COMMENT}\" -j RETURN"
                    ));
                }
            }
            // A source outside the pod CIDRs matches none of the translation rules (each
            // names a pod CIDR) and falls off the end of the chain.
            Exemption::NotAPod(_) => {}
            // Forced ranges come before every destination RETURN, link-local included (see
            // `forced`).
            Exemption::LinkLocal(link_local) => {
                for (dst, action) in forced::order(&policy.destinations).first {
                    match action {
                        Action::Keep => rules.push(destination_exemption(chain, &dst)),
                        Action::Masquerade => {
                            rules.extend(translation_rules(desired, policy, options, Some(dst)))
                        }
                    }
                }
                if link_local.exempt {
                    rules.push(destination_exemption(chain, &link_local.range));
                }
            }
            // Upstream writes one rule per entry as listed, duplicates included.
            Exemption::Destinations(destinations) => {
                for dst in forced::order(destinations).rest {
                    rules.push(destination_exemption(chain, &dst));
                }
            }
            // The POSTROUTING jump (`addrtype ! --dst-type LOCAL`) never enters the chain for
            // a local destination.
            Exemption::Local(_) => {}
        }
    }
    rules.extend(translation_rules(desired, policy, options, None));
    rules
}

fn destination_exemption(chain: &str, dst: &IpNet) -> String {
    format!("-A {chain} -d {dst} -m comment --comment \"{NON_MASQ_COMMENT}\" -j RETURN")
}

/// The final rules: per address of the SNAT pool (a `cluster` match picks the pod's, see
/// [`crate::pool`]), the per-protocol port-range split, then the catch-all; once per pod CIDR
/// of this family when `--pod-cidr` is given (a source outside them falls off the end of the
/// chain and keeps its address). With `forced`, the same rules for that `masqueradeCIDRs`
/// range only.
fn translation_rules(
    desired: &Desired,
    policy: &FamilyPolicy,
    options: &RenderOptions,
    forced: Option<IpNet>,
) -> Vec<String> {
    let chain = &desired.node.iptables_chain;
    let node = &desired.node;
    let sources: Vec<Option<IpNet>> = match &policy.pods {
        Pods::AllButTheNode => vec![None],
        Pods::Cidrs(pods) => pods.as_written().iter().map(|n| Some(*n)).collect(),
    };
    let pool = node.snat_pool_on(crate::Kind::Iptables, policy.family);
    // No pool: MASQUERADE to the egress interface's address.
    let targets: Vec<Option<IpAddr>> = match pool.is_empty() {
        true => vec![None],
        false => pool.iter().copied().map(Some).collect(),
    };
    let ranges = node.source_port_ranges();
    let total = ports::count(&ranges);
    let comment = match (forced, pool.is_empty()) {
        (None, true) => MASQ_COMMENT,
        (None, false) => SNAT_COMMENT,
        (Some(_), true) => FORCED_MASQ_COMMENT,
        (Some(_), false) => FORCED_SNAT_COMMENT,
    };

    let mut rules = Vec::new();
    for source in sources {
        // `iptables-save` prints the source, then the destination.
        let mut source_match = source.map(|s| format!(" -s {s}")).unwrap_or_default();
        if let Some(dst) = forced {
            source_match.push_str(&format!(" -d {dst}"));
        }
        for (index, target_ip) in targets.iter().enumerate() {
            let cluster = match targets.len() {
                1 => String::new(),
                n => format!(
                    " -m cluster --cluster-local-nodemask {:#010x} --cluster-total-nodes {n} \
                     --cluster-hash-seed {:#010x}",
                    1u32 << index,
                    pool::HASH_SEED
                ),
            };
            for protocol in PORT_PROTOCOLS {
                let mut remaining = total;
                for range in &ranges {
                    let size = range.len();
                    // Each range takes its share of what the earlier rules left, so the ports
                    // are used evenly; the last range needs no draw.
                    let statistic = if size == remaining {
                        String::new()
                    } else {
                        format!(
                            " -m statistic --mode random --probability {}",
                            probability(size, remaining)
                        )
                    };
                    remaining -= size;
                    rules.push(format!(
                        "-A {chain}{source_match} -p {protocol} -m comment --comment \"{comment}\"{cluster}{statistic} {}",
                        target(*target_ip, Some(*range), options.random_fully)
                    ));
                }
            }
            rules.push(format!(
                "-A {chain}{source_match} -m comment --comment \"{comment}\"{cluster} {}",
                target(*target_ip, None, options.random_fully)
            ));
        }
    }
    rules
}

fn target(snat_ip: Option<IpAddr>, ports: Option<PortRange>, random_fully: bool) -> String {
    // A one-port range reads back from the kernel as the bare port.
    let ports_text = ports.map(|r| {
        if r.first == r.last {
            r.first.to_string()
        } else {
            format!("{}-{}", r.first, r.last)
        }
    });
    let mut text = match (snat_ip, ports_text) {
        (None, None) => "-j MASQUERADE".to_string(),
        (None, Some(p)) => format!("-j MASQUERADE --to-ports {p}"),
        (Some(ip), None) => format!("-j SNAT --to-source {ip}"),
        (Some(IpAddr::V4(ip)), Some(p)) => format!("-j SNAT --to-source {ip}:{p}"),
        (Some(IpAddr::V6(ip)), Some(p)) => format!("-j SNAT --to-source [{ip}]:{p}"),
    };
    if random_fully {
        text.push_str(" --random-fully");
    }
    text
}

/// `part / whole` as `iptables-save` prints it back: the kernel keeps `round(p * 2^31)`, and
/// the statistic extension prints that with 11 decimals.
fn probability(part: u32, whole: u32) -> String {
    let fixed = (f64::from(part) / f64::from(whole) * STATISTIC_SCALE).round();
    format!("{:.11}", fixed / STATISTIC_SCALE)
}

/// The POSTROUTING jump masq adds when none is there, as `iptables-save` prints it.
pub fn jump_rule(chain: &str) -> String {
    format!(
        "-A POSTROUTING -m comment --comment \"{}\" -m addrtype ! --dst-type LOCAL -j {chain}",
        jump_comment(chain)
    )
}

fn jump_comment(chain: &str) -> String {
    format!(
        "ip-masq-agent: ensure nat POSTROUTING directs all non-LOCAL destination traffic to our \
         custom {chain} chain"
    )
}

/// The POSTROUTING rules that are ip-masq-agent's jump to `chain`, in order. Upstream passes
/// the comment with literal quote characters (`"\"ip-masq-agent: …\""`), older releases and
/// masq without: both count, so taking over never adds a second jump.
pub fn upstream_jumps(table: &NatTable, chain: &str) -> Vec<String> {
    let comment = jump_comment(chain);
    let plain = format!("--comment \"{comment}\" ");
    let quoted = format!("--comment \"\\\"{comment}\\\"\" ");
    table
        .jumps_to("POSTROUTING", chain)
        .into_iter()
        .filter(|rule| {
            (rule.contains(&plain) || rule.contains(&quoted))
                && rule.contains(" -m addrtype ! --dst-type LOCAL ")
        })
        .collect()
}

/// The `iptables-restore --noflush` payload that replaces `chain` of `table` with `rules` in
/// one commit: declaring the chain creates it or flushes it inside the same transaction as the
/// new rules. `extra` lines (jump fixes) go into the same commit.
pub fn restore_payload(table: &str, chain: &str, rules: &[String], extra: &[String]) -> String {
    let mut text = format!("*{table}\n:{chain} - [0:0]\n");
    for line in rules.iter().chain(extra) {
        text.push_str(line);
        text.push('\n');
    }
    text.push_str("COMMIT\n");
    text
}

/// The payload that deletes the given `jumps` to `chain` of `table` and, when it exists, the
/// chain, in one commit.
pub fn removal_payload(table: &str, chain: &str, jumps: &[String], chain_exists: bool) -> String {
    let mut text = format!("*{table}\n");
    for jump in jumps {
        text.push_str(&jump.replacen("-A ", "-D ", 1));
        text.push('\n');
    }
    if chain_exists {
        text.push_str(&format!(":{chain} - [0:0]\n-X {chain}\n"));
    }
    text.push_str("COMMIT\n");
    text
}

/// What `masq render --datapath iptables` prints: per family, the restore payload, then the
/// POSTROUTING jump as a comment (it is kept exactly once, not appended by the payload), so the
/// IPv4 part can be piped into `iptables-restore --noflush` as is.
pub fn render_text(desired: &Desired, options: &RenderOptions) -> String {
    let chain = &desired.node.iptables_chain;
    let policy = desired.policy();
    let mut text = String::new();
    for &family in desired.node.families() {
        if family == Family::V6 {
            text.push('\n');
        }
        text.push_str(&format!("# {}-restore --noflush\n", family.command()));
        text.push_str(&restore_payload(
            "nat",
            chain,
            &chain_rules(desired, policy.family(family), options),
            &[],
        ));
        text.push_str(&format!(
            "# nat POSTROUTING jump, kept exactly once ({} -t nat -C, else -A):\n# {}\n",
            family.command(),
            jump_rule(chain)
        ));
    }
    text
}

/// Chain names iptables accepts: 1 to 28 bytes, no whitespace, not starting with `-` or `!`.
pub fn validate_chain_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 28 {
        return Err(format!(
            "iptables chain name {name:?} must be 1 to 28 characters long"
        ));
    }
    if name.starts_with(['-', '!']) || name.chars().any(|c| c.is_whitespace() || c == '"') {
        return Err(format!(
            "iptables chain name {name:?} must not start with '-' or '!' nor contain spaces or quotes"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probability_matches_what_the_statistic_extension_prints() {
        // Values read back from `iptables-save` after loading upstream's shortest-float form.
        assert_eq!(probability(1, 2), "0.50000000000");
        assert_eq!(probability(4709, 10000), "0.47090000007");
        assert_eq!(probability(1, 3), "0.33333333349");
    }

    #[test]
    fn both_forms_of_upstreams_jump_are_recognised() {
        let ours = jump_rule("IP-MASQ-AGENT");
        let quoted = ours.replace(
            "--comment \"ip-masq-agent: ensure nat POSTROUTING directs all non-LOCAL destination \
             traffic to our custom IP-MASQ-AGENT chain\"",
            "--comment \"\\\"ip-masq-agent: ensure nat POSTROUTING directs all non-LOCAL \
             destination traffic to our custom IP-MASQ-AGENT chain\\\"\"",
        );
        assert_ne!(ours, quoted);
        let other_chain = jump_rule("IP-MASQ");
        let unrelated = "-A POSTROUTING -j IP-MASQ-AGENT".to_string();
        let save = format!(
            "*nat\n:POSTROUTING ACCEPT [0:0]\n{ours}\n{quoted}\n{other_chain}\n{unrelated}\nCOMMIT\n"
        );
        let table = NatTable::parse(&save);
        assert_eq!(upstream_jumps(&table, "IP-MASQ-AGENT"), vec![ours, quoted]);
        assert_eq!(upstream_jumps(&table, "IP-MASQ"), vec![other_chain]);
    }

    #[test]
    fn chain_names_are_checked() {
        assert!(validate_chain_name("IP-MASQ-AGENT").is_ok());
        assert!(validate_chain_name("").is_err());
        assert!(validate_chain_name(&"X".repeat(29)).is_err());
        assert!(validate_chain_name("-X").is_err());
        assert!(validate_chain_name("A B").is_err());
    }
}
