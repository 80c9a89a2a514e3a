//! `#[repr(C)]` copies of the structs and the reason list in `bpf/lib/nat_types.h` and
//! `bpf/lib/reasons.h`. Sizes are checked at compile time here and with `build_bug_on` in C;
//! addresses and ports are byte arrays in network order, exactly as the programs store them.
//! The IPv6 structs (`*6`) are the IPv4 ones with 16-byte addresses.

use std::net::{Ipv4Addr, Ipv6Addr};

/// IP protocol numbers masq translates.
pub const PROTO_TCP: u8 = 6;
/// UDP.
pub const PROTO_UDP: u8 = 17;
/// ICMP.
pub const PROTO_ICMP: u8 = 1;

/// `masq_config.flags`: `--pod-cidr` was given; only sources in the pod trie are pods.
pub const CFG_POD_CIDRS: u32 = 1 << 1;
/// `masq_config.flags`: the source-exemption trie is not empty.
pub const CFG_SRC_CIDRS: u32 = 1 << 2;
/// `masq_config.flags`: `--enable-ipv6`; without it IPv6 passes untouched.
pub const CFG_IPV6: u32 = 1 << 4;
/// `masq_config.flags`: the IPv6 source-exemption trie is not empty.
pub const CFG_SRC_CIDRS6: u32 = 1 << 6;

/// IPv6's next-header number of ICMPv6.
pub const PROTO_ICMPV6: u8 = 58;

/// `nat_entry.flags`: TCP FIN or RST seen.
pub const NAT_F_CLOSING: u8 = 1 << 0;
/// `nat_entry.flags`: a reverse-only entry reserving a port the node itself uses.
pub const NAT_F_HOST: u8 = 1 << 1;
/// `NAT_F_STEERED`: the flow left a secondary interface and was redirected to the egress one.
pub const NAT_F_STEERED: u8 = 1 << 2;
/// `nat_entry.flags`: a packet of the reply direction was seen (conntrack's SEEN_REPLY).
pub const NAT_F_REPLIED: u8 = 1 << 3;
/// `nat_entry.flags`: a forward-only entry of a flow that leaves untranslated.
pub const NAT_F_PASS: u8 = 1 << 4;
/// `nat_entry.flags`: with [`NAT_F_PASS`], the flow began outside, towards a pod (the entry is
/// keyed by the pod's answers).
pub const NAT_F_INBOUND: u8 = 1 << 5;

/// `struct masq_config`, the single entry of the `masq_config` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MasqConfig {
    /// Valid entries of `masq_ports`, the ports translated flows are given.
    pub port_count: u32,
    /// `CFG_*` bits.
    pub flags: u32,
}

/// `struct masq_steer`, the single entry of `masq_steer_cfg`: egress routing on VPC-native nodes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MasqSteer {
    /// The egress mark bits; 0 turns steering off.
    pub mark: u32,
    /// The routing table steered packets are looked up in (254: main).
    pub table: u32,
}

/// `struct nat_tuple`: one direction of a connection (ICMP echo: the identifier as a port).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NatTuple {
    /// Source address, network order.
    pub saddr: [u8; 4],
    /// Destination address, network order.
    pub daddr: [u8; 4],
    /// Source port (or echo identifier), network order.
    pub sport: [u8; 2],
    /// Destination port (or echo identifier of a reply), network order.
    pub dport: [u8; 2],
    /// IP protocol number.
    pub proto: u8,
    /// Always zero.
    pub pad: [u8; 3],
}

/// `struct nat_entry`: the translation one half of a NAT pair applies.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatEntry {
    /// Address written into the packet, network order.
    pub to_addr: [u8; 4],
    /// Port written into the packet, network order.
    pub to_port: [u8; 2],
    /// `NAT_F_*` bits.
    pub flags: u8,
    /// Always zero.
    pub pad: u8,
    /// Jiffies at creation ([`super::clock::KernelClock`] converts).
    pub created: u64,
    /// Jiffies of the last packet (refreshed every 100 jiffies at most).
    pub last_seen: u64,
}

/// `struct alloc_failure`, the single entry of `masq_alloc_failure`: the pool of the last flow
/// refused for want of a port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocFailure {
    /// The SNAT address, network order.
    pub snat_addr: [u8; 4],
    /// The destination address, network order.
    pub daddr: [u8; 4],
    /// The destination port, network order.
    pub dport: [u8; 2],
    /// IP protocol number.
    pub proto: u8,
    /// Always zero.
    pub pad: u8,
    /// Ports in the range that was searched.
    pub span: u32,
    /// Jiffies of the failure; 0: none yet.
    pub when: u64,
}

