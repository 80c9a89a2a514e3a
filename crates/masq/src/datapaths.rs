//! The built-in datapaths, in `auto` order, and the commands that act on all of them.

use std::path::Path;

use anyhow::Context;

use masq_agent::select::Candidate;
use masq_datapath::ebpf::Ebpf;
use masq_datapath::egress::IpRules;
use masq_datapath::ipt::{Backend, Iptables};
use masq_datapath::nft::Nftables;
use masq_datapath::{Datapath, Desired, Kind, NodeSettings, Routed};
use prometheus_client::registry::Registry;

use crate::ebpf_metrics::EbpfCollector;
use crate::flags::OutputFormat;

/// Every datapath this binary has, in the order `auto` tries them (README: Datapaths). Opening one
/// probes the kernel without changing it, except that eBPF mounts a bpffs for its pins where
/// there is none.
pub fn candidates(node: &NodeSettings, pin_dir: &Path) -> Vec<Candidate> {
    let chain = node.iptables_chain.clone();
    let pin_dir = pin_dir.to_path_buf();
    let ebpf_supports = Ebpf::supports(node);
    vec![
        Candidate {
            kind: Kind::Ebpf,
            open: Box::new(move || {
                // Refused here, not at the first sync: `auto` then goes on to nftables, and an
                // explicit `--datapath ebpf` fails at start with the reason.
                ebpf_supports?;
                let mut ebpf = Ebpf::new(pin_dir);
                // Mounts a bpffs where the pin directory has none (docs/ebpf.md).
                ebpf.probe()?;
                Ok(Box::new(ebpf) as Box<dyn Datapath>)
            }),
        },
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

/// Datapath-specific metrics: the eBPF NAT table, read from the pinned maps at each scrape.
pub fn register_metrics(kind: Kind, pin_dir: &Path, registry: &mut Registry) {
    if kind == Kind::Ebpf {
        registry.register_collector(Box::new(EbpfCollector::new(pin_dir)));
    }
}

/// What `kind` would install for `desired`, masq's `ip rule`s included, as the agent wraps it
/// (`select`). Needs no kernel and no installed binary.
pub fn render(kind: Kind, desired: &Desired) -> anyhow::Result<String> {
    let datapath: Box<dyn Datapath> = match kind {
        Kind::Nftables => Box::new(Nftables::new()),
        Kind::Iptables => Box::new(Iptables::new(Backend::Nft)),
        Kind::Ebpf => Box::new(Ebpf::default()),
    };
    Ok(Routed::new(datapath).render(desired))
}

/// The eBPF NAT table, read from the pinned maps (the agent need not run).
pub fn nat_list(output: OutputFormat, pin_dir: &Path) -> anyhow::Result<String> {
    let entries = Ebpf::new(pin_dir.to_path_buf())
        .nat_entries()
        .with_context(|| {
            format!(
                "no eBPF NAT table under {} (is the agent running with --datapath ebpf? \
                 give its --bpf-pin-dir if it uses another)",
                pin_dir.display()
            )
        })?;
    Ok(match output {
        OutputFormat::Text => entries.iter().map(|e| format!("{e}\n")).collect(),
        OutputFormat::Json => {
            let rows: Vec<_> = entries
                .iter()
                .map(|e| {
                    serde_json::json!({
                        "protocol": masq_datapath::ebpf::nat::proto_name(e.original.proto),
                        "direction": match e.direction {
                            masq_datapath::ebpf::NatDirection::Egress => "egress",
                            masq_datapath::ebpf::NatDirection::Ingress => "ingress",
                        },
                        "family": if e.original.is_ipv6() { "ipv6" } else { "ipv4" },
                        "original": format!("{} -> {}", e.original.source(), e.original.destination()),
                        "translated": format!("{} -> {}", e.translated.source(), e.translated.destination()),
                        "age_seconds": e.age.as_secs_f64(),
                        "idle_seconds": e.idle.as_secs_f64(),
                        "state": e.state.label(),
                        "closing": e.state == masq_datapath::ebpf::FlowState::TcpClosing,
                        "kind": if e.host { "host" } else if e.inbound { "inbound" } else if e.pass { "kept" } else { "translated" },
                        "host": e.host,
                        "steered": e.steered,
                    })
                })
                .collect();
            serde_json::to_string_pretty(&rows)? + "\n"
        }
    })
}

/// Removes what every datapath owns, then masq's `ip rule`s, once, when nothing marks packets
/// any more; each result names what it removed and says how that went. A datapath whose tools
/// are absent here cannot have installed anything, and is skipped.
pub fn cleanup_all(
    iptables_chain: &str,
    pin_dir: &Path,
) -> Vec<(&'static str, Result<(), masq_datapath::Error>)> {
    let mut done = vec![(
        Kind::Ebpf.as_str(),
        Ebpf::new(pin_dir.to_path_buf()).cleanup(),
    )];
    let nft = Nftables::new();
    if nft.probe().is_ok() {
        done.push((Kind::Nftables.as_str(), Nftables::new().cleanup()));
    }
    if let Ok(ipt) = Iptables::detect() {
        done.push((
            Kind::Iptables.as_str(),
            ipt.with_chain(iptables_chain).cleanup(),
        ));
    }
    done.push(("ip rules", IpRules.remove_stale(&[]).map(drop)));
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    /// IPv6 no longer sends `auto` elsewhere: the eBPF candidate gets as far as probing (which
    /// fails here on the pin directory, not on the flag). The pin directory lies under a
    /// regular file, so the probe can neither create it nor mount a bpffs there: nothing
    /// outside the test changes, even as root.
    #[test]
    fn with_ipv6_the_ebpf_candidate_probes() {
        let node = NodeSettings {
            enable_ipv6: true,
            ..NodeSettings::default()
        };
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut all = candidates(&node, &file.path().join("masq"));
        let ebpf = all.remove(0);
        assert_eq!(ebpf.kind, Kind::Ebpf);
        if let Err(refused) = (ebpf.open)() {
            assert!(!refused.to_string().contains("IPv4 only"), "{refused}");
        }
    }
}
