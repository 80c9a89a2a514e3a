//! Reading the NAT table: `masq nat list`, counters by reason and table pressure, both
//! families. Ageing it is [`super::gc`]'s.

use std::collections::{BTreeMap, HashMap as StdHashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use super::clock::KernelClock;
use super::family::{Flow, NatKey, NatValue};
use super::gc::FlowState;
use super::kernel_err;
use super::maps::Maps;
use super::types::{
    NatTuple, NatTuple6, Reason, NAT_F_HOST, NAT_F_INBOUND, NAT_F_PASS, NAT_F_STEERED, PROTO_ICMP,
    PROTO_ICMPV6, PROTO_TCP, PROTO_UDP,
};
use crate::Error;

/// Which half of a pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum NatDirection {
    /// Forward half: the pod's tuple, translated source.
    Egress,
    /// Reverse half: the reply tuple, translated destination.
    Ingress,
}

/// One NAT table entry, for `masq nat list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatListEntry {
    /// Which half.
    pub direction: NatDirection,
    /// The tuple as the packet arrives at the program.
    pub original: Flow,
    /// The tuple after translation.
    pub translated: Flow,
    /// Time since the pair was created.
    pub age: Duration,
    /// Time since a packet last used this half.
    pub idle: Duration,
    /// The flow's state as this half knows it (the GC combines both halves).
    pub state: FlowState,
    /// A port reservation for a flow of the node itself (no translation).
    pub host: bool,
    /// A flow left untranslated (a kept destination, or `inbound`).
    pub pass: bool,
    /// With `pass`: the flow began outside, towards a pod.
    pub inbound: bool,
    /// A flow steered from a secondary interface to the egress interface (VPC-native nodes).
    pub steered: bool,
}

/// The protocol name for an IP protocol number.
pub fn proto_name(proto: u8) -> &'static str {
    match proto {
        PROTO_TCP => "TCP",
        PROTO_UDP => "UDP",
        PROTO_ICMP => "ICMP",
        PROTO_ICMPV6 => "ICMPv6",
        _ => "?",
    }
}

impl fmt::Display for NatListEntry {
    /// One line in the manner of `cilium-dbg bpf nat list`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.original;
        let t = &self.translated;
        let (dir, what, to) = match self.direction {
            NatDirection::Egress if self.pass => ("OUT", "PASS", t.source()),
            NatDirection::Egress => ("OUT", "XLATE_SRC", t.source()),
            NatDirection::Ingress => ("IN", "XLATE_DST", t.destination()),
        };
        write!(
            f,
            "{} {dir} {} -> {} {what} {to} age={}s idle={}s {}",
            proto_name(o.proto),
            o.source(),
            o.destination(),
            self.age.as_secs(),
            self.idle.as_secs(),
            self.state.label(),
        )?;
        if self.inbound {
            f.write_str(" inbound")?;
        }
        if self.host {
            f.write_str(" host")?;
        }
        if self.steered {
            f.write_str(" steered")?;
        }
        Ok(())
    }
}

/// Every entry of both halves, IPv4 first, then IPv6; in each family egress first, each half
/// sorted by tuple. A translated pair's state is the flow's: both halves' flags together, as
/// the GC sees them.
pub fn list(maps: &Maps, clock: &KernelClock) -> Result<Vec<NatListEntry>, Error> {
    let mut out = list_family::<NatTuple>(maps, clock)?;
    out.extend(list_family::<NatTuple6>(maps, clock)?);
    Ok(out)
}

