//! Offline replay: the same engine over a file of events. Serves as the
//! oracle for the streaming path: same events in the same per-model order
//! give the same requests, ids included.

use std::collections::BTreeMap;

use crate::engine::state::PartitionState;
use crate::engine::{Engine, EventOutcome};
use crate::model::{MetricEvent, RetrainRequest};

/// What a replay produced and how every event was accounted for.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ReplayReport {
    pub requests: Vec<RetrainRequest>,
    pub applied: u64,
    /// Skipped events by reason (no_policy, too_late, ...).
    pub skipped: BTreeMap<&'static str, u64>,
    /// Events that failed validation, with their index and reason.
    pub invalid: Vec<(usize, String)>,
}

/// Runs `events` through `engine` in order.
pub fn replay(engine: &Engine, events: impl IntoIterator<Item = MetricEvent>) -> ReplayReport {
    let mut state = PartitionState::default();
    let mut report = ReplayReport::default();
    for (index, event) in events.into_iter().enumerate() {
        if let Err(e) = event.validate() {
            report.invalid.push((index, e.to_string()));
            continue;
        }
        match engine.apply_event(&mut state, &event) {
            EventOutcome::Applied { requests, .. } => {
                report.applied += 1;
                report.requests.extend(requests);
            }
            EventOutcome::Skipped(reason) => {
                *report.skipped.entry(reason.as_str()).or_default() += 1
            }
        }
    }
    report
}
