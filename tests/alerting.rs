//! Detection rules end to end, from a configuration through the engine:
//! sequential detectors with baselines, N-of-M confirmation, hysteresis,
//! composite rules, and event-time lateness (out-of-order input within the
//! allowed lateness gives the same requests as in-order input).

use std::collections::BTreeMap;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

use driftwatch::config::Config;
use driftwatch::engine::state::PartitionState;
use driftwatch::engine::{Engine, EventOutcome};
use driftwatch::model::{Action, MetricEvent, ModelRef, RetrainRequest};
use driftwatch::replay::replay;
use driftwatch::service::engine_for;
use driftwatch::simulator::{Simulator, SimulatorConfig};

const MIN: i64 = 60_000;

fn engine(policies: &str) -> Engine {
    let toml = format!("[kafka]\ninput_topics = [\"m\"]\n{policies}");
    engine_for(&Config::from_toml_str(&toml).expect("valid config"))
}

fn event(name: &str, minute: i64, metrics: &[(&str, f64)]) -> MetricEvent {
    MetricEvent {
        model: ModelRef::new("p", name, Some("1")),
        timestamp: minute * MIN,
        metrics: metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        error: None,
        tags: BTreeMap::new(),
    }
}

/// Requests produced by `events`, each with the minute of the event that
/// caused it.
fn run(engine: &Engine, events: &[MetricEvent]) -> Vec<(i64, RetrainRequest)> {
    let mut part = PartitionState::default();
    let mut out = Vec::new();
    for e in events {
        if let EventOutcome::Applied { requests, .. } = engine.apply_event(&mut part, e) {
            out.extend(requests.into_iter().map(|r| (e.timestamp / MIN, r)));
        }
    }
    out
}

#[test]
fn cusum_with_a_warmup_baseline_fires_after_a_shift_and_not_before() {
    let engine = engine(
        r#"
[[policy]]
match = "*"
[[policy.rule]]
name = "accuracy-cusum"
metric = "accuracy"
window = { kind = "count", size = 1 }
detector = { kind = "cusum", k = 0.5, arl0 = 10000, baseline = { kind = "warmup", windows = 200 } }
action = "fine_tune"
"#,
    );
    let mut rng = SmallRng::seed_from_u64(7);
    let noise = Normal::new(0.0, 0.01).expect("normal");
    // In control at 0.90 (σ = 0.01) for 400 minutes, then 0.88: a 2σ drop.
    let events: Vec<MetricEvent> = (0..600)
        .map(|m| {
            let mean = if m < 400 { 0.90 } else { 0.88 };
            event("m", m, &[("accuracy", mean + noise.sample(&mut rng))])
        })
        .collect();
    let fired = run(&engine, &events);
    assert_eq!(fired.len(), 1, "one request: {fired:?}");
    let (minute, request) = &fired[0];
    assert!(
        (400..430).contains(minute),
        "a 2σ shift is found within 30 samples (h for ARL0 10000 is about 7.3): fired at {minute}"
    );
    assert_eq!(request.detector, "cusum");
    assert!(
        request.reason.contains("cusum statistic"),
        "{}",
        request.reason
    );
}

#[test]
fn n_of_m_confirmation_tolerates_a_good_window_in_between() {
    let engine = engine(
        r#"
[[policy]]
match = "*"
[[policy.rule]]
name = "acc"
metric = "accuracy"
window = { kind = "tumbling", size = "1m" }
detector = { kind = "threshold", below = 0.85 }
confirm = 3
confirm_of = 4
action = "fine_tune"
"#,
    );
    // Windows (one sample each) close when the next minute's sample
    // arrives: bad, good, bad, bad -> 3 of the last 4 at minute 4.
    let accuracy = [0.5, 0.9, 0.5, 0.5, 0.9, 0.9];
    let events: Vec<MetricEvent> = accuracy
        .iter()
        .enumerate()
        .map(|(m, a)| event("m", m as i64, &[("accuracy", *a)]))
        .collect();
    let fired = run(&engine, &events);
    assert_eq!(
        fired.iter().map(|(m, _)| *m).collect::<Vec<_>>(),
        vec![4],
        "{fired:?}"
    );
    assert!(fired[0].1.reason.contains("3 of the last 4"));

    // With 3 consecutive required, the good window resets it: no request.
    let strict = engine_strict();
    assert!(run(&strict, &events).is_empty());
}

fn engine_strict() -> Engine {
    engine(
        r#"
[[policy]]
match = "*"
[[policy.rule]]
name = "acc"
metric = "accuracy"
window = { kind = "tumbling", size = "1m" }
detector = { kind = "threshold", below = 0.85 }
confirm = 3
action = "fine_tune"
"#,
    )
}

