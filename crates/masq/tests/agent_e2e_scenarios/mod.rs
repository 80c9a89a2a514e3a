//! The agent scenarios every datapath runs (`tests_for!` in agent_e2e.rs), one file per
//! concern, each scenario a `fn(Datapath) -> Result<()>` re-exported here:
//! - `decisions.rs`: which traffic is masqueraded and which keeps the pod's address;
//! - `config_changes.rs`: reloads, open connections across them, invalid files;
//! - `lifecycle.rs`: `kill -9`, SIGTERM and restarts, `masq cleanup`;
//! - `drift.rs`: damage, address and interface changes behind the agent's back.

mod config_changes;
mod decisions;
mod drift;
mod lifecycle;

pub use config_changes::*;
pub use decisions::*;
pub use drift::*;
pub use lifecycle::*;
