//! Reading and ageing the NAT table: `masq nat list`, counters by reason, table pressure, and the
//! userspace garbage collector that removes both halves of expired pairs.

use std::collections::{BTreeMap, HashMap as StdHashMap, HashSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

use super::clock::KernelClock;
use super::kernel_err;
use super::maps::{Maps, NAT_CAPACITY};
use super::types::{
    NatEntry, NatTuple, Reason, NAT_F_CLOSING, NAT_F_HOST, NAT_F_STEERED, PROTO_ICMP, PROTO_TCP,
    PROTO_UDP,
};
use crate::{Error, PortRange};

/// Idle time after which an established TCP pair is removed (Cilium's CT default).
pub const TCP_TIMEOUT: Duration = Duration::from_secs(6 * 3600);
/// Grace period after a FIN or RST before a TCP pair is removed.
pub const TCP_CLOSING_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle timeout of UDP pairs.
pub const UDP_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle timeout of ICMP echo pairs.
pub const ICMP_TIMEOUT: Duration = Duration::from_secs(30);
/// A reverse half younger than this may be waiting for its forward half (created just after).
const ORPHAN_GRACE: Duration = Duration::from_secs(5);

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
    /// TCP teardown seen.
    pub closing: bool,
    /// A port reservation for a flow of the node itself (no translation).
    pub host: bool,
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
            NatDirection::Egress => ("OUT", "XLATE_SRC", t.src(), t.src_port()),
            NatDirection::Ingress => ("IN", "XLATE_DST", t.dst(), t.dst_port()),
        };
        write!(
            f,
            "{} {dir} {}:{} -> {}:{} {what} {addr}:{port} age={}s idle={}s",
            proto_name(o.proto),
            o.src(),
            o.src_port(),
            o.dst(),
            o.dst_port(),
            self.age.as_secs(),
            self.idle.as_secs(),
        )?;
        if self.closing {
            f.write_str(" closing")?;
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

/// Every entry of both halves, egress first, each sorted by tuple.
pub fn list(maps: &Maps, clock: &KernelClock) -> Result<Vec<NatListEntry>, Error> {
    let now = clock.now();
    let mut out = Vec::new();
    for (direction, entries) in [
        (NatDirection::Egress, maps.nat_egress_entries()?),
        (NatDirection::Ingress, maps.nat_ingress_entries()?),
    ] {
        let mut half = Vec::new();
        for (key, entry) in entries {
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
                closing: entry.flags & NAT_F_CLOSING != 0,
                host: entry.flags & NAT_F_HOST != 0,
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
    /// Share of the port range in use, 0.0 to 1.0.
    pub fn saturation(&self, range: PortRange) -> f64 {
        let size = u32::from(range.last.saturating_sub(range.first)) + 1;
        f64::from(self.used) / f64::from(size)
    }
}

/// How full the NAT table is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pressure {
    /// Forward halves.
    pub egress_entries: u32,
    /// Reverse halves (including host reservations).
    pub ingress_entries: u32,
    /// Capacity of each map.
    pub capacity: u32,
    /// The pool with the most ports in use; divide `used` by the port range size for saturation.
    pub busiest_pool: Option<PortPool>,
}

impl Pressure {
    /// Fill ratio of the fuller half, 0.0 to 1.0.
    pub fn ratio(&self) -> f64 {
        f64::from(self.egress_entries.max(self.ingress_entries)) / f64::from(self.capacity)
    }
}

/// (protocol, SNAT address, destination address, destination port) as stored in a reverse key.
type PoolKey = (u8, [u8; 4], [u8; 4], [u8; 2]);

/// Counts entries and finds the busiest port pool. A pool counts the ports of `range` in use:
/// original ports kept outside it take nothing from the ports handed out when one must change.
pub fn pressure(maps: &Maps, range: PortRange) -> Result<Pressure, Error> {
    let egress_entries = count_u32(maps.nat_egress_entries()?.len());
    let reverse = maps.nat_ingress_entries()?;
    let ingress_entries = count_u32(reverse.len());
    let mut pools: StdHashMap<PoolKey, u32> = StdHashMap::new();
    for (key, _) in reverse {
        if !range.contains(u16::from_be_bytes(key.dport)) {
            continue;
        }
        // Host reservations take ports from the same pool, so they count too.
        *pools
            .entry((key.proto, key.daddr, key.saddr, key.sport))
            .or_default() += 1;
    }
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
        capacity: NAT_CAPACITY,
        busiest_pool,
    })
}

