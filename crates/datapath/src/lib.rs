//! The kernel datapaths behind one trait, [`Datapath`].
//!
//! Each backend turns a [`Desired`] state (the validated config plus what the node contributes)
//! into kernel state, and can read that state back: `sync` adopts whatever a previous run left,
//! changes only what differs, and never leaves a window in which traffic is masqueraded wrongly.
//! `render` returns exactly what `sync` would install, so `masq render` cannot lie.
#![deny(missing_docs)]

pub mod egress;
pub mod ipt;
pub mod pool;
pub mod ports;

pub use egress::Routed;

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use masq_config::Config;
use masq_decision::NodeContext;
pub use masq_decision::{CompiledPolicy, Family};
pub use ports::PortRange;

pub mod ebpf;
pub mod nft;

/// Names masq owns in the kernel, defined once: `masq cleanup` removes exactly these.
pub mod names {
    /// The nftables table (family `inet`) owned by masq.
    pub const NFT_TABLE: &str = "masq";
    /// The iptables chain of kubernetes-sigs/ip-masq-agent, the default of `--masq-chain`.
    pub const IPT_CHAIN: &str = "IP-MASQ-AGENT";
    /// Where the eBPF datapath pins its maps, programs and links.
    pub const BPF_PIN_DIR: &str = "/sys/fs/bpf/masq";
    /// The iptables chain (table `mangle`) that marks connections for egress routing.
    pub const IPT_EGRESS_CHAIN: &str = "IP-MASQ-EGRESS";
    /// The routing protocol number masq's `ip rule`s carry (`ip rule … protocol 109`), how
    /// `masq cleanup` finds them without the config.
    pub const RULE_PROTOCOL: u8 = 109;
}

/// Which backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// tc programs with masq's own NAT table.
    Ebpf,
    /// One nftables table owned by masq.
    Nftables,
    /// The kubernetes-sigs/ip-masq-agent chain.
    Iptables,
}

impl Kind {
    /// The name used on the command line and in status output.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Ebpf => "ebpf",
            Kind::Nftables => "nftables",
            Kind::Iptables => "iptables",
        }
    }
}

/// An egress interface of the node and its addresses, primary first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    /// Interface name, e.g. `eth0`.
    pub name: String,
    /// Kernel interface index.
    pub index: u32,
    /// Its addresses, the primary one of each family first.
    pub addrs: Vec<IpAddr>,
}

/// An interface holding an IPv4 unicast default route in some routing table: one of a
/// VPC-native node's uplinks (the primary in `main`, each ENI in its own table). The agent
/// learns them over netlink; the eBPF datapath steers from every one but the egress interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uplink {
    /// Interface name, e.g. `eth1`.
    pub name: String,
    /// The tables whose default route leaves through it, ascending (254 is `main`).
    pub tables: Vec<u32>,
}

#[cfg(test)]
impl Uplink {
    /// `eth1` with its default route in table 2: the ENI of a VPC-native node, which turns
    /// egress routing on ([`NodeSettings::active_egress_routing`]).
    pub(crate) fn eni() -> Uplink {
        Uplink {
            name: "eth1".into(),
            tables: vec![2],
        }
    }
}

