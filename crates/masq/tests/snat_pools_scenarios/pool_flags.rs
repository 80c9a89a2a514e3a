//! The pool's flags against the node's addresses: a `--snat-ip` the node does not have is
//! refused at start, and `--snat-ips-from-interface` follows addresses added to the uplink.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{ensure, Result};
use masq_testbed::addr;

use crate::harness::{self, run_ok, Bed, Datapath};
use crate::{pool, refused_at_start, second_pod_address, SECOND};

/// A `--snat-ip` the node does not have: the agent refuses to start, exit 1, one line naming
/// the flag and the value.
pub fn an_address_not_on_the_node_is_refused(datapath: Datapath) -> Result<()> {
    let bed = Bed::new(datapath, None)?;
    let args = ["--snat-ip", "172.30.0.1", "--snat-ip", "172.30.0.99"].map(String::from);
    refused_at_start(
        &bed,
        &args,
        "masq: --snat-ip: \"172.30.0.99\" is not an address of this node (add it to an \
         interface, or leave it out)",
    )
}

/// `--snat-ips-from-interface`: an address added to the egress interface while the agent runs
/// joins the pool, and the pod the hash sends to it moves there.
pub fn the_pool_follows_the_interface(datapath: Datapath) -> Result<()> {
    let mut bed = Bed::new(datapath, Some("nonMasqueradeCIDRs: [10.0.0.0/8]\n"))?;
    let second_pod = second_pod_address(&bed.topology.pod2)?;
    bed.agent_args = vec!["--snat-ips-from-interface".into()];
    bed.start_agent()?;
    bed.wait_ready()?;
    let server = bed.probes.tcp_addr(addr::INTERNET.into());
    let pods = [
        (&bed.topology.pod, IpAddr::from(addr::POD)),
        (&bed.topology.pod2, IpAddr::from(second_pod)),
    ];
    for (ns, _) in pods {
        let seen = masq_testbed::probe::tcp_source(ns, server)?;
        ensure!(
            seen == IpAddr::from(addr::NODE),
            "one address: the pool is the uplink's, not {seen}"
        );
    }
    run_ok(
        &bed.topology.node,
        "ip",
        &["addr", "add", &format!("{SECOND}/24"), "dev", "eth0"],
    )?;
    // The two pods hash to different addresses: one of them moves to the new one.
    for (ns, src) in pods {
        let want = pool::address_for(&pool(), src).expect("a pool");
        harness::wait_for_source(ns, server, want, Duration::from_secs(5))
            .map_err(|e| bed.with_log(e))?;
    }
    Ok(())
}
