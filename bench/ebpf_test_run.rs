//! Per-packet cost of masq's egress program, measured by the kernel through `BPF_PROG_TEST_RUN`
//! (no attach, no namespace), with 10, 1,000 and 100,000 non-masquerade CIDRs:
//!
//! - established flow: a NAT hit, the port and address rewritten with the checksum helpers.
//!   Every `repeat` iteration reuses the same skb, so two staged forward entries translate the
//!   packet back and forth (pod → node → pod …): each iteration is a full established-flow hit.
//! - new flow, port kept: 4000 new flows back to back in one run, each with a free source port
//!   (most new flows), through a harness program around the same egress code
//!   (`bpf/bench_new_flows.bpf.c`).
//! - new flow, port changed: 4000 new flows back to back, each finding its port taken.
//! - new flow, single shot: distinct packets run once each (the timer and cold caches of a run
//!   included).
//! - kept: a destination inside a CIDR (decision only, nothing written).
//!
//! Run as root: `cargo bench -p masq-datapath --bench ebpf_test_run`. Results: bench/ebpf.md.

use std::net::Ipv4Addr;
use std::time::Duration;

use aya::programs::SchedClassifier;
use aya::{EbpfLoader, TestRun, TestRunOptions};
use etherparse::PacketBuilder;
use ipnet::Ipv4Net;
use masq_datapath::ebpf::types::{MasqConfig, NatEntry, NatTuple};
use masq_datapath::ebpf::{
    kfunc, load_unpinned, Contents, KernCtx, Maps, DEFAULT_PORT_RANGE, EGRESS_PROGRAM,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const NODE: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 2);
const POD: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 5);
const EXTERNAL: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const REPEAT: u32 = 1_000_000;
const NEW_FLOWS: u32 = 20_000;
const AMORTIZED_FLOWS: u32 = 4_000;
const SNAT_AS_POD: Ipv4Addr = Ipv4Addr::new(100, 127, 0, 1);

/// A SYN: only a SYN starts a translation, and the new-flow figures must measure one.
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

fn contents(count: usize) -> Contents {
    let mut c = Contents {
        config: MasqConfig {
            port_min: DEFAULT_PORT_RANGE.first,
            port_max: DEFAULT_PORT_RANGE.last,
            flags: 0,
        },
        ..Contents::default()
    };
    c.snat_addrs.insert(0, NODE);
    c.local_addrs.insert(NODE);
    c.nonmasq_dst.extend(cidrs(count));
    c
}

fn run(prog: &SchedClassifier, frame: &[u8], repeat: u32) -> Duration {
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

/// `node_port`: the translated port; 40000 keeps the pod's port (one checksum helper call),
/// anything else changes it (two calls).
fn established(prog: &SchedClassifier, maps: &mut Maps, node_port: u16) -> f64 {
    let there = NatTuple::new(6, POD, 40000, EXTERNAL, 80);
    let back = NatTuple::new(6, NODE, node_port, EXTERNAL, 80);
    let entry = |addr: Ipv4Addr, port: u16| NatEntry {
        to_addr: addr.octets(),
        to_port: port.to_be_bytes(),
        ..NatEntry::default()
    };
    maps.nat_egress_mut()
        .insert(there, entry(NODE, node_port), 0)
        .unwrap();
    maps.nat_egress_mut()
        .insert(back, entry(POD, 40000), 0)
        .unwrap();
    let frame = tcp(POD, 40000, EXTERNAL, 80);
    run(prog, &frame, REPEAT).as_nanos() as f64
}

fn new_flows(prog: &SchedClassifier) -> f64 {
    let mut total = Duration::ZERO;
    for i in 0..NEW_FLOWS {
        let src = Ipv4Addr::from(u32::from(POD) + i / 30000);
        let frame = tcp(src, 1024 + (i % 30000) as u16, EXTERNAL, 443);
        total += run(prog, &frame, 1);
    }
    total.as_nanos() as f64 / f64::from(NEW_FLOWS)
}

/// New flows back to back in one `repeat` run: the SNAT address is made to look like a pod (a
/// non-local address outside every CIDR), so each rewritten packet is a new flow once more
/// (its source changed) and is translated again. Each such flow pays one extra port probe,
/// since its original port is the one just taken. All of them share one (SNAT address,
/// destination) pool of 32768 ports: 4000 flows fill it to 12%, so random probes rarely collide.
fn new_flows_amortized(count: usize) -> f64 {
    let mut c = contents(count);
    c.snat_addrs.insert(0, SNAT_AS_POD);
    c.local_addrs.clear();
    let mut bpf = load_unpinned().unwrap();
    let mut maps = Maps::take_from(&mut bpf).unwrap();
    maps.apply(&c).unwrap();
    let prog: &SchedClassifier = bpf.program(EGRESS_PROGRAM).unwrap().try_into().unwrap();
    let frame = tcp(POD, 40000, EXTERNAL, 80);
    run(prog, &frame, AMORTIZED_FLOWS).as_nanos() as f64
}

/// The harness object: masq's programs plus `bench_new_flow`.
static HARNESS: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench_new_flows.bpf.o"));

/// New flows back to back whose source port is free: `bench_new_flow` turns each repeat's packet
/// into the SYN of a new flow (the pod's address, the next source port in the range) and runs
/// the egress code on it. One flow per (destination, port): every port is kept.
fn new_flows_kept(count: usize) -> f64 {
    let object = kfunc::patched(HARNESS, KernCtx::detect());
    let mut bpf = EbpfLoader::new().load(object.bytes()).unwrap();
    let mut maps = Maps::take_from(&mut bpf).unwrap();
    maps.apply(&contents(count)).unwrap();
    let prog: &mut SchedClassifier = bpf
        .program_mut("bench_new_flow")
        .unwrap()
        .try_into()
        .unwrap();
    prog.load().unwrap();
    let frame = tcp(POD, DEFAULT_PORT_RANGE.first, EXTERNAL, 80);
    run(prog, &frame, AMORTIZED_FLOWS).as_nanos() as f64
}

fn kept(prog: &SchedClassifier) -> f64 {
    let frame = tcp(POD, 40000, Ipv4Addr::new(10, 1, 2, 3), 80);
    run(prog, &frame, REPEAT).as_nanos() as f64
}

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: BPF_PROG_TEST_RUN needs root");
        return;
    }
    println!("| CIDRs | established, port kept | established, port changed | new flow, port kept | new flow, port changed | new flow, single shot | kept destination |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for count in [10, 1_000, 100_000] {
        let mut bpf = load_unpinned().unwrap();
        let mut maps = Maps::take_from(&mut bpf).unwrap();
        maps.apply(&contents(count)).unwrap();
        let prog: &SchedClassifier = bpf.program(EGRESS_PROGRAM).unwrap().try_into().unwrap();
        let same = established(prog, &mut maps, 40000);
        let changed = established(prog, &mut maps, 50000);
        let new = new_flows(prog);
        let keep = kept(prog);
        let amortized = new_flows_amortized(count);
        let new_kept = new_flows_kept(count);
        println!("| {count} | {same:.0} | {changed:.0} | {new_kept:.0} | {amortized:.0} | {new:.0} | {keep:.0} |");
    }
}