/// `struct nat_tuple6`: [`NatTuple`] with IPv6 addresses.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NatTuple6 {
    /// Source address, network order.
    pub saddr: [u8; 16],
    /// Destination address, network order.
    pub daddr: [u8; 16],
    /// Source port (or echo identifier), network order.
    pub sport: [u8; 2],
    /// Destination port (or echo identifier of a reply), network order.
    pub dport: [u8; 2],
    /// Next-header number of the transport protocol.
    pub proto: u8,
    /// Always zero.
    pub pad: [u8; 3],
}

/// `struct nat_entry6`: [`NatEntry`] with an IPv6 address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatEntry6 {
    /// Address written into the packet, network order.
    pub to_addr: [u8; 16],
    /// Port written into the packet, network order.
    pub to_port: [u8; 2],
    /// `NAT_F_*` bits.
    pub flags: u8,
    /// Always zero.
    pub pad: [u8; 5],
    /// Jiffies at creation.
    pub created: u64,
    /// Jiffies of the last packet.
    pub last_seen: u64,
}

/// `struct alloc_failure6`: [`AllocFailure`] with IPv6 addresses.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocFailure6 {
    /// The SNAT address, network order.
    pub snat_addr: [u8; 16],
    /// The destination address, network order.
    pub daddr: [u8; 16],
    /// The destination port, network order.
    pub dport: [u8; 2],
    /// Next-header number.
    pub proto: u8,
    /// Always zero.
    pub pad: u8,
    /// Ports in the range that was searched.
    pub span: u32,
    /// Jiffies of the failure; 0: none yet.
    pub when: u64,
}

const _: () = assert!(std::mem::size_of::<AllocFailure>() == 24);
const _: () = assert!(std::mem::size_of::<NatTuple6>() == 40);
const _: () = assert!(std::mem::size_of::<NatEntry6>() == 40);
const _: () = assert!(std::mem::size_of::<AllocFailure6>() == 48);
const _: () = assert!(std::mem::size_of::<MasqConfig>() == 8);
const _: () = assert!(std::mem::size_of::<MasqSteer>() == 8);
const _: () = assert!(std::mem::size_of::<NatTuple>() == 16);
const _: () = assert!(std::mem::size_of::<NatEntry>() == 24);

// SAFETY: plain #[repr(C)] data without padding bytes and valid for every bit pattern.
unsafe impl aya::Pod for MasqConfig {}
// SAFETY: as above.
unsafe impl aya::Pod for MasqSteer {}
// SAFETY: as above.
unsafe impl aya::Pod for NatTuple {}
// SAFETY: as above; the explicit `pad` field covers the only gap.
unsafe impl aya::Pod for NatEntry {}
// SAFETY: as above; `pad` covers the byte before `span`, and `span` ends at 16, where `when`
// starts.
unsafe impl aya::Pod for AllocFailure {}
// SAFETY: plain #[repr(C)] data; `pad` covers the only gap (the 3 bytes after `proto`).
unsafe impl aya::Pod for NatTuple6 {}
// SAFETY: as above; `pad` fills the 5 bytes up to `created` at offset 24.
unsafe impl aya::Pod for NatEntry6 {}
// SAFETY: as above; `pad` covers the byte before `span` (offset 36), `when` starts at 40.
unsafe impl aya::Pod for AllocFailure6 {}

impl NatEntry {
    /// A half translating to `to:port`, with `flags`, created and last used at `at` (jiffies).
    pub fn new(to: Ipv4Addr, port: u16, flags: u8, at: u64) -> Self {
        NatEntry {
            to_addr: to.octets(),
            to_port: port.to_be_bytes(),
            flags,
            pad: 0,
            created: at,
            last_seen: at,
        }
    }
}

impl NatTuple {
    /// Builds a tuple from host-order values.
    pub fn new(proto: u8, saddr: Ipv4Addr, sport: u16, daddr: Ipv4Addr, dport: u16) -> Self {
        NatTuple {
            saddr: saddr.octets(),
            daddr: daddr.octets(),
            sport: sport.to_be_bytes(),
            dport: dport.to_be_bytes(),
            proto,
            pad: [0; 3],
        }
    }
    /// Source address.
    pub fn src(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.saddr)
    }
    /// Destination address.
    pub fn dst(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.daddr)
    }
    /// Source port, host order.
    pub fn src_port(&self) -> u16 {
        u16::from_be_bytes(self.sport)
    }
    /// Destination port, host order.
    pub fn dst_port(&self) -> u16 {
        u16::from_be_bytes(self.dport)
    }
}

