//! Shutdown signals: SIGTERM because Kubernetes sends it when the pod is replaced, SIGINT for a
//! developer's Ctrl-C. Either one stops the agent and leaves the datapath installed, so traffic
//! keeps flowing until the next agent adopts it.

use anyhow::{Context, Result};
use tokio::signal::unix::{signal, SignalKind};

/// Resolves when SIGTERM or SIGINT arrives, naming it.
pub async fn shutdown() -> Result<&'static str> {
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}
