//! The eBPF programs run on crafted packets through `BPF_PROG_TEST_RUN`, on a private unpinned
//! instance (no attach, no namespace): every protocol and edge case, checksums recomputed
//! independently with etherparse, and a randomized run against a userspace model of the NAT.

mod cases;
mod direction;
mod harness;
mod lifecycle;
mod model;
mod ports;
mod steer;
