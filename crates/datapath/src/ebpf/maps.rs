//! Typed handles on the maps ([`Maps`]), reading them back as [`Contents`], and the in-place
//! diff that makes them hold new contents: additions first, then deletions, never a flush, so
//! a packet never meets an empty or partial CIDR table.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray};
use ipnet::Ipv4Net;

use super::contents::Contents;
use super::maps6::AgentMaps6;
use super::snat_pools::SnatPool;
use super::types::{
    AllocFailure, AllocFailure6, MasqConfig, MasqSteer, NatEntry, NatEntry6, NatTuple, NatTuple6,
    CFG_SRC_CIDRS, CFG_SRC_CIDRS6,
};
use super::{batch, kernel_err, policy, tries};
use crate::Error;

/// Map names in `bpf/lib/*.h`; also the file names of their pins.
pub mod name {
    /// `struct masq_config`, one entry.
    pub const CONFIG: &str = "masq_config";
    /// ifindex → SNAT address pool (0: every interface).
    pub const SNAT_POOLS: &str = "masq_snat_pools";
    /// The node's own addresses.
    pub const LOCAL_ADDRS: &str = "masq_local_addrs";
    /// Steps 4 and 5: destination prefix → the reason `decide()` returns.
    pub const DST_POLICY: &str = "masq_dst_policy";
    /// nonMasqueradeSrcCIDRs.
    pub const NONMASQ_SRC: &str = "masq_nonmasq_src";
    /// --pod-cidr.
    pub const POD_CIDRS: &str = "masq_pod_cidrs";
    /// Per-CPU counters by reason.
    pub const COUNTERS: &str = "masq_counters";
    /// Forward NAT halves.
    pub const NAT_EGRESS: &str = "masq_nat_egress";
    /// Reverse NAT halves.
    pub const NAT_INGRESS: &str = "masq_nat_ingress";
    /// Fragment tracking.
    pub const FRAGS: &str = "masq_frags";
    /// `struct masq_steer`, one entry: egress routing (mark and table).
    pub const STEER: &str = "masq_steer_cfg";
    /// `struct alloc_failure`, one entry: the pool of the last flow refused for want of a port.
    pub const ALLOC_FAILURE: &str = "masq_alloc_failure";
    /// The port table: index → port (network order).
    pub const PORTS: &str = "masq_ports";
    /// (address, destination) pairs found without a free port lately (programs only).
    pub const PORTS_FULL: &str = "masq_ports_full";
    /// When an address was last found full, any family (programs only).
    pub const PORTS_FULL_AT: &str = "masq_ports_full_at";

    /// ifindex → IPv6 SNAT address pool (0: every interface).
    pub const SNAT_POOLS6: &str = "masq_snat_pools6";
    /// The node's own IPv6 addresses.
    pub const LOCAL_ADDRS6: &str = "masq_local_addrs6";
    /// Steps 4 and 5, IPv6.
    pub const DST_POLICY6: &str = "masq_dst_policy6";
    /// nonMasqueradeSrcCIDRs, IPv6.
    pub const NONMASQ_SRC6: &str = "masq_nonmasq_src6";
    /// --pod-cidr, IPv6.
    pub const POD_CIDRS6: &str = "masq_pod_cidrs6";
    /// Forward NAT halves, IPv6.
    pub const NAT6_EGRESS: &str = "masq_nat6_egress";
    /// Reverse NAT halves, IPv6.
    pub const NAT6_INGRESS: &str = "masq_nat6_ingress";
    /// Fragment tracking, IPv6.
    pub const FRAGS6: &str = "masq_frags6";
    /// `struct alloc_failure6`, one entry.
    pub const ALLOC_FAILURE6: &str = "masq_alloc_failure6";
    /// IPv6 (address, destination) pairs found without a free port lately (programs only).
    pub const PORTS_FULL6: &str = "masq_ports_full6";
    /// Per-CPU scratch of the IPv6 port search (programs only; nothing to read).
    pub const PORT_SEARCH6: &str = "masq_port_search6";
    /// Per-CPU scratch the IPv6 parser makes the verifier forget a range with (programs only).
    pub const SCRATCH6: &str = "masq_scratch6";
    /// The NAT halves whose size `--nat-table-size` sets.
    pub const NAT_HALVES: [&str; 4] = [NAT_EGRESS, NAT_INGRESS, NAT6_EGRESS, NAT6_INGRESS];
    /// Every map, in the order they are pinned.
    pub const ALL: [&str; 27] = [
        CONFIG,
        SNAT_POOLS,
        LOCAL_ADDRS,
        DST_POLICY,
        NONMASQ_SRC,
        POD_CIDRS,
        COUNTERS,
        NAT_EGRESS,
        NAT_INGRESS,
        FRAGS,
        STEER,
        ALLOC_FAILURE,
        PORTS,
        PORTS_FULL,
        PORTS_FULL_AT,
        SNAT_POOLS6,
        LOCAL_ADDRS6,
        DST_POLICY6,
        NONMASQ_SRC6,
        POD_CIDRS6,
        NAT6_EGRESS,
        NAT6_INGRESS,
        FRAGS6,
        ALLOC_FAILURE6,
        PORTS_FULL6,
        PORT_SEARCH6,
        SCRATCH6,
    ];
}

