//! The two address families of the flow table behind one trait, so the GC ([`super::gc`]),
//! `masq nat list` ([`super::nat`]) and the carry-over ([`super::carry`]) are written once:
//! [`NatKey`] for a half's key (`nat_tuple` / `nat_tuple6`), with its value type and the maps
//! that hold it.

use std::fmt::Debug;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd};

use aya::maps::{HashMap, MapData};

use super::maps::Maps;
use super::types::{NatEntry, NatEntry6, NatTuple, NatTuple6};
use crate::Error;

/// What is read and written of a NAT half's value, in either family.
pub trait NatValue: aya::Pod + Copy + Debug + PartialEq {
    /// `NAT_F_*` bits.
    fn flags(&self) -> u8;
    /// Sets the `NAT_F_*` bits.
    fn set_flags(&mut self, flags: u8);
    /// Jiffies at creation.
    fn created(&self) -> u64;
    /// Jiffies of the last packet.
    fn last_seen(&self) -> u64;
    /// The address written into the packet.
    fn to_ip(&self) -> IpAddr;
    /// The port written into the packet, host order.
    fn to_port(&self) -> u16;
}

/// A NAT half's key in either family, and where the halves of its family live.
pub trait NatKey: aya::Pod + Copy + Debug + Eq + Hash + Ord {
    /// The value type of the same maps.
    type Entry: NatValue;
    /// `ipv4` or `ipv6`.
    const FAMILY: &'static str;
    /// Forward halves, read whole in batches.
    fn forward_entries(maps: &Maps) -> Result<Vec<(Self, Self::Entry)>, Error>;
    /// Reverse halves, read whole in batches.
    fn reverse_entries(maps: &Maps) -> Result<Vec<(Self, Self::Entry)>, Error>;
    /// The forward map, to repair and delete in.
    fn forward_map(maps: &mut Maps) -> &mut HashMap<MapData, Self, Self::Entry>;
    /// The reverse map.
    fn reverse_map(maps: &mut Maps) -> &mut HashMap<MapData, Self, Self::Entry>;
    /// The forward map's descriptor, for batch deletes.
    fn forward_fd(maps: &Maps) -> BorrowedFd<'_>;
    /// The reverse map's descriptor.
    fn reverse_fd(maps: &Maps) -> BorrowedFd<'_>;
    /// IP protocol.
    fn proto(&self) -> u8;
    /// The tuple as addresses and ports.
    fn flow(&self) -> Flow;
    /// The reverse key of a forward half (`reverse_of` in `bpf/lib/nat.h`).
    fn reverse_of(&self, entry: &Self::Entry) -> Self;
    /// The forward key of a reverse half (`forward_of`).
    fn forward_of(&self, entry: &Self::Entry) -> Self;
    /// Does this reverse half's value translate back to the forward key `fwd`?
    fn points_back_to(entry: &Self::Entry, fwd: &Self) -> bool;
    /// The other half of `half` (keyed by `self`), as the programs write it: same flags and
    /// times, translating to this key's source (`other_is_reverse`) or destination.
    fn partner_entry(&self, half: &Self::Entry, other_is_reverse: bool) -> Self::Entry;
    /// (SNAT address, destination address, destination port) of a reverse key: its port pool.
    fn pool(&self) -> (IpAddr, IpAddr, u16);
}

/// One direction of a connection, in either family (what `masq nat list` shows).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Flow {
    /// IP protocol number.
    pub proto: u8,
    /// Source address.
    pub src: IpAddr,
    /// Source port (ICMP echo: the identifier of a request).
    pub sport: u16,
    /// Destination address.
    pub dst: IpAddr,
    /// Destination port (ICMP echo: the identifier of a reply).
    pub dport: u16,
}

impl Flow {
    /// Source address.
    pub fn src(&self) -> IpAddr {
        self.src
    }
    /// Destination address.
    pub fn dst(&self) -> IpAddr {
        self.dst
    }
    /// Source port, host order.
    pub fn src_port(&self) -> u16 {
        self.sport
    }
    /// Destination port, host order.
    pub fn dst_port(&self) -> u16 {
        self.dport
    }
    /// `src:sport` (`[v6]:port` for IPv6).
    pub fn source(&self) -> SocketAddr {
        SocketAddr::new(self.src, self.sport)
    }
    /// `dst:dport`.
    pub fn destination(&self) -> SocketAddr {
        SocketAddr::new(self.dst, self.dport)
    }
    /// Whether the addresses are IPv6.
    pub fn is_ipv6(&self) -> bool {
        self.src.is_ipv6()
    }
}

impl From<NatTuple> for Flow {
    fn from(t: NatTuple) -> Flow {
        t.flow()
    }
}

impl From<NatTuple6> for Flow {
    fn from(t: NatTuple6) -> Flow {
        t.flow()
    }
}

