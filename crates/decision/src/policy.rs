//! [`Policy`]: a [`CompiledPolicy`] with lookup tables, answering for one packet at a time by
//! walking its exemptions in order.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;
use masq_config::Config;

use crate::compiled::{CompiledPolicy, Exemption, Pods};
use crate::table::CidrTable;
use crate::{Action, Family, NodeContext, Reason, Verdict};

/// The decision for one node and one config, ready to answer many packets.
#[derive(Clone, Debug)]
pub struct Policy {
    compiled: CompiledPolicy,
    /// The tables span both families: a source is looked up in its own family's entries.
    sources: CidrTable,
    pods: CidrTable,
    /// Destinations that keep, and those forced to masquerade: the longer match decides.
    keep: CidrTable,
    forced: CidrTable,
    local_addrs: HashSet<IpAddr>,
}

impl Policy {
    /// Compiles the config and what the node adds ([`CompiledPolicy::compile`]) into lookup
    /// tables.
    pub fn new(config: &Config, node: &NodeContext) -> Policy {
        Policy::from_compiled(CompiledPolicy::compile(config, node))
    }

    /// The lookup tables of an already compiled policy.
    pub fn from_compiled(compiled: CompiledPolicy) -> Policy {
        let both = [&compiled.v4, &compiled.v6];
        let pods = both.iter().flat_map(|f| match &f.pods {
            Pods::Cidrs(cidrs) => cidrs.as_written(),
            Pods::AllButTheNode => &[],
        });
        Policy {
            sources: CidrTable::new(both.iter().flat_map(|f| f.source_exemptions.as_written())),
            pods: CidrTable::new(pods),
            keep: CidrTable::new(both.iter().flat_map(|f| f.destinations.keep.as_written())),
            forced: CidrTable::new(
                both.iter()
                    .flat_map(|f| f.destinations.masquerade.as_written()),
            ),
            local_addrs: both
                .iter()
                .flat_map(|f| f.local_addrs.iter().copied())
                .collect(),
            compiled,
        }
    }

    /// What the tables were built from.
    pub fn compiled(&self) -> &CompiledPolicy {
        &self.compiled
    }

    /// The verdict for a packet from `src` to `dst`: the first exemption of `dst`'s family
    /// that keeps it, else masquerade.
    ///
    /// `src` is `None` when the source is unknown (`masq explain` without `--src`): the source
    /// steps are skipped, i.e. the packet is taken to come from a pod. Step 1 (not IP, or a
    /// protocol the datapath cannot translate) is the datapath's; an `IpAddr` always passes it.
    pub fn decide(&self, src: Option<IpAddr>, dst: IpAddr) -> Verdict {
        let family = self.compiled.family(Family::of_addr(&dst));
        for exemption in family.exemptions() {
            let kept = match (exemption, src) {
                (Exemption::Sources(_), Some(src)) => self.sources.longest_match(src).map(Some),
                // With pod CIDRs a pod is exactly a source inside them (what every datapath
                // matches); without them, every source but the node's own addresses.
                (Exemption::NotAPod(Pods::Cidrs(_)), Some(src)) => {
                    self.pods.longest_match(src).is_none().then_some(None)
                }
                (Exemption::NotAPod(Pods::AllButTheNode), Some(src)) => self
                    .local_addrs
                    .contains(&src)
                    .then_some(Some(IpNet::from(src))),
                (Exemption::Sources(_) | Exemption::NotAPod(_), None) => None,
                (Exemption::LinkLocal(link_local), _) => (link_local.exempt
                    && link_local.range.contains(&dst)
                    && self.forced_match(dst).is_none())
                .then_some(Some(link_local.range)),
                (Exemption::Destinations(_), _) => match self.forced_match(dst) {
                    Some(_) => None,
                    None => self.keep.longest_match(dst).map(Some),
                },
                (Exemption::Local(_), _) => self
                    .local_addrs
                    .contains(&dst)
                    .then_some(Some(IpNet::from(dst))),
            };
            if let Some(matched) = kept {
                return Verdict {
                    action: Action::Keep,
                    reason: exemption.reason(),
                    matched,
                };
            }
        }
        let forced = self.forced_match(dst);
        Verdict {
            action: Action::Masquerade,
            reason: forced.map_or(Reason::Default, |_| Reason::MasqueradeCidr),
            matched: forced,
        }
    }

    /// The `masqueradeCIDRs` entry that decides `dst`: the longest one holding it, when no
    /// keeping entry holding it is longer.
    fn forced_match(&self, dst: IpAddr) -> Option<IpNet> {
        let forced = self.forced.longest_match(dst)?;
        match self.keep.longest_match(dst) {
            Some(keep) if keep.prefix_len() > forced.prefix_len() => None,
            _ => Some(forced),
        }
    }
}