const COMPOSITE: &str = r#"
[[policy]]
match = "*"
request_timeout = "1m"
[[policy.rule]]
name = "latency"
metric = "latency_ms"
window = { kind = "tumbling", size = "1m" }
detector = { kind = "threshold", above = 200 }
recover_after = 3
action = "none"
[[policy.rule]]
name = "accuracy"
metric = "accuracy"
window = { kind = "tumbling", size = "1m" }
detector = { kind = "threshold", below = 0.85 }
recover_after = 3
action = "none"
[[policy.composite]]
name = "degraded"
all = ["latency", "accuracy"]
cooldown = "30m"
action = "full_retrain"
"#;

#[test]
fn a_composite_all_rule_fires_only_when_every_member_is_in_alarm() {
    let engine = engine(COMPOSITE);
    let sample = |m: i64, latency: f64, accuracy: f64| {
        event("m", m, &[("latency_ms", latency), ("accuracy", accuracy)])
    };
    let mut events = Vec::new();
    // Minutes 0-9: a latency spike alone. No request.
    events.extend((0..10).map(|m| sample(m, 500.0, 0.95)));
    // Minutes 10-19: healthy again (both recover after 3 calm windows).
    events.extend((10..20).map(|m| sample(m, 50.0, 0.95)));
    // Minute 20: accuracy drops; minute 22: latency spikes too, and both
    // are in alarm from the window of minute 22.
    events.extend((20..22).map(|m| sample(m, 50.0, 0.5)));
    events.extend((22..30).map(|m| sample(m, 500.0, 0.5)));
    let fired = run(&engine, &events);
    assert_eq!(fired.len(), 1, "{fired:?}");
    let (minute, request) = &fired[0];
    assert_eq!(*minute, 23, "the window of minute 22 closes at minute 23");
    assert_eq!(request.rule, "degraded");
    assert_eq!(request.action, Action::FullRetrain);
    assert_eq!(request.detector, "all");
    assert_eq!(request.metric, "latency_ms,accuracy");
    assert_eq!((request.observed, request.threshold), (2.0, 2.0));
    assert_eq!(request.evidence["rules_fired"], "degraded");
}

#[test]
fn hysteresis_holds_an_alarm_through_short_calm_spells() {
    // The same composite, but accuracy is back to normal for two windows
    // before latency spikes: with recover_after = 3 its alarm still holds,
    // so the composite fires when the latency window closes.
    let engine = engine(COMPOSITE);
    let sample = |m: i64, latency: f64, accuracy: f64| {
        event("m", m, &[("latency_ms", latency), ("accuracy", accuracy)])
    };
    let mut events = vec![sample(0, 50.0, 0.5)];
    events.extend((1..2).map(|m| sample(m, 50.0, 0.95)));
    events.extend((2..5).map(|m| sample(m, 500.0, 0.95)));
    let fired = run(&engine, &events);
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0].0, 3);

    // Three calm minutes end the accuracy alarm: no request.
    let mut events = vec![sample(0, 50.0, 0.5)];
    events.extend((1..4).map(|m| sample(m, 50.0, 0.95)));
    events.extend((4..7).map(|m| sample(m, 500.0, 0.95)));
    assert!(run(&engine, &events).is_empty());
}

/// Policies exercising every stateful part: count, tumbling and sliding
/// windows, threshold and sequential detectors, N-of-M, a composite.
const MIXED: &str = r#"
[engine]
allowed_lateness = "10m"
request_timeout = "20m"

[[policy]]
match = "*"
[[policy.rule]]
name = "accuracy-ewma"
metric = "accuracy"
window = { kind = "tumbling", size = "5m" }
detector = { kind = "ewma", lambda = 0.2, arl0 = 500, baseline = { kind = "warmup", windows = 12 } }
action = "fine_tune"
[[policy.rule]]
name = "errors"
metric = "inference_error"
window = { kind = "sliding", size = "10m", slide = "5m", aggregate = "rate" }
detector = { kind = "threshold", above = 0.25 }
confirm = 2
confirm_of = 3
action = "full_retrain"
[[policy.rule]]
name = "latency-ph"
metric = "latency_ms"
window = { kind = "count", size = 1 }
detector = { kind = "page_hinkley", threshold = 200, min_instances = 30 }
recover_after = 5
action = "none"
[[policy.composite]]
name = "latency-and-errors"
any = ["latency-ph", "errors"]
action = "fine_tune"
"#;

fn simulated(seed: u64) -> Vec<MetricEvent> {
    let mut sim = Simulator::new(SimulatorConfig {
        models: 6,
        drifting: 3,
        seed,
        ..SimulatorConfig::default()
    });
    (0..400).flat_map(|_| sim.tick()).collect()
}

