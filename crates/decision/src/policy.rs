//! [`Policy`]: the config and the node's context compiled into lookup tables, and the ordered
//! steps of SPEC section 3.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;
use masq_config::{Config, LINK_LOCAL_V4, LINK_LOCAL_V6};

use crate::table::CidrTable;
use crate::{Action, NodeContext, Reason, Verdict};

/// The decision for one node and one config, ready to answer many packets.
#[derive(Clone, Debug)]
pub struct Policy {
    non_masquerade_src: CidrTable,
    pod_cidrs: CidrTable,
    local_addrs: HashSet<IpAddr>,
    masq_link_local: bool,
    masq_link_local_ipv6: bool,
    /// `nonMasqueradeCIDRs` plus the native-routing CIDR.
    non_masquerade_dst: CidrTable,
}

impl Policy {
    /// Compiles the config and what the node adds into lookup tables.
    pub fn new(config: &Config, node: &NodeContext) -> Policy {
        Policy {
            non_masquerade_src: CidrTable::new(&config.non_masquerade_src_cidrs),
            pod_cidrs: CidrTable::new(&node.pod_cidrs),
            local_addrs: node.local_addrs.iter().copied().collect(),
            masq_link_local: config.masq_link_local,
            masq_link_local_ipv6: config.masq_link_local_ipv6,
            non_masquerade_dst: CidrTable::new(
                config
                    .non_masquerade_cidrs
                    .iter()
                    .chain(node.native_routing_cidr.as_ref()),
            ),
        }
    }

    /// The verdict for a packet from `src` to `dst`, following SPEC section 3 in order.
    ///
    /// `src` is `None` when the source is unknown (`masq explain` without `--src`): the source
    /// steps are skipped, i.e. the packet is taken to come from a pod. Step 1 (not IP, or a
    /// protocol the datapath cannot translate) is the datapath's; an `IpAddr` always passes it.
    pub fn decide(&self, src: Option<IpAddr>, dst: IpAddr) -> Verdict {
        if let Some(src) = src {
            if let Some(cidr) = self.non_masquerade_src.longest_match(src) {
                return keep(Reason::NonMasqueradeSrc, Some(cidr));
            }
            // SPEC section 3: with pod CIDRs a pod is exactly a source inside them (what every
            // datapath matches); without them, every source but the node's own addresses.
            if self.pod_cidrs.is_empty() {
                if self.local_addrs.contains(&src) {
                    return keep(Reason::NotAPod, Some(IpNet::from(src)));
                }
            } else if self.pod_cidrs.longest_match(src).is_none() {
                return keep(Reason::NotAPod, None);
            }
        }
        match dst {
            IpAddr::V4(_) if !self.masq_link_local && LINK_LOCAL_V4.contains(&dst) => {
                return keep(Reason::LinkLocal, Some(LINK_LOCAL_V4));
            }
            IpAddr::V6(_) if !self.masq_link_local_ipv6 && LINK_LOCAL_V6.contains(&dst) => {
                return keep(Reason::LinkLocal, Some(LINK_LOCAL_V6));
            }
            _ => {}
        }
        if let Some(cidr) = self.non_masquerade_dst.longest_match(dst) {
            return keep(Reason::NonMasqueradeCidr, Some(cidr));
        }
        if self.local_addrs.contains(&dst) {
            return keep(Reason::Local, Some(IpNet::from(dst)));
        }
        Verdict {
            action: Action::Masquerade,
            reason: Reason::Default,
            matched: None,
        }
    }
}

fn keep(reason: Reason, matched: Option<IpNet>) -> Verdict {
    Verdict {
        action: Action::Keep,
        reason,
        matched,
    }
}
