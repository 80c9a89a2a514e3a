//! [`CompiledPolicy`]: the config and the node's context compiled once, per address family,
//! into the ordered exemptions of the decision (docs/decision.md). [`crate::Policy`] evaluates
//! it for one packet; the datapaths render it as rules or map contents.

use std::net::IpAddr;

use ipnet::IpNet;
use masq_config::Config;

use crate::{Action, Family, NodeContext, Reason};

/// The decision for one config and one node, ready to render: one [`FamilyPolicy`] per family.
///
/// Both families are always compiled; a datapath that leaves IPv6 alone (no `--enable-ipv6`)
/// renders `v4` only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledPolicy {
    /// IPv4 packets.
    pub v4: FamilyPolicy,
    /// IPv6 packets.
    pub v6: FamilyPolicy,
}

impl CompiledPolicy {
    /// Compiles the config and what the node adds.
    pub fn compile(config: &Config, node: &NodeContext) -> CompiledPolicy {
        CompiledPolicy {
            v4: FamilyPolicy::compile(Family::V4, config, node),
            v6: FamilyPolicy::compile(Family::V6, config, node),
        }
    }

    /// The policy of one family.
    pub fn family(&self, family: Family) -> &FamilyPolicy {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }
}

/// The decision for packets of one family: the exemptions in the order they are tried (see
/// [`FamilyPolicy::exemptions`]); a packet no exemption keeps is masqueraded, with the reason
/// `masquerade-cidr` when a `masqueradeCIDRs` entry is its longest destination match
/// ([`Destinations::masquerade`]), else `default`.
///
/// Every CIDR list holds only this family's entries, host bits cleared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FamilyPolicy {
    /// Which family.
    pub family: Family,
    /// Step 2, `non-masquerade-src`: sources never masqueraded (`nonMasqueradeSrcCIDRs`).
    pub source_exemptions: Cidrs,
    /// Step 3, `not-a-pod`: which sources are pods.
    pub pods: Pods,
    /// Step 4, `link-local`: the link-local range and whether it is kept.
    pub link_local: LinkLocal,
    /// Step 5, `non-masquerade-cidr`: destinations that keep the pod address, and the
    /// `masqueradeCIDRs` that override them; the longest matching prefix decides.
    pub destinations: Destinations,
    /// Step 6, `local`: the node's own addresses of this family. Also what "not a pod" means
    /// without pod CIDRs ([`Pods::AllButTheNode`]). The netfilter datapaths ask the kernel
    /// instead (`fib daddr type local`, `addrtype`), which knows the same addresses.
    pub local_addrs: Vec<IpAddr>,
}

