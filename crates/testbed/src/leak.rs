//! A leak detector at the far side: an nftables counter, in a namespace of the test's own,
//! of the packets that arrive from the pod CIDR for destinations masq must masquerade. A
//! datapath that lets one pod-sourced packet of a translated flow through makes it non-zero.

use std::net::IpAddr;

use anyhow::{Context, Result};

use crate::netns::Netns;

/// The table's name in the watched namespace.
const TABLE: &str = "masq_test_leakwatch";

/// Counts pod-sourced packets arriving in a namespace for some destinations.
pub struct LeakWatch<'a> {
    ns: &'a Netns,
}

impl<'a> LeakWatch<'a> {
    /// Starts counting in `ns` the packets from `pods` (a CIDR) to any of `destinations`,
    /// before anything else there sees them.
    pub fn start(ns: &'a Netns, pods: &str, destinations: &[IpAddr]) -> Result<LeakWatch<'a>> {
        let dsts: Vec<String> = destinations.iter().map(IpAddr::to_string).collect();
        let ruleset = format!(
            "table ip {TABLE} {{\n  chain watch {{\n    type filter hook prerouting priority -400;\n    \
             ip saddr {pods} ip daddr {{ {} }} counter\n  }}\n}}\n",
            dsts.join(", ")
        );
        let file = tempfile::NamedTempFile::new()?;
        std::fs::write(file.path(), ruleset)?;
        ns.exec("nft", &["-f", &file.path().to_string_lossy()])
            .context("starting the leak watch")?;
        Ok(LeakWatch { ns })
    }

    /// Packets counted so far.
    pub fn packets(&self) -> Result<u64> {
        let listed = self
            .ns
            .exec("nft", &["list", "chain", "ip", TABLE, "watch"])?;
        let after = listed
            .split("counter packets ")
            .nth(1)
            .context("no counter in the leak watch")?;
        after
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("reading the leak watch: {listed}"))
    }
}
