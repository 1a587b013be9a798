//! The model lifecycle through the engine: the clock-skew guard, windows
//! closed by the watermark, idle expiry, eviction at the cap, silence, and
//! the agreement of replay with the streaming path (other delivery orders
//! within the lateness, restores at any point) over all of them.

use proptest::prelude::*;

use super::policy::{Policy, PolicySet, SilenceSpec};
use super::snapshot::ModelSnapshot;
use super::state::PartitionState;
use super::tests::{engine, event, rule, status, MIN};
use super::*;
use crate::codec::SnapshotCodec;
use crate::model::{Action, MetricEvent, RetrainRequest, StatusKind};
use std::collections::{BTreeMap, BTreeSet};

const HOUR: i64 = 60 * MIN;
/// 3000-01-01T00:00:00Z.
const YEAR_3000: i64 = 32_503_680_000_000;

fn accuracy_rule(confirm: u32) -> RuleSpec {
    rule(
        "acc",
        "accuracy",
        Some(0.85),
        None,
        confirm,
        Action::FineTune,
    )
}

fn with_limits(rules: Vec<RuleSpec>, silences: Vec<SilenceSpec>, limits: Limits) -> Engine {
    let policy = Policy::new("*", rules, 6 * HOUR)
        .expect("glob")
        .with_silences(silences);
    Engine::new(PolicySet::new(vec![policy]), limits)
}

fn apply_all(
    engine: &Engine,
    part: &mut PartitionState,
    events: &[MetricEvent],
) -> Vec<RetrainRequest> {
    events
        .iter()
        .flat_map(|e| match engine.apply_event(part, e) {
            EventOutcome::Applied { requests, .. } => requests,
            EventOutcome::Skipped(_) => Vec::new(),
        })
        .collect()
}

fn acc(name: &str, minute: i64, value: f64) -> MetricEvent {
    event(name, minute * MIN, &[("accuracy", value)])
}

#[test]
fn one_event_from_the_year_3000_neither_blinds_the_partition_nor_hides_degraded_models() {
    let e = engine(vec![accuracy_rule(3)]);
    let mut part = PartitionState::default();
    let mut events: Vec<MetricEvent> = (0..100).map(|m| acc("a", m, 0.95)).collect();
    let mut broken = acc("a", 100, 0.95);
    broken.timestamp = YEAR_3000;
    events.push(broken);
    events.extend((100..400).map(|m| acc("a", m, 0.5)));
    events.extend((100..400).map(|m| acc("b", m + 300, 0.5)));
    let mut skipped = BTreeMap::new();
    let mut requests = Vec::new();
    for ev in &events {
        match e.apply_event(&mut part, ev) {
            EventOutcome::Applied { requests: r, .. } => requests.extend(r),
            EventOutcome::Skipped(reason) => *skipped.entry(reason.as_str()).or_insert(0) += 1,
        }
    }
    assert_eq!(skipped, BTreeMap::from([("future_timestamp", 1)]));
    let models: BTreeSet<String> = requests.iter().map(|r| r.model.lineage()).collect();
    assert_eq!(models, BTreeSet::from(["p/a".to_owned(), "p/b".to_owned()]));
    assert!(part.stream_time < Some(YEAR_3000));
    assert_eq!(part.models["p/a"].counters.future_events, 1);
}

#[test]
fn with_a_record_timestamp_the_guard_judges_the_event_against_it() {
    let e = engine(vec![accuracy_rule(1)]);
    let mut part = PartitionState::default();
    let record = 50 * MIN;
    assert!(matches!(
        e.apply_record(&mut part, &acc("a", 50 + 59, 0.9), Some(record)),
        EventOutcome::Applied { .. }
    ));
    assert_eq!(
        e.apply_record(&mut part, &acc("a", 50 + 61, 0.9), Some(record)),
        EventOutcome::Skipped(SkipReason::FutureTimestamp)
    );
    // Far in the past of the record time is no clock-skew problem (a backfill).
    assert!(matches!(
        e.apply_record(&mut part, &acc("b", 200, 0.9), Some(10_000 * MIN)),
        EventOutcome::Applied { .. }
    ));
}