/// One step of the decision that can keep the pod address, with the data it tests. Walk
/// [`FamilyPolicy::exemptions`] and match every variant: a step added later then fails to
/// compile in every renderer that does not handle it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exemption<'a> {
    /// The source is in these CIDRs (may be empty).
    Sources(&'a Cidrs),
    /// The source is not a pod.
    NotAPod(&'a Pods),
    /// The destination is link-local and the flag keeps it (see [`LinkLocal::exempt`]), unless
    /// a `masqueradeCIDRs` entry decides it ([`Destinations::masqueraded`]).
    LinkLocal(&'a LinkLocal),
    /// The destination's longest match among these CIDRs is one that keeps.
    Destinations(&'a Destinations),
    /// The destination is one of the node's addresses.
    Local(&'a [IpAddr]),
}

impl Exemption<'_> {
    /// The reason a packet kept by this step carries (`masq explain`, rule comments, counters).
    pub fn reason(&self) -> Reason {
        match self {
            Exemption::Sources(_) => Reason::NonMasqueradeSrc,
            Exemption::NotAPod(_) => Reason::NotAPod,
            Exemption::LinkLocal(_) => Reason::LinkLocal,
            Exemption::Destinations(_) => Reason::NonMasqueradeCidr,
            Exemption::Local(_) => Reason::Local,
        }
    }
}

impl FamilyPolicy {
    fn compile(family: Family, config: &Config, node: &NodeContext) -> FamilyPolicy {
        let exempt = match family {
            Family::V4 => !config.masq_link_local,
            Family::V6 => !config.masq_link_local_ipv6,
        };
        // Whether pods are given by CIDR is one choice for both families: with IPv4 pod CIDRs
        // only, no IPv6 source is a pod (and nothing IPv6 is masqueraded).
        let pods = if node.pod_cidrs.is_empty() {
            Pods::AllButTheNode
        } else {
            Pods::Cidrs(Cidrs::of(family, &node.pod_cidrs))
        };
        FamilyPolicy {
            family,
            source_exemptions: Cidrs::of(family, &config.non_masquerade_src_cidrs),
            pods,
            link_local: LinkLocal {
                range: family.link_local(),
                exempt,
            },
            destinations: Destinations::compile(family, config, node),
            local_addrs: node
                .local_addrs
                .iter()
                .filter(|a| family.holds_addr(a))
                .copied()
                .collect(),
        }
    }

    /// The exemptions in decision order (docs/decision.md), steps 2 to 6. Step 1 (not IP, or a
    /// protocol the datapath cannot translate) is each datapath's own; step 7 is the
    /// masquerade every packet gets that none of these keeps.
    pub fn exemptions(&self) -> [Exemption<'_>; 5] {
        [
            Exemption::Sources(&self.source_exemptions),
            Exemption::NotAPod(&self.pods),
            Exemption::LinkLocal(&self.link_local),
            Exemption::Destinations(&self.destinations),
            Exemption::Local(&self.local_addrs),
        ]
    }

    /// Steps 4 and 5 as one longest-prefix table, each prefix with the action it decides:
    /// [`Destinations::longest_prefix_entries`], plus the link-local range as a prefix that
    /// keeps when step 4 keeps and the range's own longest match does not masquerade (a
    /// `masqueradeCIDRs` entry holding the whole range, not outdone by a longer keeping one,
    /// takes it from step 4). An LPM trie of these gives steps 4 and 5 their action in one
    /// lookup ([`FamilyPolicy::destination_reason`] the reason); a destination it does not
    /// match goes on to step 6.
    pub fn destination_entries(&self) -> Vec<(IpNet, Action)> {
        let range = self.link_local.range;
        let mut entries = self.destinations.longest_prefix_entries();
        let covering = entries
            .iter()
            .filter(|(net, _)| net.contains(&range))
            .max_by_key(|(net, _)| net.prefix_len());
        let add = match covering {
            None => true,
            // The range's own entry is there already; with `Keep`, its reason is step 4's.
            Some((net, _)) if *net == range => false,
            Some((_, action)) => *action == Action::Keep,
        };
        if self.link_local.exempt && add {
            entries.push((range, Action::Keep));
            entries.sort_by_key(|(net, _)| *net);
        }
        entries
    }

    /// The reason a packet carries when `net`, an entry of
    /// [`FamilyPolicy::destination_entries`], is its longest match and decides `action`: a
    /// keeping entry inside the link-local range is step 4's when that step keeps (it comes
    /// first), any other keeping entry step 5's, a masquerading one `masquerade-cidr`.
    pub fn destination_reason(&self, net: &IpNet, action: Action) -> Reason {
        match action {
            Action::Masquerade => Reason::MasqueradeCidr,
            Action::Keep if self.link_local.exempt && self.link_local.range.contains(net) => {
                Reason::LinkLocal
            }
            Action::Keep => Reason::NonMasqueradeCidr,
        }
    }
}

/// A list of CIDRs of one family, as configured and collapsed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cidrs {
    written: Vec<IpNet>,
    collapsed: Vec<IpNet>,
}

impl Cidrs {
    /// The entries of `family` among `nets`, host bits cleared.
    pub fn of<'a>(family: Family, nets: impl IntoIterator<Item = &'a IpNet>) -> Cidrs {
        let written: Vec<IpNet> = nets
            .into_iter()
            .filter(|n| family.holds_net(n))
            .map(IpNet::trunc)
            .collect();
        let collapsed = crate::merge_cidrs(&written);
        Cidrs { written, collapsed }
    }

    /// In the order configured, duplicates and overlaps kept: one iptables rule each, as
    /// kubernetes-sigs/ip-masq-agent writes them.
    pub fn as_written(&self) -> &[IpNet] {
        &self.written
    }

    /// The fewest non-overlapping CIDRs covering the same addresses, sorted: what an interval
    /// set accepts.
    pub fn collapsed(&self) -> &[IpNet] {
        &self.collapsed
    }

    /// No entry at all.
    pub fn is_empty(&self) -> bool {
        self.written.is_empty()
    }
}

/// Which sources are pods (step 3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pods {
    /// `--pod-cidr` given: a pod is a source inside these (this family's; empty when only the
    /// other family has pod CIDRs, and then no source of this family is a pod).
    Cidrs(Cidrs),
    /// No `--pod-cidr`: every source but the node's own addresses
    /// ([`FamilyPolicy::local_addrs`]). The netfilter datapaths test no source at all here,
    /// like kubernetes-sigs/ip-masq-agent (destination-only): what the node sends from its
    /// own address is translated too, to that same address unless `--snat-ip` names another.
    AllButTheNode,
}