/// Capacity of each half of the flow table without `--nat-table-size` (`MASQ_NAT_MAX`).
pub const DEFAULT_NAT_CAPACITY: u32 = 131072;

type Trie = tries::Trie<Ipv4Net>;

/// Typed handles on every map of one loaded (or pinned) instance of the programs.
pub struct Maps {
    pub(crate) config: Array<MapData, MasqConfig>,
    pub(crate) steer: Array<MapData, MasqSteer>,
    pub(crate) snat_pools: HashMap<MapData, u32, SnatPool>,
    pub(crate) local_addrs: HashMap<MapData, [u8; 4], u8>,
    pub(crate) dst_policy: Trie,
    pub(crate) nonmasq_src: Trie,
    pub(crate) pod_cidrs: Trie,
    pub(crate) counters: PerCpuArray<MapData, u64>,
    pub(crate) alloc_failure: Array<MapData, AllocFailure>,
    /// Addresses found full towards a destination lately, and when any was (lib/pool.h).
    ports_full: HashMap<MapData, NatTuple, u64>,
    ports_full6: HashMap<MapData, NatTuple6, u64>,
    ports_full_at: Array<MapData, u64>,
    pub(crate) ports: Array<MapData, [u8; 2]>,
    /// A second descriptor of the port table for batch reads.
    ports_fd: OwnedFd,
    pub(crate) nat_egress: HashMap<MapData, NatTuple, NatEntry>,
    pub(crate) nat_ingress: HashMap<MapData, NatTuple, NatEntry>,
    /// The IPv6 maps the agent fills.
    pub(crate) v6: AgentMaps6,
    pub(crate) alloc_failure6: Array<MapData, AllocFailure6>,
    pub(crate) nat6_egress: HashMap<MapData, NatTuple6, NatEntry6>,
    pub(crate) nat6_ingress: HashMap<MapData, NatTuple6, NatEntry6>,
    /// Second descriptors of the NAT halves for batch reads (aya keeps its own private).
    pub(crate) nat_egress_fd: OwnedFd,
    pub(crate) nat_ingress_fd: OwnedFd,
    pub(crate) nat6_egress_fd: OwnedFd,
    pub(crate) nat6_ingress_fd: OwnedFd,
    /// `max_entries` of each NAT half.
    nat_capacity: u32,
}

/// A NAT half, typed, a descriptor of it for [`batch::read_all`], and its capacity.
type NatHalf<K, V> = (HashMap<MapData, K, V>, OwnedFd, u32);

fn nat_half<K: aya::Pod, V: aya::Pod>(map: Map, name: &str) -> Result<NatHalf<K, V>, Error> {
    let (fd, capacity) = match &map {
        Map::LruHashMap(data) | Map::HashMap(data) => (
            data.fd()
                .as_fd()
                .try_clone_to_owned()
                .map_err(kernel_err(format!(
                    "duplicating the descriptor of map {name}"
                )))?,
            data.info()
                .map_err(kernel_err(format!("reading the size of map {name}")))?
                .max_entries(),
        ),
        _ => return Err(Error::Unsupported(format!("map {name} is not a hash map"))),
    };
    let typed = map
        .try_into()
        .map_err(kernel_err(format!("map {name} has an unexpected layout")))?;
    Ok((typed, fd, capacity))
}