impl NatTuple6 {
    /// Builds a tuple from host-order values.
    pub fn new(proto: u8, saddr: Ipv6Addr, sport: u16, daddr: Ipv6Addr, dport: u16) -> Self {
        NatTuple6 {
            saddr: saddr.octets(),
            daddr: daddr.octets(),
            sport: sport.to_be_bytes(),
            dport: dport.to_be_bytes(),
            proto,
            pad: [0; 3],
        }
    }
    /// Source address.
    pub fn src(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.saddr)
    }
    /// Destination address.
    pub fn dst(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.daddr)
    }
    /// Source port, host order.
    pub fn src_port(&self) -> u16 {
        u16::from_be_bytes(self.sport)
    }
    /// Destination port, host order.
    pub fn dst_port(&self) -> u16 {
        u16::from_be_bytes(self.dport)
    }
}

impl NatEntry6 {
    /// Translated address.
    pub fn addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.to_addr)
    }
    /// Translated port, host order.
    pub fn port(&self) -> u16 {
        u16::from_be_bytes(self.to_port)
    }
}

impl NatEntry {
    /// Translated address.
    pub fn addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.to_addr)
    }
    /// Translated port, host order.
    pub fn port(&self) -> u16 {
        u16::from_be_bytes(self.to_port)
    }
}

/// `enum masq_reason`: the index of each per-CPU counter. Numbers are never reused.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// Source rewritten to the SNAT address.
    TranslatedEgress = 0,
    /// Reply destination rewritten back to the pod.
    TranslatedIngress = 1,
    /// New NAT pair created.
    NatCreated = 2,
    /// A port candidate was taken and another one tried.
    PortRetry = 3,
    /// New flow kept: source in `nonMasqueradeSrcCIDRs`.
    KeepNonMasqSrc = 4,
    /// New flow kept: the source is not a pod.
    KeepNotAPod = 5,
    /// New flow kept: link-local destination.
    KeepLinkLocal = 6,
    /// New flow kept: destination in `nonMasqueradeCIDRs`.
    KeepNonMasqDst = 7,
    /// New flow kept: destination is a node address.
    KeepLocal = 8,
    /// Not IP (or IPv6 without `--enable-ipv6`), or a protocol masq does not translate.
    PassUnsupported = 9,
    /// Would be masqueraded but no SNAT address is configured.
    PassNoSnatAddr = 10,
    /// A later fragment whose first fragment was not seen.
    FragUntracked = 11,
    /// ICMP error about a masqueraded flow translated back to the pod.
    IcmpErrorTranslated = 12,
    /// A node-owned flow reserved its port.
    HostPortReserved = 13,
    /// An evicted reverse half was put back by its flow.
    NatReverseRestored = 14,
    /// A node-owned flow collided with a pod's port and was moved to another.
    HostPortRemapped = 15,
    /// Retired (was: mid-stream TCP without an entry, passed); never counted.
    Unused16 = 16,
    /// Mid-stream TCP without an entry towards a masqueraded destination: given a mapping.
    NatMidstream = 17,
    /// A packet of a kept or inbound flow, passed by its entry.
    PassTracked = 18,
    /// A flow from outside towards a pod was recorded.
    InboundTracked = 19,
    /// A missing forward half was put back from its reverse half.
    NatForwardRestored = 20,
    /// A GSO packet over 64 KiB (BIG TCP: IPv4 `tot_len` 0, IPv6 payload length 0).
    BigPacket = 21,
    /// A kept or inbound flow could not be recorded: the table is full.
    TrackFull = 22,
    /// A pod's SYN-ACK without an entry: recorded as an inbound connection and passed.
    PassInboundReply = 23,
    /// IPv6 extension headers past the walked bound: passed untouched.
    PassExtHeaders = 24,
    /// A flow found its port taken by another flow (its reverse half had gone missing
    /// meanwhile) and got a new one.
    NatRemapped = 25,
    /// A new flow's SNAT address had no free port towards its destination: the next address
    /// of the pool was searched.
    SnatFallover = 26,
    /// Dropped: bad IPv4 header length.
    DropBadIhl = 64,
    /// Dropped: truncated transport header.
    DropTruncated = 65,
    /// Dropped: no free port towards the destination on any address the flow may take.
    DropPortExhausted = 66,
    /// Dropped: the NAT table refused an insert.
    DropNatInsert = 67,
    /// Dropped: a checksum or store helper failed.
    DropRewrite = 68,
    /// Dropped: a later fragment of a datagram whose first fragment was dropped.
    DropFragOfDropped = 69,
}