/// What the node contributes to the desired state: flags and netlink facts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSettings {
    /// `--pod-cidr`: when non-empty, only sources inside these are masqueraded.
    pub pod_cidrs: Vec<IpNet>,
    /// `--snat-ip`, in the order given, all of one family: the SNAT pool of that family
    /// instead of the egress interface's primary address (see [`pool`] for which address a pod
    /// gets). Empty: the pool is the interface's primary address, or with
    /// `snat_ips_from_interface` its global addresses.
    pub snat_ips: Vec<IpAddr>,
    /// `--snat-ips-from-interface`: the pool of each family is every global address of the
    /// egress interface, as netlink reports them (kept current by the agent).
    pub snat_ips_from_interface: bool,
    /// `--port-range`: the operator's port list, disjoint; empty means the default (every
    /// unprivileged port less `nodeport_range`). See [`NodeSettings::source_port_ranges`].
    pub port_ranges: Vec<PortRange>,
    /// `--nodeport-range`: never handed out unless `port_ranges` lists it.
    pub nodeport_range: PortRange,
    /// Ports the node receives on (its listening sockets and the hostPorts), kept current by the
    /// agent: never handed out as translated source ports. Only those inside
    /// [`NodeSettings::base_port_ranges`] matter.
    pub reserved_ports: BTreeSet<u16>,
    /// `--native-routing-cidr`: one more non-masquerade destination no config can remove.
    pub native_routing_cidr: Option<IpNet>,
    /// `--enable-ipv6`: masquerade IPv6 too.
    pub enable_ipv6: bool,
    /// The egress interfaces the datapath attaches to (from `--interfaces` or the default routes).
    pub interfaces: Vec<Interface>,
    /// Every address of the node, from netlink and kept current: without `--pod-cidr` these
    /// are the sources that are not pods, and local destinations are kept.
    pub local_addrs: Vec<IpAddr>,
    /// The interfaces with a default route in any table, from netlink and kept current.
    pub uplinks: Vec<Uplink>,
    /// The eBPF datapath's flow table: its size and per-state lifetimes.
    pub nat: ebpf::NatSettings,
    /// `--egress-interface`: masqueraded traffic always leaves through this one. `None`: the
    /// first of `interfaces` (the interface of the main table's default route).
    pub egress_interface: Option<String>,
    /// How masqueraded traffic is steered to the egress interface (`None`: `--egress-mark 0`,
    /// the pod's own routing decides).
    pub egress_routing: Option<EgressRouting>,
    /// `--masq-chain`: the iptables chain name.
    pub iptables_chain: String,
}

impl Default for NodeSettings {
    fn default() -> Self {
        NodeSettings {
            pod_cidrs: Vec::new(),
            snat_ips: Vec::new(),
            snat_ips_from_interface: false,
            port_ranges: Vec::new(),
            nodeport_range: ports::DEFAULT_NODEPORT_RANGE,
            reserved_ports: BTreeSet::new(),
            native_routing_cidr: None,
            enable_ipv6: false,
            interfaces: Vec::new(),
            local_addrs: Vec::new(),
            uplinks: Vec::new(),
            nat: ebpf::NatSettings::default(),
            egress_interface: None,
            egress_routing: Some(EgressRouting::default()),
            iptables_chain: names::IPT_CHAIN.to_string(),
        }
    }
}

impl NodeSettings {
    /// The interface masqueraded traffic leaves through: `--egress-interface`, else the
    /// interface of the main table's default route. `None` when neither is known (`masq render`
    /// without `--egress-interface`).
    pub fn egress_interface(&self) -> Option<&str> {
        self.egress_interface
            .as_deref()
            .or_else(|| self.interfaces.first().map(|i| i.name.as_str()))
    }

