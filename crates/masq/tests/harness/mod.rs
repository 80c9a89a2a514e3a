//! The end-to-end harness: a [`Bed`] per test (topology, ConfigMap volume, probes and the
//! real `masq agent` in the node namespace), what a datapath installed ([`Installed`]), and
//! [`run`], which wraps every scenario in two read-only checks of the root namespace.
//! Shared by the end-to-end test files; a new datapath is a new [`Datapath`] variant.
//!
//! One file per concern; what the scenarios use is re-exported here (`use crate::harness::*;`):
//! - `datapath.rs`: [`Datapath`] and the [`Damage`]s done behind the agent's back;
//! - `installed.rs`: [`Installed`], what masq owns in a namespace (and `is_nft_rule`);
//! - `bed.rs`: [`Bed`], one test's world and the agent in it;
//! - `polling.rs`: waiting for a source or a check, probing while something happens;
//! - `metrics.rs`: reading `/metrics`;
//! - `commands.rs`: running a program in a namespace;
//! - `root_namespace.rs`: [`run`] and the root namespace's checks (`masq_in_root_namespace`);
//! - `ebpf.rs`: what the eBPF datapath installed, and damaging it.

mod bed;
mod commands;
mod datapath;
mod ebpf;
mod installed;
mod metrics;
mod polling;
mod root_namespace;

pub use bed::Bed;
pub use commands::{run_ok, run_ok_stdout};
pub use datapath::{Damage, Datapath};
pub use ebpf::{attach_cni, both_hooks};
pub use installed::Installed;
pub use metrics::{metric, metric_series, metric_with};
pub use polling::{eventually, probing_while, wait_for_source};
pub use root_namespace::run;

pub const MASQ: &str = env!("CARGO_BIN_EXE_masq");
