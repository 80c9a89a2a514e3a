//! The NAT table's garbage collector, the only thing that deletes entries (the maps are plain
//! hashes, never evicted by the kernel): per-state lifetimes in the manner of conntrack, and
//! the repair of a pair that lost one half.
//!
//! | state | default | flag |
//! |---|---|---|
//! | TCP, no reply seen | 60 s | `--nat-timeout-tcp-syn` |
//! | TCP, established | 6 h | `--nat-timeout-tcp-established` |
//! | TCP, FIN or RST seen | 10 s | `--nat-timeout-tcp-closing` |
//! | UDP, no reply seen | 30 s | `--nat-timeout-udp` |
//! | UDP, replied | 120 s | `--nat-timeout-udp-replied` |
//! | ICMP echo | 30 s | `--nat-timeout-icmp` |
//!
//! A flow expires when it has been idle longer than its state allows; the idle time of a pair
//! is that of its most recently used half, and its state combines both halves' flags. Both
//! families' tables are collected in each pass, by the same code ([`super::family`]).
//!
//! [`schedule`] decides when a pass runs; [`states`] has the states and kinds, [`report`] what
//! a pass tells.

pub mod report;
pub mod schedule;
pub mod states;

use std::time::{Duration, Instant};

use super::clock::KernelClock;
use super::family::{NatKey, NatValue};
use super::maps::Maps;
use super::types::{NatEntry, NatTuple, NatTuple6, NAT_F_HOST};
use super::{batch, kernel_err};
use crate::Error;
pub use report::{GcReport, GcTotals};
pub use states::{FlowKind, FlowState, NatTimeouts};

/// `BPF_NOEXIST`: a repair never overwrites what a program wrote meanwhile.
const BPF_NOEXIST: u64 = 1;

/// A reverse half younger than this may be waiting for its forward half: the programs insert
/// the reverse half (the port claim) first.
const FORWARD_GRACE: Duration = Duration::from_secs(5);

/// The reverse key of an IPv4 forward half.
pub fn reverse_of(fwd: &NatTuple, entry: &NatEntry) -> NatTuple {
    fwd.reverse_of(entry)
}

/// The forward key of an IPv4 reverse half.
pub fn forward_of(rev: &NatTuple, entry: &NatEntry) -> NatTuple {
    rev.forward_of(entry)
}

/// One GC pass at `now`, in jiffies (`clock.now()` in production), over both families.
pub fn gc(
    maps: &mut Maps,
    clock: &KernelClock,
    now: u64,
    timeouts: &NatTimeouts,
) -> Result<GcReport, Error> {
    let started = Instant::now();
    let mut report = GcReport::default();
    gc_family::<NatTuple>(maps, clock, now, timeouts, &mut report)?;
    gc_family::<NatTuple6>(maps, clock, now, timeouts, &mut report)?;
    // Ports came back: an address found full may have room again.
    if report.ports_freed() > 0 {
        maps.forget_full_addresses()?;
    }
    report.duration = started.elapsed();
    Ok(report)
}

/// A hash map for the GC's joins over the whole table: foldhash, not std's SipHash (the keys
/// come from the kernel, not from an attacker who could choose collisions cheaply: a flood's
/// tuples land in the kernel's own jhash table first).
type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// What one family's pass removes: reverse halves first (a port is free only once nothing
/// translates to it), in one batch each.
struct Removals<K> {
    reverse: Vec<K>,
    forward: Vec<K>,
}

