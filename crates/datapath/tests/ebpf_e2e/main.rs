//! The eBPF datapath attached for real, in a pod / node / external topology of network
//! namespaces: ping, TCP and UDP from the pod to a TEST-NET host leave with the node's address
//! and the replies reach the pod; a kept destination sees the pod; an agent restart adopts the
//! pinned maps and links without breaking a live connection; cleanup removes everything.
//!
//! ```text
//! pod  (10.244.1.5) ── vpod  10.244.1.1 ┐
//!                                        node (eth0 172.18.0.2) ── external (172.18.0.1,
//! pod2 (10.244.2.6) ── vpod2 10.244.2.1 ┘                           203.0.113.10, 10.9.9.9)
//! ```
//! The external side has no route to 10.244/16: a reply reaches the pod only through reverse
//! SNAT, and the servers report the peer address they saw. Traffic to a kept destination cannot
//! be answered, so it is checked one way (UDP) by the address the server sees.
//!
//! Every test runs in its own namespaces and on a private bpffs (`topology::with_private_bpffs`).

mod basics;
mod beside_cni;
mod carry;
mod gc;
mod lifecycle;
mod load;
mod topology;
mod traffic;