fn list_family<K: NatKey>(maps: &Maps, clock: &KernelClock) -> Result<Vec<NatListEntry>, Error> {
    let now = clock.now();
    let forward = K::forward_entries(maps)?;
    let reverse = K::reverse_entries(maps)?;
    let forward_flags: StdHashMap<K, u8> = forward.iter().map(|(k, e)| (*k, e.flags())).collect();
    let reverse_flags: StdHashMap<K, u8> = reverse.iter().map(|(k, e)| (*k, e.flags())).collect();
    let mut out = Vec::new();
    for (direction, entries) in [
        (NatDirection::Egress, forward),
        (NatDirection::Ingress, reverse),
    ] {
        let mut half = Vec::new();
        for (key, entry) in entries {
            let partner = match direction {
                _ if entry.flags() & (NAT_F_PASS | NAT_F_HOST) != 0 => None,
                NatDirection::Egress => reverse_flags.get(&key.reverse_of(&entry)),
                NatDirection::Ingress => forward_flags.get(&key.forward_of(&entry)),
            };
            let flags = entry.flags() | partner.copied().unwrap_or(0);
            let original = key.flow();
            let mut translated = original;
            match direction {
                NatDirection::Egress => {
                    translated.src = entry.to_ip();
                    translated.sport = entry.to_port();
                }
                NatDirection::Ingress => {
                    translated.dst = entry.to_ip();
                    translated.dport = entry.to_port();
                }
            }
            half.push(NatListEntry {
                direction,
                original,
                translated,
                age: clock.between(entry.created(), now),
                idle: clock.between(entry.last_seen(), now),
                state: FlowState::of(key.proto(), flags),
                host: entry.flags() & NAT_F_HOST != 0,
                pass: entry.flags() & NAT_F_PASS != 0,
                inbound: entry.flags() & NAT_F_INBOUND != 0,
                steered: entry.flags() & NAT_F_STEERED != 0,
            });
        }
        half.sort_by_key(|e| e.original);
        out.extend(half);
    }
    Ok(out)
}

/// Packets counted per reason since the maps were created, summed over CPUs.
pub fn counters(maps: &Maps) -> Result<BTreeMap<Reason, u64>, Error> {
    Reason::ALL
        .iter()
        .map(|reason| Ok((*reason, counter(maps, *reason)?)))
        .collect()
}

/// One counter, summed over the CPUs.
pub fn counter(maps: &Maps, reason: Reason) -> Result<u64, Error> {
    let per_cpu = maps
        .counters
        .get(&(reason as u32), 0)
        .map_err(kernel_err(format!("reading counter {}", reason.label())))?;
    Ok(per_cpu.iter().sum())
}

/// A (SNAT address, destination) port pool: the ports of one address towards one destination
/// address, port and protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortPool {
    /// IP protocol.
    pub proto: u8,
    /// The SNAT address.
    pub snat_addr: IpAddr,
    /// The destination address.
    pub dst_addr: IpAddr,
    /// The destination port (0 for ICMP).
    pub dst_port: u16,
    /// Ports in use towards it.
    pub used: u32,
}

impl PortPool {
    /// Share of the port table (`ports` ports) in use, 0.0 to 1.0.
    pub fn saturation(&self, ports: u32) -> f64 {
        f64::from(self.used) / f64::from(ports.max(1))
    }
}

/// How full the NAT table is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pressure {
    /// Forward halves, kept and inbound flows included (both families).
    pub egress_entries: u32,
    /// Reverse halves, including host reservations (both families).
    pub ingress_entries: u32,
    /// Entries of each family's maps: (family, forward halves, reverse halves).
    pub by_family: Vec<(&'static str, u32, u32)>,
    /// Capacity of each map (`--nat-table-size`; each family has its own pair of maps).
    pub capacity: u32,
    /// Ports in the port table: the size of every (SNAT address, destination) pool.
    pub pool_size: u32,
    /// The pool with the most ports in use; divide `used` by the port range size for saturation.
    pub busiest_pool: Option<PortPool>,
    /// For each SNAT address with ports in use, its busiest pool, by address: with a SNAT
    /// pool, one address can be full towards a destination while another has room.
    pub busiest_by_address: Vec<PortPool>,
    /// The pool of the last flow refused for want of a port, with its ports in use now.
    pub last_failure: Option<FailedPool>,
}

/// The pool that last refused a flow (the complete search refuses only a full pool).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedPool {
    /// The pool, `used` counted now.
    pub pool: PortPool,
    /// Ports of the table that was searched.
    pub range_size: u32,
    /// Jiffies of the failure.
    pub when: u64,
}

impl FailedPool {
    /// Share of the searched range in use now, 0.0 to 1.0.
    pub fn fill(&self) -> f64 {
        f64::from(self.pool.used) / f64::from(self.range_size.max(1))
    }
}