/// `events` in an arrival order where each is delayed by a random amount
/// below `max_delay_ms`: out of order, yet never more than `max_delay_ms`
/// behind the latest event already arrived.
fn shuffle_within(events: &[MetricEvent], max_delay_ms: i64, seed: u64) -> Vec<MetricEvent> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut delayed: Vec<(i64, usize, MetricEvent)> = events
        .iter()
        .enumerate()
        .map(|(i, e)| (e.timestamp + rng.gen_range(0..max_delay_ms), i, e.clone()))
        .collect();
    delayed.sort_by_key(|(arrival, i, _)| (*arrival, *i));
    delayed.into_iter().map(|(_, _, e)| e).collect()
}

#[test]
fn out_of_order_input_within_the_lateness_gives_the_same_requests_as_in_order() {
    let engine = engine(MIXED);
    for seed in [1, 2, 3] {
        let in_order = simulated(seed);
        let expected = replay(&engine, in_order.clone());
        assert!(
            expected.requests.len() >= 3,
            "seed {seed}: the stream must fire (not vacuous): {}",
            expected.requests.len()
        );
        let shuffled = shuffle_within(&in_order, 10 * MIN, seed);
        assert_ne!(shuffled, in_order, "seed {seed}: really out of order");
        let got = replay(&engine, shuffled);
        assert_eq!(got.skipped.get("too_late"), None, "seed {seed}");
        assert_eq!(
            by_model(got.requests),
            by_model(expected.requests),
            "seed {seed}"
        );
    }
}

#[test]
fn events_later_than_the_lateness_are_refused_and_the_rest_still_agree() {
    let engine = engine(MIXED);
    let in_order = simulated(4);
    let mut arrival = shuffle_within(&in_order, 10 * MIN, 4);
    // Hold back every 97th event and deliver it 30 minutes late.
    let mut held = Vec::new();
    let mut i = 0;
    arrival.retain(|e| {
        i += 1;
        if i % 97 == 0 && e.timestamp > 60 * MIN {
            held.push(e.clone());
            false
        } else {
            true
        }
    });
    for late in &held {
        let at = arrival
            .iter()
            .position(|e| e.timestamp > late.timestamp + 30 * MIN)
            .unwrap_or(arrival.len());
        arrival.insert(at, late.clone());
    }
    assert!(held.len() >= 10, "{} held back", held.len());

    let got = replay(&engine, arrival);
    assert_eq!(
        got.skipped.get("too_late").copied(),
        Some(held.len() as u64)
    );
    let without_late: Vec<MetricEvent> =
        in_order.into_iter().filter(|e| !held.contains(e)).collect();
    assert_eq!(
        by_model(got.requests),
        by_model(replay(&engine, without_late).requests)
    );
}

/// Requests per model, in the order each model's were made (across models
/// the order follows arrival, which is what differs).
fn by_model(requests: Vec<RetrainRequest>) -> BTreeMap<String, Vec<RetrainRequest>> {
    let mut out: BTreeMap<String, Vec<RetrainRequest>> = BTreeMap::new();
    for r in requests {
        out.entry(r.model.lineage()).or_default().push(r);
    }
    out
}

#[test]
fn a_new_model_version_learns_its_baseline_again() {
    use driftwatch::engine::detector::{Baseline, DetectorState};
    let engine = engine(
        r#"
[[policy]]
match = "*"
[[policy.rule]]
name = "acc"
metric = "accuracy"
window = { kind = "count", size = 1 }
detector = { kind = "ewma", baseline = { kind = "warmup", windows = 20 } }
action = "fine_tune"
"#,
    );
    let baseline =
        |part: &PartitionState| match &part.model("p/m").expect("model").rules[0].detector {
            DetectorState::Sequential(state) if state.baseline.is_some() => {
                state.baseline.clone().expect("checked")
            }
            other => panic!("unexpected state {other:?}"),
        };
    let mut part = PartitionState::default();
    for m in 0..30 {
        let accuracy = 0.9 + 0.001 * (m % 3) as f64;
        engine.apply_event(&mut part, &event("m", m, &[("accuracy", accuracy)]));
    }
    assert!(matches!(baseline(&part), Baseline::Learned { .. }));
    let mut next = event("m", 30, &[("accuracy", 0.5)]);
    next.model.version = Some("2".to_owned());
    engine.apply_event(&mut part, &next);
    assert_eq!(
        baseline(&part),
        Baseline::Learning {
            target: 20,
            n: 1,
            mean: 0.5,
            m2: 0.0
        },
        "version 2 starts learning from its own first value"
    );
}
