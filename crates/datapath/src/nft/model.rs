//! The ruleset masq wants, as plain data. [`Ruleset::build`] (in `build`) turns the compiled
//! policy into sets and rules once; `render` prints that model as nft syntax and `json` turns
//! the very same model into the transaction, so what `masq render` shows is what `sync`
//! installs.

use std::net::IpAddr;

use ipnet::IpNet;
use masq_decision::{Action, Reason};

pub use masq_decision::Family;

use crate::PortRange;

/// The base chain that does the work. The table is masq's own, so names need no prefix.
pub const CHAIN: &str = "postrouting";

/// `srcnat`: the standard priority of source NAT on the postrouting hook.
pub const SRCNAT_PRIORITY: i32 = 100;

/// The base chain that marks connections for egress routing (only with an egress interface).
pub const MARK_CHAIN: &str = "prerouting";

/// `dstnat + 10`: after conntrack (-200), so `ct state` and `ct mark` are known, and after
/// destination NAT (-100, kube-proxy's service DNAT), so the decision sees the destination the
/// postrouting chain will see; still before the routing decision, which the mark must steer
/// (the kernel routes only once the whole prerouting hook has run).
pub const MARK_PRIORITY: i32 = -90;

/// The one comment per decision step, the reasons of `masq explain` (defined in the decision
/// crate), so status can label each rule's counter with the reason it counts.
pub mod reason {
    use super::{Action, Reason};

    /// Source in `nonMasqueradeSrcCIDRs`.
    pub const NON_MASQUERADE_SRC: &str = Reason::NonMasqueradeSrc.as_str();
    /// Source outside the pod CIDRs.
    pub const NOT_A_POD: &str = Reason::NotAPod.as_str();
    /// Link-local destination, kept.
    pub const LINK_LOCAL: &str = Reason::LinkLocal.as_str();
    /// Destination in `nonMasqueradeCIDRs` or the native-routing CIDR.
    pub const NON_MASQUERADE_CIDR: &str = Reason::NonMasqueradeCidr.as_str();
    /// Destination is an address of the node.
    pub const LOCAL: &str = Reason::Local.as_str();
    /// The destination's longest match is a `masqueradeCIDRs` entry: translated.
    pub const MASQUERADE_CIDR: &str = Reason::MasqueradeCidr.as_str();
    /// Nothing exempted the packet: it is translated (labelled by the action; `masq explain`
    /// names the reason `default`).
    pub const MASQUERADE: &str = Action::Masquerade.as_str();
    /// A later packet or a reply of a marked connection gets the mark back from conntrack.
    pub const EGRESS_RESTORE: &str = "egress-restore";
    /// Only the first packet of a connection is decided on.
    pub const ESTABLISHED: &str = "established";
    /// The first packet of a connection that will be masqueraded: marked for egress routing.
    pub const EGRESS_MARK: &str = "egress-mark";
}

/// How nftables spells a [`Family`].
pub trait NftFamily {
    /// The payload protocol in a match (`ip saddr`, `ip6 saddr`).
    fn payload(self) -> &'static str;
    /// The value of `meta nfproto`.
    fn nfproto(self) -> &'static str;
    /// The element type of an address set.
    fn set_type(self) -> &'static str;
}

impl NftFamily for Family {
    fn payload(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }

    fn nfproto(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }

    fn set_type(self) -> &'static str {
        match self {
            Family::V4 => "ipv4_addr",
            Family::V6 => "ipv6_addr",
        }
    }
}

/// A named interval set of addresses of one family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetSpec {
    /// Name inside the table.
    pub name: String,
    /// Element family.
    pub family: Family,
    /// Non-overlapping prefixes, sorted (overlaps and duplicates merged first, because an
    /// interval set rejects overlapping elements).
    pub elements: Vec<IpNet>,
}

