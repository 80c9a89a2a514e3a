//! Keeping the agent's resident memory close to what it really holds.
//!
//! The agent's heap is small between syncs (under 1 MiB with an empty list), but a sync of a
//! large set, and the eBPF loader parsing the kernel's BTF once at start (~19 MiB for a moment),
//! briefly need much more. With glibc's defaults most of that stayed resident for good
//! (measured with `bench/examples/agent_memory.rs`: 10 MiB of freed memory kept after the eBPF
//! load alone): each thread gets its own arena, whose free top `malloc_trim` never returns, and
//! freeing a large block raises the thresholds that decide what goes back to the kernel.

/// Blocks at least this big get their own mapping, returned to the kernel when freed (glibc's
/// initial default, fixed here so it no longer grows with the largest block ever freed).
const MMAP_THRESHOLD: i32 = 128 * 1024;
/// Free memory at the top of a heap beyond this goes back to the kernel (also glibc's initial
/// default, fixed likewise).
const TRIM_THRESHOLD: i32 = 128 * 1024;

/// Tunes the allocator for a long-lived process with rare bursts: one arena for every thread
/// (the agent's threads seldom allocate at the same time) and fixed thresholds. Call it before
/// any thread is started: a thread keeps the arena it first allocated from.
pub fn limit_retention() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; no pointer is involved.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

/// Returns the free heap pages to the kernel. A sync of a large set briefly holds several
/// copies of it (the file, the parsed config, the desired and the installed state, the
/// kernel's listing); run this once the old copies are dropped too.
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; no pointer is involved.
    unsafe {
        libc::malloc_trim(0);
    }
}
