//! Kernel tests of the nftables datapath. Each test builds its own pod/node/external topology
//! (masq-testbed), installs the ruleset inside the node namespace and proves it with real TCP,
//! UDP and ICMP traffic: the external servers report the source address they saw. Needs root,
//! `nft` and `ping`; skips with a printed reason otherwise. The root namespace is only read.
//!
//! The bed and its checks (`bed`), who is masqueraded (`decisions`), how syncs write
//! (`changes`), drift, cleanup and the probe (`lifecycle`).

mod bed;
mod changes;
mod decisions;
mod lifecycle;
