//! Which iptables the host uses (nf_tables or legacy), chosen the way kube's iptables-wrapper
//! does, and what that iptables can do.
//!
//! Both backends can hold rules at the same time and both act on packets, so writing to the one
//! kubelet and kube-proxy do not use would give a second, invisible nat table. The evidence, in
//! order: kubelet's hint chains (`KUBE-IPTABLES-HINT`, `KUBE-KUBELET-CANARY`) in a backend; then
//! whichever backend holds more rules; then the backend the host's `iptables` binary is built for.

use crate::ipt::render::{Family, IptFamily};
use crate::ipt::save::count_rule_lines;

/// An iptables backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// iptables-nft: the xtables syntax on nf_tables.
    Nft,
    /// iptables-legacy: the old kernel tables, serialised by the xtables lock.
    Legacy,
}

/// One of the three programs of a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    /// `iptables` itself (`-C` checks).
    Main,
    /// `iptables-save`.
    Save,
    /// `iptables-restore`.
    Restore,
}

impl Backend {
    /// `nft` or `legacy`, as in the binaries' names.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Nft => "nft",
            Backend::Legacy => "legacy",
        }
    }

    /// The other backend.
    pub fn other(self) -> Backend {
        match self {
            Backend::Nft => Backend::Legacy,
            Backend::Legacy => Backend::Nft,
        }
    }

    /// The program name, e.g. `ip6tables-legacy-restore`.
    pub fn program(self, family: Family, tool: Tool) -> String {
        let suffix = match tool {
            Tool::Main => "",
            Tool::Save => "-save",
            Tool::Restore => "-restore",
        };
        format!("{}-{}{suffix}", family.command(), self.as_str())
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the host shows about each backend, gathered by [`crate::ipt::Iptables::detect`].
#[derive(Clone, Debug, Default)]
pub struct Evidence {
    /// `iptables-nft-save` and `ip6tables-nft-save` output, concatenated.
    pub nft_save: String,
    /// `iptables-legacy-save` and `ip6tables-legacy-save` output, concatenated.
    pub legacy_save: String,
    /// `iptables --version` of the host's default binary, if it ran.
    pub default_version: Option<String>,
}

/// The backend the evidence points to.
pub fn choose(evidence: &Evidence) -> Backend {
    let hinted = |save: &str| {
        save.lines()
            .any(|l| l.starts_with(":KUBE-IPTABLES-HINT") || l.starts_with(":KUBE-KUBELET-CANARY"))
    };
    if hinted(&evidence.nft_save) {
        return Backend::Nft;
    }
    if hinted(&evidence.legacy_save) {
        return Backend::Legacy;
    }
    let legacy_rules = count_rule_lines(&evidence.legacy_save);
    let nft_rules = count_rule_lines(&evidence.nft_save);
    if legacy_rules != nft_rules {
        return if legacy_rules > nft_rules {
            Backend::Legacy
        } else {
            Backend::Nft
        };
    }
    match evidence.default_version.as_deref() {
        Some(v) if v.contains("(legacy)") => Backend::Legacy,
        _ => Backend::Nft,
    }
}

/// `--random-fully` exists from iptables 1.6.2 on (what upstream's `HasRandomFully` checks).
/// `version` is the output of `iptables --version`, e.g. `iptables v1.8.9 (nf_tables)`.
pub fn supports_random_fully(version: &str) -> bool {
    let Some(number) = version
        .split_whitespace()
        .find_map(|word| word.strip_prefix('v'))
    else {
        return false;
    };
    let parts: Vec<u32> = number.split('.').map_while(|p| p.parse().ok()).collect();
    let [major, minor, patch] = [0, 1, 2].map(|i| parts.get(i).copied().unwrap_or(0));
    (major, minor, patch) >= (1, 6, 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evidence(nft: &str, legacy: &str, version: Option<&str>) -> Evidence {
        Evidence {
            nft_save: nft.to_string(),
            legacy_save: legacy.to_string(),
            default_version: version.map(str::to_string),
        }
    }

    #[test]
    fn kubelet_hint_wins_over_rule_counts() {
        let many = "-A A\n-A B\n-A C\n";
        let hint = "*mangle\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n";
        assert_eq!(choose(&evidence(hint, many, None)), Backend::Nft);
        assert_eq!(choose(&evidence(many, hint, None)), Backend::Legacy);
    }

    #[test]
    fn more_rules_wins_then_the_default_binary() {
        assert_eq!(
            choose(&evidence("-A X\n", "-A X\n-A Y\n", None)),
            Backend::Legacy
        );
        assert_eq!(
            choose(&evidence("-A X\n-A Y\n", "-A X\n", None)),
            Backend::Nft
        );
        let legacy = Some("iptables v1.8.9 (legacy)");
        let nft = Some("iptables v1.8.9 (nf_tables)");
        assert_eq!(choose(&evidence("", "", legacy)), Backend::Legacy);
        assert_eq!(choose(&evidence("", "", nft)), Backend::Nft);
        assert_eq!(choose(&evidence("", "", None)), Backend::Nft);
    }

    #[test]
    fn random_fully_needs_1_6_2() {
        assert!(supports_random_fully("iptables v1.8.9 (nf_tables)"));
        assert!(supports_random_fully("iptables v1.6.2"));
        assert!(!supports_random_fully("iptables v1.6.1"));
        assert!(!supports_random_fully("iptables v1.4.21"));
        assert!(!supports_random_fully("garbage"));
    }

    #[test]
    fn program_names() {
        assert_eq!(
            Backend::Legacy.program(Family::V6, Tool::Restore),
            "ip6tables-legacy-restore"
        );
        assert_eq!(Backend::Nft.program(Family::V4, Tool::Main), "iptables-nft");
    }
}
