//! The kernel context (`bpf_cast_to_kern_ctx`): found where the kernel offers it, and a kfunc
//! the verifier refuses falls back to the helpers.

use masq_datapath::ebpf::KernCtx;

use crate::harness::*;

/// A kernel with `bpf_cast_to_kern_ctx` (6.2+, with BTF) must be found to have it: otherwise
/// `ebpf_test_run` would quietly test the helper path twice.
#[test]
fn the_kernel_context_is_found_where_the_kernel_offers_it() {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut numbers = release
        .split(['.', '-'])
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let version = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    let offered = version >= (6, 2) && std::path::Path::new("/sys/kernel/btf/vmlinux").exists();
    match KernCtx::detect() {
        KernCtx::Kfunc(id) => assert!(id > 0),
        KernCtx::Absent => assert!(!offered, "kernel {release} has the kfunc, masq missed it"),
    }
}

/// A kfunc the verifier refuses (here: BTF id 1, which is no function) costs the helper path,
/// not the datapath: the programs load once more without it and translate as ever.
#[test]
#[cfg_attr(masq_unprivileged, ignore = "needs root")]
fn programs_refused_with_the_kfunc_load_with_the_helpers() {
    let h = Harness::fallback(&base_contents(), KernCtx::Kfunc(1));
    let (rc, out) = h.egress(&tcp(POD, 40000, EXTERNAL, 80, b"hello"));
    assert_eq!(rc, CONTINUE);
    assert_eq!(inspect(&out).src, NODE);
}
