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
//! Then the same for IPv6 (`--enable-ipv6`, 1,000 CIDRs of each family): established with the
//! port kept and changed, new flows with the port kept (`bench_new_flow6`) and changed, single
//! shots, a kept destination.
//!
//! Run as root: `cargo bench -p masq-datapath --bench ebpf_test_run`. Results: bench/ebpf.md.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use aya::programs::SchedClassifier;
use aya::{EbpfLoader, TestRun, TestRunOptions};
use etherparse::PacketBuilder;
use ipnet::{Ipv4Net, Ipv6Net};
use masq_datapath::ebpf::types::{MasqConfig, NatEntry, NatEntry6, NatTuple, NatTuple6, CFG_IPV6};
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

const NODE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x18, 0, 0, 0, 0, 2);
const POD6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x244, 1, 0, 0, 0, 5);
const EXTERNAL6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);
const SNAT6_AS_POD: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x64, 0, 0, 0, 0, 0, 1);

fn tcp6(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv6(src.octets(), dst.octets(), 64)
        .tcp(sport, dport, 1, 1000)
        .syn()
        .write(&mut out, &[0u8; 64])
        .unwrap();
    out
}

/// [`contents`] with IPv6 on: SNAT to NODE6, `count` IPv6 prefixes (/48 to /128 inside
/// 2001:db8:1000::/36) plus fd00::/8 kept.
fn contents6(count: usize) -> Contents {
    let mut c = contents(count);
    c.config.flags |= CFG_IPV6;
    c.v6.snat_addrs.insert(0, NODE6);
    c.v6.local_addrs.insert(NODE6);
    let mut rng = StdRng::seed_from_u64(count as u64 + 6);
    c.v6.nonmasq_dst.insert("fd00::/8".parse().unwrap());
    while c.v6.nonmasq_dst.len() < count {
        let low: u128 = rng.random::<u128>() >> 36;
        let addr = Ipv6Addr::from((0x2_0010_db81_u128 << 92) | low);
        c.v6.nonmasq_dst.insert(
            Ipv6Net::new(addr, rng.random_range(48..=128))
                .unwrap()
                .trunc(),
        );
    }
    c
}

/// The IPv6 figures (ns per packet), `count` CIDRs of each family.
fn ipv6_row(count: usize) -> [f64; 6] {
    let mut bpf = load_unpinned().unwrap();
    let mut maps = Maps::take_from(&mut bpf).unwrap();
    maps.apply(&contents6(count)).unwrap();
    let prog: &SchedClassifier = bpf.program(EGRESS_PROGRAM).unwrap().try_into().unwrap();
    let established = |maps: &mut Maps, node_port: u16| {
        let entry = |addr: Ipv6Addr, port: u16| NatEntry6 {
            to_addr: addr.octets(),
            to_port: port.to_be_bytes(),
            ..NatEntry6::default()
        };
        let there = NatTuple6::new(6, POD6, 40000, EXTERNAL6, 80);
        let back = NatTuple6::new(6, NODE6, node_port, EXTERNAL6, 80);
        maps.nat6_egress_mut()
            .insert(there, entry(NODE6, node_port), 0)
            .unwrap();
        maps.nat6_egress_mut()
            .insert(back, entry(POD6, 40000), 0)
            .unwrap();
        run(prog, &tcp6(POD6, 40000, EXTERNAL6, 80), REPEAT).as_nanos() as f64
    };
    let same = established(&mut maps, 40000);
    let changed = established(&mut maps, 50000);
    let mut single = Duration::ZERO;
    for i in 0..NEW_FLOWS {
        let src = Ipv6Addr::from(u128::from(POD6) + u128::from(i / 30000));
        let frame = tcp6(src, 1024 + (i % 30000) as u16, EXTERNAL6, 443);
        single += run(prog, &frame, 1);
    }
    let single = single.as_nanos() as f64 / f64::from(NEW_FLOWS);
    let kept = run(
        prog,
        &tcp6(POD6, 40000, "fd00::9".parse().unwrap(), 80),
        REPEAT,
    )
    .as_nanos() as f64;

    // Port changed: the SNAT address looks like a pod, so every rewritten packet is a new flow.
    let mut c = contents6(count);
    c.v6.snat_addrs.insert(0, SNAT6_AS_POD);
    c.v6.local_addrs.clear();
    let mut bpf = load_unpinned().unwrap();
    let mut maps = Maps::take_from(&mut bpf).unwrap();
    maps.apply(&c).unwrap();
    let prog: &SchedClassifier = bpf.program(EGRESS_PROGRAM).unwrap().try_into().unwrap();
    let amortized = run(prog, &tcp6(POD6, 40000, EXTERNAL6, 80), AMORTIZED_FLOWS).as_nanos() as f64;

    // Port kept: the harness program makes each repeat a new flow with a free port.
    let object = kfunc::patched(HARNESS, KernCtx::detect());
    let mut bpf = EbpfLoader::new().load(object.bytes()).unwrap();
    let mut maps = Maps::take_from(&mut bpf).unwrap();
    maps.apply(&contents6(count)).unwrap();
    let prog: &mut SchedClassifier = bpf
        .program_mut("bench_new_flow6")
        .unwrap()
        .try_into()
        .unwrap();
    prog.load().unwrap();
    let new_kept = run(prog, &tcp6(POD6, 32768, EXTERNAL6, 80), AMORTIZED_FLOWS).as_nanos() as f64;
    [same, changed, new_kept, amortized, single, kept]
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
    println!();
    println!("IPv6 (--enable-ipv6), 1000 CIDRs of each family:");
    println!("| established, port kept | established, port changed | new flow, port kept | new flow, port changed | new flow, single shot | kept destination |");
    println!("|---:|---:|---:|---:|---:|---:|");
    let [same, changed, new_kept, amortized, single, kept] = ipv6_row(1_000);
    println!(
        "| {same:.0} | {changed:.0} | {new_kept:.0} | {amortized:.0} | {single:.0} | {kept:.0} |"
    );
}
