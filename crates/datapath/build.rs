//! Compiles the tc programs in `bpf/` with clang so the crate can embed the object.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Entry programs, relative to `bpf/`: (source, object name in `$OUT_DIR`, extra clang flags).
/// Each is its own object: the agent embeds `masq.bpf.o`, `masq_bounded.bpf.o` and
/// `clock.bpf.o` only; `bench_new_flows` serves the benchmark and `tests/cni_like` the kernel
/// tests (the `test-programs` feature).
const OBJECTS: &[(&str, &str, &[&str])] = &[
    ("masq.bpf.c", "masq.bpf.o", &[]),
    // For kernels without bpf_loop (before 5.17): a bounded port search (bpf/lib/nat.h).
    (
        "masq.bpf.c",
        "masq_bounded.bpf.o",
        &["-DMASQ_PORT_SEARCH_BOUNDED"],
    ),
    ("clock.bpf.c", "clock.bpf.o", &[]),
    ("bench_new_flows.bpf.c", "bench_new_flows.bpf.o", &[]),
    ("tests/cni_like.bpf.c", "cni_like.bpf.o", &[]),
];

fn main() {
    // Root-only tests are listed as ignored in builds without root (see crates/needs).
    masq_needs::emit_build_cfg();
    let bpf_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bpf");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let include = format!("-I/usr/include/{}", multiarch());

    rerun_for_dir(&bpf_dir);
    for (source, object, flags) in OBJECTS {
        let output = out_dir.join(object);
        let status = Command::new("clang")
            .args([
                "-O2", "-g", "-target", "bpf", "-mcpu=v3", "-Wall", "-Werror",
            ])
            .args(*flags)
            .arg(&include)
            .arg("-c")
            .arg(bpf_dir.join(source))
            .arg("-o")
            .arg(&output)
            .status()
            .expect("running clang (install clang 14 and libbpf-dev)");
        assert!(status.success(), "clang failed on bpf/{source} ({object})");
    }
}

/// The Debian multiarch include directory holding `asm/types.h`, which `-target bpf` does not
/// find on its own.
fn multiarch() -> String {
    Command::new("dpkg-architecture")
        .arg("-qDEB_HOST_MULTIARCH")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|arch| !arch.is_empty())
        .unwrap_or_else(|| "x86_64-linux-gnu".to_string())
}

/// Every source and header under `dir`, recursively.
fn rerun_for_dir(dir: &Path) {
    println!("cargo:rerun-if-changed={}", dir.display());
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rerun_for_dir(&path);
        } else if path.extension().is_some_and(|ext| ext == "c" || ext == "h") {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