/// Size of the `masq_counters` array (`MASQ_REASON_MAX`).
pub const REASON_SLOTS: u32 = 72;

impl Reason {
    /// Every reason, in number order.
    pub const ALL: [Reason; 33] = [
        Reason::TranslatedEgress,
        Reason::TranslatedIngress,
        Reason::NatCreated,
        Reason::PortRetry,
        Reason::KeepNonMasqSrc,
        Reason::KeepNotAPod,
        Reason::KeepLinkLocal,
        Reason::KeepNonMasqDst,
        Reason::KeepLocal,
        Reason::PassUnsupported,
        Reason::PassNoSnatAddr,
        Reason::FragUntracked,
        Reason::IcmpErrorTranslated,
        Reason::HostPortReserved,
        Reason::NatReverseRestored,
        Reason::HostPortRemapped,
        Reason::Unused16,
        Reason::NatMidstream,
        Reason::PassTracked,
        Reason::InboundTracked,
        Reason::NatForwardRestored,
        Reason::BigPacket,
        Reason::TrackFull,
        Reason::PassInboundReply,
        Reason::PassExtHeaders,
        Reason::NatRemapped,
        Reason::SnatFallover,
        Reason::DropBadIhl,
        Reason::DropTruncated,
        Reason::DropPortExhausted,
        Reason::DropNatInsert,
        Reason::DropRewrite,
        Reason::DropFragOfDropped,
    ];

    /// Is this a drop (`MASQ_DROP_FIRST` and up)?
    pub fn is_drop(self) -> bool {
        self as u32 >= 64
    }

    /// The metric label, kebab-case.
    pub fn label(self) -> &'static str {
        match self {
            Reason::TranslatedEgress => "translated-egress",
            Reason::TranslatedIngress => "translated-ingress",
            Reason::NatCreated => "nat-created",
            Reason::PortRetry => "port-retry",
            Reason::KeepNonMasqSrc => "keep-non-masquerade-src",
            Reason::KeepNotAPod => "keep-not-a-pod",
            Reason::KeepLinkLocal => "keep-link-local",
            Reason::KeepNonMasqDst => "keep-non-masquerade-cidr",
            Reason::KeepLocal => "keep-local",
            Reason::PassUnsupported => "pass-unsupported",
            Reason::PassNoSnatAddr => "pass-no-snat-address",
            Reason::FragUntracked => "fragment-untracked",
            Reason::IcmpErrorTranslated => "icmp-error-translated",
            Reason::HostPortReserved => "host-port-reserved",
            Reason::NatReverseRestored => "nat-reverse-restored",
            Reason::HostPortRemapped => "host-port-remapped",
            Reason::Unused16 => "unused-16",
            Reason::NatMidstream => "nat-midstream",
            Reason::PassTracked => "pass-tracked",
            Reason::InboundTracked => "inbound-tracked",
            Reason::NatForwardRestored => "nat-forward-restored",
            Reason::BigPacket => "big-packet",
            Reason::TrackFull => "track-full",
            Reason::PassInboundReply => "pass-inbound-reply",
            Reason::PassExtHeaders => "pass-ipv6-extension-headers",
            Reason::NatRemapped => "nat-remapped",
            Reason::SnatFallover => "snat-fallover",
            Reason::DropBadIhl => "bad-ihl",
            Reason::DropTruncated => "truncated",
            Reason::DropPortExhausted => "port-exhausted",
            Reason::DropNatInsert => "nat-insert-failed",
            Reason::DropRewrite => "rewrite-failed",
            Reason::DropFragOfDropped => "fragment-of-dropped",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Rust list must be the C list: parse `reasons.h` and compare numbers.
    #[test]
    fn reasons_match_the_c_header() {
        let header = include_str!("../../../../bpf/lib/reasons.h");
        let mut from_c = Vec::new();
        for line in header.lines() {
            let line = line.trim();
            let Some((name, rest)) = line.split_once(" = ") else {
                continue;
            };
            let Some(number) = rest
                .split(',')
                .next()
                .and_then(|n| n.trim().parse::<u32>().ok())
            else {
                continue;
            };
            if name.starts_with("MASQ_") && name != "MASQ_DROP_FIRST" && name != "MASQ_REASON_MAX" {
                from_c.push(number);
            }
        }
        let from_rust: Vec<u32> = Reason::ALL.iter().map(|r| *r as u32).collect();
        assert_eq!(from_c, from_rust);
        assert!(header.contains(&format!("MASQ_REASON_MAX = {REASON_SLOTS},")));
    }
}
