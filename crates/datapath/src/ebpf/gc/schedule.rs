//! When the NAT table's GC runs. The agent calls housekeeping every few seconds; a pass reads
//! the whole table (both halves, both families), so its cost grows with the table: 120–320 ms
//! for a full default table of 131,072 pairs here (bench/ebpf.md), 2–6 % of a CPU at every
//! tick. Like conntrack's gc_worker, which scans less often when little is to be gained, a pass
//! runs at a tick only when one of these holds:
//!
//! - it is the first, or the table's counters are not readable;
//! - the passes stay within [`CPU_SHARE`] of one CPU: the last pass began at least
//!   `duration / CPU_SHARE` ago (so every tick while a pass takes under 100 ms);
//! - the last pass began [`LONGEST_INTERVAL`] ago (conntrack's longest scan interval);
//! - the table is short of room: a new flow was refused, or a pool address was found full and
//!   passed over, since the last pass (ports and entries come back only through the GC), or
//!   the entries the last pass left plus those created since reach [`FILLING`] of a half.
//!
//! A flow may therefore outlive its lifetime by up to [`LONGEST_INTERVAL`] on a large, quiet
//! table: it holds its entries and its port that much longer, which matters only when they are
//! short, and then the pressure rules run the GC at every tick again.

use std::time::{Duration, Instant};

use super::report::GcReport;
use crate::ebpf::maps::Maps;
use crate::ebpf::nat;
use crate::ebpf::types::Reason;
use crate::Error;

/// The share of one CPU the passes may take on average.
pub const CPU_SHARE: f64 = 0.02;

/// The longest time between passes.
pub const LONGEST_INTERVAL: Duration = Duration::from_secs(60);

/// The share of a half's capacity at which the GC runs at every tick.
pub const FILLING: f64 = 0.9;

/// How early a tick may come against the budget's time (ticks and pass starts jitter).
const SLACK: Duration = Duration::from_millis(500);

/// Packet counters whose moves create entries: an upper bound on the entries added (a kept
/// flow of the node is counted without being recorded).
const ADDING: [Reason; 8] = [
    Reason::NatCreated,
    Reason::InboundTracked,
    Reason::PassInboundReply,
    Reason::KeepNonMasqSrc,
    Reason::KeepLinkLocal,
    Reason::KeepNonMasqDst,
    Reason::KeepLocal,
    Reason::HostPortReserved,
];

/// Packet counters whose moves say the table or a pool is short of room.
const REFUSING: [Reason; 4] = [
    Reason::DropPortExhausted,
    Reason::DropNatInsert,
    Reason::TrackFull,
    Reason::SnatFallover,
];

/// What the programs' counters say about the table, read at each tick.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Signals {
    /// Entries created since the maps were, at most.
    pub added: u64,
    /// Flows refused, or moved to another pool address, since the maps were created.
    pub refused: u64,
}

impl Signals {
    /// The signals in the programs' counters.
    pub fn read(maps: &Maps) -> Result<Signals, Error> {
        let sum = |reasons: &[Reason]| -> Result<u64, Error> {
            reasons.iter().map(|r| nat::counter(maps, *r)).sum()
        };
        Ok(Signals {
            added: sum(&ADDING)?,
            refused: sum(&REFUSING)?,
        })
    }
}

/// Why a pass runs at this tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// No pass yet, or the counters could not be read.
    First,
    /// Within the CPU budget, or the longest interval is over.
    Budget,
    /// Flows were refused or fell over since the last pass.
    Refusals,
    /// The table is filling up.
    Filling,
}

impl Due {
    /// Why, for the agent's log line of the pass.
    pub fn label(self) -> &'static str {
        match self {
            Due::First => "first pass",
            Due::Budget => "within its CPU budget",
            Due::Refusals => "flows refused or moved to another address since the last pass",
            Due::Filling => "the table is filling up",
        }
    }
}

/// The last pass, as the schedule needs it.
#[derive(Clone, Copy, Debug)]
struct LastPass {
    began: Instant,
    took: Duration,
    /// Entries of the fuller half after it (both families: an upper bound for either).
    live: u64,
    signals: Signals,
}

/// The GC's schedule ([the module](self)).
#[derive(Clone, Debug, Default)]
pub struct GcSchedule {
    last: Option<LastPass>,
}

