//! What the reconciler publishes for `/status` and `masq status`, in the config's own terms.

use std::time::{SystemTime, UNIX_EPOCH};

use masq_datapath::{Desired, NodeSettings};

use crate::status::{DesiredSummary, EgressSummary};

pub(super) fn summarize(desired: &Desired) -> DesiredSummary {
    let c = &desired.config;
    let mut cidrs = Vec::with_capacity(c.non_masquerade_cidrs.len() + 1);
    cidrs.extend_from_slice(&c.non_masquerade_cidrs);
    cidrs.extend(desired.node.native_routing_cidr);
    DesiredSummary {
        non_masquerade_cidrs: cidrs,
        non_masquerade_src_cidrs: c.non_masquerade_src_cidrs.clone(),
        masquerade_cidrs: c.masquerade_cidrs.clone(),
        masq_link_local: c.masq_link_local,
        masq_link_local_ipv6: c.masq_link_local_ipv6,
        resync_interval_seconds: c.resync_interval.as_secs_f64(),
        pod_cidrs: desired.node.pod_cidrs.clone(),
    }
}

/// Egress routing as every datapath installs it: the netfilter ones mark and route, the eBPF one
/// redirects and marks the replies; all use the same rule (docs/vpc-native.md).
pub(super) fn egress_summary(node: &NodeSettings) -> Option<EgressSummary> {
    let routing = node.active_egress_routing()?;
    let interface = node.egress_interface()?.to_string();
    Some(EgressSummary {
        warning: masq_datapath::egress::reverse_path_warning(&interface),
        interface,
        mark: format!("{:#x}", routing.mark),
        rule_priority: routing.rule_priority,
        table: routing.table,
    })
}

pub(super) fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}