#[test]
fn without_record_timestamps_a_real_gap_is_confirmed_by_three_agreeing_events() {
    let e = engine(vec![accuracy_rule(1)]);
    let mut part = PartitionState::default();
    apply_all(&e, &mut part, &[acc("a", 0, 0.9), acc("b", 1, 0.9)]);
    // Five hours later the fleet speaks again.
    let outcomes: Vec<EventOutcome> = (0..4)
        .map(|i| {
            e.apply_event(
                &mut part,
                &acc(if i % 2 == 0 { "a" } else { "b" }, 300 + i, 0.9),
            )
        })
        .collect();
    assert_eq!(
        outcomes[0],
        EventOutcome::Skipped(SkipReason::FutureTimestamp)
    );
    assert_eq!(
        outcomes[1],
        EventOutcome::Skipped(SkipReason::FutureTimestamp)
    );
    assert!(matches!(outcomes[2], EventOutcome::Applied { .. }));
    assert!(matches!(outcomes[3], EventOutcome::Applied { .. }));
    assert_eq!(part.stream_time, Some(303 * MIN));
}

#[test]
fn the_watermark_closes_the_window_of_a_model_that_went_quiet() {
    let e = engine(vec![accuracy_rule(1)]);
    let mut part = PartitionState::default();
    // "a" sends one bad 5-minute window, then nothing.
    assert!(apply_all(
        &e,
        &mut part,
        &(0..5).map(|m| acc("a", m, 0.5)).collect::<Vec<_>>()
    )
    .is_empty());
    // Only "b" keeps the partition's clock going.
    let requests = apply_all(
        &e,
        &mut part,
        &(4..7).map(|m| acc("b", m, 0.95)).collect::<Vec<_>>(),
    );
    assert_eq!(requests.len(), 1, "judged when the watermark passed 5 min");
    assert_eq!(requests[0].model.lineage(), "p/a");
    assert_eq!(
        (requests[0].window_start, requests[0].window_end),
        (0, 5 * MIN)
    );
}

#[test]
fn an_idle_model_expires_and_a_later_event_starts_it_afresh() {
    let limits = Limits {
        idle_timeout_ms: HOUR,
        ..Limits::default()
    };
    let e = with_limits(vec![accuracy_rule(1)], Vec::new(), limits);
    let mut part = PartitionState::default();
    apply_all(&e, &mut part, &[acc("a", 0, 0.95), acc("b", 1, 0.95)]);
    let mut removed = Vec::new();
    for m in 2..=60 {
        if let EventOutcome::Applied { removed: r, .. } =
            e.apply_event(&mut part, &acc("b", m, 0.95))
        {
            removed.extend(r);
        }
    }
    assert_eq!(
        removed,
        vec![Removed {
            lineage: "p/a".into(),
            cause: RemovalCause::Expired,
            last_event_at: Some(0),
        }]
    );
    assert!(!part.models.contains_key("p/a"));
    assert!(part
        .by_last_seen
        .entries()
        .all(|(_, l)| l.as_str() != "p/a"));
    assert!(part.timers.iter().all(|(_, l)| l.as_str() != "p/a"));
    e.apply_event(&mut part, &acc("a", 61, 0.95));
    assert_eq!(part.models["p/a"].counters.events_applied, 1);
}

