//! `masq demo`.
use std::process::ExitCode;

use crate::flags::DatapathChoice;

/// Runs the demo.
pub fn run(datapath: DatapathChoice) -> anyhow::Result<ExitCode> {
    let _ = datapath;
    anyhow::bail!("masq demo: not yet available")
}
