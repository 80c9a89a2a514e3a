//! The agent's own life: `kill -9` and a restart under an open connection, SIGTERM (early or
//! not) leaving the datapath for the replacement, and `masq cleanup` removing everything.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::Result;
use masq_testbed::addr;
use masq_testbed::probe::TcpSession;

use crate::harness::*;
use crate::VPC_ONLY;

/// `kill -9` and a restart: an open connection keeps its translation (address and port),
/// new connections are masqueraded at every moment, and the new agent adopts the rules
/// without duplicating them.
pub fn kill9_and_restart_keep_connections(datapath: Datapath) -> Result<()> {
    let mut bed = Bed::ready(datapath, VPC_ONLY)?;
    let server = bed.probes.tcp_addr(addr::INTERNET.into());
    let mut session = TcpSession::connect(&bed.topology.pod, server)?;
    let before = session.observed_source()?;
    assert_eq!(before.ip(), IpAddr::from(addr::NODE));
    let installed_before = bed.installed()?;

    let seen = bed.kill9_and_restart_while_probing(server)?;
    let node = Ok(IpAddr::from(addr::NODE));
    assert!(
        !seen.is_empty() && seen.iter().all(|s| *s == node),
        "new connections during the restart saw: {seen:?}"
    );
    assert_eq!(
        session.observed_source()?,
        before,
        "the open connection changed its source"
    );
    let installed_after = bed.installed()?;
    assert_eq!(
        installed_after, installed_before,
        "the restart changed the rules"
    );
    match datapath {
        Datapath::Nftables => assert!(installed_after.nft_rules > 0),
        Datapath::Ebpf => assert_eq!(installed_after.bpf_hooks, both_hooks("eth0")),
        Datapath::IptablesNft | Datapath::IptablesLegacy => {
            assert_eq!(installed_after.ipt_jumps, 1, "{installed_after:?}")
        }
    }
    assert_eq!(bed.source_of(addr::INTERNET)?, IpAddr::from(addr::NODE));
    Ok(())
}

/// SIGTERM: exit 0, and the datapath stays so traffic flows while the pod is replaced;
/// the replacement takes over with its new config.
pub fn sigterm_leaves_the_datapath(datapath: Datapath) -> Result<()> {
    let mut bed = Bed::ready(datapath, VPC_ONLY)?;
    let installed = bed.installed()?;
    let agent = bed.take_agent();
    let status = agent.terminate()?;
    let log = bed.log_of_start(1);
    assert!(status.success(), "the agent exited with {status}:\n{log}");
    assert!(log.contains("leaving the datapath installed"), "{log}");
    assert!(
        !log.contains('\x1b'),
        "colour codes in a log that is not a terminal:\n{log}"
    );
    assert_eq!(bed.installed()?, installed);
    assert_eq!(bed.source_of(addr::INTERNET)?, IpAddr::from(addr::NODE));
    assert_eq!(bed.source_of(addr::PRIVATE)?, IpAddr::from(addr::POD));

    // The replacement pod starts with an edited ConfigMap: it adopts and updates the
    // rules in place, without a second copy.
    bed.config
        .update("nonMasqueradeCIDRs: [10.0.0.0/8, 203.0.113.0/24]\n")?;
    bed.start_agent()?;
    bed.wait_ready()?;
    assert_eq!(bed.source_of(addr::INTERNET)?, IpAddr::from(addr::POD));
    assert_eq!(bed.source_of(addr::INTERNET2)?, IpAddr::from(addr::NODE));
    let replaced = bed.installed()?;
    assert_eq!(
        (
            replaced.nft_table,
            replaced.ipt_jumps,
            &replaced.ipt_backends,
            &replaced.bpf_pins,
            &replaced.bpf_hooks,
        ),
        (
            installed.nft_table,
            installed.ipt_jumps,
            &installed.ipt_backends,
            &installed.bpf_pins,
            &installed.bpf_hooks,
        ),
        "{replaced:?}"
    );
    Ok(())
}

/// SIGTERM as soon as the admin server answers, before or during the first sync: still a
/// clean stop (exit 0, the log says so), never the default action of the signal.
pub fn early_sigterm_is_graceful(datapath: Datapath) -> Result<()> {
    let mut bed = Bed::new(datapath, Some(VPC_ONLY))?;
    bed.start_agent()?;
    let answered = eventually(Duration::from_secs(5), || Ok(bed.readyz()?.is_some()))?;
    assert!(answered, "the admin server never answered:\n{}", bed.log());
    let status = bed.take_agent().terminate()?;
    let log = bed.log_of_start(1);
    assert!(status.success(), "the agent exited with {status}:\n{log}");
    assert!(log.contains("leaving the datapath installed"), "{log}");
    Ok(())
}

/// `masq cleanup` with the agent stopped removes everything, and can run twice.
pub fn cleanup_leaves_nothing(datapath: Datapath) -> Result<()> {
    let mut bed = Bed::ready(datapath, VPC_ONLY)?;
    assert!(!bed.installed()?.nothing());
    bed.take_agent().terminate()?;
    for round in ["first", "second"] {
        let out = bed.masq_with_pins(&["cleanup"])?;
        assert!(
            out.status.success(),
            "{round} cleanup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let installed = bed.installed()?;
        assert!(
            installed.nothing(),
            "after the {round} cleanup: {installed:?}"
        );
    }
    assert_eq!(bed.source_of(addr::INTERNET)?, IpAddr::from(addr::POD));
    Ok(())
}
