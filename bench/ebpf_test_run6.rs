//! The IPv6 rows of `ebpf_test_run` (`--enable-ipv6`, 1,000 CIDRs of each family): established
//! with the port kept and changed, a kept flow's established packet, new flows back to back
//! (`bench_new_flow6`), and single-shot new flows.

use masq_decision::Reason::NonMasqueradeCidr;
use std::net::Ipv6Addr;
use std::time::Duration;

use aya::programs::SchedClassifier;
use aya::EbpfLoader;
use etherparse::PacketBuilder;
use ipnet::Ipv6Net;
use masq_datapath::ebpf::types::{NatEntry6, NatTuple6, CFG_IPV6};
use masq_datapath::ebpf::{kfunc, load_unpinned, Contents, KernCtx, Maps, EGRESS_PROGRAM};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::{contents, ns, run, AMORTIZED_FLOWS, HARNESS, NEW_FLOWS, REPEAT};

const NODE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x18, 0, 0, 0, 0, 2);
const POD6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x244, 1, 0, 0, 0, 5);
const EXTERNAL6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);

/// The translated address of the staged established flow (crate::STAND_IN's reason).
const STAND_IN6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x77, 0, 0, 0, 0, 7);

/// An ACK with data: a packet of an established connection.
fn tcp6_ack(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv6(src.octets(), dst.octets(), 64)
        .tcp(sport, dport, 1, 1000)
        .ack(1)
        .write(&mut out, &[0u8; 64])
        .unwrap();
    out
}

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
    c.v6.snat_pools.insert(0, vec![NODE6]);
    c.v6.local_addrs.insert(NODE6);
    let mut rng = StdRng::seed_from_u64(count as u64 + 6);
    c.v6.dst_policy
        .insert("fd00::/8".parse().unwrap(), NonMasqueradeCidr);
    while c.v6.dst_policy.len() < count {
        let low: u128 = rng.random::<u128>() >> 36;
        let addr = Ipv6Addr::from((0x2_0010_db81_u128 << 92) | low);
        c.v6.dst_policy.insert(
            Ipv6Net::new(addr, rng.random_range(48..=128))
                .unwrap()
                .trunc(),
            NonMasqueradeCidr,
        );
    }
    c
}

/// The column names of [`row`].
pub const COLUMNS: [&str; 5] = [
    "established, port kept",
    "established, port changed",
    "kept flow, established",
    "new flow",
    "new flow, single shot",
];

/// The IPv6 figures (ns per packet), `count` CIDRs of each family.
pub fn row(count: usize) -> [f64; 5] {
    let mut bpf = load_unpinned().unwrap();
    let mut maps = Maps::take_from(&mut bpf).unwrap();
    maps.apply(&contents6(count)).unwrap();
    let prog: &SchedClassifier = bpf.program(EGRESS_PROGRAM).unwrap().try_into().unwrap();
    // As crate::established: each flow with a pod port of its own.
    let established = |maps: &mut Maps, pod_port: u16, node_port: u16| {
        let entry = |addr: Ipv6Addr, port: u16| NatEntry6 {
            to_addr: addr.octets(),
            to_port: port.to_be_bytes(),
            ..NatEntry6::default()
        };
        let there = NatTuple6::new(6, POD6, pod_port, EXTERNAL6, 80);
        let back = NatTuple6::new(6, STAND_IN6, node_port, EXTERNAL6, 80);
        maps.nat6_egress_mut()
            .insert(there, entry(STAND_IN6, node_port), 0)
            .unwrap();
        maps.nat6_egress_mut()
            .insert(back, entry(POD6, pod_port), 0)
            .unwrap();
        ns(run(prog, &tcp6_ack(POD6, pod_port, EXTERNAL6, 80), REPEAT))
    };
    let same = established(&mut maps, 40000, 40000);
    let changed = established(&mut maps, 41000, 50000);
    let kept_frame = tcp6(POD6, 40000, "fd00::9".parse().unwrap(), 80);
    run(prog, &kept_frame, 1);
    let kept = ns(run(prog, &kept_frame, REPEAT));
    let mut single = Duration::ZERO;
    for i in 0..NEW_FLOWS {
        let src = Ipv6Addr::from(u128::from(POD6) + u128::from(i / 30000));
        let frame = tcp6(src, 1024 + (i % 30000) as u16, EXTERNAL6, 443);
        single += run(prog, &frame, 1);
    }
    let single = ns(single) / f64::from(NEW_FLOWS);

    // New flows back to back: the harness program makes each repeat a new flow.
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
    let new = ns(run(
        prog,
        &tcp6(POD6, 32768, EXTERNAL6, 80),
        AMORTIZED_FLOWS,
    ));
    [same, changed, kept, new, single]
}
