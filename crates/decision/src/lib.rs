//! The decision of docs/decision.md: which packets masq masquerades, and why.
//!
//! [`CompiledPolicy::compile`] turns a [`masq_config::Config`] plus what the node contributes
//! ([`NodeContext`]: pod CIDRs, local addresses, Cilium's native-routing CIDR) into one
//! [`FamilyPolicy`] per address family: the exemptions in the order they are tried, each with
//! the [`Reason`] it carries and the CIDRs it tests (as written and collapsed). A packet that no
//! exemption keeps is masqueraded. Every consumer takes its decision from that one structure:
//!
//! - [`Policy`] walks it for one packet (`masq explain`, and the oracle the datapaths' property
//!   tests compare against);
//! - the nftables and iptables datapaths render it as rules and interval sets;
//! - the eBPF datapath renders it as map contents.
//!
//! Step 5 compares `nonMasqueradeCIDRs` with `masqueradeCIDRs` by longest prefix
//! ([`Destinations`]). Each form a datapath needs is computed here: the prefixes as written
//! (first-match chains), the outcome flattened into non-overlapping sets
//! ([`Destinations::kept`], [`Destinations::masqueraded`]: interval sets), and one LPM table
//! whose entries carry their action, link-local included
//! ([`FamilyPolicy::destination_entries`]: tries).
//!
//! Link-local ranges ([`Family::link_local`]), the reasons and their order are defined here
//! once.
#![deny(missing_docs)]
//!
//! ```
//! use masq_config::Config;
//! use masq_decision::{Action, CompiledPolicy, Exemption, NodeContext, Policy, Reason};
//!
//! let node = NodeContext {
//!     pod_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
//!     ..NodeContext::default()
//! };
//! let compiled = CompiledPolicy::compile(&Config::default(), &node);
//!
//! // A renderer walks the exemptions of each family in order.
//! let reasons: Vec<Reason> = compiled.v4.exemptions().iter().map(Exemption::reason).collect();
//! assert_eq!(reasons, [
//!     Reason::NonMasqueradeSrc,
//!     Reason::NotAPod,
//!     Reason::LinkLocal,
//!     Reason::NonMasqueradeCidr,
//!     Reason::Local,
//! ]);
//! assert!(compiled.v4.link_local.exempt);
//! assert_eq!(compiled.v4.destinations.kept().len(), 11); // the reserved ranges
//! assert!(compiled.v6.destinations.kept().is_empty());
//!
//! // Policy answers for one packet from the same structure.
//! let policy = Policy::from_compiled(compiled);
//! let pod = Some("10.244.1.5".parse().unwrap());
//! let verdict = policy.decide(pod, "10.1.2.3".parse().unwrap());
//! assert_eq!((verdict.action, verdict.reason), (Action::Keep, Reason::NonMasqueradeCidr));
//! assert_eq!(verdict.matched, Some("10.0.0.0/8".parse().unwrap()));
//! assert_eq!(policy.decide(pod, "8.8.8.8".parse().unwrap()).action, Action::Masquerade);
//! let node = Some("172.30.0.1".parse().unwrap());
//! assert_eq!(policy.decide(node, "8.8.8.8".parse().unwrap()).reason, Reason::NotAPod);
//!
//! // A forced range inside an exempt one, and an exempt one inside that.
//! let config = Config {
//!     non_masquerade_cidrs: vec!["10.0.0.0/8".parse().unwrap(), "10.5.3.0/24".parse().unwrap()],
//!     masquerade_cidrs: vec!["10.5.0.0/16".parse().unwrap()],
//!     ..Config::default()
//! };
//! let compiled = CompiledPolicy::compile(&config, &NodeContext::default());
//! let trie: Vec<(String, Action)> = compiled.v4.destination_entries()
//!     .into_iter().map(|(net, action)| (net.to_string(), action)).collect();
//! assert_eq!(trie, [
//!     ("10.0.0.0/8".to_string(), Action::Keep),
//!     ("10.5.0.0/16".to_string(), Action::Masquerade),
//!     ("10.5.3.0/24".to_string(), Action::Keep),
//!     ("169.254.0.0/16".to_string(), Action::Keep),
//! ]);
//! let policy = Policy::from_compiled(compiled);
//! let verdict = policy.decide(None, "10.5.4.1".parse().unwrap());
//! assert_eq!((verdict.action, verdict.reason), (Action::Masquerade, Reason::MasqueradeCidr));
//! assert_eq!(policy.decide(None, "10.5.3.1".parse().unwrap()).action, Action::Keep);
//! ```

mod compiled;
mod family;
mod lpm;
mod merge;
mod policy;
mod table;

use std::net::IpAddr;

use ipnet::IpNet;

pub use compiled::{Cidrs, CompiledPolicy, Destinations, Exemption, FamilyPolicy, LinkLocal, Pods};
pub use family::Family;
pub use merge::merge_cidrs;
pub use policy::Policy;

/// What happens to a packet. Serialized as [`Action::as_str`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// The source becomes the node's address.
    Masquerade,
    /// The source stays the pod's address.
    Keep,
}

impl Action {
    /// The name `masq explain` prints (the serialized name).
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::Masquerade => "masquerade",
            Action::Keep => "keep",
        }
    }
}

/// Why: the step of docs/decision.md that decided. [`Reason::as_str`] is the one spelling,
/// for `explain` (text and JSON), rule comments and metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
    /// Nothing exempted it, and its longest destination match is in `masqueradeCIDRs`.
    MasqueradeCidr,
    /// Nothing exempted it.
    Default,
}

impl Reason {
    /// Every reason, in decision order.
    pub const ALL: [Reason; 7] = [
        Reason::NonMasqueradeSrc,
        Reason::NotAPod,
        Reason::LinkLocal,
        Reason::NonMasqueradeCidr,
        Reason::Local,
        Reason::MasqueradeCidr,
        Reason::Default,
    ];

    /// The name `masq explain` prints (the serialized name).
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::NonMasqueradeSrc => "non-masquerade-src",
            Reason::NotAPod => "not-a-pod",
            Reason::LinkLocal => "link-local",
            Reason::NonMasqueradeCidr => "non-masquerade-cidr",
            Reason::Local => "local",
            Reason::MasqueradeCidr => "masquerade-cidr",
            Reason::Default => "default",
        }
    }
}

impl serde::Serialize for Action {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl serde::Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
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
