//! Throwaway network-namespace topologies (pod, node, external) for end-to-end tests, `masq demo`
//! and benchmarks. Every namespace has a unique name and is removed on drop, also on failure;
//! nothing here ever touches the root namespace.
#![deny(missing_docs)]

pub mod agent;
pub mod configmap;
pub mod netns;
pub mod probe;
pub mod topology;

pub use agent::AgentProcess;
pub use configmap::ConfigMapDir;
pub use netns::{veth, Netns};
pub use probe::{Probes, Sources};
pub use topology::{addr, addr6, Topology, TopologyBuilder};

/// Why kernel tests cannot run here, if they cannot: they need root (to create namespaces) and
/// the given programs (besides `ip`). Tests print the reason and return early.
pub fn skip_reason(programs: &[&str]) -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root to create network namespaces".into());
    }
    for program in std::iter::once(&"ip").chain(programs) {
        if std::process::Command::new(program)
            .arg("-V")
            .output()
            .is_err()
        {
            return Some(format!("needs the {program} program"));
        }
    }
    None
}