#[test]
fn a_model_with_a_request_in_flight_expires_only_once_it_is_resolved() {
    let limits = Limits {
        idle_timeout_ms: HOUR,
        ..Limits::default()
    };
    let e = with_limits(vec![accuracy_rule(1)], Vec::new(), limits);
    let mut part = PartitionState::default();
    let requests = apply_all(
        &e,
        &mut part,
        &(0..6).map(|m| acc("a", m, 0.5)).collect::<Vec<_>>(),
    );
    assert_eq!(requests.len(), 1);
    apply_all(
        &e,
        &mut part,
        &(6..200).map(|m| acc("b", m, 0.95)).collect::<Vec<_>>(),
    );
    assert!(part.models.contains_key("p/a"), "kept while in flight");
    e.apply_status(
        &mut part,
        &status(&requests[0], StatusKind::Succeeded, None),
    );
    let EventOutcome::Applied { removed, .. } = e.apply_event(&mut part, &acc("b", 200, 0.95))
    else {
        panic!("applied");
    };
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0].lineage, "p/a");
}

#[test]
fn a_flood_of_new_keys_evicts_them_and_a_real_model_still_gets_its_request() {
    let cap = 50;
    let limits = Limits {
        max_models_per_partition: cap,
        ..Limits::default()
    };
    let e = with_limits(vec![accuracy_rule(3)], Vec::new(), limits);
    let mut part = PartitionState::default();
    let mut evicted = 0;
    let mut requests = Vec::new();
    for i in 0..5_000_i64 {
        // A misconfigured producer: a new key every event...
        let flood = acc(&format!("junk-{i}"), i / 10, 0.95);
        // ...and a real model that degrades after a while.
        let real = acc("real", i / 10, if i > 2_000 { 0.5 } else { 0.95 });
        for ev in [flood, real] {
            if let EventOutcome::Applied {
                removed,
                requests: r,
                ..
            } = e.apply_event(&mut part, &ev)
            {
                evicted += removed
                    .iter()
                    .filter(|r| r.cause == RemovalCause::Evicted)
                    .count();
                requests.extend(r);
            }
            assert!(part.models.len() <= cap);
        }
    }
    assert!(evicted >= 5_000 - cap);
    assert!(part.models.contains_key("p/real"));
    assert_eq!(part.by_last_seen.entries().count(), part.models.len());
    assert!(requests.iter().any(|r| r.model.lineage() == "p/real"));
}

fn silence(action: Option<Action>) -> SilenceSpec {
    SilenceSpec {
        name: "quiet".into(),
        after_ms: 30 * MIN,
        cooldown_ms: 0,
        action,
    }
}

#[test]
fn a_silent_model_is_judged_by_the_watermark_and_asked_for_when_the_rule_has_an_action() {
    let e = with_limits(
        vec![accuracy_rule(3)],
        vec![silence(Some(Action::FullRetrain))],
        Limits::default(),
    );
    let mut part = PartitionState::default();
    apply_all(&e, &mut part, &[acc("a", 0, 0.95)]);
    let mut requests = Vec::new();
    let mut silenced = Vec::new();
    for m in 1..40 {
        if let EventOutcome::Applied {
            requests: r,
            silenced: s,
            ..
        } = e.apply_event(&mut part, &acc("b", m, 0.95))
        {
            requests.extend(r);
            silenced.extend(s);
        }
    }
    assert_eq!(silenced.len(), 1);
    assert_eq!(
        (silenced[0].lineage.as_str(), silenced[0].last_event_at),
        ("p/a", 0)
    );
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(
        (
            r.model.lineage().as_str(),
            r.rule.as_str(),
            r.detector.as_str()
        ),
        ("p/a", "quiet", "silence")
    );
    assert_eq!(r.action, Action::FullRetrain);
    assert_eq!(r.triggered_at, 30 * MIN);
    assert!(r.reason.contains("went silent"), "{}", r.reason);
    assert_eq!(part.silent_by_policy(), BTreeMap::from([("*", 1)]));
    // Its next event ends the silence.
    e.apply_event(&mut part, &acc("a", 40, 0.95));
    assert!(part.silent_by_policy().is_empty());
    assert!(!part.models["p/a"].is_silent());
}

