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
