//! Per-packet cost of masq's programs, measured by the kernel through `BPF_PROG_TEST_RUN` (no
//! attach), in a network namespace of the benchmark's own (the programs look up the node's
//! sockets there), with 10, 1,000 and 100,000 non-masquerade CIDRs:
//!
//! - established flow: a NAT hit, the address (and port) rewritten. Every `repeat` iteration
//!   reuses the same skb, so two staged forward entries translate the packet back and forth
//!   (pod → node → pod …): each iteration is a full established-flow hit.
//! - kept flow, established: a packet of a kept flow, passed on its record.
//! - new flow: 4000 new flows back to back in one run, through a harness program around the
//!   same egress code (`bpf/bench_new_flows.bpf.c`): the decision, the port search (a random
//!   place in the port table, as fully-random masquerading does), the node-socket check and
//!   both inserts.
//! - new kept flow: 4000 new flows to a kept destination back to back (the decision and the
//!   record).
//! - new inbound flow: 4000 flows from a client to a pod back to back, met by the ingress code
//!   (the record that keeps the pod's answers untranslated).
//! - new flow, single shot: distinct packets run once each (the timer and cold caches of a run
//!   included).
//!
//! Then the IPv6 rows (`ebpf_test_run6.rs`), the port search at 0 %, 50 %, 90 % and 99 % fill of
//! one destination's 1,000-port pool (single shots, the fill restored after each), and one GC
//! pass over a full table.
//!
//! Run as root: `cargo bench -p masq-datapath --bench ebpf_test_run`; `-- --json` prints the
//! figures as one JSON object instead of tables. Results: bench/ebpf.md.

#[path = "ebpf_test_run6.rs"]
mod ipv6;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use aya::programs::SchedClassifier;
use aya::{EbpfLoader, TestRun, TestRunOptions};
use etherparse::PacketBuilder;
use ipnet::Ipv4Net;
use masq_datapath::ebpf::types::{MasqConfig, NatEntry, NatTuple, NAT_F_REPLIED};
use masq_datapath::ebpf::{
    gc, kfunc, load_unpinned, Contents, KernCtx, KernelClock, Maps, DEFAULT_NAT_CAPACITY,
    DEFAULT_PORT_RANGES, EGRESS_PROGRAM,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const NODE: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 2);
const POD: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 5);
const EXTERNAL: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const KEPT: Ipv4Addr = Ipv4Addr::new(10, 1, 2, 3);
/// The translated address of the staged established flow: not the node's, so the rewritten
/// packet, run again, is another pod's established flow (one from a node or pool address is the
/// node's own, and every second repeat would measure a node flow instead).
const STAND_IN: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
pub(crate) const REPEAT: u32 = 1_000_000;
pub(crate) const NEW_FLOWS: u32 = 20_000;
pub(crate) const AMORTIZED_FLOWS: u32 = 4_000;
const POOL_FIRST: u16 = 40000;
const POOL_SIZE: u16 = 1000;
const FILL_SAMPLES: u32 = 300;

/// A SYN: the first packet of a new flow.
fn tcp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src.octets(), dst.octets(), 64)
        .tcp(sport, dport, 1, 1000)
        .syn()
        .write(&mut out, &[0u8; 64])
        .unwrap();
    out
}

/// An ACK with data: a packet of an established connection (a SYN there would be a reuse).
fn tcp_ack(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src.octets(), dst.octets(), 64)
        .tcp(sport, dport, 1, 1000)
        .ack(1)
        .write(&mut out, &[0u8; 64])
        .unwrap();
    out
}

/// `count` random prefixes (/16 to /32) inside 20.0.0.0–119.255.255.255, plus 10.0.0.0/8.
fn cidrs(count: usize) -> Vec<Ipv4Net> {
    let mut rng = StdRng::seed_from_u64(count as u64);
    let mut out = vec!["10.0.0.0/8".parse().unwrap()];
    while out.len() < count {
        let addr = Ipv4Addr::from(rng.random_range(20u32 << 24..120u32 << 24));
        out.push(
            Ipv4Net::new(addr, rng.random_range(16..=32))
                .unwrap()
                .trunc(),
        );
    }
    out
}