impl GcSchedule {
    /// Whether a pass is due at `now`, given the counters (None: unreadable) and the capacity
    /// of a half (`--nat-table-size`).
    pub fn due(&self, now: Instant, signals: Option<Signals>, capacity: u32) -> Option<Due> {
        let (Some(last), Some(signals)) = (self.last, signals) else {
            return Some(Due::First);
        };
        let since = now.saturating_duration_since(last.began);
        let wait = last.took.div_f64(CPU_SHARE).min(LONGEST_INTERVAL);
        if since + SLACK >= wait {
            return Some(Due::Budget);
        }
        if signals.refused != last.signals.refused {
            return Some(Due::Refusals);
        }
        let added = signals.added.saturating_sub(last.signals.added);
        if (last.live + added) as f64 >= FILLING * f64::from(capacity) {
            return Some(Due::Filling);
        }
        None
    }

    /// Notes a pass that began at `began` with the counters at `signals`.
    pub fn passed(&mut self, began: Instant, report: &GcReport, signals: Option<Signals>) {
        self.last = signals.map(|signals| LastPass {
            began,
            took: report.duration,
            live: report.fuller_half() as u64,
            signals,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ebpf::gc::{FlowKind, FlowState};

    const CAPACITY: u32 = 131_072;

    fn pass(took_ms: u64, live: usize) -> GcReport {
        let mut report = GcReport {
            duration: Duration::from_millis(took_ms),
            ..GcReport::default()
        };
        report
            .flows
            .insert((FlowKind::Translated, FlowState::UdpReplied), live);
        report
    }

    fn signals(added: u64, refused: u64) -> Option<Signals> {
        Some(Signals { added, refused })
    }

    /// A schedule whose last pass took `took_ms` with `live` flows, at t0.
    fn after(took_ms: u64, live: usize) -> (GcSchedule, Instant) {
        let t0 = Instant::now();
        let mut schedule = GcSchedule::default();
        schedule.passed(t0, &pass(took_ms, live), signals(1000, 3));
        (schedule, t0)
    }

    fn at(t0: Instant, secs: u64) -> Instant {
        t0 + Duration::from_secs(secs)
    }

    #[test]
    fn the_first_pass_runs_at_once() {
        let schedule = GcSchedule::default();
        assert_eq!(
            schedule.due(Instant::now(), signals(0, 0), CAPACITY),
            Some(Due::First)
        );
    }

    #[test]
    fn a_cheap_pass_runs_at_every_tick() {
        let (schedule, t0) = after(20, 1000);
        assert_eq!(
            schedule.due(at(t0, 5), signals(1000, 3), CAPACITY),
            Some(Due::Budget)
        );
    }

    #[test]
    fn a_costly_pass_waits_for_its_budget() {
        // 200 ms at 2 % of a CPU: 10 s.
        let (schedule, t0) = after(200, 60_000);
        assert_eq!(schedule.due(at(t0, 5), signals(1000, 3), CAPACITY), None);
        assert_eq!(
            schedule.due(at(t0, 10), signals(1000, 3), CAPACITY),
            Some(Due::Budget)
        );
    }

    #[test]
    fn no_pass_waits_longer_than_a_minute() {
        let (schedule, t0) = after(5_000, 60_000);
        assert_eq!(schedule.due(at(t0, 55), signals(1000, 3), CAPACITY), None);
        assert_eq!(
            schedule.due(at(t0, 60), signals(1000, 3), CAPACITY),
            Some(Due::Budget)
        );
    }

    #[test]
    fn a_refusal_or_a_fallover_runs_it_at_the_next_tick() {
        let (schedule, t0) = after(200, 60_000);
        assert_eq!(
            schedule.due(at(t0, 5), signals(1000, 4), CAPACITY),
            Some(Due::Refusals)
        );
    }

    #[test]
    fn a_filling_table_runs_it_at_the_next_tick() {
        let (schedule, t0) = after(200, 100_000);
        // 100,000 + 17,964 < 90 % of 131,072 = 117,964.8.
        assert_eq!(schedule.due(at(t0, 5), signals(18_964, 3), CAPACITY), None);
        assert_eq!(
            schedule.due(at(t0, 5), signals(18_965, 3), CAPACITY),
            Some(Due::Filling)
        );
    }

    #[test]
    fn unreadable_counters_run_it_as_before() {
        let (schedule, t0) = after(200, 60_000);
        assert_eq!(schedule.due(at(t0, 1), None, CAPACITY), Some(Due::First));
        let mut schedule = schedule;
        schedule.passed(t0, &pass(200, 60_000), None);
        assert_eq!(
            schedule.due(at(t0, 1), signals(1000, 3), CAPACITY),
            Some(Due::First)
        );
    }
}
