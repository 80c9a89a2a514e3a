//! The built-in datapaths, in `auto` order, and the commands that act on all of them.

use masq_agent::select::Candidate;
use masq_datapath::ipt::{Backend, Iptables};
use masq_datapath::nft::Nftables;
use masq_datapath::{Datapath, Desired, Kind, NodeSettings};
use prometheus_client::registry::Registry;

use crate::flags::OutputFormat;

/// Every datapath this binary has, in the order `auto` tries them. Opening one probes the
/// kernel without changing it.
pub fn candidates(node: &NodeSettings) -> Vec<Candidate> {
    let chain = node.iptables_chain.clone();
    vec![
        Candidate {
            kind: Kind::Nftables,
            open: Box::new(|| {
                let nft = Nftables::new();
                nft.probe()?;
                Ok(Box::new(nft) as Box<dyn Datapath>)
            }),
        },
        Candidate {
            kind: Kind::Iptables,
            open: Box::new(move || {
                Ok(Box::new(Iptables::detect()?.with_chain(&chain)) as Box<dyn Datapath>)
            }),
        },
    ]
}

/// Datapath-specific metrics (the eBPF NAT counters).
pub fn register_metrics(datapath: &dyn Datapath, registry: &mut Registry) {
    let _ = (datapath, registry);
}

/// What `kind` would install for `desired`. Needs no kernel and no installed binary.
pub fn render(kind: Kind, desired: &Desired) -> anyhow::Result<String> {
    Ok(match kind {
        Kind::Nftables => Nftables::new().render(desired),
        Kind::Iptables => Iptables::new(Backend::Nft).render(desired),
        Kind::Ebpf => anyhow::bail!("the eBPF datapath has no text ruleset; see `masq nat list`"),
    })
}

/// The eBPF NAT table.
pub fn nat_list(output: OutputFormat) -> anyhow::Result<String> {
    let _ = output;
    anyhow::bail!("the eBPF datapath is not built in")
}

/// Removes what every datapath owns; each result says how that one went. A datapath whose
/// tools are absent here cannot have installed anything, and is skipped.
pub fn cleanup_all(iptables_chain: &str) -> Vec<(Kind, Result<(), masq_datapath::Error>)> {
    let mut done = Vec::new();
    let nft = Nftables::new();
    if nft.probe().is_ok() {
        done.push((Kind::Nftables, Nftables::new().cleanup()));
    }
    if let Ok(ipt) = Iptables::detect() {
        done.push((Kind::Iptables, ipt.with_chain(iptables_chain).cleanup()));
    }
    done
}