impl Maps {
    /// Takes the maps out of a loaded object (the programs keep their own references).
    pub fn take_from(bpf: &mut aya::Ebpf) -> Result<Maps, Error> {
        Maps::build(|name| {
            bpf.take_map(name)
                .ok_or_else(|| Error::Unsupported(format!("map {name} missing from the object")))
        })
    }

    /// Opens the maps pinned in `dir` (by another process, e.g. the agent).
    pub fn open_pinned(dir: &Path) -> Result<Maps, Error> {
        Maps::build(|name| {
            let path = dir.join(name);
            let data = MapData::from_pin(&path)
                .map_err(kernel_err(format!("opening pinned map {}", path.display())))?;
            Map::from_map_data(data).map_err(kernel_err(format!("reading map {}", path.display())))
        })
    }

    /// Forgets which addresses the programs found full (lib/pool.h): after a GC pass that
    /// freed ports, each is searched again by the next flow towards it.
    pub(crate) fn forget_full_addresses(&mut self) -> Result<(), Error> {
        // Zero unless an address was found full since the last time: one read, most passes.
        let found_full = self
            .ports_full_at
            .get(&0, 0)
            .map_err(kernel_err("reading masq_ports_full_at"))?;
        if found_full == 0 {
            return Ok(());
        }
        // The stamp first: from here on the programs look nothing up in the maps below.
        self.ports_full_at
            .set(0, 0, 0)
            .map_err(kernel_err("clearing masq_ports_full_at"))?;
        let keys: Vec<NatTuple> = self.ports_full.keys().filter_map(Result::ok).collect();
        for key in keys {
            let _ = self.ports_full.remove(&key);
        }
        let keys: Vec<NatTuple6> = self.ports_full6.keys().filter_map(Result::ok).collect();
        for key in keys {
            let _ = self.ports_full6.remove(&key);
        }
        Ok(())
    }

    fn build(mut get: impl FnMut(&str) -> Result<Map, Error>) -> Result<Maps, Error> {
        macro_rules! typed {
            ($name:expr) => {{
                let map = get($name)?;
                map.try_into().map_err(kernel_err(format!(
                    "map {} has an unexpected layout",
                    $name
                )))?
            }};
        }
        let (nat_egress, nat_egress_fd, nat_capacity) =
            nat_half(get(name::NAT_EGRESS)?, name::NAT_EGRESS)?;
        let (nat_ingress, nat_ingress_fd, _) =
            nat_half(get(name::NAT_INGRESS)?, name::NAT_INGRESS)?;
        let (nat6_egress, nat6_egress_fd, _) =
            nat_half(get(name::NAT6_EGRESS)?, name::NAT6_EGRESS)?;
        let (nat6_ingress, nat6_ingress_fd, _) =
            nat_half(get(name::NAT6_INGRESS)?, name::NAT6_INGRESS)?;
        let ports_map = get(name::PORTS)?;
        let ports_fd = match &ports_map {
            Map::Array(data) => data
                .fd()
                .as_fd()
                .try_clone_to_owned()
                .map_err(kernel_err("duplicating the descriptor of masq_ports"))?,
            _ => return Err(Error::Unsupported("map masq_ports is not an array".into())),
        };
        Ok(Maps {
            v6: AgentMaps6::build(&mut get)?,
            alloc_failure6: typed!(name::ALLOC_FAILURE6),
            nat6_egress,
            nat6_ingress,
            nat6_egress_fd,
            nat6_ingress_fd,
            config: typed!(name::CONFIG),
            steer: typed!(name::STEER),
            snat_pools: typed!(name::SNAT_POOLS),
            local_addrs: typed!(name::LOCAL_ADDRS),
            dst_policy: typed!(name::DST_POLICY),
            nonmasq_src: typed!(name::NONMASQ_SRC),
            pod_cidrs: typed!(name::POD_CIDRS),
            counters: typed!(name::COUNTERS),
            alloc_failure: typed!(name::ALLOC_FAILURE),
            ports_full: typed!(name::PORTS_FULL),
            ports_full6: typed!(name::PORTS_FULL6),
            ports_full_at: typed!(name::PORTS_FULL_AT),
            ports: ports_map
                .try_into()
                .map_err(kernel_err("map masq_ports has an unexpected layout"))?,
            ports_fd,
            nat_egress,
            nat_ingress,
            nat_egress_fd,
            nat_ingress_fd,
            nat_capacity,
        })
    }