    /// The families a datapath installs rules for: IPv4, and IPv6 with `--enable-ipv6`.
    pub fn families(&self) -> &'static [Family] {
        if self.enable_ipv6 {
            &Family::ALL
        } else {
            &[Family::V4]
        }
    }

    /// What the decision needs of the node: the pod CIDRs, the native-routing CIDR, and its
    /// own addresses (every address netlink lists, the egress interfaces' for callers that
    /// know only those, and `--snat-ip`, which traffic can be addressed to once it is
    /// translated).
    pub fn decision_context(&self) -> NodeContext {
        let mut seen = BTreeSet::new();
        let interfaces = self.interfaces.iter().flat_map(|i| i.addrs.iter());
        let local_addrs = interfaces
            .chain(&self.local_addrs)
            .chain(&self.snat_ips)
            .filter(|ip| seen.insert(**ip))
            .copied()
            .collect();
        NodeContext {
            pod_cidrs: self.pod_cidrs.clone(),
            local_addrs,
            native_routing_cidr: self.native_routing_cidr,
        }
    }

    /// The SNAT pool of `family`, in order: `--snat-ip` (when it is of this family), else with
    /// `--snat-ips-from-interface` the egress interface's global addresses of this family
    /// (primary first; at most [`pool::MAX_ADDRESSES`]). Empty: translate to the egress
    /// interface's primary address (`masquerade`).
    pub fn snat_pool(&self, family: Family) -> Vec<IpAddr> {
        if !self.snat_ips.is_empty() {
            return self
                .snat_ips
                .iter()
                .copied()
                .filter(|ip| family.holds_addr(ip))
                .collect();
        }
        if !self.snat_ips_from_interface {
            return Vec::new();
        }
        let Some(name) = self.egress_interface() else {
            return Vec::new();
        };
        self.interfaces
            .iter()
            .filter(|iface| iface.name == name)
            .flat_map(|iface| iface.addrs.iter().copied())
            .filter(|ip| family.holds_addr(ip) && pool::is_global(ip))
            .take(pool::MAX_ADDRESSES)
            .collect()
    }

    /// The SNAT pool of `family` that the `kind` datapath installs: [`Self::snat_pool`], except
    /// that iptables gives IPv6 pods the first address only. Its `cluster` match, which picks a
    /// pod's address, hashes only the first 32 bits of an IPv6 source (`xt_cluster_hash_ipv6`
    /// passes `NF_CT_TUPLE_L3SIZE / sizeof(__u32)`, one word, to `jhash2`), so every pod of a
    /// pod CIDR would land on one address anyway, and not the one [`pool::address_for`] names.
    pub fn snat_pool_on(&self, kind: Kind, family: Family) -> Vec<IpAddr> {
        let mut pool = self.snat_pool(family);
        if kind == Kind::Iptables && family == Family::V6 {
            pool.truncate(1);
        }
        pool
    }

    /// The ranges ports come from before the reserved ports are left out: `--port-range`, else
    /// every unprivileged port less the NodePort range.
    pub fn base_port_ranges(&self) -> Vec<PortRange> {
        if self.port_ranges.is_empty() {
            ports::default_ranges(self.nodeport_range)
        } else {
            ports::subtract(&self.port_ranges, &BTreeSet::new())
        }
    }

    /// The source port ranges every datapath hands out: [`NodeSettings::base_port_ranges`]
    /// less `reserved_ports`, sorted and disjoint. When every port of the base ranges is
    /// reserved, the base ranges themselves (the agent warns: a translation with no port
    /// would fail every flow).
    pub fn source_port_ranges(&self) -> Vec<PortRange> {
        let base = self.base_port_ranges();
        let free = ports::subtract(&base, &self.reserved_ports);
        if free.is_empty() {
            base
        } else {
            free
        }
    }

    /// The egress routing to install: enabled, an egress interface known, and a secondary
    /// uplink (an interface other than the egress interface with a default route in some
    /// table: a VPC-native node's ENIs, docs/vpc-native.md). Where every default route leaves
    /// through the egress interface, masqueraded traffic leaves there anyway, and the marks
    /// would only cost (nftables: about 750 ns per new flow, bench/README.md).
    pub fn active_egress_routing(&self) -> Option<&EgressRouting> {
        let egress = self.egress_interface()?;
        let secondary = self.uplinks.iter().any(|uplink| uplink.name != egress);
        self.egress_routing.as_ref().filter(|_| secondary)
    }
}

/// Policy routing for masqueraded traffic (nodes with several interfaces, docs/vpc-native.md).
///
/// The first packet of a connection masq will masquerade gets `mark` in its packet and
/// conntrack marks before the routing decision; later packets and replies get it back from
/// conntrack. A masq-owned `ip rule fwmark MARK/MARK lookup TABLE priority PRIORITY` sends
/// marked packets through `table` (the main table by default, whose default route is the egress
/// interface) instead of the pod's own policy route, so they leave through the egress interface
/// and are translated to its address. See `docs/vpc-native.md`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EgressRouting {
    /// The mark bits (also the mask: only these bits are set or tested).
    pub mark: u32,
    /// The `ip rule` priority; must be lower than the CNI's per-pod `from <pod>` rules.
    pub rule_priority: u32,
    /// The routing table marked packets look up (254 is `main`).
    pub table: u32,
}

impl EgressRouting {
    /// Bit 12: no collision with kube-proxy (0xc000), the CNI portmap plugin (0x2000), the AWS
    /// VPC CNI (0x80), Calico (0xffff0000), Weave (0x60000) or Tailscale (0xc0000). Cilium uses
    /// nearly every bit, this one included; see `docs/vpc-native.md`.
    pub const DEFAULT_MARK: u32 = 0x1000;
    /// Before the AWS VPC CNI's `from <pod> lookup <ENI table>` rules (1536) and after the
    /// `local` table (0).
    pub const DEFAULT_RULE_PRIORITY: u32 = 1000;
    /// The main routing table.
    pub const MAIN_TABLE: u32 = 254;
}

impl Default for EgressRouting {
    fn default() -> Self {
        EgressRouting {
            mark: EgressRouting::DEFAULT_MARK,
            rule_priority: EgressRouting::DEFAULT_RULE_PRIORITY,
            table: EgressRouting::MAIN_TABLE,
        }
    }
}