/// One match of a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cond {
    /// `ip saddr @set`, or `ip saddr != @set` when `negate`.
    SaddrInSet {
        /// Address family of the match.
        family: Family,
        /// Set name.
        set: String,
        /// Match sources outside the set instead.
        negate: bool,
    },
    /// `ip daddr @set`, or `ip daddr != @set` when `negate`.
    DaddrInSet {
        /// Address family of the match.
        family: Family,
        /// Set name.
        set: String,
        /// Match destinations outside the set instead.
        negate: bool,
    },
    /// `ip daddr 169.254.0.0/16`.
    DaddrIn(IpNet),
    /// `fib daddr type local`: the destination is an address of this node.
    DaddrLocal,
    /// `meta nfproto ipv4`.
    Nfproto(Family),
    /// `meta l4proto { tcp, udp }`: only these carry ports a port range can apply to.
    TcpOrUdp,
    /// `numgen random mod OF < SIZE`: true for `SIZE` of every `OF` new connections, at
    /// random. Netfilter NAT takes one port range per rule, so a port list is one rule per
    /// range, each taking its share of what the rules before it left (as the iptables
    /// `statistic` match does for ip-masq-agent's `--to-ports`): every port equally likely.
    PortShare {
        /// Ports of this rule's range.
        size: u32,
        /// Ports of this range and the ranges after it.
        of: u32,
    },
    /// `ct mark & MARK == MARK`: the connection was marked for egress routing.
    CtMarkHas(u32),
    /// `ct state != new`: not the first packet of its connection.
    CtStateNotNew,
}

/// What a rule does with a packet that matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Leave the chain: no translation.
    Return,
    /// Translate to the egress interface's address.
    Masquerade {
        /// Translated source ports.
        ports: Option<PortRange>,
    },
    /// Translate to an address of the SNAT pool (`--snat-ip`, `--snat-ips-from-interface`):
    /// the only one, or the one `jhash` of the pod's address picks (see [`crate::pool`]).
    Snat {
        /// The pool, in order, one family, never empty.
        pool: Vec<IpAddr>,
        /// Translated source ports.
        ports: Option<PortRange>,
    },
    /// `meta mark set meta mark | MARK`, and the next rule: the packet is routed by masq's
    /// `ip rule`.
    RestoreMark(u32),
    /// `meta mark set meta mark | MARK ct mark set ct mark | MARK`: this packet and, through
    /// conntrack, the rest of its connection.
    SetMark(u32),
}

/// One rule of the chain; every rule counts its packets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSpec {
    /// All must match.
    pub conds: Vec<Cond>,
    /// What to do then.
    pub verdict: Verdict,
    /// The decision step this rule implements (one of [`reason`]).
    pub comment: &'static str,
}

/// Everything masq installs in its table: the sets, then the rules of [`CHAIN`] in order, and
/// with egress routing the rules of [`MARK_CHAIN`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ruleset {
    /// Interval sets, in a stable order.
    pub sets: Vec<SetSpec>,
    /// Rules of the postrouting chain, in evaluation order (docs/decision.md).
    pub rules: Vec<RuleSpec>,
    /// Rules of the prerouting chain that marks connections for egress routing; empty (and
    /// the chain absent) without an egress interface or with `--egress-mark 0`.
    pub mark_rules: Vec<RuleSpec>,
}

impl Ruleset {
    /// Walks the chain for one packet the way the kernel would and returns the first rule that
    /// matches (None: no rule matched and the packet leaves untouched). `local` are the node's
    /// addresses, what `fib daddr type local` answers from. Lets tests check the generated
    /// rules against the decision crate for arbitrary packets.
    pub fn evaluate(&self, src: IpAddr, dst: IpAddr, local: &[IpAddr]) -> Option<&RuleSpec> {
        let family = Family::of_addr(&dst);
        let in_set = |name: &str, addr: IpAddr| {
            self.sets
                .iter()
                .find(|s| s.name == name)
                .is_some_and(|s| s.elements.iter().any(|net| net.contains(&addr)))
        };
        let holds = |cond: &Cond| match cond {
            Cond::SaddrInSet {
                family: f,
                set,
                negate,
            } => *f == family && in_set(set, src) != *negate,
            Cond::DaddrInSet {
                family: f,
                set,
                negate,
            } => *f == family && in_set(set, dst) != *negate,
            Cond::DaddrIn(net) => net.contains(&dst),
            Cond::DaddrLocal => local.contains(&dst),
            Cond::Nfproto(f) => *f == family,
            // The walk is for TCP and UDP packets.
            Cond::TcpOrUdp => true,
            // Every rule of a port list translates alike; the walk takes the first.
            Cond::PortShare { .. } => true,
            // … that open a connection.
            Cond::CtMarkHas(_) | Cond::CtStateNotNew => false,
        };
        self.rules.iter().find(|rule| rule.conds.iter().all(holds))
    }

    /// Set elements plus rules: the size of the ruleset, for metrics and status.
    pub fn entries(&self) -> usize {
        self.rules.len()
            + self.mark_rules.len()
            + self.sets.iter().map(|s| s.elements.len()).sum::<usize>()
    }
}
