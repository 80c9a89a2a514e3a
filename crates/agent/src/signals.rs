//! Shutdown signals: SIGTERM because Kubernetes sends it when the pod is replaced, SIGINT for a
//! developer's Ctrl-C. Either one stops the agent and leaves the datapath installed, so traffic
//! keeps flowing until the next agent adopts it.

use std::future::Future;

use anyhow::{Context, Result};
use tokio::signal::unix::{signal, SignalKind};

/// Installs the SIGTERM and SIGINT handlers right away, and returns a future that resolves
/// when one of them arrives, naming it. Call it first thing: until the handlers exist, the
/// signal's default action kills the process (a SIGTERM just after the agent became ready
/// did, before this installed them eagerly).
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