pub(crate) fn contents(count: usize) -> Contents {
    let mut c = Contents {
        config: MasqConfig::default(),
        ..Contents::default()
    };
    c.set_ports(&DEFAULT_PORT_RANGES);
    c.snat_pools.insert(0, vec![NODE]);
    c.local_addrs.insert(NODE);
    c.dst_policy.extend(
        cidrs(count)
            .into_iter()
            .map(|net| (net, masq_decision::Reason::NonMasqueradeCidr)),
    );
    c
}

pub(crate) fn run(prog: &SchedClassifier, frame: &[u8], repeat: u32) -> Duration {
    let mut out = vec![0u8; frame.len() + 64];
    prog.test_run(TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        repeat,
        ..TestRunOptions::default()
    })
    .unwrap()
    .duration
}

pub(crate) fn ns(d: Duration) -> f64 {
    d.as_nanos() as f64
}

/// A pod's established flow from `pod_port`, translated to `node_port` (the same: the port is
/// kept). Each call takes a pod port of its own: the reverse halves an earlier call's flow left
/// would make this one's translation look taken by another flow, and every packet a new mapping.
fn established(prog: &SchedClassifier, maps: &mut Maps, pod_port: u16, node_port: u16) -> f64 {
    let there = NatTuple::new(6, POD, pod_port, EXTERNAL, 80);
    let back = NatTuple::new(6, STAND_IN, node_port, EXTERNAL, 80);
    maps.nat_egress_mut()
        .insert(there, NatEntry::new(STAND_IN, node_port, 0, 0), 0)
        .unwrap();
    maps.nat_egress_mut()
        .insert(back, NatEntry::new(POD, pod_port, 0, 0), 0)
        .unwrap();
    ns(run(prog, &tcp_ack(POD, pod_port, EXTERNAL, 80), REPEAT))
}

/// A kept flow's packet after its first: its record is found and it passes.
fn kept_established(prog: &SchedClassifier) -> f64 {
    let frame = tcp(POD, 40000, KEPT, 80);
    run(prog, &frame, 1);
    ns(run(prog, &frame, REPEAT))
}

fn new_flows(prog: &SchedClassifier) -> f64 {
    let mut total = Duration::ZERO;
    for i in 0..NEW_FLOWS {
        let src = Ipv4Addr::from(u32::from(POD) + i / 30000);
        let frame = tcp(src, 1024 + (i % 30000) as u16, EXTERNAL, 443);
        total += run(prog, &frame, 1);
    }
    ns(total) / f64::from(NEW_FLOWS)
}

/// The harness object: masq's programs plus `bench_new_flow` and `bench_new_inbound`.
pub(crate) static HARNESS: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench_new_flows.bpf.o"));

/// `AMORTIZED_FLOWS` new flows back to back through the harness program `harness`, starting
/// with `frame`: each repeat is the first packet of a flow not seen before.
fn harness_flows(count: usize, harness: &str, frame: &[u8]) -> f64 {
    let object = kfunc::patched(HARNESS, KernCtx::detect());
    let mut bpf = EbpfLoader::new().load(object.bytes()).unwrap();
    let mut maps = Maps::take_from(&mut bpf).unwrap();
    maps.apply(&contents(count)).unwrap();
    let prog: &mut SchedClassifier = bpf.program_mut(harness).unwrap().try_into().unwrap();
    prog.load().unwrap();
    ns(run(prog, frame, AMORTIZED_FLOWS))
}

/// New translated flows.
fn new_translated_flows(count: usize) -> f64 {
    harness_flows(count, "bench_new_flow", &tcp(POD, 1024, EXTERNAL, 80))
}

/// New flows to a kept destination: the decision and the record.
fn new_kept_flows(count: usize) -> f64 {
    harness_flows(count, "bench_new_flow", &tcp(POD, 1024, KEPT, 80))
}

/// New flows from a client at a masqueraded address towards a pod, met by the ingress code.
fn new_inbound_flows(count: usize) -> f64 {
    harness_flows(
        count,
        "bench_new_inbound",
        &tcp(Ipv4Addr::new(192, 0, 2, 77), 1024, POD, 8080),
    )
}

