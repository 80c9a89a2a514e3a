//! Issue 16 for IPv6 (issue 17's dual stack): a pool of two IPv6 addresses on a dual-stack node
//! with `--enable-ipv6`. On nftables and eBPF each pod's IPv6 flows (TCP, UDP and ping, as the
//! probes ask) leave with the address the pool hash gives its IPv6 address, the two pods'
//! differ, and IPv4 keeps the uplink's own address (a pool holds one family; the other keeps the
//! interface's). iptables cannot spread IPv6 pods (its `cluster` match hashes the first 32 bits
//! of an IPv6 source, the same for every pod): it refuses such a `--snat-ip` pool at start,
//! and with `--snat-ips-from-interface` every IPv6 flow leaves with the first address, which
//! `masq status` shows with a warning.

use std::net::{IpAddr, Ipv6Addr};

use anyhow::{ensure, Context, Result};
use masq_testbed::{addr, addr6, Netns, Topology};

use crate::harness::{Bed, Datapath};
use crate::{pool, refused_at_start};

/// The node's second IPv6 address on the uplink, the pool's second entry.
pub const SECOND6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x172, 0x30, 0, 0, 0, 0, 3);

fn pool6() -> Vec<IpAddr> {
    vec![addr6::NODE.into(), SECOND6.into()]
}

/// `ip -6 addr add ADDR/64 dev eth0 nodad` in `ns`.
pub fn add_address6(ns: &Netns, address: Ipv6Addr) -> Result<()> {
    let cidr = format!("{address}/64");
    ns.ip(&["-6", "addr", "add", &cidr, "dev", "eth0", "nodad"])?;
    Ok(())
}

/// An IPv6 address for the second pod that the pool hash sends to the other entry than the
/// first pod's, added to it and made the source of its IPv6 default route.
pub fn second_pod_address6(pod2: &Netns) -> Result<Ipv6Addr> {
    let other = 1 - pool::index_for(addr6::POD.into(), 2);
    let chosen = (4..=250u16)
        .map(|host| Ipv6Addr::new(0xfd00, 0x10, 0x244, 1, 0, 0, 0, host))
        .find(|a| pool::index_for((*a).into(), 2) == other)
        .context("no address of the IPv6 pod CIDR hashes to the other entry")?;
    add_address6(pod2, chosen)?;
    let (gateway, src) = (addr6::POD_GATEWAY.to_string(), chosen.to_string());
    pod2.ip(&[
        "-6", "route", "replace", "default", "via", &gateway, "src", &src,
    ])?;
    Ok(chosen)
}

pub fn ipv6_pods_spread_over_an_ipv6_pool(datapath: Datapath) -> Result<()> {
    let topology = Topology::builder().ipv6(true);
    let config = "nonMasqueradeCIDRs: [10.0.0.0/8, fd00::/8]\n";
    let mut bed = Bed::on(topology, datapath, Some(config))?;
    add_address6(&bed.topology.node, SECOND6)?;
    let second = second_pod_address6(&bed.topology.pod2)?;
    bed.agent_args = vec![
        "--enable-ipv6".into(),
        "--pod-cidr".into(),
        addr6::POD_CIDR.into(),
    ];
    if datapath.iptables_backend().is_some() {
        return iptables_does_not_spread(bed);
    }
    for ip in pool6() {
        bed.agent_args.extend(["--snat-ip".into(), ip.to_string()]);
    }
    bed.start_agent()?;
    bed.wait_ready()?;

    let pods = [
        (&bed.topology.pod, IpAddr::from(addr6::POD)),
        (&bed.topology.pod2, IpAddr::from(second)),
    ];
    let mut taken = Vec::new();
    for (ns, src) in pods {
        let want = pool::address_for(&pool6(), src).expect("a pool");
        let seen = bed
            .source_from(ns, addr6::INTERNET)
            .map_err(|e| bed.with_log(e))?;
        ensure!(
            seen == want,
            "{src} left with {seen}, not its pool address {want}"
        );
        let seen4 = bed.source_from(ns, addr::INTERNET)?;
        ensure!(
            seen4 == IpAddr::from(addr::NODE),
            "IPv4 left with {seen4}, not the uplink's address"
        );
        taken.push(want);
    }
    ensure!(taken[0] != taken[1], "both pods took {}", taken[0]);
    Ok(())
}

/// iptables: two IPv6 `--snat-ip` are refused (exit 1, one line naming the flag, nothing
/// installed); with `--snat-ips-from-interface` both pods' IPv6 flows leave with the first
/// address, and `masq status` says so.
fn iptables_does_not_spread(mut bed: Bed) -> Result<()> {
    let mut args = bed.agent_args.clone();
    for ip in pool6() {
        args.extend(["--snat-ip".into(), ip.to_string()]);
    }
    refused_at_start(
        &bed,
        &args,
        "masq: --snat-ip: the iptables datapath cannot spread IPv6 pods over 2 addresses (its \
         cluster match hashes only the first 32 bits of an IPv6 address); give one IPv6 \
         --snat-ip, or use --datapath nftables or ebpf",
    )?;

    bed.agent_args.push("--snat-ips-from-interface".into());
    bed.start_agent()?;
    bed.wait_ready()?;
    // The one address it uses: the first of the interface's pool, whichever the kernel lists
    // first (for IPv6, the newest).
    let snat = bed.status()?.snat.context("no snat in /status")?;
    let ipv6 = snat.pools.iter().find(|p| p.family == "ipv6");
    let first: IpAddr = match ipv6.map(|p| p.addresses.as_slice()) {
        Some([one]) => one.parse()?,
        _ => anyhow::bail!("not one IPv6 address: {snat:?}"),
    };
    ensure!(pool6().contains(&first), "{first} is not the uplink's");
    ensure!(
        snat.warning
            .as_deref()
            .is_some_and(|w| w.contains("first 32 bits")),
        "no warning: {snat:?}"
    );
    for ns in [&bed.topology.pod, &bed.topology.pod2] {
        let seen = bed.source_from(ns, addr6::INTERNET)?;
        ensure!(seen == first, "left with {seen}, not {first}");
    }
    Ok(())
}
