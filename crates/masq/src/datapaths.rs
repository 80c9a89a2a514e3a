//! The built-in datapaths, in `auto` order, and the commands that act on all of them.

use std::path::Path;

use anyhow::Context;

use masq_agent::select::Candidate;
use masq_datapath::ebpf::Ebpf;
use masq_datapath::egress::IpRules;
use masq_datapath::ipt::{Backend, Iptables};
use masq_datapath::nft::Nftables;
use masq_datapath::{Datapath, Desired, Kind, NodeSettings, PortRange, Routed};
use prometheus_client::registry::Registry;

use crate::ebpf_metrics::EbpfCollector;
use crate::flags::OutputFormat;

/// Every datapath this binary has, in the order `auto` tries them (README: Datapaths). Opening one
/// probes the kernel without changing it, except that eBPF mounts a bpffs for its pins where
/// there is none.
pub fn candidates(
    node: &NodeSettings,
    pin_dir: &Path,
    iptables_to_ports: Option<Vec<PortRange>>,
) -> Vec<Candidate> {
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
                Ok(Box::new(with_to_ports(
                    Iptables::detect()?.with_chain(&chain),
                    iptables_to_ports,
                )) as Box<dyn Datapath>)
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
pub fn render(
    kind: Kind,
    desired: &Desired,
    iptables_to_ports: Option<Vec<PortRange>>,
) -> anyhow::Result<String> {
    let datapath: Box<dyn Datapath> = match kind {
        Kind::Nftables => Box::new(Nftables::new()),
        Kind::Iptables => Box::new(with_to_ports(
            Iptables::new(Backend::Nft),
            iptables_to_ports,
        )),
        Kind::Ebpf => Box::new(Ebpf::default()),
    };
    Ok(Routed::new(datapath).render(desired))
}

/// `--to-ports` replaces `--port-range` for iptables, with upstream's per-protocol split.
fn with_to_ports(iptables: Iptables, to_ports: Option<Vec<PortRange>>) -> Iptables {
    match to_ports {
        Some(ranges) => iptables.with_port_ranges(ranges),
        None => iptables,
    }
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
                        "original": format!("{}:{} -> {}:{}", e.original.src(), e.original.src_port(), e.original.dst(), e.original.dst_port()),
                        "translated": format!("{}:{} -> {}:{}", e.translated.src(), e.translated.src_port(), e.translated.dst(), e.translated.dst_port()),
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

    #[test]
    fn with_ipv6_the_ebpf_candidate_refuses_before_probing() {
        let node = NodeSettings {
            enable_ipv6: true,
            ..NodeSettings::default()
        };
        let mut all = candidates(&node, Path::new("/nonexistent/masq"), None);
        let ebpf = all.remove(0);
        assert_eq!(ebpf.kind, Kind::Ebpf);
        let refused = (ebpf.open)().err().expect("refused");
        assert!(refused.to_string().contains("IPv4 only"), "{refused}");
    }
}
