//! Reads a whole hash map, and deletes many keys, in a few system calls with
//! `BPF_MAP_LOOKUP_BATCH` and `BPF_MAP_DELETE_BATCH` (Linux 5.6+).
//!
//! aya 0.14 iterates a map with two system calls per entry (next key, then lookup): for a NAT
//! table of 50,000 pairs one GC pass cost ~280 ms of CPU, every 5 seconds. The batch commands
//! copy or delete thousands of entries per call.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd};

use aya::Pod;

/// `BPF_MAP_LOOKUP_BATCH` in `enum bpf_cmd` (include/uapi/linux/bpf.h).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// `BPF_MAP_DELETE_BATCH` in `enum bpf_cmd`.
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;
/// Entries asked for per call; a hash bucket holding more makes the kernel ask for more room.
const FIRST_CHUNK: usize = 4096;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

impl BatchAttr {
    /// Runs the batch command `cmd` with these arguments; the kernel writes `count` (entries
    /// done) and `out_batch` back into them, also on error.
    ///
    /// # Safety
    /// Every pointer in `self` must point at live buffers of the sizes the command reads or
    /// writes: `count` keys and values of the map's sizes, and 8-byte position tokens.
    unsafe fn call(&mut self, cmd: libc::c_long) -> io::Result<()> {
        // SAFETY: the caller vouches for the pointers; `self` is a `bpf_attr` prefix of the
        // size passed.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                std::ptr::from_mut(self),
                size_of::<BatchAttr>(),
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

/// An all-zero `T`, to size the buffers the kernel fills.
fn zeroed<T: Pod>() -> T {
    // SAFETY: Pod types are plain data, valid for any bit pattern.
    unsafe { std::mem::zeroed() }
}

/// Every (key, value) of the hash map behind `fd`. Values must be the map's full value (not a
/// per-CPU map). Entries added or removed meanwhile may or may not be seen, as with iteration.
pub fn read_all<K: Pod, V: Pod>(fd: BorrowedFd<'_>) -> io::Result<Vec<(K, V)>> {
    let map_fd = u32::try_from(fd.as_raw_fd()).map_err(|_| io::Error::other("negative fd"))?;
    let mut out = Vec::new();
    let mut chunk = FIRST_CHUNK;
    let mut keys: Vec<K> = vec![zeroed(); chunk];
    let mut values: Vec<V> = vec![zeroed(); chunk];
    // The position token: a hash map's is a u32 bucket index (other map types use a key-sized
    // token; they are not read here).
    let (mut position, mut next) = (0u64, 0u64);
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { &raw const position as u64 },
            out_batch: &raw mut next as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: u32::try_from(chunk).expect("chunk fits u32"),
            map_fd,
            ..BatchAttr::default()
        };
        // SAFETY: attr points at buffers of `count` keys and values of the map's sizes (the
        // typed aya map checked them on open) and at two 8-byte tokens, all alive for the call.
        let err = unsafe { attr.call(BPF_MAP_LOOKUP_BATCH) }.err();
        let filled = usize::try_from(attr.count).unwrap_or(0).min(chunk);
        match err.as_ref().and_then(io::Error::raw_os_error) {
            None | Some(libc::ENOENT) => {
                out.extend(
                    keys[..filled]
                        .iter()
                        .copied()
                        .zip(values[..filled].iter().copied()),
                );
                if err.is_some() {
                    return Ok(out); // ENOENT: the last entries came with it
                }
                position = next;
                first = false;
            }
            // One bucket holds more entries than fit: ask again with more room.
            Some(libc::ENOSPC) if chunk < 1 << 20 => {
                chunk *= 2;
                keys.resize(chunk, zeroed());
                values.resize(chunk, zeroed());
            }
            Some(_) => return Err(err.expect("an error")),
        }
    }
}

/// Deletes `keys` from the hash map behind `fd`; a key that is gone already is skipped. Returns
/// how many were deleted.
pub fn delete_all<K: Pod>(fd: BorrowedFd<'_>, keys: &[K]) -> io::Result<usize> {
    let map_fd = u32::try_from(fd.as_raw_fd()).map_err(|_| io::Error::other("negative fd"))?;
    let (mut done, mut deleted) = (0, 0);
    while done < keys.len() {
        let rest = &keys[done..];
        let mut attr = BatchAttr {
            keys: rest.as_ptr() as u64,
            count: u32::try_from(rest.len().min(1 << 20)).expect("fits u32"),
            map_fd,
            ..BatchAttr::default()
        };
        // SAFETY: attr points at `count` keys of the map's key size, alive for the call; the
        // kernel only reads them.
        let result = unsafe { attr.call(BPF_MAP_DELETE_BATCH) };
        // The kernel stops at the first key it cannot delete and says how many it did.
        let processed = usize::try_from(attr.count).unwrap_or(0).min(rest.len());
        deleted += processed;
        done += processed;
        if let Err(err) = result {
            if err.raw_os_error() != Some(libc::ENOENT) {
                return Err(err);
            }
            done += 1; // gone already (a program's rollback): skip it
        } else if processed == 0 {
            break; // nothing done and no error: never spin
        }
    }
    Ok(deleted)
}
