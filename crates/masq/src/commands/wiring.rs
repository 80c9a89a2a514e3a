//! The subcommands that need a datapath or the agent.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use masq_agent::select;
use masq_datapath::{Desired, Kind};

use crate::datapaths;
use crate::flags::{DatapathChoice, LogFormat, OutputFormat};
use crate::settings::AgentSettings;

/// `masq agent` with validated settings. Runs until SIGTERM or SIGINT, then leaves the
/// datapath installed so traffic keeps flowing while the pod is replaced.
pub fn agent(settings: AgentSettings) -> anyhow::Result<ExitCode> {
    // Before the probes and the runtime start any thread.
    masq_agent::memory::limit_retention();
    init_logging(settings.log_format);
    for warning in &settings.config.warnings {
        tracing::warn!("{warning}");
    }
    let node = settings.config.node.clone();
    let chosen = select::select(
        settings.datapath.kind(),
        datapaths::candidates(&node, &settings.bpf_pin_dir),
    )
    .context("choosing the datapath")?;
    tracing::info!(datapath = chosen.datapath.kind().as_str(), reason = %chosen.reason, "datapath chosen");
    let mut metrics = masq_agent::metrics::Metrics::new();
    datapaths::register_metrics(
        chosen.datapath.kind(),
        &settings.bpf_pin_dir,
        metrics.registry_mut(),
    );
    let agent_settings = masq_agent::AgentSettings {
        config: settings.config.source,
        parse_options: settings.config.parse_options,
        node,
        interfaces: (!settings.interface_names.is_empty()).then_some(settings.interface_names),
        metrics_addr: settings.metrics_addr,
        datapath_reason: chosen.reason,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(masq_agent::run(agent_settings, chosen.datapath, metrics))?;
    Ok(ExitCode::SUCCESS)
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes only on a terminal: `kubectl logs` and log shippers read a pipe.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// The ruleset `kind` would install for `desired`, as `masq render` prints it.
pub fn render(kind: Kind, desired: &Desired) -> anyhow::Result<String> {
    datapaths::render(kind, desired)
}

/// `masq status`; `metrics_addr` is the agent's `--metrics-addr`.
pub fn status(output: OutputFormat, metrics_addr: SocketAddr) -> anyhow::Result<ExitCode> {
    let status = masq_agent::status::fetch(&metrics_addr.to_string())?;
    let text = match output {
        OutputFormat::Text => status.to_text(),
        OutputFormat::Json => serde_json::to_string_pretty(&status)? + "\n",
    };
    super::print(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// `masq nat list`.
pub fn nat_list(output: OutputFormat, pin_dir: &Path) -> anyhow::Result<ExitCode> {
    super::print(&datapaths::nat_list(output, pin_dir)?)?;
    Ok(ExitCode::SUCCESS)
}

/// `masq cleanup`; `iptables_chain` is the (validated) `--masq-chain`.
pub fn cleanup(iptables_chain: &str, pin_dir: &Path) -> anyhow::Result<ExitCode> {
    for (what, result) in datapaths::cleanup_all(iptables_chain, pin_dir) {
        match result {
            Ok(()) => eprintln!("masq: cleanup: {what} removed"),
            Err(e) => anyhow::bail!("cleanup ({what}) failed: {e}"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `masq demo`.
pub fn demo(datapath: DatapathChoice) -> anyhow::Result<ExitCode> {
    crate::demo::run(datapath)
}
