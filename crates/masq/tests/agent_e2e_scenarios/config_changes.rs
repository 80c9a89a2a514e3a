//! The config changing under a running agent: a `..data` swap reaching the wire, open
//! connections keeping their treatment across it, the file created and deleted, and invalid
//! files (at start, while running, across a crash) changing nothing until a valid one comes.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use masq_agent::status::Status;
use masq_testbed::addr;
use masq_testbed::probe::TcpSession;

use crate::harness::*;
use crate::VPC_ONLY;

/// A `..data` swap reaches the wire in under a second (the time is printed), and a
/// destination the change does not concern stays masqueraded throughout.
pub fn live_reload(datapath: Datapath) -> Result<()> {
    let mut bed = Bed::ready(datapath, VPC_ONLY)?;
    assert_eq!(bed.source_of(addr::INTERNET)?, IpAddr::from(addr::NODE));
    let bystander = bed.probes.tcp_addr(addr::INTERNET2.into());
    let changed = bed.probes.tcp_addr(addr::INTERNET.into());
    let (took, bystander_saw) = probing_while(&bed.topology.pod, bystander, || {
        bed.config
            .update("nonMasqueradeCIDRs: [10.0.0.0/8, 203.0.113.0/24]\n")?;
        wait_for_source(
            &bed.topology.pod,
            changed,
            addr::POD.into(),
            Duration::from_secs(3),
        )
    });
    let took = took.map_err(|e| bed.with_log(e))?;
    eprintln!("reload took {} ms ({datapath:?})", took.as_millis());
    assert!(took < Duration::from_secs(1), "reload took {took:?}");
    let node = Ok(IpAddr::from(addr::NODE));
    assert!(
        !bystander_saw.is_empty() && bystander_saw.iter().all(|s| *s == node),
        "{bystander} saw during the reload: {bystander_saw:?}"
    );
    assert_eq!(bed.source_of(addr::INTERNET)?, IpAddr::from(addr::POD));
    assert_eq!(bed.source_of(addr::INTERNET2)?, IpAddr::from(addr::NODE));
    Ok(())
}

/// A masqueraded connection open across a config change keeps its translation after its
/// destination becomes non-masquerade (docs/decision.md: the new config applies to new
/// connections); new connections follow the new config.
pub fn masqueraded_connection_keeps_its_translation_across_a_reload(
    datapath: Datapath,
) -> Result<()> {
    let mut bed = Bed::ready(datapath, VPC_ONLY)?;
    let server = bed.probes.tcp_addr(addr::INTERNET.into());
    let mut session = TcpSession::connect(&bed.topology.pod, server)?;
    let before = session.observed_source()?;
    assert_eq!(before.ip(), IpAddr::from(addr::NODE));
    bed.config
        .update("nonMasqueradeCIDRs: [10.0.0.0/8, 203.0.113.0/24]\n")?;
    bed.wait_for_source(addr::INTERNET, addr::POD, Duration::from_secs(3))?;
    assert_eq!(session.observed_source()?, before);
    Ok(())
}

/// A kept connection open across a config change keeps the pod source after its
/// destination becomes masqueraded (docs/decision.md: the new config applies to new
/// connections); rewriting it mid-stream would reset it.
pub fn kept_connection_stays_kept_across_a_reload(datapath: Datapath) -> Result<()> {
    let mut bed = Bed::ready(datapath, VPC_ONLY)?;
    let server = bed.probes.tcp_addr(addr::PRIVATE.into());
    let mut session = TcpSession::connect(&bed.topology.pod, server)?;
    let before = session.observed_source()?;
    assert_eq!(before.ip(), IpAddr::from(addr::POD));
    bed.config
        .update("nonMasqueradeCIDRs: [192.168.0.0/16]\n")?;
    bed.wait_for_source(addr::PRIVATE, addr::NODE, Duration::from_secs(3))?;
    assert_eq!(session.observed_source()?, before);
    Ok(())
}

/// The file appearing after being absent is applied; deleting it again means the defaults
/// (whose set holds TEST-NET, so the internet host keeps the pod source).
pub fn config_file_created_and_deleted(datapath: Datapath) -> Result<()> {
    let mut bed = Bed::new(datapath, None)?;
    bed.start_agent()?;
    bed.wait_ready()?;
    assert_eq!(
        bed.source_of(addr::INTERNET)?,
        IpAddr::from(addr::POD),
        "defaults: keep"
    );
    bed.config.update(VPC_ONLY)?;
    bed.wait_for_source(addr::INTERNET, addr::NODE, Duration::from_secs(3))?;
    bed.config.remove()?;
    bed.wait_for_source(addr::INTERNET, addr::POD, Duration::from_secs(3))?;
    assert_eq!(bed.source_of(addr::INTERNET)?, IpAddr::from(addr::POD));
    Ok(())
}

