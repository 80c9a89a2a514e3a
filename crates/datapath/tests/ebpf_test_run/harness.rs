//! A private instance of the programs plus packet builders and independent checksum checks.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use aya::programs::SchedClassifier;
use aya::{TestRun, TestRunOptions};
use etherparse::{
    Icmpv4Header, Icmpv4Type, IpNumber, Ipv4Header, PacketBuilder, TcpHeader, UdpHeader,
};
use ipnet::Ipv4Net;
use masq_datapath::ebpf::types::{MasqConfig, Reason};
use masq_datapath::ebpf::{
    gc, load_unpinned_flavor, load_unpinned_with, nat, Contents, Flavor, KernCtx, KernelClock,
    Maps, PortSearch, DEFAULT_NAT_CAPACITY, DEFAULT_PORT_RANGES, EGRESS_PROGRAM, INGRESS_PROGRAM,
    STEER_PROGRAM,
};
use masq_decision::Reason as Why;

/// TC_ACT_UNSPEC as the kernel reports it: the packet goes on (translated or not).
pub const CONTINUE: u32 = u32::MAX;
/// TC_ACT_SHOT.
pub const SHOT: u32 = 2;
/// TC_ACT_REDIRECT: the packet was handed to another interface (the steering program).
pub const REDIRECT: u32 = 7;

pub const NODE: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 2);
pub const POD: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 5);
pub const POD2: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 6);
pub const EXTERNAL: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub const ROUTER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;

pub struct Harness {
    bpf: aya::Ebpf,
    pub maps: Maps,
}

/// Is `port` one the default port table hands out?
pub fn in_default_ports(port: u16) -> bool {
    DEFAULT_PORT_RANGES.iter().any(|r| r.contains(port))
}

/// The link-local range, kept unless masqLinkLocal.
pub fn link_local() -> Ipv4Net {
    "169.254.0.0/16".parse().unwrap()
}

/// Makes `c` keep `net` as a nonMasqueradeCIDRs entry does.
pub fn keep_dst(c: &mut Contents, net: Ipv4Net) {
    c.dst_policy.insert(net, Why::NonMasqueradeCidr);
}

/// The map contents most cases use: SNAT to NODE on every interface, 10/8 and the link-local
/// range kept, the default ports (1024–65535 less the NodePort range).
pub fn base_contents() -> Contents {
    let mut c = Contents {
        config: MasqConfig::default(),
        ..Contents::default()
    };
    c.set_ports(&DEFAULT_PORT_RANGES);
    c.snat_pools.insert(0, vec![NODE]);
    c.local_addrs.insert(NODE);
    keep_dst(&mut c, "10.0.0.0/8".parse().unwrap());
    c.dst_policy.insert(link_local(), Why::LinkLocal);
    c
}

/// How this test binary resolves the programs' kernel-context calls. The cases run twice: as
/// `ebpf_test_run`, with what the kernel offers (here: transport checksums updated by the
/// program's own arithmetic), and as `ebpf_test_run_helpers` (Cargo.toml), with the calls
/// stubbed out as on kernels before 6.2 (checksums through the kernel helpers).
pub fn kern_ctx() -> KernCtx {
    if env!("CARGO_CRATE_NAME") == "ebpf_test_run_helpers" {
        KernCtx::Absent
    } else {
        KernCtx::detect()
    }
}

/// One GC pass with the default lifetimes as if `secs` seconds had passed from now.
pub fn gc_after(maps: &mut Maps, secs: u64) -> gc::GcReport {
    let clock = KernelClock::get().unwrap();
    gc::gc(
        maps,
        &clock,
        clock.later(std::time::Duration::from_secs(secs)),
        &gc::NatTimeouts::default(),
    )
    .unwrap()
}

/// Every NAT entry, both halves.
pub fn list(maps: &Maps) -> Vec<nat::NatListEntry> {
    nat::list(maps, &KernelClock::get().unwrap()).unwrap()
}

impl Harness {
    /// The programs loaded with `contents` in their maps; fails the test without root.
    pub fn new(contents: &Contents) -> Harness {
        Harness::loaded_with(contents, kern_ctx())
    }

    /// [`Harness::new`] with the kernel-context calls resolved as given.
    pub fn loaded_with(contents: &Contents, kern_ctx: KernCtx) -> Harness {
        Harness::flavored(
            contents,
            Flavor {
                kern_ctx,
                port_search: PortSearch::Complete,
            },
            DEFAULT_NAT_CAPACITY,
        )
    }