/// Single-shot new flows towards a destination whose 1,000-port pool is `fill` percent taken
/// (random ports, as other flows left them); each sample's pair is removed again, so every
/// sample meets the same fill.
fn port_search_at(fill: u32) -> f64 {
    let mut c = contents(10);
    c.set_ports(&[masq_datapath::PortRange {
        first: POOL_FIRST,
        last: POOL_FIRST + POOL_SIZE - 1,
    }]);
    let mut bpf = load_unpinned().unwrap();
    let mut maps = Maps::take_from(&mut bpf).unwrap();
    maps.apply(&c).unwrap();
    let mut rng = StdRng::seed_from_u64(u64::from(fill));
    let mut ports: Vec<u16> = (POOL_FIRST..POOL_FIRST + POOL_SIZE).collect();
    for i in (1..ports.len()).rev() {
        ports.swap(i, rng.random_range(0..=i));
    }
    let taken = usize::from(POOL_SIZE) * fill as usize / 100;
    for (i, port) in ports.iter().take(taken).enumerate() {
        let other = u16::try_from(i).unwrap() + 2000;
        let reverse = NatTuple::new(6, EXTERNAL, 80, NODE, *port);
        let forward = NatTuple::new(6, POD, other, EXTERNAL, 80);
        maps.nat_ingress_mut()
            .insert(reverse, NatEntry::new(POD, other, NAT_F_REPLIED, 0), 0)
            .unwrap();
        maps.nat_egress_mut()
            .insert(forward, NatEntry::new(NODE, *port, NAT_F_REPLIED, 0), 0)
            .unwrap();
    }
    let prog: &SchedClassifier = bpf.program(EGRESS_PROGRAM).unwrap().try_into().unwrap();
    let mut total = Duration::ZERO;
    for sample in 0..FILL_SAMPLES {
        // A source port outside the range: the pool must supply one.
        let sport = 10000 + u16::try_from(sample).unwrap();
        let mut out = vec![0u8; 256];
        let frame = tcp(POD, sport, EXTERNAL, 80);
        let result = prog
            .test_run(TestRunOptions {
                data_in: Some(&frame),
                data_out: Some(&mut out),
                ..TestRunOptions::default()
            })
            .unwrap();
        total += result.duration;
        let got = u16::from_be_bytes([out[34], out[35]]);
        assert!(
            (POOL_FIRST..POOL_FIRST + POOL_SIZE).contains(&got),
            "no port at {fill}%"
        );
        maps.nat_egress_mut()
            .remove(&NatTuple::new(6, POD, sport, EXTERNAL, 80))
            .unwrap();
        maps.nat_ingress_mut()
            .remove(&NatTuple::new(6, EXTERNAL, 80, NODE, got))
            .unwrap();
    }
    ns(total) / f64::from(FILL_SAMPLES)
}

/// One GC pass over a full table (131,072 pairs): (nothing expired, everything expired), in ms.
/// Milliseconds for a GC pass over a full table with nothing expired, for one removing
/// everything, and for the metrics' read of the same full table (`nat::pressure`, at each
/// scrape).
fn gc_full_table() -> (f64, f64, f64) {
    let mut bpf = load_unpinned().unwrap();
    let mut maps = Maps::take_from(&mut bpf).unwrap();
    maps.apply(&contents(10)).unwrap();
    let clock = KernelClock::get().unwrap();
    let now = clock.now();
    for i in 0..DEFAULT_NAT_CAPACITY {
        let pod = Ipv4Addr::from(u32::from(POD) + i / 60000);
        let port = 1024 + u16::try_from(i % 60000).unwrap();
        let dst = Ipv4Addr::from(u32::from(EXTERNAL) + i / 60000);
        maps.nat_egress_mut()
            .insert(
                NatTuple::new(6, pod, port, dst, 443),
                NatEntry::new(NODE, port, NAT_F_REPLIED, now),
                0,
            )
            .unwrap();
        maps.nat_ingress_mut()
            .insert(
                NatTuple::new(6, dst, 443, NODE, port),
                NatEntry::new(pod, port, NAT_F_REPLIED, now),
                0,
            )
            .unwrap();
    }
    let timeouts = gc::NatTimeouts::default();
    let started = Instant::now();
    let kept = gc::gc(&mut maps, &clock, now, &timeouts).unwrap();
    let live = started.elapsed();
    assert_eq!(kept.removed(), 0);
    let started = Instant::now();
    let pressure = masq_datapath::ebpf::nat::pressure(&maps).unwrap();
    let scrape = started.elapsed();
    assert_eq!(pressure.ingress_entries, DEFAULT_NAT_CAPACITY);
    let started = Instant::now();
    let later = clock.later(Duration::from_secs(7 * 3600));
    let all = gc::gc(&mut maps, &clock, later, &timeouts).unwrap();
    let expired = started.elapsed();
    assert_eq!(all.expired_pairs, DEFAULT_NAT_CAPACITY as usize);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (ms(live), ms(expired), ms(scrape))
}