#[test]
fn a_silence_rule_without_an_action_is_only_visible() {
    let e = with_limits(
        vec![accuracy_rule(3)],
        vec![silence(None)],
        Limits::default(),
    );
    let mut part = PartitionState::default();
    apply_all(&e, &mut part, &[acc("a", 0, 0.95)]);
    let requests = apply_all(
        &e,
        &mut part,
        &(1..40).map(|m| acc("b", m, 0.95)).collect::<Vec<_>>(),
    );
    assert!(requests.is_empty());
    let view = part.models["p/a"].view(e.policy_for("p/a"));
    assert!(view.silent);
    assert_eq!(view.silence["quiet"].silent_since, Some(30 * MIN));
    assert_eq!(part.silent_by_policy(), BTreeMap::from([("*", 1)]));
}

/// The snapshot of every model, restored: what a restart of the streaming
/// path does.
/// A restart: every model's snapshot written to changelog bytes and read
/// back.
fn restart(engine: &Engine, part: &PartitionState) -> PartitionState {
    let codec = SnapshotCodec::new().expect("codec");
    let models = part
        .models
        .iter()
        .map(|(lineage, model)| {
            let policy = engine.policy_for(lineage.as_str()).expect("policy");
            let snapshot = ModelSnapshot::capture(model, Some(policy), 0);
            let bytes = codec.encode(&snapshot).expect("encode");
            let read = codec.decode(&bytes).expect("decode");
            (lineage.to_string(), read.restore(policy))
        })
        .collect();
    PartitionState::from_restored(models)
}

fn lifecycle_engine(lateness_ms: i64, max_models: usize) -> Engine {
    let limits = Limits {
        allowed_lateness_ms: lateness_ms,
        idle_timeout_ms: 2 * HOUR,
        max_models_per_partition: max_models,
        // Beyond the longest gap: the stream-time guard of a replay file is
        // not the record-time guard of the streaming path (tested above).
        max_clock_skew_ms: 6 * HOUR,
    };
    let sliding = RuleSpec {
        window: WindowSpec::Sliding {
            size_ms: 10 * MIN,
            slide_ms: 5 * MIN,
        },
        ..rule(
            "acc-sliding",
            "accuracy",
            Some(0.8),
            None,
            2,
            Action::FullRetrain,
        )
    };
    with_limits(
        vec![accuracy_rule(2), sliding],
        vec![silence(Some(Action::FineTune))],
        limits,
    )
}

/// Events of a few models with random values and random idle gaps (about
/// the silence rule's `after`, and beyond the idle timeout), in event-time
/// order.
fn arbitrary_events() -> impl Strategy<Value = Vec<MetricEvent>> {
    let gap = prop_oneof![
        20 => Just(0),
        1 => Just(25 * MIN),
        1 => Just(31 * MIN),
        1 => Just(3 * HOUR),
    ];
    proptest::collection::vec((0usize..6, 0i64..4, gap, 0.3f64..1.0), 1..300).prop_map(|steps| {
        let mut ts = 0;
        steps
            .into_iter()
            .map(|(model, step, gap, value)| {
                ts += step * MIN + gap;
                acc(&format!("m{model}"), 0, value).with_timestamp(ts)
            })
            .collect()
    })
}

trait WithTimestamp {
    fn with_timestamp(self, ts: i64) -> Self;
}

impl WithTimestamp for MetricEvent {
    fn with_timestamp(mut self, ts: i64) -> Self {
        self.timestamp = ts;
        self
    }
}

/// True when no event of `events`, in this order, is later than the
/// allowed lateness.
fn within_lateness(events: &[MetricEvent], lateness: i64) -> bool {
    let mut stream = i64::MIN;
    events.iter().all(|e| {
        let ok = e.timestamp >= stream.saturating_sub(lateness);
        stream = stream.max(e.timestamp);
        ok
    })
}

/// Feeds `events`, restarting from snapshots before the indexes in `restarts`.
fn stream(engine: &Engine, events: &[MetricEvent], restarts: &[usize]) -> Vec<RetrainRequest> {
    let mut part = PartitionState::default();
    let mut got = Vec::new();
    for (i, ev) in events.iter().enumerate() {
        if restarts.contains(&i) {
            part = restart(engine, &part);
        }
        if let EventOutcome::Applied { requests, .. } = engine.apply_event(&mut part, ev) {
            got.extend(requests);
        }
    }
    got
}

