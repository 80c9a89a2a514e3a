//! `masq render --datapath nftables|iptables|ebpf`: what the agent would install, printed.

use std::process::ExitCode;

use masq_datapath::{Desired, Interface, NodeSettings, Uplink};

use crate::flags::RenderArgs;

pub fn run(args: &RenderArgs) -> anyhow::Result<ExitCode> {
    let settings = args.config.settings()?;
    let loaded = super::load_config(&settings.source, &settings.parse_options)?;
    // Only the names matter here: the agent learns indexes and addresses on the node.
    let interfaces = args
        .interfaces
        .iter()
        .map(|name| Interface {
            name: name.clone(),
            index: 0,
            addrs: Vec::new(),
        })
        .collect();
    let desired = Desired {
        config: loaded.config,
        node: NodeSettings {
            interfaces,
            // Offline nothing says whether the node has a secondary uplink, on which alone
            // egress routing is installed: render as on such a node, so the output shows it.
            uplinks: vec![Uplink {
                name: "(a secondary uplink)".into(),
                tables: Vec::new(),
            }],
            ..settings.node
        },
    };
    for warning in &settings.warnings {
        eprintln!("masq: warning: {warning}");
    }
    let ruleset = super::wiring::render(args.datapath.kind(), &desired)?;
    super::print(&ruleset)?;
    Ok(ExitCode::SUCCESS)
}
