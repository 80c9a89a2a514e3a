//! The node agent (`masq agent`): watches the config directory, learns the node from netlink,
//! reconciles the datapath, and serves `/metrics`, `/healthz`, `/readyz` and `/status`.
//!
//! One task owns the state ([`reconcile`]): file events, netlink changes and the resync timer
//! all arrive there as triggers, so a sync never races another. An invalid config never reaches
//! the datapath: the last good config stays installed.
#![deny(missing_docs)]

pub mod admin;
pub mod memory;
pub mod metrics;
pub mod node;
pub mod reconcile;
pub mod reserved;
pub mod select;
pub mod signals;
pub mod snat_status;
pub mod status;
pub mod watch;

pub use reconcile::{run, AgentSettings, InvalidFlags};
