//! The real agent beside a CNI's tc programs and without a bpffs (issue 13, items 5 and 6).
//!
//! - A CNI-like program (`bpf/tests/cni_like.bpf.c`: counts packets, returns `TC_ACT_OK` as
//!   Cilium's `bpf_host` does) on the node's uplink before the agent starts: pod traffic is
//!   translated, `masq status` lists both programs on each hook with masq first, and `masq
//!   cleanup` leaves the CNI's program. One put ahead of masq later is reported as a warning.
//! - `ip netns exec` remounts `/sys`, so the default pin directory `/sys/fs/bpf/masq` is on a
//!   plain sysfs: the agent mounts a bpffs there itself, in its own mount namespace (inside one
//!   this test made private), and translates; the host's `/sys/fs/bpf` stays as it was.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use aya::programs::TcAttachType::{self, Egress, Ingress};
use masq_datapath::ebpf::HookOrder;
use masq_testbed::topology::NODE_UPLINK;
use masq_testbed::{addr, Netns};

use crate::harness::*;
use crate::VPC_ONLY;

const NODE: IpAddr = IpAddr::V4(addr::NODE);

/// The program names on the uplink's `hook`, first to run first.
fn names_on(node: &Netns, hook: TcAttachType) -> Result<Vec<String>> {
    let order = node.enter(move || HookOrder::read(NODE_UPLINK, hook))??;
    Ok(order.programs.into_iter().map(|p| p.name).collect())
}

pub fn status_shows_a_cni_program_behind_masq(datapath: Datapath) -> Result<()> {
    // A 1 s resync: the hooks are read at start and at each resync.
    let config = format!("{VPC_ONLY}resyncInterval: 1s\n");
    let mut bed = Bed::new(datapath, Some(&config))?;
    let cni = attach_cni(&bed.topology.node, false)?;
    bed.start_agent()?;
    bed.wait_ready()?;
    let (egress, ingress) = (cni.packets(Egress)?, cni.packets(Ingress)?);
    ensure!(bed.source_of(addr::INTERNET)? == NODE, "not translated");
    ensure!(
        cni.packets(Egress)? > egress && cni.packets(Ingress)? > ingress,
        "the CNI's program saw nothing"
    );

    let listed = eventually(Duration::from_secs(5), || {
        Ok(!bed.status()?.hooks.is_empty())
    })?;
    ensure!(listed, "no hooks in the status:\n{}", bed.log());
    let text = String::from_utf8(bed.masq(&["status"])?.stdout)?;
    for (hook, masq, cni_name) in [
        ("egress", "masq_egress", "cnilike_egress"),
        ("ingress", "masq_ingress", "cnilike_ingress"),
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("hook:            {NODE_UPLINK} {hook}: ")))
            .with_context(|| format!("no {hook} hook in\n{text}"))?;
        ensure!(
            line.contains(&format!(" 1. {masq} (masq; tcx, id "))
                && line.contains(&format!(" 2. {cni_name} (tcx, id ")),
            "{line}"
        );
    }
    let status = bed.status()?;
    ensure!(
        status.hooks.iter().all(|h| h.masq_position() == Some(1)),
        "{:?}",
        status.hooks
    );
    ensure!(status.findings.is_empty(), "{:?}", status.findings);

    // Another program put at the head later runs before masq: the status says so.
    let ahead = attach_cni(&bed.topology.node, true)?;
    let warned = eventually(Duration::from_secs(5), || {
        Ok(bed.status()?.findings.iter().any(|f| {
            f.starts_with(&format!(
                "on {NODE_UPLINK} egress, cnilike_egress (tcx, id "
            )) && f.contains("runs before masq_egress")
        }))
    })?;
    ensure!(warned, "no warning: {:?}", bed.status()?.findings);
    drop(ahead);

    bed.take_agent().terminate()?;
    let cleanup = bed.masq_with_pins(&["cleanup"])?;
    ensure!(cleanup.status.success(), "{cleanup:?}");
    ensure!(names_on(&bed.topology.node, Egress)? == ["cnilike_egress"]);
    ensure!(names_on(&bed.topology.node, Ingress)? == ["cnilike_ingress"]);
    Ok(())
}

/// What the host's mount namespace shows at /sys/fs/bpf: its filesystem type, its entries and
/// the mounts there. Read through this process's main thread, which never leaves the namespace
/// the tests started in (the test threads do).
fn host_sys_fs_bpf() -> Result<(i64, Vec<String>, Vec<String>)> {
    let main = format!("/proc/self/task/{}", std::process::id());
    let dir = Path::new(&main).join("root/sys/fs/bpf");
    let kind = nix::sys::statfs::statfs(&dir)?.filesystem_type().0 as i64;
    let mut entries: Vec<String> = std::fs::read_dir(&dir)?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_>>()?;
    entries.sort();
    let mounts = std::fs::read_to_string(format!("{main}/mountinfo"))?
        .lines()
        .filter(|l| {
            l.split(' ')
                .nth(4)
                .is_some_and(|m| m.starts_with("/sys/fs/bpf"))
        })
        .map(str::to_string)
        .collect();
    Ok((kind, entries, mounts))
}

pub fn mounts_a_bpffs_where_there_is_none(_: Datapath) -> Result<()> {
    // No private bpffs and no --bpf-pin-dir: the default /sys/fs/bpf/masq.
    let mut bed = Bed::new(Datapath::Nftables, Some(VPC_ONLY))?;
    bed.datapath_flag = "ebpf";
    // Whatever the agent mounts stays in namespaces below this thread's own.
    masq_testbed::bpffs::private_mount_namespace()?;
    let host = host_sys_fs_bpf()?;
    bed.start_agent()?;
    bed.wait_ready()?;
    ensure!(bed.source_of(addr::INTERNET)? == NODE, "not translated");
    let status = bed.status()?;
    ensure!(status.datapath == "ebpf", "{status:?}");
    let note = "masq mounted one on /sys/fs/bpf: pinned maps and links survive an agent restart only as long as this mount does";
    ensure!(
        status.findings.iter().any(|f| f.contains(note)),
        "{:?}",
        status.findings
    );
    ensure!(bed.log().contains(note), "{}", bed.log());
    // The pins are there, as the agent's mount namespace shows them.
    let pid = bed.agent().pid();
    let pinned = format!("/proc/{pid}/root/sys/fs/bpf/masq/links/{NODE_UPLINK}-egress");
    ensure!(Path::new(&pinned).exists(), "{pinned} missing");
    ensure!(host_sys_fs_bpf()? == host, "the host's /sys/fs/bpf changed");
    bed.take_agent().terminate()?;
    ensure!(host_sys_fs_bpf()? == host, "the host's /sys/fs/bpf changed");
    Ok(())
}