fn main() {
    if let Some(reason) = masq_testbed::unmet(&[]) {
        eprintln!("BPF_PROG_TEST_RUN {reason}");
        std::process::exit(1);
    }
    // The programs look up the node's sockets; the host's must not pick the ports.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("a network namespace");
    let json = std::env::args().any(|a| a == "--json");
    // `--gc`: the GC figure alone (a quick check of a GC change).
    if std::env::args().any(|a| a == "--gc") {
        let (live, expired, scrape) = gc_full_table();
        println!(
            "GC pass, full table: {live:.0} ms nothing expired, {expired:.0} ms all expired; \
             the metrics' read of it: {scrape:.0} ms"
        );
        return;
    }
    let mut figures: BTreeMap<String, f64> = BTreeMap::new();
    let columns = [
        "established, port kept",
        "established, port changed",
        "kept flow, established",
        "new flow",
        "new kept flow",
        "new inbound flow",
        "new flow, single shot",
    ];
    if !json {
        println!("| CIDRs | {} |", columns.join(" | "));
        println!("|---:|{}", "---:|".repeat(columns.len()));
    }
    for count in [10, 1_000, 100_000] {
        let mut bpf = load_unpinned().unwrap();
        let mut maps = Maps::take_from(&mut bpf).unwrap();
        maps.apply(&contents(count)).unwrap();
        let prog: &SchedClassifier = bpf.program(EGRESS_PROGRAM).unwrap().try_into().unwrap();
        let row = [
            established(prog, &mut maps, 40000, 40000),
            established(prog, &mut maps, 41000, 50000),
            kept_established(prog),
            new_translated_flows(count),
            new_kept_flows(count),
            new_inbound_flows(count),
            new_flows(prog),
        ];
        for (column, value) in columns.iter().zip(row) {
            figures.insert(format!("{count} CIDRs: {column}"), value);
        }
        if !json {
            let cells: Vec<String> = row.iter().map(|v| format!("{v:.0}")).collect();
            println!("| {count} | {} |", cells.join(" | "));
        }
    }
    let row6 = ipv6::row(1_000);
    for (column, value) in ipv6::COLUMNS.iter().zip(row6) {
        figures.insert(format!("IPv6, 1000 CIDRs: {column}"), value);
    }
    if !json {
        println!(
            "\nIPv6 (--enable-ipv6), 1000 CIDRs of each family:\n| {} |\n|{}",
            ipv6::COLUMNS.join(" | "),
            "---:|".repeat(ipv6::COLUMNS.len())
        );
        let cells: Vec<String> = row6.iter().map(|v| format!("{v:.0}")).collect();
        println!("| {} |", cells.join(" | "));
        println!("\n| pool fill | new flow, single shot (ns) |\n|---:|---:|");
    }
    for fill in [0, 50, 90, 99] {
        let value = port_search_at(fill);
        figures.insert(format!("port search at {fill}% fill"), value);
        if !json {
            println!("| {fill} % | {value:.0} |");
        }
    }
    let (live, expired, scrape) = gc_full_table();
    figures.insert("GC pass, full table, nothing expired (ms)".into(), live);
    figures.insert(
        "GC pass, full table, everything expired (ms)".into(),
        expired,
    );
    figures.insert(
        "metrics read (nat::pressure), full table (ms)".into(),
        scrape,
    );
    if json {
        println!("{}", serde_json::to_string_pretty(&figures).unwrap());
    } else {
        println!(
            "\nGC pass over a full table ({DEFAULT_NAT_CAPACITY} pairs): {live:.0} ms with \
             nothing expired, {expired:.0} ms removing everything; the metrics' read of it \
             {scrape:.0} ms"
        );
    }
}
