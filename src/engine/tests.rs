use std::collections::BTreeMap;

use super::policy::{Aggregate, AlertSpec, DetectorSpec, Policy, PolicySet, RuleSpec, WindowSpec};
use super::state::PartitionState;
use super::*;
use crate::model::{Action, MetricEvent, ModelRef, RetrainStatus, StatusKind};

pub(super) const MIN: i64 = 60_000;

pub(super) fn rule(
    name: &str,
    metric: &str,
    below: Option<f64>,
    above: Option<f64>,
    confirm: u32,
    action: Action,
) -> RuleSpec {
    RuleSpec {
        name: name.into(),
        metric: metric.into(),
        window: WindowSpec::Tumbling { size_ms: 5 * MIN },
        aggregate: Aggregate::Mean,
        detector: DetectorSpec::Threshold { below, above },
        alert: AlertSpec {
            cooldown_ms: 60 * MIN,
            ..AlertSpec::consecutive(confirm)
        },
        action: Some(action),
    }
}

pub(super) fn engine(rules: Vec<RuleSpec>) -> Engine {
    let policy = Policy::new("*", rules, 6 * 60 * MIN).expect("glob");
    Engine::new(PolicySet::new(vec![policy]), Limits::default())
}

pub(super) fn event(name: &str, ts: i64, metrics: &[(&str, f64)]) -> MetricEvent {
    MetricEvent {
        model: ModelRef::new("p", name, Some("1")),
        timestamp: ts,
        metrics: metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        error: None,
        tags: BTreeMap::new(),
    }
}

/// Feeds one accuracy sample per minute from `from_min` to `to_min`.
pub(super) fn feed(
    engine: &Engine,
    part: &mut PartitionState,
    name: &str,
    from_min: i64,
    to_min: i64,
    accuracy: f64,
) -> Vec<RetrainRequest> {
    (from_min..to_min)
        .flat_map(|m| {
            match engine.apply_event(part, &event(name, m * MIN, &[("accuracy", accuracy)])) {
                EventOutcome::Applied { requests, .. } => requests,
                EventOutcome::Skipped(reason) => panic!("skipped: {reason:?}"),
            }
        })
        .collect()
}

pub(super) fn status(
    req: &RetrainRequest,
    kind: StatusKind,
    new_version: Option<&str>,
) -> RetrainStatus {
    RetrainStatus {
        request_id: req.request_id.clone(),
        model: req.model.clone(),
        status: kind,
        new_version: new_version.map(str::to_owned),
        timestamp: req.triggered_at + 1,
    }
}

#[test]
fn healthy_model_never_fires() {
    let e = engine(vec![rule(
        "acc",
        "accuracy",
        Some(0.85),
        None,
        3,
        Action::FineTune,
    )]);
    let mut part = PartitionState::default();
    assert!(feed(&e, &mut part, "m", 0, 600, 0.93).is_empty());
}

#[test]
fn fires_after_confirm_consecutive_breaching_windows_with_evidence() {
    let e = engine(vec![rule(
        "acc",
        "accuracy",
        Some(0.85),
        None,
        3,
        Action::FineTune,
    )]);
    let mut part = PartitionState::default();
    assert!(feed(&e, &mut part, "m", 0, 30, 0.93).is_empty());
    // Breaching windows [30,35), [35,40), [40,45) close at minutes 35, 40, 45.
    let requests = feed(&e, &mut part, "m", 30, 46, 0.70);
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!((r.window_start, r.window_end), (40 * MIN, 45 * MIN));
    assert_eq!(r.triggered_at, 45 * MIN);
    assert_eq!(r.action, Action::FineTune);
    assert_eq!(r.rule, "acc");
    assert_eq!(r.detector, "threshold");
    assert!((r.observed - 0.70).abs() < 1e-9);
    assert_eq!(r.threshold, 0.85);
    assert_eq!(r.model.version.as_deref(), Some("1"));
    assert_eq!(
        r.evidence.get("rules_fired").map(String::as_str),
        Some("acc")
    );
    assert!(r.reason.contains("below 0.85"), "{}", r.reason);
}