    /// The pool of the last flow refused for want of a port, if one was.
    pub fn last_alloc_failure(&self) -> Result<Option<AllocFailure>, Error> {
        let last = self
            .alloc_failure
            .get(&0, 0)
            .map_err(kernel_err("reading masq_alloc_failure"))?;
        Ok((last.when != 0).then_some(last))
    }

    /// How many entries each half of the flow table holds at most.
    pub fn nat_capacity(&self) -> u32 {
        self.nat_capacity
    }

    /// Every forward NAT half, read in batches.
    pub fn nat_egress_entries(&self) -> Result<Vec<(NatTuple, NatEntry)>, Error> {
        batch::read_all(self.nat_egress_fd.as_fd()).map_err(kernel_err("reading masq_nat_egress"))
    }

    /// Every reverse NAT half (host reservations included), read in batches.
    pub fn nat_ingress_entries(&self) -> Result<Vec<(NatTuple, NatEntry)>, Error> {
        batch::read_all(self.nat_ingress_fd.as_fd()).map_err(kernel_err("reading masq_nat_ingress"))
    }

    /// Raw access to the forward NAT halves, for tests and benchmarks that stage entries.
    pub fn nat_egress_mut(&mut self) -> &mut HashMap<MapData, NatTuple, NatEntry> {
        &mut self.nat_egress
    }

    /// Raw access to the reverse NAT halves, for tests and benchmarks that stage entries.
    pub fn nat_ingress_mut(&mut self) -> &mut HashMap<MapData, NatTuple, NatEntry> {
        &mut self.nat_ingress
    }

    /// Reads what is installed now.
    pub fn read(&self) -> Result<Contents, Error> {
        let config = self
            .config
            .get(&0, 0)
            .map_err(kernel_err("reading masq_config"))?;
        let mut snat_pools = BTreeMap::new();
        for item in self.snat_pools.iter() {
            let (ifindex, pool) = item.map_err(kernel_err("reading masq_snat_pools"))?;
            snat_pools.insert(ifindex, pool.addresses());
        }
        let mut local_addrs = BTreeSet::new();
        for key in self.local_addrs.keys() {
            local_addrs.insert(Ipv4Addr::from(
                key.map_err(kernel_err("reading masq_local_addrs"))?,
            ));
        }
        let steer = self
            .steer
            .get(&0, 0)
            .map_err(kernel_err("reading masq_steer_cfg"))?;
        let mut table: Vec<(u32, [u8; 2])> =
            batch::read_all(self.ports_fd.as_fd()).map_err(kernel_err("reading masq_ports"))?;
        table.sort_by_key(|(index, _)| *index);
        let ports = table
            .into_iter()
            .take(config.port_count as usize)
            .map(|(_, port)| u16::from_be_bytes(port))
            .collect();
        Ok(Contents {
            config,
            steer,
            ports,
            snat_pools,
            local_addrs,
            dst_policy: policy::decode(
                tries::read(&self.dst_policy, name::DST_POLICY)?,
                name::DST_POLICY,
            )?,
            nonmasq_src: tries::read_set(&self.nonmasq_src, name::NONMASQ_SRC)?,
            pod_cidrs: tries::read_set(&self.pod_cidrs, name::POD_CIDRS)?,
            v6: self.v6.read()?,
        })
    }

    /// Makes the maps hold `want`, touching only what differs. Returns the number of writes.
    pub fn apply(&mut self, want: &Contents) -> Result<usize, Error> {
        let have = self.read()?;
        self.apply_over(&have, want)
    }

