//! The maps the agent fills, what they should hold for a [`Desired`] state ([`Contents`]), and
//! the in-place diff that gets them there: additions first, then deletions, never a flush, so
//! a packet never meets an empty or partial CIDR table.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray};
use ipnet::{IpNet, Ipv4Net};

use super::maps6::{AgentMaps6, Contents6};
use super::types::{
    AllocFailure, AllocFailure6, MasqConfig, MasqSteer, NatEntry, NatEntry6, NatTuple, NatTuple6,
    CFG_IPV6, CFG_MASQ_LINK_LOCAL, CFG_MASQ_LINK_LOCAL6, CFG_POD_CIDRS, CFG_SRC_CIDRS,
    CFG_SRC_CIDRS6,
};
use super::{batch, kernel_err, PortRange};
use crate::{Desired, Error};

/// The ports translated flows get without `--port-range`: netfilter's for a fully-random
/// masquerade (1024–65535), less the Kubernetes NodePort range, which replies must never meet.
pub const DEFAULT_PORT_RANGES: [PortRange; 2] = [
    PortRange {
        first: 1024,
        last: 29999,
    },
    PortRange {
        first: 32768,
        last: 65535,
    },
];

/// Entries of the port table (`MASQ_PORTS_MAX`): every port.
pub const PORTS_MAX: u32 = 65536;

/// The port table for `ranges`, in order, each port once.
pub fn port_table(ranges: &[PortRange]) -> Vec<u16> {
    let ports: BTreeSet<u16> = ranges.iter().flat_map(|r| r.first..=r.last).collect();
    ports.into_iter().collect()
}

/// Map names in `bpf/lib/*.h`; also the file names of their pins.
pub mod name {
    /// `struct masq_config`, one entry.
    pub const CONFIG: &str = "masq_config";
    /// ifindex → SNAT address (0: every interface).
    pub const SNAT_ADDRS: &str = "masq_snat_addrs";
    /// The node's own addresses.
    pub const LOCAL_ADDRS: &str = "masq_local_addrs";
    /// nonMasqueradeCIDRs (+ native-routing CIDR).
    pub const NONMASQ_DST: &str = "masq_nonmasq_dst";
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

    /// ifindex → IPv6 SNAT address (0: every interface).
    pub const SNAT_ADDRS6: &str = "masq_snat_addrs6";
    /// The node's own IPv6 addresses.
    pub const LOCAL_ADDRS6: &str = "masq_local_addrs6";
    /// nonMasqueradeCIDRs (+ native-routing CIDR), IPv6.
    pub const NONMASQ_DST6: &str = "masq_nonmasq_dst6";
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
    /// Per-CPU scratch of the IPv6 port search (programs only; nothing to read).
    pub const PORT_SEARCH6: &str = "masq_port_search6";
    /// Per-CPU scratch the IPv6 parser makes the verifier forget a range with (programs only).
    pub const SCRATCH6: &str = "masq_scratch6";
    /// The NAT halves whose size `--nat-table-size` sets.
    pub const NAT_HALVES: [&str; 4] = [NAT_EGRESS, NAT_INGRESS, NAT6_EGRESS, NAT6_INGRESS];
    /// Every map, in the order they are pinned.
    pub const ALL: [&str; 24] = [
        CONFIG,
        SNAT_ADDRS,
        LOCAL_ADDRS,
        NONMASQ_DST,
        NONMASQ_SRC,
        POD_CIDRS,
        COUNTERS,
        NAT_EGRESS,
        NAT_INGRESS,
        FRAGS,
        STEER,
        ALLOC_FAILURE,
        PORTS,
        SNAT_ADDRS6,
        LOCAL_ADDRS6,
        NONMASQ_DST6,
        NONMASQ_SRC6,
        POD_CIDRS6,
        NAT6_EGRESS,
        NAT6_INGRESS,
        FRAGS6,
        ALLOC_FAILURE6,
        PORT_SEARCH6,
        SCRATCH6,
    ];
}

/// Capacity of each half of the flow table without `--nat-table-size` (`MASQ_NAT_MAX`).
pub const DEFAULT_NAT_CAPACITY: u32 = 131072;

type Trie = LpmTrie<MapData, [u8; 4], u8>;

