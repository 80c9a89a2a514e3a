//! `masq render --datapath nftables|iptables`: the ruleset the agent would install, printed.

use std::process::ExitCode;

use masq_datapath::Desired;

use crate::flags::RenderArgs;

pub fn run(args: &RenderArgs) -> anyhow::Result<ExitCode> {
    let settings = args.config.settings()?;
    let loaded = super::load_config(&settings.source, &settings.parse_options)?;
    let desired = Desired {
        config: loaded.config,
        node: settings.node,
    };
    let ruleset =
        super::wiring::render(args.datapath.kind(), &desired, settings.iptables_to_ports)?;
    super::print(&ruleset)?;
    Ok(ExitCode::SUCCESS)
}