    /// [`Maps::apply`] for a caller that has just read the maps (`have`): one read of a large
    /// trie less per sync.
    pub fn apply_over(&mut self, have: &Contents, want: &Contents) -> Result<usize, Error> {
        let mut writes = 0;
        for (trie, have, want, map) in self.tries(have, want) {
            writes += tries::add(trie, &have, &want, map)?;
        }
        // The table before its count: a search never meets an index not written yet.
        for (index, port) in want.ports.iter().enumerate() {
            if have.ports.get(index) != Some(port) {
                let index = u32::try_from(index).expect("at most 65536 ports");
                self.ports
                    .set(index, port.to_be_bytes(), 0)
                    .map_err(kernel_err(format!("writing port {port} into masq_ports")))?;
                writes += 1;
            }
        }
        for addr in want.local_addrs.difference(&have.local_addrs) {
            self.local_addrs
                .insert(addr.octets(), 1, 0)
                .map_err(kernel_err(format!("adding {addr} to masq_local_addrs")))?;
            writes += 1;
        }
        // A pool is one value: a program sees the old pool or the new one, whole.
        for (ifindex, pool) in &want.snat_pools {
            if have.snat_pools.get(ifindex) != Some(pool) {
                self.snat_pools
                    .insert(ifindex, SnatPool::new(pool), 0)
                    .map_err(kernel_err(format!(
                        "setting the SNAT pool of ifindex {ifindex}"
                    )))?;
                writes += 1;
            }
        }
        writes += self.v6.add_missing(&have.v6, &want.v6)?;
        // The config last among additions: the pod-CIDR flag must not switch on before the
        // pod trie holds the CIDRs (every source would stop being a pod for a moment), nor
        // IPv6 before its maps are filled.
        // CFG_SRC_CIDRS* only spare a lookup in an empty trie: derive them, never trust them.
        let mut config = want.config;
        config.flags &= !(CFG_SRC_CIDRS | CFG_SRC_CIDRS6);
        if !want.nonmasq_src.is_empty() {
            config.flags |= CFG_SRC_CIDRS;
        }
        if !want.v6.nonmasq_src.is_empty() {
            config.flags |= CFG_SRC_CIDRS6;
        }
        if have.config != config {
            self.config
                .set(0, config, 0)
                .map_err(kernel_err("writing masq_config"))?;
            writes += 1;
        }
        if have.steer != want.steer {
            self.steer
                .set(0, want.steer, 0)
                .map_err(kernel_err("writing masq_steer_cfg"))?;
            writes += 1;
        }
        for ifindex in have
            .snat_pools
            .keys()
            .filter(|k| !want.snat_pools.contains_key(k))
        {
            self.snat_pools.remove(ifindex).map_err(kernel_err(format!(
                "removing the SNAT pool of ifindex {ifindex}"
            )))?;
            writes += 1;
        }
        for addr in have.local_addrs.difference(&want.local_addrs) {
            self.local_addrs
                .remove(&addr.octets())
                .map_err(kernel_err(format!("removing {addr} from masq_local_addrs")))?;
            writes += 1;
        }
        for (trie, have, want, map) in self.tries(have, want) {
            writes += tries::remove(trie, &have, &want, map)?;
        }
        writes += self.v6.remove_stale(&have.v6, &want.v6)?;
        Ok(writes)
    }

    /// Each IPv4 trie with what it holds and what it should hold, as raw entries.
    fn tries(&mut self, have: &Contents, want: &Contents) -> [TrieChange<'_, Ipv4Net>; 3] {
        [
            (
                &mut self.dst_policy,
                policy::encode(&have.dst_policy),
                policy::encode(&want.dst_policy),
                name::DST_POLICY,
            ),
            (
                &mut self.nonmasq_src,
                tries::set_entries(&have.nonmasq_src),
                tries::set_entries(&want.nonmasq_src),
                name::NONMASQ_SRC,
            ),
            (
                &mut self.pod_cidrs,
                tries::set_entries(&have.pod_cidrs),
                tries::set_entries(&want.pod_cidrs),
                name::POD_CIDRS,
            ),
        ]
    }
}

/// A trie, its entries now and wanted, and its name.
pub(crate) type TrieChange<'a, N> = (
    &'a mut tries::Trie<N>,
    BTreeMap<N, u8>,
    BTreeMap<N, u8>,
    &'static str,
);
