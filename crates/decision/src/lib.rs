//! The decision of SPEC section 3, as a pure function: (source, destination) → [`Verdict`].
//!
//! [`Policy`] is compiled once from a [`masq_config::Config`] plus what the node contributes
//! ([`NodeContext`]: pod CIDRs, local addresses, Cilium's native-routing CIDR) and then answers
//! [`Policy::decide`] with a longest-prefix match. `masq explain`, the renderers and the datapath
//! tests all ask this one function, so they cannot disagree.
#![deny(missing_docs)]
//!
//! ```
//! use masq_config::Config;
//! use masq_decision::{Action, NodeContext, Policy, Reason};
//!
//! let policy = Policy::new(&Config::default(), &NodeContext::default());
//! let verdict = policy.decide(None, "10.1.2.3".parse().unwrap());
//! assert_eq!((verdict.action, verdict.reason), (Action::Keep, Reason::NonMasqueradeCidr));
//! assert_eq!(verdict.matched, Some("10.0.0.0/8".parse().unwrap()));
//! assert_eq!(policy.decide(None, "8.8.8.8".parse().unwrap()).action, Action::Masquerade);
//! ```

mod merge;
mod policy;
mod table;

use std::net::IpAddr;

use ipnet::IpNet;

pub use merge::merge_cidrs;
pub use policy::Policy;

/// What happens to a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// The source becomes the node's address.
    Masquerade,
    /// The source stays the pod's address.
    Keep,
}

/// Why: the step of SPEC section 3 that decided. Serialized names are those of `explain -o json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// Source is in `nonMasqueradeSrcCIDRs`.
    NonMasqueradeSrc,
    /// Source is not a pod.
    NotAPod,
    /// Link-local destination with the matching `masqLinkLocal*` flag false.
    LinkLocal,
    /// Destination in `nonMasqueradeCIDRs` (or the native-routing CIDR).
    NonMasqueradeCidr,
    /// Destination is an address of the node.
    Local,
    /// Nothing exempted it.
    Default,
}

/// The answer for one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Verdict {
    /// Masquerade or keep.
    pub action: Action,
    /// The step that decided.
    pub reason: Reason,
    /// The most specific CIDR that decided, if a CIDR did.
    pub matched: Option<IpNet>,
}

/// What the node adds to the config: flags and addresses learnt at run time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeContext {
    /// `--pod-cidr`: when non-empty, only sources inside these are pods.
    pub pod_cidrs: Vec<IpNet>,
    /// Addresses of the node itself (never pods; local destinations are kept).
    pub local_addrs: Vec<IpAddr>,
    /// `--native-routing-cidr`: one more non-masquerade destination no config can remove.
    pub native_routing_cidr: Option<IpNet>,
}

#[cfg(test)]
mod tests;
