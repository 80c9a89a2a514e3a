//! Shutdown signals: SIGTERM because Kubernetes sends it when the pod is replaced, SIGINT for a
//! developer's Ctrl-C. Either one stops the agent and leaves the datapath installed, so traffic
//! keeps flowing until the next agent adopts it.

use std::future::Future;

use anyhow::{Context, Result};
use tokio::signal::unix::{signal, SignalKind};

/// Installs the handlers now and returns a future that resolves when SIGTERM or SIGINT
/// arrives, naming it. Installing eagerly matters: a handler installed only when the future is
/// first polled leaves the default action (exit by the signal) in place until then, and
/// Kubernetes may send SIGTERM as soon as the agent reports ready.
pub fn shutdown() -> Result<impl Future<Output = &'static str>> {
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    })
}