/// Everything a datapath needs to know to install the rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    /// The validated config file.
    pub config: Config,
    /// What the node adds.
    pub node: NodeSettings,
}

impl Desired {
    /// The decision every datapath renders: the config and the node compiled once.
    pub fn policy(&self) -> CompiledPolicy {
        CompiledPolicy::compile(&self.config, &self.node.decision_context())
    }
}

/// What one `sync` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Something was written to the kernel.
    pub changed: bool,
    /// What was installed differed from what masq last wrote (someone else changed it).
    pub drift_repaired: bool,
    /// Rules, set elements or map entries now installed (a gauge for metrics and status).
    pub installed_entries: usize,
}

/// A datapath failure, naming what failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A helper program (`nft`, `iptables-restore`, …) failed.
    #[error("{program} failed: {message}")]
    Command {
        /// The program run.
        program: String,
        /// Its error output, trimmed to one line where possible.
        message: String,
    },
    /// A kernel call failed.
    #[error("{what}: {source}")]
    Kernel {
        /// What was being done.
        what: String,
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
    },
    /// The datapath cannot run here (missing binary, kernel feature, …).
    #[error("{0}")]
    Unsupported(String),
}

/// One kernel backend. Implementations never touch objects they do not own.
pub trait Datapath: Send {
    /// Which backend this is.
    fn kind(&self) -> Kind;
    /// The exact ruleset `sync` would install for `desired`, as text for `masq render`.
    fn render(&self, desired: &Desired) -> String;
    /// Make the kernel match `desired`: adopt what is there, change only what differs, atomically.
    fn sync(&mut self, desired: &Desired) -> Result<SyncReport, Error>;
    /// Does the kernel match `desired` right now? The agent asks after every sync: `/readyz`
    /// and `masq status` say ready only while the answer is yes.
    fn matches(&self, desired: &Desired) -> Result<bool, Error>;
    /// Remove everything this backend owns. Works without a config; absent objects are success.
    fn cleanup(&mut self) -> Result<(), Error>;
    /// Periodic upkeep between syncs (the eBPF NAT table's garbage collection), every few
    /// seconds. Returns a one-line summary when it did something worth logging.
    fn housekeeping(&mut self) -> Result<Option<String>, Error> {
        Ok(None)
    }
    /// A cheap check, every few seconds, that what the last sync installed is still in place
    /// (eBPF: the programs on their interfaces; nftables: the table's chains, rule counts and
    /// sets; iptables: the POSTROUTING jump). `false` makes the agent resync at once rather
    /// than at the next `resyncInterval`. Only what costs no full read of large state: the CIDR
    /// sets are still compared at each resync.
    fn intact(&self) -> Result<bool, Error> {
        Ok(true)
    }
    /// What an operator should know that this backend found but does not own (e.g. a chain left
    /// behind by another agent), one sentence each, for `masq status`. Read-only.
    fn findings(&self, desired: &Desired) -> Vec<String> {
        let _ = desired;
        Vec::new()
    }
    /// Every program on the kernel hooks this backend's own programs are on, in the order the
    /// kernel runs them, masq's marked (eBPF: the tc hooks), for `masq status`. Read-only.
    fn hook_order(&self) -> Vec<ebpf::HookOrder> {
        Vec::new()
    }
}

/// A boxed datapath is one too: the agent chooses its backend at run time and wraps it
/// ([`egress::Routed`]).
impl<T: Datapath + ?Sized> Datapath for Box<T> {
    fn kind(&self) -> Kind {
        (**self).kind()
    }
    fn render(&self, desired: &Desired) -> String {
        (**self).render(desired)
    }
    fn sync(&mut self, desired: &Desired) -> Result<SyncReport, Error> {
        (**self).sync(desired)
    }
    fn matches(&self, desired: &Desired) -> Result<bool, Error> {
        (**self).matches(desired)
    }
    fn cleanup(&mut self) -> Result<(), Error> {
        (**self).cleanup()
    }
    fn housekeeping(&mut self) -> Result<Option<String>, Error> {
        (**self).housekeeping()
    }
    fn intact(&self) -> Result<bool, Error> {
        (**self).intact()
    }
    fn findings(&self, desired: &Desired) -> Vec<String> {
        (**self).findings(desired)
    }
    fn hook_order(&self) -> Vec<ebpf::HookOrder> {
        (**self).hook_order()
    }
}
