//! Scenarios of the eBPF datapath only (issue 4), with the real agent binary, one file per
//! concern:
//! - `floods.rs`: bounded TCP and UDP floods from two pods with every reply delivered to the
//!   right pod, two pods using the same source port towards the same destination, `kill -9`
//!   under a stream of new and established connections;
//! - `nat_table.rs`: the NAT table in `/metrics` and `masq nat list`, and port exhaustion
//!   towards one destination with recovery after the agent's GC;
//! - `startup.rs`: `--datapath auto` choosing eBPF and saying why, the loading memory given back;
//! - `beside_cni.rs`: a CNI's program on the same hooks, the bpffs the agent mounts itself;
//! - `engine.rs`: the flow table under stress.

pub mod beside_cni;
pub mod engine;
pub mod floods;
pub mod nat_table;
pub mod startup;

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use anyhow::{ensure, Result};
use masq_testbed::addr;

const NODE: IpAddr = IpAddr::V4(addr::NODE);

/// Fails unless every address is the node's, with no two alike.
fn distinct_node_translations(what: &str, seen: &[SocketAddr]) -> Result<()> {
    ensure!(
        seen.iter().all(|s| s.ip() == NODE),
        "{what}: not all masqueraded: {seen:?}"
    );
    let distinct: HashSet<_> = seen.iter().collect();
    ensure!(
        distinct.len() == seen.len(),
        "{what}: {} flows share {} translations",
        seen.len(),
        distinct.len()
    );
    Ok(())
}