/// Entry counts are bounded by the map size (131072).
fn count_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// What one GC pass removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Expired pairs removed (both halves).
    pub expired_pairs: usize,
    /// Halves whose partner was gone (evicted by the LRU), removed.
    pub orphans: usize,
    /// Expired host port reservations removed.
    pub host_reservations: usize,
}

fn timeout(proto: u8, flags: u8) -> Duration {
    match proto {
        PROTO_TCP if flags & NAT_F_CLOSING != 0 => TCP_CLOSING_TIMEOUT,
        PROTO_TCP => TCP_TIMEOUT,
        PROTO_UDP => UDP_TIMEOUT,
        _ => ICMP_TIMEOUT,
    }
}

fn reverse_of(fwd: &NatTuple, entry: &NatEntry) -> NatTuple {
    NatTuple {
        saddr: fwd.daddr,
        daddr: entry.to_addr,
        sport: fwd.dport,
        dport: entry.to_port,
        proto: fwd.proto,
        pad: [0; 3],
    }
}

fn forward_of(rev: &NatTuple, entry: &NatEntry) -> NatTuple {
    NatTuple {
        saddr: entry.to_addr,
        daddr: rev.saddr,
        sport: entry.to_port,
        dport: rev.sport,
        proto: rev.proto,
        pad: [0; 3],
    }
}

/// One garbage-collection pass at `now`, in jiffies (`clock.now()` in production).
/// A pair expires when both halves have been idle longer than its protocol's timeout; the
/// reverse half goes first, so no half-translated state is ever visible to the programs.
pub fn gc(maps: &mut Maps, clock: &KernelClock, now: u64) -> Result<GcReport, Error> {
    let idle = |since: u64| clock.between(since, now);
    let mut report = GcReport::default();
    let forward = maps.nat_egress_entries()?;
    let reverse: StdHashMap<NatTuple, NatEntry> = maps.nat_ingress_entries()?.into_iter().collect();

    for (fkey, fval) in &forward {
        let rkey = reverse_of(fkey, fval);
        let partner = reverse.get(&rkey).filter(|rval| {
            // A reverse half for the same reply tuple may belong to another flow (the port was
            // reused after an eviction): only one that points back at this flow is its partner.
            rval.flags & NAT_F_HOST == 0 && rval.to_addr == fkey.saddr && rval.to_port == fkey.sport
        });
        match partner {
            Some(rval) => {
                let last = fval.last_seen.max(rval.last_seen);
                let flags = fval.flags | rval.flags;
                if idle(last) > timeout(fkey.proto, flags) {
                    remove(maps, &rkey, fkey)?;
                    report.expired_pairs += 1;
                }
            }
            _ => {
                // The reverse half was evicted: replies cannot be translated any more. Dropping
                // the forward half lets the next packet build a fresh pair.
                let _ = maps.nat_egress.remove(fkey);
                report.orphans += 1;
            }
        }
    }
    let forward_keys: HashSet<NatTuple> = forward.iter().map(|(k, _)| *k).collect();
    for (rkey, rval) in &reverse {
        if rval.flags & NAT_F_HOST != 0 {
            if idle(rval.last_seen) > timeout(rkey.proto, rval.flags) {
                let _ = maps.nat_ingress.remove(rkey);
                report.host_reservations += 1;
            }
            continue;
        }
        let fkey = forward_of(rkey, rval);
        if !forward_keys.contains(&fkey) && idle(rval.created) > ORPHAN_GRACE {
            let _ = maps.nat_ingress.remove(rkey);
            report.orphans += 1;
        }
    }
    Ok(report)
}

fn remove(maps: &mut Maps, rkey: &NatTuple, fkey: &NatTuple) -> Result<(), Error> {
    // Gone already (LRU eviction, a racing GC) is fine.
    let _ = maps.nat_ingress.remove(rkey);
    let _ = maps.nat_egress.remove(fkey);
    Ok(())
}