/// One family's part of a pass.
fn gc_family<K: NatKey>(
    maps: &mut Maps,
    clock: &KernelClock,
    now: u64,
    timeouts: &NatTimeouts,
    report: &mut GcReport,
) -> Result<(), Error> {
    let idle = |since: u64| clock.between(since, now);
    let forward = K::forward_entries(maps)?;
    let reverse: FastMap<K, K::Entry> = K::reverse_entries(maps)?.into_iter().collect();
    let forward_keys: FastSet<K> = forward.iter().map(|(key, _)| *key).collect();
    let mut paired: FastSet<K> = FastSet::default();
    let mut gone = Removals {
        reverse: Vec::new(),
        forward: Vec::new(),
    };
    let mut flows = FlowCounts::default();

    for (fkey, fval) in &forward {
        let kind = FlowKind::of_forward(fval.flags());
        if kind != FlowKind::Translated {
            let state = FlowState::of(fkey.proto(), fval.flags());
            if idle(fval.last_seen()) > state.timeout(timeouts) {
                gone.forward.push(*fkey);
                report.expired_passes += 1;
            } else {
                flows.add(kind, state);
            }
            continue;
        }
        let rkey = fkey.reverse_of(fval);
        match reverse.get(&rkey) {
            // A reverse half of this reply tuple that points back at this flow is its partner.
            Some(rval) if rval.flags() & NAT_F_HOST == 0 && K::points_back_to(rval, fkey) => {
                paired.insert(rkey);
                let state = FlowState::of(fkey.proto(), fval.flags() | rval.flags());
                if idle(fval.last_seen().max(rval.last_seen())) > state.timeout(timeouts) {
                    gone.reverse.push(rkey);
                    gone.forward.push(*fkey);
                    report.expired_pairs += 1;
                } else {
                    flows.add(kind, state);
                }
            }
            // The port went to another flow (or the node): this flow cannot keep it. Its next
            // packet gets a new mapping; it never leaves untranslated.
            Some(_) => {
                gone.forward.push(*fkey);
                report.superseded += 1;
            }
            None => {
                let state = FlowState::of(fkey.proto(), fval.flags());
                if idle(fval.last_seen()) > state.timeout(timeouts) {
                    gone.forward.push(*fkey);
                    report.expired_pairs += 1;
                } else if K::reverse_map(maps)
                    .insert(rkey, fkey.partner_entry(fval, true), BPF_NOEXIST)
                    .is_ok()
                {
                    report.restored_reverse += 1;
                    flows.add(kind, state);
                }
            }
        }
    }

    for (rkey, rval) in &reverse {
        if paired.contains(rkey) {
            continue;
        }
        let state = FlowState::of(rkey.proto(), rval.flags());
        let expired = idle(rval.last_seen()) > state.timeout(timeouts);
        if rval.flags() & NAT_F_HOST != 0 {
            if expired {
                gone.reverse.push(*rkey);
                report.host_reservations += 1;
            } else {
                flows.add(FlowKind::Host, state);
            }
            continue;
        }
        let fkey = rkey.forward_of(rval);
        if forward_keys.contains(&fkey) {
            // The pod's tuple is another flow's now (kept, or translated to another port).
            gone.reverse.push(*rkey);
            report.superseded += 1;
        } else if expired {
            gone.reverse.push(*rkey);
            report.expired_pairs += 1;
        } else if idle(rval.created()) < FORWARD_GRACE {
            flows.add(FlowKind::Translated, state);
        } else {
            if K::forward_map(maps)
                .insert(fkey, rkey.partner_entry(rval, false), BPF_NOEXIST)
                .is_ok()
            {
                report.restored_forward += 1;
            }
            flows.add(FlowKind::Translated, state);
        }
    }
    // Reverse halves first, then forward halves: two batches, not a system call per entry.
    batch::delete_all(K::reverse_fd(maps), &gone.reverse)
        .map_err(kernel_err("removing expired reverse NAT halves"))?;
    batch::delete_all(K::forward_fd(maps), &gone.forward)
        .map_err(kernel_err("removing expired forward NAT halves"))?;
    flows.into_report(report);
    Ok(())
}

/// Live flows by kind and state, counted in an array (a map lookup per flow was a measurable
/// part of a pass over a full table).
#[derive(Default)]
struct FlowCounts([[usize; FlowState::COUNT]; FlowKind::COUNT]);

impl FlowCounts {
    fn add(&mut self, kind: FlowKind, state: FlowState) {
        self.0[kind as usize][state as usize] += 1;
    }

    fn into_report(self, report: &mut GcReport) {
        for kind in FlowKind::ALL {
            for state in FlowState::ALL {
                let n = self.0[kind as usize][state as usize];
                if n > 0 {
                    *report.flows.entry((kind, state)).or_default() += n;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ebpf::types::{NAT_F_REPLIED, PROTO_TCP};

    #[test]
    fn a_partner_is_the_mirror_of_its_half() {
        let fwd = NatTuple::new(
            PROTO_TCP,
            [10, 0, 0, 5].into(),
            1000,
            [192, 0, 2, 1].into(),
            80,
        );
        let entry = NatEntry {
            to_addr: [172, 18, 0, 2],
            to_port: 40000u16.to_be_bytes(),
            flags: NAT_F_REPLIED,
            pad: 0,
            created: 7,
            last_seen: 9,
        };
        let rev = reverse_of(&fwd, &entry);
        let back = fwd.partner_entry(&entry, true);
        assert_eq!(forward_of(&rev, &back), fwd);
        assert_eq!(
            (back.flags, back.created, back.last_seen),
            (NAT_F_REPLIED, 7, 9)
        );
    }
}
