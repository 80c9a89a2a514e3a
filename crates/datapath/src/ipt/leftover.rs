//! Chains other agents (or other masq settings) left behind, for `masq status`.

use super::backend::Tool;
use super::render::{Family, IptFamily, COMMENT_PREFIX};
use super::save::NatTable;
use super::{Backend, Iptables};
use crate::Error;

/// The chains every `nat` table has; rules there may mention ip-masq-agent (the jump) but the
/// chains are nobody's leftovers.
const BUILT_IN_NAT_CHAINS: [&str; 4] = ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"];

/// Comments of ip-masq-agent (`ip-masq-agent: …`, sometimes within literal quotes) and of the
/// `IP-MASQ` chain kube-up's node scripts wrote before it (`ip-masq: …`).
fn has_ip_masq_comment(rule: &str) -> bool {
    ["--comment \"", "--comment \"\\\""].iter().any(|opening| {
        [COMMENT_PREFIX, "ip-masq: "]
            .iter()
            .any(|prefix| rule.contains(&format!("{opening}{prefix}")))
    })
}

/// A chain in some `nat` table that carries ip-masq-agent comments but is not masq's: what
/// upstream (or masq with another `--masq-chain`, or the other backend) left behind.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Leftover {
    /// The backend holding it.
    pub backend: Backend,
    /// `iptables` or `ip6tables`.
    pub family: &'static str,
    /// The chain's name.
    pub chain: String,
    /// Its rules.
    pub rules: usize,
    /// Whether `POSTROUTING` still jumps to it (then it still acts on traffic).
    pub referenced: bool,
}

impl Iptables {
    /// Chains with ip-masq-agent comments other than `chain` in this backend, and any such chain
    /// (ours included) in the other backend if its programs are installed. For `masq status`.
    pub fn leftovers(&self, chain: &str) -> Result<Vec<Leftover>, Error> {
        let mut found = Vec::new();
        for backend in [self.backend, self.backend.other()] {
            for family in Family::ALL {
                let program = backend.program(family, Tool::Save);
                let table = match self.runner.run(&program, &[], None) {
                    Ok(finished) if finished.code == 0 => NatTable::parse(&finished.stdout),
                    // Not installed, or no such family in this kernel: nothing left there.
                    Ok(_) | Err(Error::Unsupported(_)) => continue,
                    Err(e) if backend != self.backend => {
                        tracing::debug!(%program, error = %e, "cannot read the other backend");
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                for name in table.chain_names() {
                    let ours = backend == self.backend && name == chain;
                    let rules = table.rules(name).unwrap_or_default();
                    let commented = rules.iter().any(|r| has_ip_masq_comment(r));
                    if ours || !commented || BUILT_IN_NAT_CHAINS.contains(&name) {
                        continue;
                    }
                    found.push(Leftover {
                        backend,
                        family: family.command(),
                        chain: name.to_string(),
                        rules: rules.len(),
                        referenced: !table.jumps_to("POSTROUTING", name).is_empty(),
                    });
                }
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_every_ip_masq_comment_style() {
        let rule =
            |comment: &str| format!("-A X -d 10.0.0.0/8 -m comment --comment {comment} -j RETURN");
        assert!(has_ip_masq_comment(&rule(
            "\"ip-masq-agent: local traffic\""
        )));
        assert!(has_ip_masq_comment(&rule(
            "\"\\\"ip-masq-agent: ensure nat\\\"\""
        )));
        assert!(has_ip_masq_comment(&rule("\"ip-masq: local traffic\"")));
        assert!(!has_ip_masq_comment(&rule(
            "\"kind-masq-agent: local traffic\""
        )));
        assert!(!has_ip_masq_comment("-A X -d 10.0.0.0/8 -j RETURN"));
    }
}
