//! The crafted-packet cases of `ebpf_test_run` once more, with the programs' kernel-context
//! calls stubbed out as on kernels before 6.2: the transport checksums then go through the
//! kernel helpers instead of the programs' own arithmetic (`harness::kern_ctx`).

#[path = "ebpf_test_run/cases/mod.rs"]
mod cases;
#[path = "ebpf_test_run/cases6.rs"]
mod cases6;
#[path = "ebpf_test_run/direction.rs"]
mod direction;
#[path = "ebpf_test_run/ext6.rs"]
mod ext6;
#[path = "ebpf_test_run/flows6.rs"]
mod flows6;
#[path = "ebpf_test_run/harness.rs"]
mod harness;
#[path = "ebpf_test_run/harness6.rs"]
mod harness6;
#[path = "ebpf_test_run/icmp6.rs"]
mod icmp6;
#[path = "ebpf_test_run/lifecycle.rs"]
mod lifecycle;
#[path = "ebpf_test_run/model.rs"]
mod model;
#[path = "ebpf_test_run/model6.rs"]
mod model6;
#[path = "ebpf_test_run/pools.rs"]
mod pools;
#[path = "ebpf_test_run/pools6.rs"]
mod pools6;
#[path = "ebpf_test_run/ports.rs"]
mod ports;
#[path = "ebpf_test_run/steer.rs"]
mod steer;
