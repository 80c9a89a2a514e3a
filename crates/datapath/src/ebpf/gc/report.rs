//! What a GC pass did, and what this process's GC has done since it started.

use std::collections::BTreeMap;
use std::time::Duration;

use super::states::{FlowKind, FlowState};

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
