//! Where each destination's traffic leaves with which source: every decision reason on the
//! wire, link-local masqueraded when asked, and a source outside `--pod-cidr` left alone.

use std::net::{IpAddr, SocketAddr};

use anyhow::Result;
use masq_testbed::addr;
use masq_testbed::probe::{tcp_source, TcpEchoServer};

use crate::harness::*;
use crate::VPC_ONLY;

/// Every decision reason on the wire: default (masquerade), non-masquerade-cidr,
/// link-local (kept by default), non-masquerade-src and local (keep); and the rules sit
/// where the datapath puts them (the nft table, or the iptables backend the host uses).
pub fn decision_reasons(datapath: Datapath) -> Result<()> {
    let config = "nonMasqueradeCIDRs: [10.0.0.0/8]\nnonMasqueradeSrcCIDRs: [10.244.1.3/32]\n";
    let bed = Bed::ready(datapath, config)?;
    let (node, pod, pod2) = (
        IpAddr::from(addr::NODE),
        IpAddr::from(addr::POD),
        IpAddr::from(addr::POD2),
    );
    let installed = bed.installed()?;
    let expected_backends: Vec<_> = datapath.iptables_backend().into_iter().collect();
    assert_eq!(installed.ipt_backends, expected_backends, "{installed:?}");
    assert_eq!(
        installed.nft_table,
        datapath == Datapath::Nftables,
        "{installed:?}"
    );
    if datapath == Datapath::Ebpf {
        // Only the egress interface (the default route's) gets the programs.
        assert_eq!(installed.bpf_hooks, both_hooks("eth0"), "{installed:?}");
        assert!(
            installed.bpf_pins.iter().any(|p| p.starts_with("maps-v3/")),
            "{installed:?}"
        );
    }
    assert_eq!(bed.source_of(addr::INTERNET)?, node, "default: masquerade");
    assert_eq!(
        bed.source_of(addr::PRIVATE)?,
        pod,
        "non-masquerade-cidr: keep"
    );
    assert_eq!(
        bed.source_of(addr::METADATA)?,
        pod,
        "link-local: kept by default"
    );
    assert_eq!(
        bed.source_from(&bed.topology.pod2, addr::INTERNET)?,
        pod2,
        "non-masquerade-src: keep"
    );

    let local = SocketAddr::new(addr::NODE.into(), 8090);
    let _server = TcpEchoServer::start(&bed.topology.node, &[local])?;
    assert_eq!(tcp_source(&bed.topology.pod, local)?, pod, "local: keep");
    Ok(())
}

/// `masqLinkLocal: true` masquerades the metadata server.
pub fn link_local_masqueraded_when_asked(datapath: Datapath) -> Result<()> {
    let bed = Bed::ready(
        datapath,
        "nonMasqueradeCIDRs: [10.0.0.0/8]\nmasqLinkLocal: true\n",
    )?;
    assert_eq!(bed.source_of(addr::METADATA)?, IpAddr::from(addr::NODE));
    assert_eq!(bed.source_of(addr::PRIVATE)?, IpAddr::from(addr::POD));
    Ok(())
}

/// A source outside `--pod-cidr` is not a pod: kept, while the pod is masqueraded.
pub fn not_a_pod(datapath: Datapath) -> Result<()> {
    let mut bed = Bed::new(datapath, Some(VPC_ONLY))?;
    bed.pod_cidr = format!("{}/32", addr::POD);
    bed.start_agent()?;
    bed.wait_ready()?;
    assert_eq!(
        bed.source_from(&bed.topology.pod2, addr::INTERNET)?,
        IpAddr::from(addr::POD2)
    );
    assert_eq!(bed.source_of(addr::INTERNET)?, IpAddr::from(addr::NODE));
    Ok(())
}
