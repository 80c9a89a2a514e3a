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

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::clock::KernelClock;
use super::family::{NatKey, NatValue};
use super::maps::Maps;
use super::types::{
    NatEntry, NatTuple, NatTuple6, NAT_F_CLOSING, NAT_F_HOST, NAT_F_INBOUND, NAT_F_PASS,
    NAT_F_REPLIED, PROTO_TCP, PROTO_UDP,
};
use super::{batch, kernel_err};
use crate::Error;

/// `BPF_NOEXIST`: a repair never overwrites what a program wrote meanwhile.
const BPF_NOEXIST: u64 = 1;

/// A reverse half younger than this may be waiting for its forward half: the programs insert
/// the reverse half (the port claim) first.
const FORWARD_GRACE: Duration = Duration::from_secs(5);

/// How long an idle flow is kept, by state (the module's table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatTimeouts {
    /// TCP without a reply seen (conntrack's SYN_SENT is 120 s, Cilium's SYN timeout 60 s).
    pub tcp_syn: Duration,
    /// TCP with replies seen.
    pub tcp_established: Duration,
    /// TCP after a FIN or RST.
    pub tcp_closing: Duration,
    /// UDP without a reply seen.
    pub udp: Duration,
    /// UDP with replies seen.
    pub udp_replied: Duration,
    /// ICMP echo.
    pub icmp: Duration,
}

impl Default for NatTimeouts {
    fn default() -> Self {
        NatTimeouts {
            tcp_syn: Duration::from_secs(60),
            tcp_established: Duration::from_secs(6 * 3600),
            tcp_closing: Duration::from_secs(10),
            udp: Duration::from_secs(30),
            udp_replied: Duration::from_secs(120),
            icmp: Duration::from_secs(30),
        }
    }
}

/// The state of a flow, from its protocol and its halves' flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FlowState {
    /// TCP, no reply seen.
    TcpSynSent,
    /// TCP, replied.
    TcpEstablished,
    /// TCP, FIN or RST seen.
    TcpClosing,
    /// UDP, no reply seen.
    UdpUnreplied,
    /// UDP, replied.
    UdpReplied,
    /// ICMP echo.
    Icmp,
}

impl FlowState {
    /// Every state.
    pub const ALL: [FlowState; 6] = [
        FlowState::TcpSynSent,
        FlowState::TcpEstablished,
        FlowState::TcpClosing,
        FlowState::UdpUnreplied,
        FlowState::UdpReplied,
        FlowState::Icmp,
    ];
    const COUNT: usize = FlowState::ALL.len();

    /// The state of a flow of `proto` whose halves carry `flags` (ORed).
    pub fn of(proto: u8, flags: u8) -> FlowState {
        let replied = flags & NAT_F_REPLIED != 0;
        match proto {
            PROTO_TCP if flags & NAT_F_CLOSING != 0 => FlowState::TcpClosing,
            PROTO_TCP if replied => FlowState::TcpEstablished,
            PROTO_TCP => FlowState::TcpSynSent,
            PROTO_UDP if replied => FlowState::UdpReplied,
            PROTO_UDP => FlowState::UdpUnreplied,
            _ => FlowState::Icmp,
        }
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            FlowState::TcpSynSent => "tcp-syn-sent",
            FlowState::TcpEstablished => "tcp-established",
            FlowState::TcpClosing => "tcp-closing",
            FlowState::UdpUnreplied => "udp-unreplied",
            FlowState::UdpReplied => "udp-replied",
            FlowState::Icmp => "icmp",
        }
    }

    /// How long a flow in this state may stay idle.
    pub fn timeout(self, t: &NatTimeouts) -> Duration {
        match self {
            FlowState::TcpSynSent => t.tcp_syn,
            FlowState::TcpEstablished => t.tcp_established,
            FlowState::TcpClosing => t.tcp_closing,
            FlowState::UdpUnreplied => t.udp,
            FlowState::UdpReplied => t.udp_replied,
            FlowState::Icmp => t.icmp,
        }
    }
}

/// What a flow-table entry is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FlowKind {
    /// A masqueraded flow (a pair of halves).
    Translated,
    /// A pod's flow to a kept destination, left untranslated.
    Kept,
    /// A flow that began outside, towards a pod, left untranslated.
    Inbound,
    /// A port of the node's own flow, reserved against pod translations.
    Host,
}

impl FlowKind {
    /// Every kind.
    pub const ALL: [FlowKind; 4] = [
        FlowKind::Translated,
        FlowKind::Kept,
        FlowKind::Inbound,
        FlowKind::Host,
    ];
    const COUNT: usize = FlowKind::ALL.len();

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            FlowKind::Translated => "translated",
            FlowKind::Kept => "kept",
            FlowKind::Inbound => "inbound",
            FlowKind::Host => "host",
        }
    }

    fn of_forward(flags: u8) -> FlowKind {
        match (flags & NAT_F_PASS != 0, flags & NAT_F_INBOUND != 0) {
            (false, _) => FlowKind::Translated,
            (true, false) => FlowKind::Kept,
            (true, true) => FlowKind::Inbound,
        }
    }
}

