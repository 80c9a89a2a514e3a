//! Reading the NAT table: `masq nat list`, counters by reason and table pressure. Ageing it is
//! [`super::gc`]'s.

use std::collections::{BTreeMap, HashMap as StdHashMap, HashSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

use super::clock::KernelClock;
use super::gc::{forward_of, reverse_of, FlowState};
use super::kernel_err;
use super::maps::Maps;
use super::types::{
    NatTuple, Reason, NAT_F_HOST, NAT_F_INBOUND, NAT_F_PASS, NAT_F_STEERED, PROTO_ICMP, PROTO_TCP,
    PROTO_UDP,
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
    pub original: NatTuple,
    /// The tuple after translation.
    pub translated: NatTuple,
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
        _ => "?",
    }
}

impl fmt::Display for NatListEntry {
    /// One line in the manner of `cilium-dbg bpf nat list`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.original;
        let t = &self.translated;
        let (dir, what, addr, port) = match self.direction {
            NatDirection::Egress if self.pass => ("OUT", "PASS", t.src(), t.src_port()),
            NatDirection::Egress => ("OUT", "XLATE_SRC", t.src(), t.src_port()),
            NatDirection::Ingress => ("IN", "XLATE_DST", t.dst(), t.dst_port()),
        };
        write!(
            f,
            "{} {dir} {}:{} -> {}:{} {what} {addr}:{port} age={}s idle={}s {}",
            proto_name(o.proto),
            o.src(),
            o.src_port(),
            o.dst(),
            o.dst_port(),
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

/// Every entry of both halves, egress first, each sorted by tuple. A translated pair's state
/// is the flow's: both halves' flags together, as the GC sees them.
pub fn list(maps: &Maps, clock: &KernelClock) -> Result<Vec<NatListEntry>, Error> {
    let now = clock.now();
    let forward = maps.nat_egress_entries()?;
    let reverse = maps.nat_ingress_entries()?;
    let forward_flags: StdHashMap<NatTuple, u8> =
        forward.iter().map(|(k, e)| (*k, e.flags)).collect();
    let reverse_flags: StdHashMap<NatTuple, u8> =
        reverse.iter().map(|(k, e)| (*k, e.flags)).collect();
    let mut out = Vec::new();
    for (direction, entries) in [
        (NatDirection::Egress, forward),
        (NatDirection::Ingress, reverse),
    ] {
        let mut half = Vec::new();
        for (key, entry) in entries {
            let partner = match direction {
                _ if entry.flags & (NAT_F_PASS | NAT_F_HOST) != 0 => None,
                NatDirection::Egress => reverse_flags.get(&reverse_of(&key, &entry)),
                NatDirection::Ingress => forward_flags.get(&forward_of(&key, &entry)),
            };
            let flags = entry.flags | partner.copied().unwrap_or(0);
            let mut translated = key;
            match direction {
                NatDirection::Egress => {
                    translated.saddr = entry.to_addr;
                    translated.sport = entry.to_port;
                }
                NatDirection::Ingress => {
                    translated.daddr = entry.to_addr;
                    translated.dport = entry.to_port;
                }
            }
            half.push(NatListEntry {
                direction,
                original: key,
                translated,
                age: clock.between(entry.created, now),
                idle: clock.between(entry.last_seen, now),
                state: FlowState::of(key.proto, flags),
                host: entry.flags & NAT_F_HOST != 0,
                pass: entry.flags & NAT_F_PASS != 0,
                inbound: entry.flags & NAT_F_INBOUND != 0,
                steered: entry.flags & NAT_F_STEERED != 0,
            });
        }
        half.sort_by_key(|e| e.original);
        out.extend(half);
    }
    Ok(out)
}

/// Packets counted per reason since the maps were created, summed over CPUs.
pub fn counters(maps: &Maps) -> Result<BTreeMap<Reason, u64>, Error> {
    let mut out = BTreeMap::new();
    for reason in Reason::ALL {
        let per_cpu = maps
            .counters
            .get(&(reason as u32), 0)
            .map_err(kernel_err(format!("reading counter {}", reason.label())))?;
        out.insert(reason, per_cpu.iter().sum());
    }
    Ok(out)
}

/// The busiest (SNAT address, destination) port pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortPool {
    /// IP protocol.
    pub proto: u8,
    /// The SNAT address.
    pub snat_addr: Ipv4Addr,
    /// The destination address.
    pub dst_addr: Ipv4Addr,
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
    /// Forward halves, kept and inbound flows included.
    pub egress_entries: u32,
    /// Reverse halves (including host reservations).
    pub ingress_entries: u32,
    /// Capacity of each map (`--nat-table-size`).
    pub capacity: u32,
    /// Ports in the port table: the size of every (SNAT address, destination) pool.
    pub pool_size: u32,
    /// The pool with the most ports in use; divide `used` by the port range size for saturation.
    pub busiest_pool: Option<PortPool>,
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
    /// Fill ratio of the fuller half, 0.0 to 1.0.
    pub fn ratio(&self) -> f64 {
        f64::from(self.egress_entries.max(self.ingress_entries)) / f64::from(self.capacity)
    }
}

/// (protocol, SNAT address, destination address, destination port) as stored in a reverse key.
type PoolKey = (u8, [u8; 4], [u8; 4], [u8; 2]);

/// Counts entries and finds the busiest port pool. A pool counts the ports of the port table in
/// use (the node's own flows on other ports take nothing from it).
pub fn pressure(maps: &Maps) -> Result<Pressure, Error> {
    let egress_entries = count_u32(maps.nat_egress_entries()?.len());
    let reverse = maps.nat_ingress_entries()?;
    let contents = maps.read()?;
    let table: HashSet<u16> = contents.ports.iter().copied().collect();
    let ingress_entries = count_u32(reverse.len());
    let mut pools: StdHashMap<PoolKey, u32> = StdHashMap::new();
    let failed = maps.last_alloc_failure()?;
    let failed_key = failed.map(|f| (f.proto, f.snat_addr, f.daddr, f.dport));
    let mut failed_used = 0;
    for (key, _) in reverse {
        if !table.contains(&u16::from_be_bytes(key.dport)) {
            continue;
        }
        let pool = (key.proto, key.daddr, key.saddr, key.sport);
        if Some(pool) == failed_key {
            failed_used += 1;
        }
        // Host reservations take ports from the same pool, so they count too.
        *pools.entry(pool).or_default() += 1;
    }
    let last_failure = failed.map(|f| FailedPool {
        pool: PortPool {
            proto: f.proto,
            snat_addr: Ipv4Addr::from(f.snat_addr),
            dst_addr: Ipv4Addr::from(f.daddr),
            dst_port: u16::from_be_bytes(f.dport),
            used: failed_used,
        },
        range_size: f.span,
        when: f.when,
    });
    let busiest_pool = pools
        .into_iter()
        .max_by_key(|(k, used)| (*used, std::cmp::Reverse(*k)))
        .map(|((proto, snat, dst, dport), used)| PortPool {
            proto,
            snat_addr: Ipv4Addr::from(snat),
            dst_addr: Ipv4Addr::from(dst),
            dst_port: u16::from_be_bytes(dport),
            used,
        });
    Ok(Pressure {
        egress_entries,
        ingress_entries,
        capacity: maps.nat_capacity(),
        pool_size: contents.config.port_count,
        busiest_pool,
        last_failure,
    })
}

/// Entry counts are bounded by the map size.
fn count_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