    /// One build of the programs exactly, with a flow table of `nat_capacity` entries a half.
    /// The calling test's thread moves into a network namespace of its own first: the programs
    /// look up the node's sockets (`bpf_sk_lookup_*`) in the namespace of the test run, and
    /// the host's sockets must not decide which ports the cases get. The namespace has no name
    /// and goes away with the thread.
    pub fn flavored(contents: &Contents, flavor: Flavor, nat_capacity: u32) -> Harness {
        masq_testbed::require(&[]);
        leave_the_host_namespace();
        let bpf = load_unpinned_flavor(flavor, nat_capacity);
        Harness::with(bpf, contents)
    }

    /// The programs as the agent loads them: the best build the kernel takes (`kern_ctx` first).
    pub fn fallback(contents: &Contents, kern_ctx: KernCtx) -> Harness {
        masq_testbed::require(&[]);
        leave_the_host_namespace();
        Harness::with(load_unpinned_with(kern_ctx), contents)
    }

    fn with(bpf: Result<aya::Ebpf, masq_datapath::Error>, contents: &Contents) -> Harness {
        let mut bpf = bpf.unwrap_or_else(|e| panic!("loading the programs: {e}"));
        let mut maps = Maps::take_from(&mut bpf).unwrap();
        maps.apply(contents).unwrap();
        Harness { bpf, maps }
    }

    pub fn set_link_local(&mut self, masq: bool) {
        let mut c = self.maps.read().unwrap();
        if masq {
            c.dst_policy.remove(&link_local());
        } else {
            c.dst_policy.insert(link_local(), Why::LinkLocal);
        }
        self.maps.apply(&c).unwrap();
    }

    fn run(&self, program: &str, frame: &[u8]) -> (u32, Vec<u8>) {
        let (rc, out, _) = self.run_marked(program, frame);
        (rc, out)
    }

    /// Runs `program` on `frame`; also returns the skb mark the program left (`__sk_buff.mark`
    /// from the context written back).
    fn run_marked(&self, program: &str, frame: &[u8]) -> (u32, Vec<u8>, u32) {
        const SK_BUFF_MARK_OFFSET: usize = 8; // after `len` and `pkt_type`
        let prog: &SchedClassifier = self.bpf.program(program).unwrap().try_into().unwrap();
        let mut out = vec![0u8; frame.len() + 256];
        let mut ctx = vec![0u8; 256];
        let result = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_out: Some(&mut ctx),
                ..TestRunOptions::default()
            })
            .unwrap();
        out.truncate(result.data_size_out as usize);
        let mark = &ctx[SK_BUFF_MARK_OFFSET..SK_BUFF_MARK_OFFSET + 4];
        let mark = u32::from_ne_bytes(mark.try_into().unwrap());
        (result.return_value, out, mark)
    }

    /// The steering program of secondary interfaces; with the mark it left.
    pub fn steer(&self, frame: &[u8]) -> (u32, Vec<u8>, u32) {
        self.run_marked(STEER_PROGRAM, frame)
    }

    /// The ingress program; with the mark it left.
    pub fn ingress_marked(&self, frame: &[u8]) -> (u32, Vec<u8>, u32) {
        self.run_marked(INGRESS_PROGRAM, frame)
    }

    pub fn egress(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        self.run(EGRESS_PROGRAM, frame)
    }

    /// Runs the egress program on `frame`, which must come out translated to NODE; returns
    /// the port it was given.
    pub fn port_of(&self, frame: &[u8]) -> u16 {
        let (rc, out) = self.egress(frame);
        assert_eq!(rc, CONTINUE);
        let seen = inspect(&out);
        assert_eq!(seen.src, NODE, "not translated");
        seen.sport
    }

    pub fn ingress(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        self.run(INGRESS_PROGRAM, frame)
    }

    pub fn counters(&self) -> BTreeMap<Reason, u64> {
        masq_datapath::ebpf::nat::counters(&self.maps).unwrap()
    }

    pub fn count(&self, reason: Reason) -> u64 {
        self.counters()[&reason]
    }
}

/// Moves the calling thread out of the host's network namespace (see [`Harness::flavored`]),
/// unless a test put it in one of its own already. Needs root ([`masq_testbed::require`]).
fn leave_the_host_namespace() {
    let inode =
        |path: &str| std::fs::metadata(path).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
    if inode("/proc/thread-self/ns/net").ok() == inode("/proc/1/ns/net").ok() {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("a network namespace for the test's thread");
    }
}

const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];

pub fn tcp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src.octets(), dst.octets(), 64)
        .tcp(sport, dport, 1000, 512)
        .syn()
        .write(&mut out, payload)
        .unwrap();
    out
}

