//! Throwaway network-namespace topologies (pod, node, external) for end-to-end tests, `masq demo`
//! and benchmarks. Every namespace has a unique name and is removed on drop, also on failure;
//! nothing here ever touches the root namespace.
//!
//! - [`Netns`]: one namespace; [`veth`] joins two.
//! - [`Topology`]: pod, pod2, node and external namespaces wired like a node in a cluster
//!   (addresses in [`addr`] and, optionally, [`addr6`]).
//! - [`VpcTopology`]: a VPC-native node whose pod IP lives on a secondary interface (pod,
//!   node, internet and VPC namespaces; addresses in [`vpc_addr`]).
//! - [`Probes`]: TCP, UDP and ICMP servers on the external hosts that report the source address
//!   they saw; [`probe`] has the single-protocol clients and a long-lived [`probe::TcpSession`].
//! - [`exchange`]: clients that also report who answered (flows that start outside a pod,
//!   flows sharing a source port), over UDP, TCP, ICMP echo and a raw IP protocol.
//! - [`kube`]: what kube-proxy (iptables and nftables modes) and the CNI portmap plugin write
//!   on a node, for Services and hostPorts of the standard topology.
//!
//! ```no_run
//! use masq_testbed::{addr, Probes, Topology};
//!
//! # fn main() -> anyhow::Result<()> {
//! let topology = Topology::new()?;
//! let probes = Probes::start(&topology.external, &topology.external_hosts(), 8080)?;
//! // … install a datapath inside topology.node (topology.node.enter(|| …)) …
//! let seen = probes.sources(&topology.pod, addr::INTERNET.into())?;
//! println!("203.0.113.10 saw {:?}", seen.agreed()); // Some(172.30.0.1) when masqueraded
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

pub mod agent;
pub mod bpffs;
pub mod configmap;
pub mod exchange;
pub mod kube;
pub mod leak;
pub mod link;
pub mod netns;
pub mod probe;
pub mod topology;
pub mod vpc;

pub use agent::AgentProcess;
pub use bpffs::PrivateBpffs;
pub use configmap::ConfigMapDir;
pub use leak::LeakWatch;
pub use netns::{veth, Netns};
pub use probe::{Probes, Sources};
pub use topology::{addr, addr6, Topology, TopologyBuilder};
pub use vpc::{vpc_addr, vpc_addr6, VpcTopology};

/// What a kernel test needs, checked in one place ([`masq_needs`]): [`require`] fails a test that
/// cannot run here, with the reason; [`unmet`] only says what is missing.
pub use masq_needs::{require, require_programs, unmet};