/// What one GC pass did and saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Expired pairs removed (both halves).
    pub expired_pairs: usize,
    /// Expired kept and inbound flows removed.
    pub expired_passes: usize,
    /// Expired host port reservations removed.
    pub host_reservations: usize,
    /// Reverse halves put back from their forward half.
    pub restored_reverse: usize,
    /// Forward halves put back from their reverse half.
    pub restored_forward: usize,
    /// Halves removed because their tuple belongs to another flow now.
    pub superseded: usize,
    /// Live flows after the pass, by kind and state.
    pub flows: BTreeMap<(FlowKind, FlowState), usize>,
    /// Time the pass took (reading both maps included).
    pub duration: Duration,
}

impl GcReport {
    /// Entries removed in this pass.
    pub fn removed(&self) -> usize {
        self.expired_pairs + self.expired_passes + self.host_reservations + self.superseded
    }

    /// Entries removed in this pass that held a port of a pool (kept and inbound records hold
    /// none).
    pub fn ports_freed(&self) -> usize {
        self.expired_pairs + self.host_reservations + self.superseded
    }

    /// Halves put back in this pass.
    pub fn restored(&self) -> usize {
        self.restored_reverse + self.restored_forward
    }

    /// One line for the agent's log.
    pub fn summary(&self) -> String {
        format!(
            "NAT table GC: {} expired pairs, {} expired kept or inbound flows, {} host \
             reservations and {} superseded halves removed; {} reverse and {} forward halves \
             restored ({} ms)",
            self.expired_pairs,
            self.expired_passes,
            self.host_reservations,
            self.superseded,
            self.restored_reverse,
            self.restored_forward,
            self.duration.as_millis()
        )
    }

    /// Entries in the fuller half after the pass, both families together: a translated flow
    /// has one in each half, a kept or inbound flow a forward one, a host reservation a
    /// reverse one.
    pub fn fuller_half(&self) -> usize {
        let (mut forward, mut reverse) = (0, 0);
        for ((kind, _), n) in &self.flows {
            match kind {
                FlowKind::Translated => {
                    forward += n;
                    reverse += n;
                }
                FlowKind::Kept | FlowKind::Inbound => forward += n,
                FlowKind::Host => reverse += n,
            }
        }
        forward.max(reverse)
    }
}

/// What the GC of this process has done since it started, for the metrics (the agent's
/// collector reads it; a `masq` command that ran no GC reads zeros).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcTotals {
    /// Passes run.
    pub passes: u64,
    /// Housekeeping ticks that ran no pass, to keep the GC within its CPU budget.
    pub deferred: u64,
    /// Entries removed because they expired.
    pub expired: u64,
    /// Halves removed because their tuple belongs to another flow.
    pub superseded: u64,
    /// Reverse halves put back.
    pub restored_reverse: u64,
    /// Forward halves put back.
    pub restored_forward: u64,
    /// The last pass.
    pub last: Option<GcReport>,
}

static TOTALS: std::sync::Mutex<GcTotals> = std::sync::Mutex::new(GcTotals {
    passes: 0,
    deferred: 0,
    expired: 0,
    superseded: 0,
    restored_reverse: 0,
    restored_forward: 0,
    last: None,
});

impl GcTotals {
    /// The totals so far.
    pub fn get() -> GcTotals {
        TOTALS.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// Adds one tick without a pass.
    pub fn defer() {
        if let Ok(mut t) = TOTALS.lock() {
            t.deferred += 1;
        }
    }

    /// Adds one pass.
    pub fn add(report: &GcReport) {
        if let Ok(mut t) = TOTALS.lock() {
            t.passes += 1;
            t.expired +=
                (report.expired_pairs + report.expired_passes + report.host_reservations) as u64;
            t.superseded += report.superseded as u64;
            t.restored_reverse += report.restored_reverse as u64;
            t.restored_forward += report.restored_forward as u64;
            t.last = Some(report.clone());
        }
    }
}

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
    use crate::ebpf::types::PROTO_ICMP;

    #[test]
    fn states_follow_the_flags() {
        let t = NatTimeouts::default();
        let cases = [
            (PROTO_TCP, 0, FlowState::TcpSynSent, 60),
            (
                PROTO_TCP,
                NAT_F_REPLIED,
                FlowState::TcpEstablished,
                6 * 3600,
            ),
            (
                PROTO_TCP,
                NAT_F_REPLIED | NAT_F_CLOSING,
                FlowState::TcpClosing,
                10,
            ),
            (PROTO_UDP, 0, FlowState::UdpUnreplied, 30),
            (PROTO_UDP, NAT_F_REPLIED, FlowState::UdpReplied, 120),
            (PROTO_ICMP, NAT_F_REPLIED, FlowState::Icmp, 30),
        ];
        for (proto, flags, state, secs) in cases {
            assert_eq!(FlowState::of(proto, flags), state);
            assert_eq!(state.timeout(&t), Duration::from_secs(secs));
        }
    }

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