/// A TCP segment with the flags spelled out: `S` SYN, `A` ACK, `F` FIN, `R` RST (e.g. "SA").
pub fn tcp_segment(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    flags: &str,
    payload: &[u8],
) -> Vec<u8> {
    let mut builder = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src.octets(), dst.octets(), 64)
        .tcp(sport, dport, 1000, 512);
    for flag in flags.chars() {
        builder = match flag {
            'S' => builder.syn(),
            'A' => builder.ack(1),
            'F' => builder.fin(),
            'R' => builder.rst(),
            other => panic!("unknown TCP flag {other:?}"),
        };
    }
    let mut out = Vec::new();
    builder.write(&mut out, payload).unwrap();
    out
}

pub fn udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src.octets(), dst.octets(), 64)
        .udp(sport, dport)
        .write(&mut out, payload)
        .unwrap();
    out
}

pub fn echo_request(src: Ipv4Addr, dst: Ipv4Addr, id: u16, seq: u16) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src.octets(), dst.octets(), 64)
        .icmpv4_echo_request(id, seq)
        .write(&mut out, b"ping-payload")
        .unwrap();
    out
}

pub fn echo_reply(src: Ipv4Addr, dst: Ipv4Addr, id: u16, seq: u16) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src.octets(), dst.octets(), 64)
        .icmpv4_echo_reply(id, seq)
        .write(&mut out, b"ping-payload")
        .unwrap();
    out
}

/// The fields masq touches, read back from a frame.
#[derive(Debug, PartialEq, Eq)]
pub struct Seen {
    pub src: Ipv4Addr,
    pub sport: u16,
    pub dst: Ipv4Addr,
    pub dport: u16,
}

/// Parses `frame` and checks every checksum in it against a full recomputation.
pub fn inspect(frame: &[u8]) -> Seen {
    let (ip, rest) = Ipv4Header::from_slice(&frame[14..]).unwrap();
    assert_eq!(
        ip.header_checksum,
        ip.calc_header_checksum(),
        "IPv4 header checksum"
    );
    let l4 = &rest[..ip.total_len as usize - ip.header_len()];
    let (src, dst) = (Ipv4Addr::from(ip.source), Ipv4Addr::from(ip.destination));
    match ip.protocol {
        IpNumber::TCP => {
            let (h, payload) = TcpHeader::from_slice(l4).unwrap();
            assert_eq!(
                h.checksum,
                h.calc_checksum_ipv4(&ip, payload).unwrap(),
                "TCP checksum"
            );
            Seen {
                src,
                sport: h.source_port,
                dst,
                dport: h.destination_port,
            }
        }
        IpNumber::UDP => {
            let (h, payload) = UdpHeader::from_slice(l4).unwrap();
            if h.checksum != 0 {
                assert_eq!(
                    h.checksum,
                    h.calc_checksum_ipv4(&ip, payload).unwrap(),
                    "UDP checksum"
                );
            }
            Seen {
                src,
                sport: h.source_port,
                dst,
                dport: h.destination_port,
            }
        }
        IpNumber::ICMP => {
            let (h, payload) = Icmpv4Header::from_slice(l4).unwrap();
            assert_eq!(
                h.checksum,
                h.icmp_type.calc_checksum(payload),
                "ICMP checksum"
            );
            match h.icmp_type {
                Icmpv4Type::EchoRequest(e) => Seen {
                    src,
                    sport: e.id,
                    dst,
                    dport: 0,
                },
                Icmpv4Type::EchoReply(e) => Seen {
                    src,
                    sport: 0,
                    dst,
                    dport: e.id,
                },
                _ => Seen {
                    src,
                    sport: 0,
                    dst,
                    dport: 0,
                },
            }
        }
        other => panic!("unexpected protocol {other:?}"),
    }
}

/// Recomputes the IPv4 header checksum after a test edited the header by hand.
pub fn fix_ip_checksum(frame: &mut [u8]) {
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    frame[24] = 0;
    frame[25] = 0;
    let sum = internet_checksum(&frame[14..14 + ihl]);
    frame[24..26].copy_from_slice(&sum.to_be_bytes());
}

/// RFC 1071, written out independently of the programs' incremental arithmetic.
pub fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in bytes.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from_be_bytes([chunk[0], 0])
        };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ICMP error from ROUTER quoting `sent` (a translated frame), sent where the quoted packet
/// came from.
pub fn icmp_error_about(sent: &[u8], icmp_type: Icmpv4Type) -> Vec<u8> {
    let ihl = usize::from(sent[14] & 0x0f) * 4;
    let quoted = &sent[14..14 + ihl + 8];
    let quoted_source: [u8; 4] = sent[26..30].try_into().expect("an IPv4 source");
    let mut out = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 9], [2, 0, 0, 0, 0, 2])
        .ipv4(ROUTER.octets(), quoted_source, 64)
        .icmpv4(icmp_type)
        .write(&mut out, quoted)
        .unwrap();
    out
}
