//! Times the nftables datapath's `sync` on big interval sets, inside throwaway namespaces
//! (needs root): from an empty kernel, changing one CIDR in the same process, changing one
//! CIDR in a fresh process (an agent restart: the table is read back first), one
//! `nft -j list table` read-back, and growing a 10-CIDR table to the size (what the agent does
//! when a config file arrives). Medians over the rounds, in milliseconds.
//!
//! ```sh
//! cargo run --release -p masq-datapath --example nft_timing -- 10000,61278,100000 5
//! ```
//!
//! The CIDRs are the benchmark's fillers (bench/src/cidrs.rs): /32s taken every other address
//! of 100.64.0.0/10, so no two merge; the changed CIDR swaps the first filler for 198.18.0.1.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use masq_datapath::nft::Nftables;
use masq_datapath::{Datapath, Desired, Interface, NodeSettings};
use masq_testbed::Netns;

const UPLINK: &str = "uplink";

fn fillers(count: usize) -> Vec<IpNet> {
    (0..count)
        .map(|i| {
            let addr = Ipv4Addr::from(0x6440_0000 + 2 * u32::try_from(i).expect("small"));
            IpNet::new(IpAddr::V4(addr), 32).expect("valid prefix")
        })
        .collect()
}

fn desired(index: u32, cidrs: Vec<IpNet>) -> Desired {
    Desired {
        config: masq_config::Config {
            cidr_limit: cidrs.len().max(masq_config::DEFAULT_CIDR_LIMIT),
            non_masquerade_cidrs: cidrs,
            resync_interval: Duration::from_secs(3600),
            ..masq_config::Config::default()
        },
        node: NodeSettings {
            pod_cidrs: vec!["10.244.0.0/16".parse().expect("valid")],
            interfaces: vec![Interface {
                name: UPLINK.into(),
                index,
                addrs: vec![IpAddr::from([172, 30, 0, 1])],
            }],
            ..NodeSettings::default()
        },
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// One round at `size` CIDRs: (from empty, change one, change one after a restart, read,
/// grow from 10).
fn round(size: usize) -> anyhow::Result<[f64; 5]> {
    let ns = Netns::new("nfttime")?;
    ns.ip(&[
        "link", "add", UPLINK, "type", "veth", "peer", "name", "peer",
    ])?;
    ns.ip(&["link", "set", UPLINK, "up"])?;
    ns.ip(&["addr", "add", "172.30.0.1/24", "dev", UPLINK])?;
    ns.ip(&[
        "route",
        "add",
        "default",
        "via",
        "172.30.0.2",
        "dev",
        UPLINK,
    ])?;
    let index = ns.enter(|| nix::net::if_::if_nametoindex(UPLINK))??;
    let first = desired(index, fillers(size));
    let mut changed_cidrs = fillers(size);
    changed_cidrs[0] = "198.18.0.1/32".parse()?;
    let second = desired(index, changed_cidrs);
    let small = desired(index, fillers(10));
    ns.enter(|| -> anyhow::Result<[f64; 5]> {
        let mut nft = Nftables::new();
        let started = Instant::now();
        nft.sync(&first)?;
        let install = started.elapsed();
        let started = Instant::now();
        let report = nft.sync(&second)?;
        let change = started.elapsed();
        anyhow::ensure!(report.changed, "the second sync changed nothing");
        let mut restarted = Nftables::new();
        let started = Instant::now();
        restarted.sync(&first)?;
        let restart_change = started.elapsed();
        anyhow::ensure!(restarted.matches(&first)?, "the table does not match");
        let started = Instant::now();
        let listing = std::process::Command::new("nft")
            .args(["-j", "list", "table", "inet", "masq"])
            .output()?;
        let read = started.elapsed();
        anyhow::ensure!(listing.status.success(), "nft list failed");
        restarted.sync(&small)?;
        let started = Instant::now();
        restarted.sync(&first)?;
        let grow = started.elapsed();
        anyhow::ensure!(restarted.matches(&first)?, "the grown table does not match");
        Ok([
            millis(install),
            millis(change),
            millis(restart_change),
            millis(read),
            millis(grow),
        ])
    })?
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let sizes: Vec<usize> = args
        .next()
        .unwrap_or_else(|| "10000,61278,100000".into())
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let rounds: usize = args.next().map(|r| r.parse()).transpose()?.unwrap_or(3);
    println!(
        "size\tfrom-empty\tchange-one\tchange-one-restarted\tread\tgrow-from-10 \
         (ms, median of {rounds})"
    );
    for size in sizes {
        let samples: Vec<[f64; 5]> = (0..rounds).map(|_| round(size)).collect::<Result<_, _>>()?;
        let column = |i: usize| median(samples.iter().map(|s| s[i]).collect());
        println!(
            "{size}\t{:.0}\t{:.0}\t{:.0}\t{:.0}\t{:.0}",
            column(0),
            column(1),
            column(2),
            column(3),
            column(4)
        );
    }
    Ok(())
}
