//! CPU pinning: clients on one CPU, servers and the agent on another, so that the two sides of a
//! measurement do not migrate and fight over the same CPU. With one CPU nothing is pinned.
//!
//! On a veth path the forwarding work (and the node's NAT) runs in softirq on the CPU of the
//! sending thread, so pinning the client also pins the request direction of the datapath, and
//! pinning the server pins the reply direction.

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;
use serde::Serialize;

/// Which CPU each role runs on; `None` when the process may use only one CPU.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Plan {
    /// Load generators (TCP/UDP clients, latency client, iperf3 client, flip probers).
    pub client: Option<usize>,
    /// Servers in the external namespace (and the iperf3 server).
    pub server: Option<usize>,
    /// The agent process, all its threads and the helpers it spawns.
    pub agent: Option<usize>,
}

impl Plan {
    /// The first two CPUs the process may use: clients on the first, servers and the agent on
    /// the second. `disabled` pins nothing.
    pub fn detect(disabled: bool) -> Plan {
        let allowed = sched_getaffinity(Pid::from_raw(0))
            .map(|set| {
                (0..CpuSet::count())
                    .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        match allowed.as_slice() {
            [first, second, ..] if !disabled => Plan {
                client: Some(*first),
                server: Some(*second),
                agent: Some(*second),
            },
            _ => Plan {
                client: None,
                server: None,
                agent: None,
            },
        }
    }

    /// A human-readable summary for the results file.
    pub fn describe(&self) -> String {
        match (self.client, self.server, self.agent) {
            (Some(c), Some(s), Some(a)) => format!(
                "clients (load threads, latency and iperf3 clients, probers) on CPU {c}; servers \
                 (external namespace, iperf3 server) on CPU {s}; the agent and its helpers on CPU {a} \
                 (sched_setaffinity on the spawning thread, inherited by the child)"
            ),
            _ => "not pinned (fewer than two CPUs available, or --no-pin)".to_string(),
        }
    }
}

/// Pins the calling thread to `cpu` (no-op for `None`). Children spawned afterwards from this
/// thread inherit the mask.
pub fn current_thread(cpu: Option<usize>) {
    let Some(cpu) = cpu else { return };
    let mut set = CpuSet::new();
    if set.set(cpu).is_ok() {
        // Best effort: an unpinned thread only adds noise.
        let _ = sched_setaffinity(Pid::from_raw(0), &set);
    }
}

/// The `taskset -c N` prefix for a spawned program, empty when not pinned.
pub fn taskset(cpu: Option<usize>) -> Vec<String> {
    cpu.map(|c| vec!["taskset".to_string(), "-c".to_string(), c.to_string()])
        .unwrap_or_default()
}