/// The link-local range of a family and whether step 4 keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkLocal {
    /// 169.254.0.0/16 or fe80::/10.
    pub range: IpNet,
    /// `true` when the family's `masqLinkLocal*` flag is false: destinations in `range` keep
    /// the pod address.
    pub exempt: bool,
}

/// The destinations of step 5: the prefixes that keep and those that masquerade; the longest
/// one matching a destination decides. A `masqueradeCIDRs` entry inside a
/// `nonMasqueradeCIDRs` range masquerades its part of it, and a longer keeping entry inside
/// that keeps again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destinations {
    /// `nonMasqueradeCIDRs` of this family, then `--native-routing-cidr`. A default entry
    /// equal to a `masqueradeCIDRs` entry is left out: the operator's entry wins (the same
    /// prefix written in both lists is a config error).
    pub keep: Cidrs,
    /// `masqueradeCIDRs` of this family, without the entries inside `--native-routing-cidr`,
    /// which no config can take back from the pods.
    pub masquerade: Cidrs,
    kept: Vec<IpNet>,
    masqueraded: Vec<IpNet>,
}

impl Destinations {
    fn compile(family: Family, config: &Config, node: &NodeContext) -> Destinations {
        let native = node
            .native_routing_cidr
            .filter(|n| family.holds_net(n))
            .map(|n| n.trunc());
        let masquerade = Cidrs::of(
            family,
            config
                .masquerade_cidrs
                .iter()
                .filter(|f| !native.is_some_and(|n| n.contains(*f))),
        );
        let forced = masquerade.as_written();
        let keep = Cidrs::of(
            family,
            config
                .non_masquerade_cidrs
                .iter()
                .filter(|k| !forced.contains(&k.trunc()))
                .chain(native.as_ref()),
        );
        let mut destinations = Destinations {
            keep,
            masquerade,
            kept: Vec::new(),
            masqueraded: Vec::new(),
        };
        if destinations.masquerade.is_empty() {
            destinations.kept = destinations.keep.collapsed().to_vec();
        } else {
            let entries = destinations.longest_prefix_entries();
            destinations.kept = crate::lpm::winning(&entries, Action::Keep);
            destinations.masqueraded = crate::lpm::winning(&entries, Action::Masquerade);
        }
        destinations
    }

    /// Every distinct prefix of both lists with the action it decides, sorted: the entries of
    /// an LPM trie whose value carries the verdict.
    pub fn longest_prefix_entries(&self) -> Vec<(IpNet, Action)> {
        let mut entries: Vec<(IpNet, Action)> = self
            .keep
            .as_written()
            .iter()
            .map(|n| (*n, Action::Keep))
            .chain(
                self.masquerade
                    .as_written()
                    .iter()
                    .map(|n| (*n, Action::Masquerade)),
            )
            .collect();
        entries.sort_by_key(|(net, _)| *net);
        entries.dedup_by_key(|(net, _)| *net);
        entries
    }

    /// The addresses step 5 keeps, as the fewest non-overlapping CIDRs, sorted: the elements of
    /// an interval set.
    pub fn kept(&self) -> &[IpNet] {
        &self.kept
    }

    /// The addresses whose longest match is a `masqueradeCIDRs` entry, as the fewest
    /// non-overlapping CIDRs, sorted. They skip step 4 and keep no pod address at step 5; they
    /// are masqueraded with the reason `masquerade-cidr` unless step 6 keeps them (a node
    /// address is never translated).
    pub fn masqueraded(&self) -> &[IpNet] {
        &self.masqueraded
    }
}