#[test]
fn a_recovered_window_resets_confirmation() {
    let e = engine(vec![rule(
        "acc",
        "accuracy",
        Some(0.85),
        None,
        3,
        Action::FineTune,
    )]);
    let mut part = PartitionState::default();
    assert!(feed(&e, &mut part, "m", 0, 10, 0.70).is_empty());
    assert!(feed(&e, &mut part, "m", 10, 15, 0.95).is_empty());
    assert!(feed(&e, &mut part, "m", 15, 26, 0.70).is_empty());
    assert_eq!(feed(&e, &mut part, "m", 26, 31, 0.70).len(), 1);
}

#[test]
fn no_second_request_while_one_is_unresolved_and_terminal_status_reopens() {
    for terminal in [StatusKind::Succeeded, StatusKind::Failed] {
        let mut r = rule("acc", "accuracy", Some(0.85), None, 1, Action::FineTune);
        r.alert.cooldown_ms = 0;
        let e = engine(vec![r]);
        let mut part = PartitionState::default();
        let first = feed(&e, &mut part, "m", 0, 6, 0.5);
        assert_eq!(first.len(), 1);
        // Every further window breaches, but the request is unresolved.
        assert!(feed(&e, &mut part, "m", 6, 60, 0.5).is_empty());
        assert_eq!(
            part.model("p/m")
                .map(|m| m.counters.suppressed_while_in_flight),
            Some(10)
        );
        // Non-terminal statuses do not reopen.
        assert_eq!(
            e.apply_status(&mut part, &status(&first[0], StatusKind::Accepted, None)),
            StatusOutcome::Applied
        );
        assert_eq!(
            e.apply_status(&mut part, &status(&first[0], StatusKind::Started, None)),
            StatusOutcome::Applied
        );
        assert!(feed(&e, &mut part, "m", 60, 70, 0.5).is_empty());
        // A terminal status does; the next breaching window fires.
        assert_eq!(
            e.apply_status(&mut part, &status(&first[0], terminal, None)),
            StatusOutcome::Applied
        );
        let second = feed(&e, &mut part, "m", 70, 76, 0.5);
        assert_eq!(second.len(), 1, "{terminal:?}");
        assert_ne!(second[0].request_id, first[0].request_id);
    }
}

#[test]
fn unresolved_request_times_out_in_event_time() {
    let mut r = rule("acc", "accuracy", Some(0.85), None, 1, Action::FineTune);
    r.alert.cooldown_ms = 0;
    let e = engine(vec![r]);
    let mut part = PartitionState::default();
    assert_eq!(feed(&e, &mut part, "m", 0, 6, 0.5).len(), 1); // at 5 min
                                                              // Timeout is 6h after 5 min: nothing until minute 365.
    assert!(feed(&e, &mut part, "m", 6, 365, 0.5).is_empty());
    assert_eq!(feed(&e, &mut part, "m", 365, 371, 0.5).len(), 1);
    assert_eq!(
        part.model("p/m").map(|m| m.counters.request_timeouts),
        Some(1)
    );
}

#[test]
fn succeeded_with_new_version_starts_that_version_fresh() {
    let e = engine(vec![rule(
        "acc",
        "accuracy",
        Some(0.85),
        None,
        2,
        Action::FineTune,
    )]);
    let mut part = PartitionState::default();
    let first = feed(&e, &mut part, "m", 0, 11, 0.5);
    assert_eq!(first.len(), 1);
    e.apply_status(
        &mut part,
        &status(&first[0], StatusKind::Succeeded, Some("2")),
    );
    let model = part.model("p/m").expect("tracked");
    assert_eq!(model.version.as_deref(), Some("2"));
    assert!(model
        .rules
        .iter()
        .all(|r| r.alert.recent == 0 && r.window.buffered() == 0));
    // Stragglers of version 1 are ignored.
    assert_eq!(
        e.apply_event(&mut part, &event("m", 12 * MIN, &[("accuracy", 0.5)])),
        EventOutcome::Skipped(SkipReason::StaleVersion)
    );
}

