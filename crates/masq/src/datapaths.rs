//! The built-in datapaths, in `auto` order, and the commands that act on all of them.

use masq_agent::select::Candidate;
use masq_datapath::{Datapath, Desired, Kind, NodeSettings};
use prometheus_client::registry::Registry;

use crate::flags::OutputFormat;

/// Every datapath this binary has, in the order `auto` tries them.
pub fn candidates(node: &NodeSettings) -> Vec<Candidate> {
    let _ = node;
    Vec::new()
}

/// Datapath-specific metrics (the eBPF NAT counters).
pub fn register_metrics(datapath: &dyn Datapath, registry: &mut Registry) {
    let _ = (datapath, registry);
}

/// What `kind` would install for `desired`.
pub fn render(kind: Kind, desired: &Desired) -> anyhow::Result<String> {
    let _ = desired;
    anyhow::bail!("the {} datapath is not built in", kind.as_str())
}

/// The eBPF NAT table.
pub fn nat_list(output: OutputFormat) -> anyhow::Result<String> {
    let _ = output;
    anyhow::bail!("the eBPF datapath is not built in")
}

/// Removes what every datapath owns; each result says how that one went.
pub fn cleanup_all(iptables_chain: &str) -> Vec<(Kind, Result<(), masq_datapath::Error>)> {
    let _ = iptables_chain;
    Vec::new()
}
