//! How the agent comes up on eBPF: `--datapath auto` choosing it (or nftables, without a
//! bpffs) and saying why, and the memory that loading the programs took given back.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use masq_testbed::addr;

use super::NODE;
use crate::harness::*;
use crate::VPC_ONLY;

/// `--datapath auto` takes eBPF where it loads (its pin directory on a bpffs) and says why in
/// `/status`; with a pin directory that is not on a bpffs it falls back to nftables and names
/// the reason.
pub fn auto_prefers_ebpf_and_says_why(datapath: Datapath) -> Result<()> {
    let mut bed = Bed::new(datapath, Some(VPC_ONLY))?;
    bed.datapath_flag = "auto";
    bed.start_agent()?;
    bed.wait_ready()?;
    let status = bed.status()?;
    assert_eq!(status.datapath, "ebpf", "{status:?}");
    assert!(
        status.datapath_reason.contains("ebpf works"),
        "{}",
        status.datapath_reason
    );
    let installed = bed.installed()?;
    assert_eq!(installed.bpf_hooks, both_hooks("eth0"), "{installed:?}");
    assert!(!installed.nft_table, "{installed:?}");
    assert_eq!(bed.source_of(addr::INTERNET)?, NODE);
    drop(bed);

    // A pin directory where no bpffs can be mounted (its parent is a file): eBPF cannot keep
    // its pins, so `auto` takes nftables. (Where a bpffs can be mounted, the agent mounts one:
    // `beside_cni::mounts_a_bpffs_where_there_is_none`.)
    let not_a_dir = tempfile::NamedTempFile::new()?;
    let pin_dir = not_a_dir.path().join("masq");
    let mut bed = Bed::new(Datapath::Nftables, Some(VPC_ONLY))?;
    bed.datapath_flag = "auto";
    bed.agent_args = vec![
        "--bpf-pin-dir".into(),
        pin_dir.to_string_lossy().into_owned(),
    ];
    bed.start_agent()?;
    bed.wait_ready()?;
    let status = bed.status()?;
    assert_eq!(status.datapath, "nftables", "{status:?}");
    let reason = &status.datapath_reason;
    assert!(
        reason.contains("ebpf unavailable")
            && reason.contains("not on a bpf filesystem and mounting one on"),
        "{reason}"
    );
    assert!(bed.installed()?.nft_table);
    assert!(!pin_dir.exists(), "the probe left {}", pin_dir.display());
    assert_eq!(bed.source_of(addr::INTERNET)?, NODE);
    Ok(())
}

/// Anonymous memory (heap) of a process, MiB.
fn rss_anon_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|rest| rest.split_whitespace().next())
        .context("RssAnon missing from /proc/PID/status")?
        .parse()?;
    Ok(kib / 1024.0)
}

/// Loading the programs parses the kernel's BTF (~19 MiB of heap for a moment). The agent must
/// give that back: with glibc's defaults 10 MiB of it stayed resident for the agent's life.
pub fn loading_memory_is_given_back(datapath: Datapath) -> Result<()> {
    let mut bed = Bed::ready(datapath, VPC_ONLY)?;
    // Past the first sync's trim (ready comes right after it), as the benchmark measures.
    std::thread::sleep(Duration::from_millis(500));
    let heap = rss_anon_mib(bed.agent().pid())?;
    ensure!(heap < 6.0, "agent heap {heap:.1} MiB resident after start");
    Ok(())
}