impl NatValue for NatEntry {
    fn flags(&self) -> u8 {
        self.flags
    }
    fn set_flags(&mut self, flags: u8) {
        self.flags = flags;
    }
    fn created(&self) -> u64 {
        self.created
    }
    fn last_seen(&self) -> u64 {
        self.last_seen
    }
    fn to_ip(&self) -> IpAddr {
        Ipv4Addr::from(self.to_addr).into()
    }
    fn to_port(&self) -> u16 {
        u16::from_be_bytes(self.to_port)
    }
}

impl NatValue for NatEntry6 {
    fn flags(&self) -> u8 {
        self.flags
    }
    fn set_flags(&mut self, flags: u8) {
        self.flags = flags;
    }
    fn created(&self) -> u64 {
        self.created
    }
    fn last_seen(&self) -> u64 {
        self.last_seen
    }
    fn to_ip(&self) -> IpAddr {
        Ipv6Addr::from(self.to_addr).into()
    }
    fn to_port(&self) -> u16 {
        u16::from_be_bytes(self.to_port)
    }
}

/// The key methods that only move fields, the same for both families.
macro_rules! tuple_moves {
    ($entry:ident) => {
        fn proto(&self) -> u8 {
            self.proto
        }
        fn reverse_of(&self, entry: &$entry) -> Self {
            Self {
                saddr: self.daddr,
                daddr: entry.to_addr,
                sport: self.dport,
                dport: entry.to_port,
                proto: self.proto,
                pad: [0; 3],
            }
        }
        fn forward_of(&self, entry: &$entry) -> Self {
            Self {
                saddr: entry.to_addr,
                daddr: self.saddr,
                sport: entry.to_port,
                dport: self.sport,
                proto: self.proto,
                pad: [0; 3],
            }
        }
        fn points_back_to(entry: &$entry, fwd: &Self) -> bool {
            entry.to_addr == fwd.saddr && entry.to_port == fwd.sport
        }
        fn partner_entry(&self, half: &$entry, other_is_reverse: bool) -> $entry {
            let (to_addr, to_port) = if other_is_reverse {
                (self.saddr, self.sport)
            } else {
                (self.daddr, self.dport)
            };
            $entry {
                to_addr,
                to_port,
                ..*half
            }
        }
    };
}

impl NatKey for NatTuple {
    type Entry = NatEntry;
    const FAMILY: &'static str = "ipv4";
    fn forward_entries(maps: &Maps) -> Result<Vec<(Self, NatEntry)>, Error> {
        maps.nat_egress_entries()
    }
    fn reverse_entries(maps: &Maps) -> Result<Vec<(Self, NatEntry)>, Error> {
        maps.nat_ingress_entries()
    }
    fn forward_map(maps: &mut Maps) -> &mut HashMap<MapData, Self, NatEntry> {
        &mut maps.nat_egress
    }
    fn reverse_map(maps: &mut Maps) -> &mut HashMap<MapData, Self, NatEntry> {
        &mut maps.nat_ingress
    }
    fn forward_fd(maps: &Maps) -> BorrowedFd<'_> {
        maps.nat_egress_fd.as_fd()
    }
    fn reverse_fd(maps: &Maps) -> BorrowedFd<'_> {
        maps.nat_ingress_fd.as_fd()
    }
    fn flow(&self) -> Flow {
        Flow {
            proto: self.proto,
            src: self.src().into(),
            sport: self.src_port(),
            dst: self.dst().into(),
            dport: self.dst_port(),
        }
    }
    fn pool(&self) -> (IpAddr, IpAddr, u16) {
        (self.dst().into(), self.src().into(), self.src_port())
    }
    tuple_moves!(NatEntry);
}

impl NatKey for NatTuple6 {
    type Entry = NatEntry6;
    const FAMILY: &'static str = "ipv6";
    fn forward_entries(maps: &Maps) -> Result<Vec<(Self, NatEntry6)>, Error> {
        maps.nat6_egress_entries()
    }
    fn reverse_entries(maps: &Maps) -> Result<Vec<(Self, NatEntry6)>, Error> {
        maps.nat6_ingress_entries()
    }
    fn forward_map(maps: &mut Maps) -> &mut HashMap<MapData, Self, NatEntry6> {
        &mut maps.nat6_egress
    }
    fn reverse_map(maps: &mut Maps) -> &mut HashMap<MapData, Self, NatEntry6> {
        &mut maps.nat6_ingress
    }
    fn forward_fd(maps: &Maps) -> BorrowedFd<'_> {
        maps.nat6_egress_fd.as_fd()
    }
    fn reverse_fd(maps: &Maps) -> BorrowedFd<'_> {
        maps.nat6_ingress_fd.as_fd()
    }
    fn flow(&self) -> Flow {
        Flow {
            proto: self.proto,
            src: self.src().into(),
            sport: self.src_port(),
            dst: self.dst().into(),
            dport: self.dst_port(),
        }
    }
    fn pool(&self) -> (IpAddr, IpAddr, u16) {
        (self.dst().into(), self.src().into(), self.src_port())
    }
    tuple_moves!(NatEntry6);
}
