//! One case per protocol and edge case, IPv4 (`cases6` has them for IPv6): translation itself
//! (`translate`), what is kept and for how long a decision holds (`decisions`), unusual IPv4
//! headers (`headers`) and fragments (`fragments`), ICMP errors (`icmp_errors`), the NAT table
//! and its GC (`table`), and the kernel context (`kern_ctx`).

mod decisions;
mod fragments;
mod headers;
mod icmp_errors;
mod kern_ctx;
mod table;
mod translate;

pub(crate) use fragments::fragment;