#[test]
fn strongest_action_wins_when_rules_fire_together() {
    let e = engine(vec![
        rule("acc", "accuracy", Some(0.85), None, 1, Action::FineTune),
        rule(
            "lat",
            "latency_ms",
            None,
            Some(200.0),
            1,
            Action::FullRetrain,
        ),
    ]);
    let mut part = PartitionState::default();
    let mut requests = Vec::new();
    for m in 0..6 {
        if let EventOutcome::Applied { requests: r, .. } = e.apply_event(
            &mut part,
            &event("m", m * MIN, &[("accuracy", 0.5), ("latency_ms", 500.0)]),
        ) {
            requests.extend(r);
        }
    }
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].action, Action::FullRetrain);
    assert_eq!(requests[0].rule, "lat");
    assert_eq!(
        requests[0].evidence.get("rules_fired").map(String::as_str),
        Some("acc,lat")
    );
}

#[test]
fn cooldown_blocks_refiring_in_event_time() {
    let e = engine(vec![rule(
        "acc",
        "accuracy",
        Some(0.85),
        None,
        1,
        Action::FineTune,
    )]);
    let mut part = PartitionState::default();
    let first = feed(&e, &mut part, "m", 0, 6, 0.5);
    e.apply_status(&mut part, &status(&first[0], StatusKind::Failed, None));
    // Cooldown 60 min from 5 min: windows ending before 65 min do not fire.
    assert!(feed(&e, &mut part, "m", 6, 65, 0.5).is_empty());
    assert_eq!(feed(&e, &mut part, "m", 65, 71, 0.5).len(), 1);
}

#[test]
fn request_ids_are_deterministic_and_distinguish_inputs() {
    let m = ModelRef::new("p", "m", Some("1"));
    assert_eq!(request_id(&m, &["a"], 0, 5), request_id(&m, &["a"], 0, 5));
    assert_ne!(request_id(&m, &["a"], 0, 5), request_id(&m, &["a"], 0, 6));
    assert_ne!(request_id(&m, &["a"], 0, 5), request_id(&m, &["a"], 1, 5));
    assert_ne!(request_id(&m, &["a"], 0, 5), request_id(&m, &["b"], 0, 5));
    assert_eq!(request_id(&m, &["a"], 0, 5).len(), 32);
}

#[test]
fn unmatched_models_are_counted_and_at_the_cap_the_least_recently_seen_is_evicted() {
    let policy = Policy::new(
        "fraud/*",
        vec![rule(
            "acc",
            "accuracy",
            Some(0.85),
            None,
            1,
            Action::FineTune,
        )],
        MIN,
    )
    .expect("glob");
    let e = Engine::new(
        PolicySet::new(vec![policy]),
        Limits {
            max_models_per_partition: 2,
            ..Limits::default()
        },
    );
    let mut part = PartitionState::default();
    let mut ev = event("m", 0, &[("accuracy", 0.9)]);
    assert_eq!(
        e.apply_event(&mut part, &ev),
        EventOutcome::Skipped(SkipReason::NoPolicy)
    );
    ev.model.project = "fraud".into();
    assert!(matches!(
        e.apply_event(&mut part, &ev),
        EventOutcome::Applied {
            new_model: true,
            ..
        }
    ));
    let at = |name: &str, ts: i64| MetricEvent {
        model: ModelRef::new("fraud", name, Some("1")),
        ..event(name, ts, &[("accuracy", 0.9)])
    };
    e.apply_event(&mut part, &at("n", MIN));
    // "m" was seen last at 0, "n" at 1 min: "m" makes room for "o".
    e.apply_event(&mut part, &at("n", 2 * MIN));
    match e.apply_event(&mut part, &at("o", 3 * MIN)) {
        EventOutcome::Applied {
            new_model, removed, ..
        } => {
            assert!(new_model);
            assert_eq!(
                removed,
                vec![Removed {
                    lineage: "fraud/m".into(),
                    cause: RemovalCause::Evicted,
                    last_event_at: Some(0),
                }]
            );
        }
        other => panic!("not applied: {other:?}"),
    }
    let mut kept: Vec<&str> = part.models.keys().map(|k| k.as_str()).collect();
    kept.sort();
    assert_eq!(kept, ["fraud/n", "fraud/o"]);
}

