//! Offline replay: the same engine over a file of events. Serves as the
//! oracle for the streaming path: same events in the same per-model order
//! give the same requests, ids included.

use std::collections::BTreeMap;

use crate::detect::Level;
use crate::engine::state::PartitionState;
use crate::engine::{Engine, EventOutcome, Judged};
use crate::model::{MetricEvent, RetrainRequest};
use crate::report::{ReportData, WindowPoint};

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
    run(engine, events, None)
}

/// Runs `events` through `engine` in order and gathers, per model, the
/// samples of the metrics its rules watch, every window judged and the
/// requests: what `replay --report` draws.
pub fn replay_with_timeline(
    engine: &Engine,
    events: impl IntoIterator<Item = MetricEvent>,
) -> (ReplayReport, ReportData) {
    let mut data = ReportData::default();
    let report = run(engine, events, Some(&mut data));
    for request in &report.requests {
        data.models
            .entry(request.model.lineage())
            .or_default()
            .requests
            .push(request.clone());
    }
    data.summary = vec![
        ("events applied".to_owned(), report.applied.to_string()),
        (
            "invalid events".to_owned(),
            report.invalid.len().to_string(),
        ),
        ("requests".to_owned(), report.requests.len().to_string()),
    ];
    data.summary.extend(
        report
            .skipped
            .iter()
            .map(|(reason, n)| (format!("skipped: {reason}"), n.to_string())),
    );
    (report, data)
}

fn run(
    engine: &Engine,
    events: impl IntoIterator<Item = MetricEvent>,
    mut timeline: Option<&mut ReportData>,
) -> ReplayReport {
    let mut state = PartitionState::default();
    let mut report = ReplayReport::default();
    let mut judged = Vec::new();
    for (index, event) in events.into_iter().enumerate() {
        if let Err(e) = event.validate() {
            report.invalid.push((index, e.to_string()));
            continue;
        }
        let trace = timeline.is_some().then_some(&mut judged);
        let outcome = engine.apply_event_traced(&mut state, &event, trace);
        if let Some(data) = timeline.as_deref_mut() {
            record(engine, data, &event, &outcome, judged.drain(..));
        }
        match outcome {
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

/// Adds one applied event's samples and the windows it caused to `data`.
fn record(
    engine: &Engine,
    data: &mut ReportData,
    event: &MetricEvent,
    outcome: &EventOutcome,
    judged: impl Iterator<Item = Judged>,
) {
    if let EventOutcome::Applied { .. } = outcome {
        let lineage = event.model.lineage();
        if let Some(policy) = engine.policy_for(&lineage) {
            let model = data.models.entry(lineage).or_default();
            for rule in &policy.rules {
                if let Some(value) = event.value(&rule.metric) {
                    let series = model.samples.entry(rule.metric.clone()).or_default();
                    if series.last() != Some(&(event.timestamp, value)) {
                        series.push((event.timestamp, value));
                    }
                }
            }
        }
    }
    for j in judged {
        let Some(rule) = engine
            .policy_for(&j.lineage)
            .and_then(|p| p.rules.get(j.rule))
        else {
            continue;
        };
        data.models
            .entry(j.lineage)
            .or_default()
            .windows
            .push(WindowPoint {
                rule: rule.name.clone(),
                metric: rule.metric.clone(),
                start: j.window.start,
                end: j.window.end,
                value: j.window.value,
                level: match j.judgement.level {
                    Level::Stable => "stable",
                    Level::Warning => "warning",
                    Level::Drift => "drift",
                }
                .to_owned(),
                statistic: j.judgement.statistic,
                threshold: j.judgement.threshold,
            });
    }
}