/// An invalid file changes nothing on the wire, shows in /status, /metrics and
/// `masq status -o json`, and the agent keeps running until a valid file is applied.
pub fn invalid_config_keeps_the_last_good_one(datapath: Datapath) -> Result<()> {
    let mut bed = Bed::ready(datapath, VPC_ONLY)?;
    bed.config
        .update("nonMasqueradeCIDRs: [10.0.0.1/8, 203.0.113.0/24]\n")?;
    let reported = eventually(Duration::from_secs(3), || {
        Ok(bed.status()?.last_config_error.is_some())
    })?;
    assert!(reported, "no last_config_error in /status:\n{}", bed.log());
    let error = bed.status()?.last_config_error.unwrap_or_default();
    assert!(
        error.contains("10.0.0.0/8"),
        "the error should name the aligned form: {error}"
    );
    assert_eq!(metric(&bed.metrics()?, "masq_config_error"), Some(1.0));
    assert_eq!(
        bed.source_of(addr::INTERNET)?,
        IpAddr::from(addr::NODE),
        "old config: masquerade"
    );
    assert_eq!(
        bed.source_of(addr::PRIVATE)?,
        IpAddr::from(addr::POD),
        "old config: keep"
    );
    assert!(bed.agent().is_running(), "the agent exited:\n{}", bed.log());

    // `masq status` as an operator runs it on the node.
    let out = bed.masq(&["status", "-o", "json"])?;
    assert!(
        out.status.success(),
        "masq status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: Status = serde_json::from_slice(&out.stdout)?;
    assert_eq!(status.datapath, datapath.flag());
    assert!(status.ready);
    let desired = status
        .desired
        .context("masq status shows no desired config")?;
    // Listed as strings in the JSON, parsed back here.
    assert_eq!(desired.non_masquerade_cidrs, ["10.0.0.0/8".parse()?]);
    assert_eq!(desired.pod_cidrs, [addr::POD_CIDR.parse()?]);
    assert_eq!(status.last_config_error.as_deref(), Some(error.as_str()));

    bed.config
        .update("nonMasqueradeCIDRs: [10.0.0.0/8, 203.0.113.0/24]\n")?;
    bed.wait_for_source(addr::INTERNET, addr::POD, Duration::from_secs(3))?;
    assert_eq!(bed.status()?.last_config_error, None);
    assert_eq!(metric(&bed.metrics()?, "masq_config_error"), Some(0.0));
    Ok(())
}

/// Started with an invalid file: not ready and nothing installed, until a valid one appears.
pub fn invalid_first_config_installs_nothing(datapath: Datapath) -> Result<()> {
    let mut bed = Bed::new(datapath, Some("resyncInterval: soon\n"))?;
    bed.start_agent()?;
    let answered = eventually(Duration::from_secs(5), || Ok(bed.readyz()?.is_some()))?;
    assert!(answered, "the admin server never answered:\n{}", bed.log());
    // Give a wrong first sync time to happen before looking.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(bed.readyz()?, Some(503));
    let installed = bed.installed()?;
    assert!(
        installed.nothing(),
        "installed with an invalid config: {installed:?}"
    );
    assert!(bed.agent().is_running(), "the agent exited:\n{}", bed.log());

    bed.config.update(VPC_ONLY)?;
    bed.wait_ready()?;
    assert_eq!(bed.source_of(addr::INTERNET)?, IpAddr::from(addr::NODE));
    Ok(())
}

/// A crash while the file is invalid: the new agent is not ready, but leaves the rules
/// the previous one installed (traffic keeps its last good treatment) until the file is
/// fixed.
pub fn restart_with_an_invalid_config_keeps_the_rules(datapath: Datapath) -> Result<()> {
    let mut bed = Bed::ready(datapath, VPC_ONLY)?;
    let installed = bed.installed()?;
    bed.config.update("masqLinkLocal: maybe\n")?;
    bed.take_agent().kill9();
    bed.start_agent()?;
    let answered = eventually(Duration::from_secs(5), || Ok(bed.readyz()?.is_some()))?;
    assert!(answered, "the admin server never answered:\n{}", bed.log());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(bed.readyz()?, Some(503));
    let reported = eventually(Duration::from_secs(3), || {
        Ok(bed.status()?.last_config_error.is_some())
    })?;
    assert!(reported, "no last_config_error in /status:\n{}", bed.log());
    assert_eq!(bed.installed()?, installed);
    assert_eq!(bed.source_of(addr::INTERNET)?, IpAddr::from(addr::NODE));
    assert_eq!(bed.source_of(addr::PRIVATE)?, IpAddr::from(addr::POD));

    bed.config
        .update("nonMasqueradeCIDRs: [10.0.0.0/8]\nmasqLinkLocal: true\n")?;
    bed.wait_ready()?;
    assert_eq!(bed.source_of(addr::METADATA)?, IpAddr::from(addr::NODE));
    Ok(())
}