/// Typed handles on every map of one loaded (or pinned) instance of the programs.
pub struct Maps {
    pub(crate) config: Array<MapData, MasqConfig>,
    pub(crate) steer: Array<MapData, MasqSteer>,
    pub(crate) snat_addrs: HashMap<MapData, u32, [u8; 4]>,
    pub(crate) local_addrs: HashMap<MapData, [u8; 4], u8>,
    pub(crate) nonmasq_dst: Trie,
    pub(crate) nonmasq_src: Trie,
    pub(crate) pod_cidrs: Trie,
    pub(crate) counters: PerCpuArray<MapData, u64>,
    pub(crate) alloc_failure: Array<MapData, AllocFailure>,
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
    nat_egress_fd: OwnedFd,
    nat_ingress_fd: OwnedFd,
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
            snat_addrs: typed!(name::SNAT_ADDRS),
            local_addrs: typed!(name::LOCAL_ADDRS),
            nonmasq_dst: typed!(name::NONMASQ_DST),
            nonmasq_src: typed!(name::NONMASQ_SRC),
            pod_cidrs: typed!(name::POD_CIDRS),
            counters: typed!(name::COUNTERS),
            alloc_failure: typed!(name::ALLOC_FAILURE),
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
        let mut snat_addrs = BTreeMap::new();
        for item in self.snat_addrs.iter() {
            let (ifindex, addr) = item.map_err(kernel_err("reading masq_snat_addrs"))?;
            snat_addrs.insert(ifindex, Ipv4Addr::from(addr));
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
            snat_addrs,
            local_addrs,
            nonmasq_dst: read_trie(&self.nonmasq_dst, name::NONMASQ_DST)?,
            nonmasq_src: read_trie(&self.nonmasq_src, name::NONMASQ_SRC)?,
            pod_cidrs: read_trie(&self.pod_cidrs, name::POD_CIDRS)?,
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
        writes += update_trie(
            &mut self.nonmasq_dst,
            &have.nonmasq_dst,
            &want.nonmasq_dst,
            name::NONMASQ_DST,
        )?;
        writes += update_trie(
            &mut self.nonmasq_src,
            &have.nonmasq_src,
            &want.nonmasq_src,
            name::NONMASQ_SRC,
        )?;
        writes += update_trie(
            &mut self.pod_cidrs,
            &have.pod_cidrs,
            &want.pod_cidrs,
            name::POD_CIDRS,
        )?;
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
        for (ifindex, addr) in &want.snat_addrs {
            if have.snat_addrs.get(ifindex) != Some(addr) {
                self.snat_addrs
                    .insert(ifindex, addr.octets(), 0)
                    .map_err(kernel_err(format!(
                        "setting the SNAT address of ifindex {ifindex}"
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
            .snat_addrs
            .keys()
            .filter(|k| !want.snat_addrs.contains_key(k))
        {
            self.snat_addrs.remove(ifindex).map_err(kernel_err(format!(
                "removing the SNAT address of ifindex {ifindex}"
            )))?;
            writes += 1;
        }
        for addr in have.local_addrs.difference(&want.local_addrs) {
            self.local_addrs
                .remove(&addr.octets())
                .map_err(kernel_err(format!("removing {addr} from masq_local_addrs")))?;
            writes += 1;
        }
        writes += remove_stale(
            &mut self.nonmasq_dst,
            &have.nonmasq_dst,
            &want.nonmasq_dst,
            name::NONMASQ_DST,
        )?;
        writes += remove_stale(
            &mut self.nonmasq_src,
            &have.nonmasq_src,
            &want.nonmasq_src,
            name::NONMASQ_SRC,
        )?;
        writes += remove_stale(
            &mut self.pod_cidrs,
            &have.pod_cidrs,
            &want.pod_cidrs,
            name::POD_CIDRS,
        )?;
        writes += self.v6.remove_stale(&have.v6, &want.v6)?;
        Ok(writes)
    }
}

/// A port table as the ranges it covers: `1024-29999,32768-65535`.
fn ranges_text(ports: &[u16]) -> String {
    let mut ranges: Vec<(u16, u16)> = Vec::new();
    for &port in ports {
        match ranges.last_mut() {
            Some((_, last)) if u32::from(*last) + 1 == u32::from(port) => *last = port,
            _ => ranges.push((port, port)),
        }
    }
    let text: Vec<String> = ranges
        .iter()
        .map(|(first, last)| format!("{first}-{last}"))
        .collect();
    text.join(",")
}

fn trie_key(net: &Ipv4Net) -> Key<[u8; 4]> {
    Key::new(u32::from(net.prefix_len()), net.network().octets())
}

fn read_trie(trie: &Trie, map: &str) -> Result<BTreeSet<Ipv4Net>, Error> {
    let mut out = BTreeSet::new();
    for key in trie.keys() {
        let key = key.map_err(kernel_err(format!("reading {map}")))?;
        let net = Ipv4Net::new(Ipv4Addr::from(key.data()), key.prefix_len() as u8)
            .map_err(|e| Error::Unsupported(format!("{map} holds an invalid prefix: {e}")))?;
        out.insert(net);
    }
    Ok(out)
}

fn update_trie(
    trie: &mut Trie,
    have: &BTreeSet<Ipv4Net>,
    want: &BTreeSet<Ipv4Net>,
    map: &str,
) -> Result<usize, Error> {
    let mut writes = 0;
    for net in want.difference(have) {
        trie.insert(&trie_key(net), 1, 0)
            .map_err(kernel_err(format!("adding {net} to {map}")))?;
        writes += 1;
    }
    Ok(writes)
}

fn remove_stale(
    trie: &mut Trie,
    have: &BTreeSet<Ipv4Net>,
    want: &BTreeSet<Ipv4Net>,
    map: &str,
) -> Result<usize, Error> {
    let mut writes = 0;
    for net in have.difference(want) {
        trie.remove(&trie_key(net))
            .map_err(kernel_err(format!("removing {net} from {map}")))?;
        writes += 1;
    }
    Ok(writes)
}

/// What the agent-filled maps hold (or should hold).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Contents {
    /// `masq_config[0]`.
    pub config: MasqConfig,
    /// `masq_steer_cfg[0]`: egress routing, all zero when it is off.
    pub steer: MasqSteer,
    /// `masq_ports`: the ports translated flows are given (`config.port_count` of them).
    pub ports: Vec<u16>,
    /// ifindex → SNAT address; 0 means every interface (`--snat-ip`).
    pub snat_addrs: BTreeMap<u32, Ipv4Addr>,
    /// The node's addresses.
    pub local_addrs: BTreeSet<Ipv4Addr>,
    /// nonMasqueradeCIDRs plus the native-routing CIDR, IPv4 only, collapsed to a set.
    pub nonmasq_dst: BTreeSet<Ipv4Net>,
    /// nonMasqueradeSrcCIDRs, IPv4 only.
    pub nonmasq_src: BTreeSet<Ipv4Net>,
    /// --pod-cidr, IPv4 only.
    pub pod_cidrs: BTreeSet<Ipv4Net>,
    /// The IPv6 maps (empty without `--enable-ipv6`).
    pub v6: Contents6,
}

fn v4_nets<'a>(nets: impl IntoIterator<Item = &'a IpNet>) -> BTreeSet<Ipv4Net> {
    nets.into_iter()
        .filter_map(|net| match net {
            IpNet::V4(v4) => Some(v4.trunc()),
            IpNet::V6(_) => None,
        })
        .collect()
}

impl Contents {
    /// Makes the port table hold `ranges` (tests and benchmarks staging contents by hand).
    pub fn set_ports(&mut self, ranges: &[PortRange]) {
        self.ports = port_table(ranges);
        self.config.port_count = u32::try_from(self.ports.len()).expect("at most 65536 ports");
    }

    /// The map contents for `desired`.
    pub fn for_desired(desired: &Desired) -> Contents {
        let node = &desired.node;
        let config = &desired.config;
        let ports = port_table(&node.source_port_ranges());
        let mut flags = 0;
        if config.masq_link_local {
            flags |= CFG_MASQ_LINK_LOCAL;
        }
        let v6 = Contents6::for_desired(desired);
        if node.enable_ipv6 {
            flags |= CFG_IPV6;
            if config.masq_link_local_ipv6 {
                flags |= CFG_MASQ_LINK_LOCAL6;
            }
            if !v6.nonmasq_src.is_empty() {
                flags |= CFG_SRC_CIDRS6;
            }
        }
        let pod_cidrs = v4_nets(&node.pod_cidrs);
        // docs/decision.md: with --pod-cidr of either family, a pod is a source inside one.
        if !node.pod_cidrs.is_empty() {
            flags |= CFG_POD_CIDRS;
        }
        let nonmasq_src = v4_nets(&config.non_masquerade_src_cidrs);
        if !nonmasq_src.is_empty() {
            flags |= CFG_SRC_CIDRS;
        }
        let mut snat_addrs = BTreeMap::new();
        // The pool's first address until the programs take the whole pool (issue 16).
        match node.snat_ips.first() {
            Some(IpAddr::V4(fixed)) => {
                snat_addrs.insert(0, *fixed);
            }
            _ => {
                for iface in &node.interfaces {
                    if let Some(addr) = iface.addrs.iter().find_map(|a| match a {
                        IpAddr::V4(v4) => Some(*v4),
                        IpAddr::V6(_) => None,
                    }) {
                        snat_addrs.insert(iface.index, addr);
                    }
                }
            }
        }
        // Every address of the node (netlink), and the interfaces' for callers that only
        // know those (tests, `masq render`).
        let mut local_addrs: BTreeSet<Ipv4Addr> = node
            .interfaces
            .iter()
            .flat_map(|iface| iface.addrs.iter())
            .chain(&node.local_addrs)
            .filter_map(|a| match a {
                IpAddr::V4(v4) => Some(*v4),
                IpAddr::V6(_) => None,
            })
            .collect();
        for ip in &node.snat_ips {
            if let IpAddr::V4(fixed) = ip {
                local_addrs.insert(*fixed);
            }
        }
        let mut nonmasq_dst = v4_nets(&config.non_masquerade_cidrs);
        nonmasq_dst.extend(v4_nets(node.native_routing_cidr.as_ref()));
        Contents {
            config: MasqConfig {
                port_count: u32::try_from(ports.len()).expect("at most 65536 ports"),
                flags,
            },
            ports,
            steer: node
                .active_egress_routing()
                .map(|routing| MasqSteer {
                    mark: routing.mark,
                    table: routing.table,
                })
                .unwrap_or_default(),
            snat_addrs,
            local_addrs,
            nonmasq_dst,
            nonmasq_src,
            pod_cidrs,
            v6,
        }
    }

    /// Entries across every map (a gauge for metrics and status).
    pub fn len(&self) -> usize {
        1 + self.snat_addrs.len()
            + self.local_addrs.len()
            + self.nonmasq_dst.len()
            + self.nonmasq_src.len()
            + self.pod_cidrs.len()
            + self.v6.len()
    }

    /// Always false: the config entry is always there.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The text `masq render --datapath ebpf` prints: one section per map, sorted.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let c = &self.config;
        let _ = writeln!(out, "# map {}", name::CONFIG);
        let _ = writeln!(out, "ports {} ({})", ranges_text(&self.ports), c.port_count);
        let _ = writeln!(
            out,
            "masq_link_local {}",
            c.flags & CFG_MASQ_LINK_LOCAL != 0
        );
        let _ = writeln!(out, "pod_cidrs_only {}", c.flags & CFG_POD_CIDRS != 0);
        let _ = writeln!(out, "src_cidrs {}", c.flags & CFG_SRC_CIDRS != 0);
        if c.flags & CFG_IPV6 != 0 {
            let _ = writeln!(out, "ipv6 true");
            let _ = writeln!(
                out,
                "masq_link_local_ipv6 {}",
                c.flags & CFG_MASQ_LINK_LOCAL6 != 0
            );
            let _ = writeln!(out, "src_cidrs_ipv6 {}", c.flags & CFG_SRC_CIDRS6 != 0);
        }
        let _ = writeln!(out, "# map {}", name::STEER);
        let _ = writeln!(
            out,
            "egress_mark {:#x} table {}",
            self.steer.mark, self.steer.table
        );
        let _ = writeln!(out, "# map {}", name::SNAT_ADDRS);
        for (ifindex, addr) in &self.snat_addrs {
            match ifindex {
                0 => {
                    let _ = writeln!(out, "any {addr}");
                }
                n => {
                    let _ = writeln!(out, "ifindex {n} {addr}");
                }
            }
        }
        let _ = writeln!(out, "# map {}", name::LOCAL_ADDRS);
        for addr in &self.local_addrs {
            let _ = writeln!(out, "{addr}");
        }
        for (map, nets) in [
            (name::NONMASQ_DST, &self.nonmasq_dst),
            (name::NONMASQ_SRC, &self.nonmasq_src),
            (name::POD_CIDRS, &self.pod_cidrs),
        ] {
            let _ = writeln!(out, "# map {map}");
            for net in nets {
                let _ = writeln!(out, "{net}");
            }
        }
        // IPv6 only where it is on: an IPv4-only node's output stays as it was.
        if c.flags & CFG_IPV6 != 0 {
            self.v6.render(&mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use masq_config::Config;

    use super::*;
    use crate::{Interface, NodeSettings};

    fn desired(cidrs: &[&str]) -> Desired {
        Desired {
            config: Config {
                non_masquerade_cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
                masq_link_local: false,
                masq_link_local_ipv6: false,
                resync_interval: Duration::from_secs(60),
                cidr_limit: 16384,
                non_masquerade_src_cidrs: vec!["10.9.0.0/16".parse().unwrap()],
                masquerade_cidrs: Vec::new(),
            },
            node: NodeSettings {
                interfaces: vec![Interface {
                    name: "eth0".into(),
                    index: 4,
                    addrs: vec!["fe80::1".parse().unwrap(), "172.18.0.2".parse().unwrap()],
                }],
                native_routing_cidr: Some("10.244.0.0/16".parse().unwrap()),
                ..NodeSettings::default()
            },
        }
    }

    #[test]
    fn contents_collapse_duplicates_and_skip_ipv6() {
        let c = Contents::for_desired(&desired(&["10.0.0.0/8", "10.0.0.0/8", "fd00::/8"]));
        let dst: Vec<String> = c.nonmasq_dst.iter().map(|n| n.to_string()).collect();
        assert_eq!(dst, ["10.0.0.0/8", "10.244.0.0/16"]);
        assert_eq!(c.snat_addrs.get(&4), Some(&Ipv4Addr::new(172, 18, 0, 2)));
        assert_eq!(c.config.flags, CFG_SRC_CIDRS);
        assert_eq!(c.config.port_count, 65535 - 1024 + 1 - (32767 - 30000 + 1));
        assert_eq!(c.ports.len(), c.config.port_count as usize);
        assert!(
            !c.ports.contains(&30000) && !c.ports.contains(&32767),
            "a NodePort"
        );
        assert_eq!((c.ports[0], *c.ports.last().unwrap()), (1024, 65535));
    }

    #[test]
    fn a_fixed_snat_ip_applies_to_every_interface_and_is_local() {
        let mut d = desired(&[]);
        d.node.snat_ips = vec!["192.0.2.7".parse().unwrap()];
        d.node.port_ranges = vec![PortRange {
            first: 40000,
            last: 40999,
        }];
        let c = Contents::for_desired(&d);
        let fixed = Ipv4Addr::new(192, 0, 2, 7);
        assert_eq!(c.snat_addrs, BTreeMap::from([(0, fixed)]));
        assert!(c.local_addrs.contains(&fixed));
        assert_eq!(c.ports, (40000..=40999).collect::<Vec<u16>>());
        assert_eq!(c.config.port_count, 1000);
    }

    #[test]
    fn render_lists_every_map_sorted() {
        let mut d = desired(&["192.168.0.0/16", "10.0.0.0/8"]);
        d.config.masq_link_local = true;
        let text = Contents::for_desired(&d).render();
        let expected = "\
# map masq_config
ports 1024-29999,32768-65535 (61744)
masq_link_local true
pod_cidrs_only false
src_cidrs true
# map masq_steer_cfg
egress_mark 0x1000 table 254
# map masq_snat_addrs
ifindex 4 172.18.0.2
# map masq_local_addrs
172.18.0.2
# map masq_nonmasq_dst
10.0.0.0/8
10.244.0.0/16
192.168.0.0/16
# map masq_nonmasq_src
10.9.0.0/16
# map masq_pod_cidrs
";
        assert_eq!(text, expected);
    }
}