impl Pressure {
    /// Fill ratio of the fullest map (each family has its own two), 0.0 to 1.0.
    pub fn ratio(&self) -> f64 {
        let fullest = self
            .by_family
            .iter()
            .map(|(_, forward, reverse)| *forward.max(reverse))
            .max()
            .unwrap_or(0);
        f64::from(fullest) / f64::from(self.capacity)
    }
}

/// (protocol, SNAT address, destination address, destination port): a port pool.
type PoolKey = (u8, IpAddr, IpAddr, u16);

/// Counts entries and finds the busiest port pool of both families. A pool counts the ports of
/// the port table in use (the node's own flows on other ports take nothing from it). The last
/// refusal is the later of the two families'.
pub fn pressure(maps: &Maps) -> Result<Pressure, Error> {
    let contents = maps.read()?;
    let table: HashSet<u16> = contents.ports.iter().copied().collect();
    let mut pools: StdHashMap<PoolKey, u32> = StdHashMap::new();
    let v4 = maps.last_alloc_failure()?.map(|f| {
        let key = (
            f.proto,
            f.snat_addr.into(),
            f.daddr.into(),
            u16::from_be_bytes(f.dport),
        );
        (key, f.span, f.when)
    });
    let v6 = maps.last_alloc_failure6()?.map(|f| {
        let key = (
            f.proto,
            f.snat_addr.into(),
            f.daddr.into(),
            u16::from_be_bytes(f.dport),
        );
        (key, f.span, f.when)
    });
    let failed: Option<(PoolKey, u32, u64)> =
        v4.into_iter().chain(v6).max_by_key(|(_, _, when)| *when);
    let by_family = vec![
        count_pools::<NatTuple>(maps, &table, &mut pools)?,
        count_pools::<NatTuple6>(maps, &table, &mut pools)?,
    ];
    let last_failure = failed.map(|(key, span, when)| FailedPool {
        pool: PortPool {
            proto: key.0,
            snat_addr: key.1,
            dst_addr: key.2,
            dst_port: key.3,
            used: pools.get(&key).copied().unwrap_or(0),
        },
        range_size: span,
        when,
    });
    let pool_of = |((proto, snat_addr, dst_addr, dst_port), used): (PoolKey, u32)| PortPool {
        proto,
        snat_addr,
        dst_addr,
        dst_port,
        used,
    };
    // The busiest first, ties to the lowest key, so each choice below is stable.
    let mut ranked: Vec<(PoolKey, u32)> = pools.into_iter().collect();
    ranked.sort_by_key(|(k, used)| (std::cmp::Reverse(*used), *k));
    let busiest_pool = ranked.first().copied().map(pool_of);
    let mut by_address: BTreeMap<IpAddr, PortPool> = BTreeMap::new();
    for (key, used) in ranked {
        by_address
            .entry(key.1)
            .or_insert_with(|| pool_of((key, used)));
    }
    Ok(Pressure {
        egress_entries: by_family.iter().map(|f| f.1).sum(),
        ingress_entries: by_family.iter().map(|f| f.2).sum(),
        by_family,
        capacity: maps.nat_capacity(),
        pool_size: contents.config.port_count,
        busiest_pool,
        busiest_by_address: by_address.into_values().collect(),
        last_failure,
    })
}

/// Adds one family's reverse halves to `pools`; returns (family, forward, reverse) counts.
fn count_pools<K: NatKey>(
    maps: &Maps,
    table: &HashSet<u16>,
    pools: &mut StdHashMap<PoolKey, u32>,
) -> Result<(&'static str, u32, u32), Error> {
    let forward = count_u32(K::forward_entries(maps)?.len());
    let reverse = K::reverse_entries(maps)?;
    let reverse_count = count_u32(reverse.len());
    for (key, _) in reverse {
        let flow = key.flow();
        if !table.contains(&flow.dport) {
            continue;
        }
        let (snat, dst, dport) = key.pool();
        // Host reservations take ports from the same pool, so they count too.
        *pools.entry((flow.proto, snat, dst, dport)).or_default() += 1;
    }
    Ok((K::FAMILY, forward, reverse_count))
}

/// Entry counts are bounded by the map size.
fn count_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
