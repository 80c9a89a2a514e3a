//! The subcommands that need a datapath or the agent. They are wired by the datapath and agent
//! work; until then each says so instead of pretending.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::bail;
use masq_datapath::{Desired, Kind};

use crate::flags::{DatapathChoice, OutputFormat};
use crate::settings::AgentSettings;

/// `masq agent` with validated settings.
pub fn agent(settings: AgentSettings) -> anyhow::Result<ExitCode> {
    let _ = settings;
    bail!("masq agent: not wired yet")
}

/// The ruleset `kind` would install for `desired`, as `masq render` prints it.
pub fn render(kind: Kind, desired: &Desired) -> anyhow::Result<String> {
    let _ = (kind, desired);
    bail!("masq render: not wired yet")
}

/// `masq status`; `metrics_addr` is the agent's `--metrics-addr`.
pub fn status(output: OutputFormat, metrics_addr: SocketAddr) -> anyhow::Result<ExitCode> {
    let _ = (output, metrics_addr);
    bail!("masq status: not wired yet")
}

/// `masq nat list`.
pub fn nat_list(output: OutputFormat) -> anyhow::Result<ExitCode> {
    let _ = output;
    bail!("masq nat list: not wired yet")
}

/// `masq cleanup`; `iptables_chain` is the (validated) `--masq-chain`.
pub fn cleanup(iptables_chain: &str) -> anyhow::Result<ExitCode> {
    let _ = iptables_chain;
    bail!("masq cleanup: not wired yet")
}

/// `masq demo`.
pub fn demo(datapath: DatapathChoice) -> anyhow::Result<ExitCode> {
    let _ = datapath;
    bail!("masq demo: not wired yet")
}