#[test]
fn late_events_are_counted_as_too_late() {
    let e = engine(vec![rule(
        "acc",
        "accuracy",
        Some(0.85),
        None,
        1,
        Action::FineTune,
    )]);
    let mut part = PartitionState::default();
    feed(&e, &mut part, "m", 10, 12, 0.9);
    assert_eq!(
        e.apply_event(&mut part, &event("m", MIN, &[("accuracy", 0.9)])),
        EventOutcome::Skipped(SkipReason::TooLate)
    );
}

#[test]
fn failed_backs_off_before_a_new_request_and_succeeded_does_not() {
    let mut r = rule("acc", "accuracy", Some(0.85), None, 1, Action::FineTune);
    r.alert.cooldown_ms = 0;
    let policy = Policy::new("*", vec![r], 6 * 60 * MIN)
        .expect("glob")
        .with_failed_backoff(30 * MIN);
    let e = Engine::new(PolicySet::new(vec![policy]), Limits::default());
    let mut part = PartitionState::default();
    let first = feed(&e, &mut part, "m", 0, 6, 0.5);
    assert_eq!(first.len(), 1);
    assert!(feed(&e, &mut part, "m", 6, 10, 0.5).is_empty());
    // FAILED at event time 9 min: back off until 39 min.
    e.apply_status(&mut part, &status(&first[0], StatusKind::Failed, None));
    assert_eq!(
        part.model("p/m").and_then(|m| m.backoff_until),
        Some(39 * MIN)
    );
    assert!(feed(&e, &mut part, "m", 10, 40, 0.5).is_empty());
    let second = feed(&e, &mut part, "m", 40, 46, 0.5);
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].triggered_at, 40 * MIN);
    // SUCCEEDED clears any back-off.
    e.apply_status(&mut part, &status(&second[0], StatusKind::Succeeded, None));
    assert_eq!(part.model("p/m").and_then(|m| m.backoff_until), None);
}

#[test]
fn a_late_event_of_an_older_unknown_version_does_not_take_the_model_over() {
    let policy = Policy::new(
        "*",
        vec![rule(
            "acc",
            "accuracy",
            Some(0.85),
            None,
            1,
            Action::FineTune,
        )],
        6 * 60 * MIN,
    )
    .expect("glob");
    // Within the allowed lateness, so judged by version rather than refused.
    let e = Engine::new(
        PolicySet::new(vec![policy]),
        Limits {
            allowed_lateness_ms: 5 * MIN,
            ..Limits::default()
        },
    );
    let mut part = PartitionState::default();
    let at = |v: &str, m: i64| {
        let mut ev = event("m", m * MIN, &[("accuracy", 0.9)]);
        ev.model.version = Some(v.to_owned());
        ev
    };
    assert!(matches!(
        e.apply_event(&mut part, &at("2", 10)),
        EventOutcome::Applied { .. }
    ));
    assert_eq!(
        e.apply_event(&mut part, &at("1", 9)),
        EventOutcome::Skipped(SkipReason::StaleVersion)
    );
    assert!(matches!(
        e.apply_event(&mut part, &at("2", 11)),
        EventOutcome::Applied { .. }
    ));
    // A newer unknown version is a deployment.
    assert!(matches!(
        e.apply_event(&mut part, &at("3", 12)),
        EventOutcome::Applied { .. }
    ));
    assert_eq!(
        part.model("p/m").and_then(|m| m.version.clone()).as_deref(),
        Some("3")
    );
}

#[test]
fn succeeded_naming_the_version_already_watched_keeps_its_windows() {
    let e = engine(vec![rule(
        "acc",
        "accuracy",
        Some(0.85),
        None,
        2,
        Action::FineTune,
    )]);
    let mut part = PartitionState::default();
    let first = feed(&e, &mut part, "m", 0, 11, 0.5);
    assert_eq!(first.len(), 1);
    let mut v2 = event("m", 11 * MIN, &[("accuracy", 0.9)]);
    v2.model.version = Some("2".into());
    e.apply_event(&mut part, &v2);
    e.apply_status(
        &mut part,
        &status(&first[0], StatusKind::Succeeded, Some("2")),
    );
    let model = part.model("p/m").expect("tracked");
    assert_eq!(model.version.as_deref(), Some("2"));
    assert_eq!(model.rules[0].window.buffered(), 1, "the v2 sample is kept");
    assert!(model.in_flight.is_none());
}