fn ids(requests: &[RetrainRequest]) -> Vec<(String, String)> {
    let mut ids: Vec<(String, String)> = requests
        .iter()
        .map(|r| (r.request_id.clone(), r.model.lineage()))
        .collect();
    ids.sort();
    ids
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Replay (one pass, in order) and the streaming path (restarted from
    /// snapshots at random points, and fed out of order within the allowed
    /// lateness) give the same requests with the same ids, through windows
    /// closed by the watermark, expiry and silence.
    #[test]
    fn replay_and_the_streaming_path_agree(
        events in arbitrary_events(),
        restarts in proptest::collection::vec(0usize..300, 0..4),
        swaps in proptest::collection::vec(0usize..300, 0..40),
    ) {
        let lateness = 10 * MIN;
        let e = lifecycle_engine(lateness, 1_000);
        let expected = apply_all(&e, &mut PartitionState::default(), &events);
        let mut delivered = events.clone();
        for &i in &swaps {
            if i + 1 < delivered.len() {
                delivered.swap(i, i + 1);
                if !within_lateness(&delivered, lateness) {
                    delivered.swap(i, i + 1);
                }
            }
        }
        prop_assert_eq!(ids(&stream(&e, &delivered, &restarts)), ids(&expected));
    }

    /// At a model cap that evicts, replay and a streaming path restarted
    /// from snapshots at random points still agree (eviction follows
    /// arrival, so the order is the same here).
    #[test]
    fn with_evictions_restarts_change_nothing(
        events in arbitrary_events(),
        restarts in proptest::collection::vec(0usize..300, 0..4),
    ) {
        let e = lifecycle_engine(0, 4);
        let expected = apply_all(&e, &mut PartitionState::default(), &events);
        prop_assert_eq!(ids(&stream(&e, &events, &restarts)), ids(&expected));
    }

    /// The snapshot codec writes each snapshot straight from serde; the
    /// datum is the one apache-avro's generic path writes (serde to
    /// `Value`, resolved against the schema, encoded; it orders map
    /// entries by hash, so the datums are compared as Avro values), and it
    /// reads back to the same snapshot, for every state the engine reaches
    /// here (waiting samples, sliding windows, alarms, requests in flight,
    /// silence).
    #[test]
    fn snapshot_bytes_agree_with_apache_avro_generic_encoding(
        events in arbitrary_events(),
        late in any::<bool>(),
    ) {
        let e = lifecycle_engine(if late { 10 * MIN } else { 0 }, 1_000);
        let codec = SnapshotCodec::new().expect("codec");
        let schema = apache_avro::Schema::parse_str(crate::codec::schemas::MODEL_SNAPSHOT)
            .expect("schema");
        let datum = |frame: &[u8]| {
            { crate::codec::limit_avro_allocations(); apache_avro::from_avro_datum(&schema, &mut &frame[5..], None) }.expect("a datum of the schema")
        };
        let mut part = PartitionState::default();
        for (i, ev) in events.iter().enumerate() {
            let _ = e.apply_event(&mut part, ev);
            if i % 5 != 0 {
                continue;
            }
            for (lineage, model) in &part.models {
                let snapshot =
                    ModelSnapshot::capture(model, e.policy_for(lineage.as_str()), i as i64);
                let direct = codec.encode(&snapshot).expect("direct encoding");
                let reference = codec.encode_via_value(&snapshot).expect("generic encoding");
                prop_assert_eq!(&direct[..5], &reference[..5]);
                prop_assert_eq!(direct.len(), reference.len());
                prop_assert_eq!(datum(&direct), datum(&reference));
                prop_assert_eq!(codec.decode(&direct).expect("decode"), snapshot);
            }
        }
    }
}
