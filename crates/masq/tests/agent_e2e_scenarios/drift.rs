//! The node changing behind the agent's back: the datapath's objects damaged (caught by the
//! 5-second check, or repaired within the resync), the node's address changed, the egress
//! interface deleted and created again. The agent follows each time.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use masq_testbed::addr;

use crate::harness::*;
use crate::VPC_ONLY;

/// The datapath's `damage_caught_between_resyncs` is found by the agent's check every 5
/// seconds and repaired at once, long before the resync (60 s here).
pub fn repaired_between_resyncs(datapath: Datapath) -> Result<()> {
    let what = datapath.damage_caught_between_resyncs();
    let bed = Bed::ready(
        datapath,
        "nonMasqueradeCIDRs: [10.0.0.0/8]\nresyncInterval: 60s\n",
    )?;
    let damage = bed
        .damages()
        .into_iter()
        .find(|d| d.what == what)
        .with_context(|| format!("no damage {what:?} for {datapath:?}"))?;
    assert_eq!(bed.tcp_source_of(damage.dst)?, damage.repaired);
    damage.apply(&bed.topology.node)?;
    assert_ne!(
        bed.tcp_source_of(damage.dst)?,
        damage.repaired,
        "{what} did not take"
    );
    let took = bed.wait_for_source(damage.dst, damage.repaired, Duration::from_secs(10))?;
    eprintln!(
        "{what} repaired after {} ms ({datapath:?})",
        took.as_millis()
    );
    ensure!(
        bed.log().contains("not as the last sync left it"),
        "not repaired by the 5-second check:\n{}",
        bed.log()
    );
    Ok(())
}

/// Someone deletes or edits the datapath's objects: repaired within resyncInterval, each
/// time, and counted.
pub fn drift_repaired_within_resync(datapath: Datapath) -> Result<()> {
    let bed = Bed::ready(
        datapath,
        "nonMasqueradeCIDRs: [10.0.0.0/8]\nresyncInterval: 2s\n",
    )?;
    let damages = bed.damages();
    for damage in &damages {
        assert_eq!(
            bed.tcp_source_of(damage.dst)?,
            damage.repaired,
            "before: {}",
            damage.what
        );
        damage.apply(&bed.topology.node)?;
        assert_ne!(
            bed.tcp_source_of(damage.dst)?,
            damage.repaired,
            "{} did not take",
            damage.what
        );
        let took = bed.wait_for_source(damage.dst, damage.repaired, Duration::from_secs(4))?;
        eprintln!(
            "{} repaired after {} ms ({datapath:?})",
            damage.what,
            took.as_millis()
        );
    }
    // The counter moves just after the kernel is repaired, which the probe may beat.
    let repairs = || anyhow::Ok(metric(&bed.metrics()?, "masq_drift_repairs_total").unwrap_or(0.0));
    let counted = eventually(Duration::from_secs(1), || {
        Ok(repairs()? >= damages.len() as f64)
    })?;
    assert!(counted, "masq_drift_repairs_total {}", repairs()?);
    assert_eq!(bed.source_of(addr::INTERNET)?, IpAddr::from(addr::NODE));
    assert_eq!(bed.source_of(addr::PRIVATE)?, IpAddr::from(addr::POD));
    Ok(())
}

/// The node's address changes (the primary deleted, a secondary promoted): new connections
/// leave with the new one (the time is printed).
pub fn node_address_change_is_followed(datapath: Datapath) -> Result<()> {
    let bed = Bed::ready(datapath, VPC_ONLY)?;
    assert_eq!(bed.source_of(addr::INTERNET)?, IpAddr::from(addr::NODE));
    let node = &bed.topology.node;
    masq_testbed::topology::set_sysctl(node, "net/ipv4/conf/eth0/promote_secondaries", "1")?;
    let new: IpAddr = "172.30.0.9".parse()?;
    node.ip(&["addr", "add", "172.30.0.9/24", "dev", "eth0"])?;
    node.ip(&["addr", "del", "172.30.0.1/24", "dev", "eth0"])?;
    let took = bed.wait_for_source(addr::INTERNET, new, Duration::from_secs(3))?;
    eprintln!("new node address used after {} ms", took.as_millis());
    assert_eq!(bed.source_of(addr::INTERNET)?, new);
    Ok(())
}

/// The egress interface is deleted and created again (a new ifindex, as when a CNI or
/// cloud agent re-plugs it): the agent follows, and pod traffic is masqueraded again.
pub fn egress_interface_recreated(datapath: Datapath) -> Result<()> {
    let bed = Bed::ready(datapath, VPC_ONLY)?;
    let (node, external) = (&bed.topology.node, &bed.topology.external);
    node.ip(&["link", "del", "eth0"])?;
    masq_testbed::veth(node, "eth0", external, "eth0")?;
    node.ip(&["addr", "add", &format!("{}/24", addr::NODE), "dev", "eth0"])?;
    let gateway = addr::EXTERNAL_GATEWAY.to_string();
    external.ip(&["addr", "add", &format!("{gateway}/24"), "dev", "eth0"])?;
    node.ip(&["route", "add", "default", "via", &gateway])?;
    let via = addr::NODE.to_string();
    external.ip(&["route", "add", addr::POD_CIDR, "via", &via])?;
    let took = bed.wait_for_source(addr::INTERNET, addr::NODE, Duration::from_secs(3))?;
    eprintln!(
        "masqueraded again {} ms after the interface came back",
        took.as_millis()
    );
    assert_eq!(bed.source_of(addr::INTERNET)?, IpAddr::from(addr::NODE));
    assert_eq!(bed.source_of(addr::PRIVATE)?, IpAddr::from(addr::POD));
    if datapath == Datapath::Ebpf {
        assert_eq!(bed.installed()?.bpf_hooks, both_hooks("eth0"));
    }
    Ok(())
}
