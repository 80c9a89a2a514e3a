//! The eBPF programs run on crafted packets through `BPF_PROG_TEST_RUN`, on a private unpinned
//! instance (no attach, no namespace): every protocol and edge case, checksums recomputed
//! independently with etherparse, and a randomized run against a userspace model of the NAT;
//! IPv4 and IPv6 (the `*6` modules).

mod cases;
mod cases6;
mod direction;
mod ext6;
mod flows6;
mod harness;
mod harness6;
mod icmp6;
mod lifecycle;
mod model;
mod model6;
mod policy;
mod pools;
mod pools6;
mod ports;
mod steer;
