//! The NAT table seen from outside: counted in `/metrics` and listed by `masq nat list`, and a
//! destination's ports exhausted (the next connection dropped and counted) then freed by the
//! agent's GC.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use masq_testbed::addr;
use masq_testbed::probe::{tcp_source, TcpSession};

use super::{distinct_node_translations, NODE};
use crate::harness::*;
use crate::VPC_ONLY;

/// After traffic, `/metrics` counts translations and NAT entries, and `masq nat list` (text and
/// JSON) shows both halves of the pod's open connection.
pub fn nat_table_in_metrics_and_nat_list(datapath: Datapath) -> Result<()> {
    let bed = Bed::ready(datapath, VPC_ONLY)?;
    let server = bed.probes.tcp_addr(addr::INTERNET.into());
    let mut session = TcpSession::connect(&bed.topology.pod, server)?;
    let translated = session.observed_source()?;
    let local = session.local_addr()?;
    assert_eq!(translated.ip(), NODE);

    let metrics = bed.metrics()?;
    let value = |name: &str, label: &str| metric_with(&metrics, name, label).unwrap_or(-1.0);
    assert!(
        metric(&metrics, "masq_ebpf_translations_total").unwrap_or(0.0) > 0.0,
        "{metrics}"
    );
    for direction in ["egress", "ingress"] {
        let label = format!("direction=\"{direction}\"");
        let entries = value("masq_ebpf_nat_entries", &label);
        assert!(entries >= 1.0, "{direction} entries {entries}:\n{metrics}");
    }
    assert!(
        metric(&metrics, "masq_ebpf_nat_pressure").unwrap_or(0.0) > 0.0,
        "{metrics}"
    );
    let pool = value(
        "masq_ebpf_port_pool_saturation",
        &format!("destination=\"{server}\""),
    );
    assert!(pool > 0.0, "no pool towards {server}:\n{metrics}");

    let out = bed.masq_with_pins(&["nat", "list"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        format!("TCP OUT {local} -> {server} XLATE_SRC {translated} "),
        format!("TCP IN {server} -> {translated} XLATE_DST {local} "),
    ] {
        assert!(
            text.contains(&line),
            "no {line:?} in masq nat list:\n{text}"
        );
    }

    let out = bed.masq_with_pins(&["nat", "list", "-o", "json"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)?;
    let egress = rows
        .iter()
        .find(|r| r["direction"] == "egress" && r["original"] == format!("{local} -> {server}"));
    let egress = egress.with_context(|| format!("no egress entry for {local}: {rows:?}"))?;
    assert_eq!(egress["protocol"], "TCP");
    assert_eq!(egress["translated"], format!("{translated} -> {server}"));
    Ok(())
}

/// Four translated ports towards one destination: four connections get them, a fifth is
/// dropped and counted (never sent untranslated), another destination is unaffected, and once
/// the four close the agent's GC frees the ports: new connections work again.
///
/// A closed TCP pair is removed 10 s after its last packet by a GC that runs every 5 s, so the
/// recovery takes 10 to 15 s: the slowest scenario, kept because it is the real agent's GC
/// (the datapath test fakes the clock instead).
pub fn port_exhaustion_is_counted_and_recovers(datapath: Datapath) -> Result<()> {
    let mut bed = Bed::new(datapath, Some(VPC_ONLY))?;
    bed.agent_args = vec!["--port-range".into(), "40000-40003".into()];
    bed.start_agent()?;
    bed.wait_ready()?;
    let server = bed.probes.tcp_addr(addr::INTERNET.into());
    let pod = &bed.topology.pod;

    let mut held = Vec::new();
    for _ in 0..4 {
        let mut session = TcpSession::connect(pod, server).map_err(|e| bed.with_log(e))?;
        let seen = session.observed_source()?;
        assert!((40000..=40003).contains(&seen.port()), "{seen}");
        held.push((session, seen));
    }
    let seen: Vec<SocketAddr> = held.iter().map(|(_, seen)| *seen).collect();
    distinct_node_translations("the four", &seen)?;

    let fifth = TcpSession::connect(pod, server);
    assert!(fifth.is_err(), "a fifth connection got through");
    let metrics = bed.metrics()?;
    let failures = metric(&metrics, "masq_ebpf_port_allocation_failures_total").unwrap_or(0.0);
    assert!(failures >= 1.0, "{metrics}");
    let dropped = metric_with(
        &metrics,
        "masq_ebpf_drops_total",
        "reason=\"port-exhausted\"",
    );
    assert!(dropped >= Some(1.0), "{metrics}");
    let pool = metric_with(
        &metrics,
        "masq_ebpf_port_pool_saturation",
        &format!("destination=\"{server}\""),
    );
    assert_eq!(pool, Some(1.0), "{metrics}");
    assert_eq!(
        tcp_source(pod, bed.probes.tcp_addr(addr::INTERNET2.into()))?,
        NODE,
        "another destination has its own ports"
    );
    for (session, seen) in &mut held {
        assert_eq!(
            session.observed_source()?,
            *seen,
            "an open connection suffered"
        );
    }

    drop(held);
    let closed = Instant::now();
    let took = bed.wait_for_source(addr::INTERNET, addr::NODE, Duration::from_secs(25))?;
    eprintln!(
        "ports free again {} ms after the connections closed",
        closed.elapsed().as_millis()
    );
    assert!(
        took >= Duration::from_secs(9),
        "freed before the TCP grace period: {took:?}"
    );
    Ok(())
}
