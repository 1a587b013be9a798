//! The shell's step driven by plain records, and its slots' restore
//! bookkeeping: no broker, no librdkafka.

use std::collections::BTreeMap;

use super::phase::{SlotPhase, Transition};
use super::shell::{Shell, Slot, TopicPartition};
use super::step::{Output, Record, Step};
use crate::config::Config;
use crate::engine::state::ModelState;
use crate::model::MetricEvent;
use crate::replay::replay;
use crate::service::engine_for;
use crate::simulator::{Scenario, Simulator, SimulatorConfig, DEFAULT_START_MS};
use crate::telemetry::Metrics;

const TOPIC: &str = "model-metrics";

fn config() -> Config {
    let toml = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/demo.toml"))
        .expect("demo config");
    Config::from_toml_str(&toml).expect("demo config is valid")
}

fn tp(partition: i32) -> TopicPartition {
    (TOPIC.to_owned(), partition)
}

/// A shell holding running partitions `partitions`, empty.
fn shell_with(config: &Config, partitions: &[i32]) -> Shell {
    let mut shell = Shell::new(engine_for(config));
    for &p in partitions {
        shell.slots.insert(tp(p), Slot::running(1));
    }
    shell
}

/// Simulated telemetry: `ticks` events for each of 8 models, 4 drifting,
/// as JSON payloads keyed by lineage.
fn telemetry(ticks: usize) -> Vec<MetricEvent> {
    let mut sim = Simulator::new(SimulatorConfig {
        models: 8,
        drifting: 4,
        seed: 7,
        start_ms: DEFAULT_START_MS,
        tick_ms: 60_000,
        scenario: Scenario::Mixed,
    });
    (0..ticks).flat_map(|_| sim.tick()).collect()
}

struct Encoded {
    key: Vec<u8>,
    payload: Vec<u8>,
    timestamp: i64,
}

fn encode(events: &[MetricEvent]) -> Vec<Encoded> {
    events
        .iter()
        .map(|e| Encoded {
            key: e.model.lineage().into_bytes(),
            payload: serde_json::to_vec(e).expect("event serialises"),
            timestamp: e.timestamp,
        })
        .collect()
}

fn records<'a>(encoded: &'a [Encoded], partition: i32, first_offset: i64) -> Vec<Record<'a>> {
    encoded
        .iter()
        .zip(first_offset..)
        .map(|(e, offset)| Record {
            topic: TOPIC,
            partition,
            offset,
            key: Some(&e.key),
            payload: Some(&e.payload),
            timestamp: Some(e.timestamp),
        })
        .collect()
}

/// Runs records through the step in chunks of `chunk`, as the pipeline does.
fn run(step: &mut Step<'_>, shell: &mut Shell, records: &[Record<'_>], chunk: usize) {
    for part in records.chunks(chunk) {
        let verdicts = step.decode_all(part).expect("no transient failure");
        step.apply(shell, part, &verdicts);
    }
}

fn requests(shell: &Shell) -> Vec<crate::model::RetrainRequest> {
    shell
        .slots
        .values()
        .flat_map(|s| &s.outbox)
        .filter_map(|o| match o {
            Output::Request(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn the_step_asks_for_exactly_the_requests_replay_derives() {
    let config = config();
    let metrics = Metrics::new().expect("metrics");
    let events = telemetry(120);
    let encoded = encode(&events);
    let records = records(&encoded, 0, 0);
    for chunk in [1, 7, 256] {
        let mut shell = shell_with(&config, &[0]);
        let mut step = Step::new(&config, &metrics);
        run(&mut step, &mut shell, &records, chunk);
        let oracle = replay(&engine_for(&config), events.clone()).requests;
        assert!(!oracle.is_empty(), "the drifting models ask for retraining");
        assert_eq!(requests(&shell), oracle, "chunks of {chunk}");
        let slot = &shell.slots[&tp(0)];
        assert_eq!(slot.processed_next, Some(records.len() as i64));
        assert_eq!(slot.dirty.len(), 8, "every model changed");
        assert!(slot.pending.is_empty(), "nothing is sent by the step");
    }
}

#[test]
fn a_malformed_record_is_queued_for_the_dead_letter_topic_with_its_reason_and_origin() {
    let config = config();
    let metrics = Metrics::new().expect("metrics");
    let mut shell = shell_with(&config, &[3]);
    let mut step = Step::new(&config, &metrics);
    let garbage = b"{\"model\": not json".to_vec();
    let records = [
        Record {
            topic: TOPIC,
            partition: 3,
            offset: 41,
            key: Some(b"demo/x"),
            payload: Some(&garbage),
            timestamp: Some(DEFAULT_START_MS),
        },
        Record {
            topic: TOPIC,
            partition: 3,
            offset: 42,
            key: None,
            payload: None,
            timestamp: None,
        },
    ];
    run(&mut step, &mut shell, &records, 256);
    let slot = &shell.slots[&tp(3)];
    let dead: Vec<_> = slot
        .outbox
        .iter()
        .map(|o| match o {
            Output::DeadLetter(d) => d,
            other => panic!("expected a dead letter, got {other:?}"),
        })
        .collect();
    assert_eq!(dead.len(), 2);
    assert_eq!(
        (dead[0].topic.as_str(), dead[0].partition, dead[0].offset),
        (TOPIC, 3, 41)
    );
    assert_eq!(dead[0].payload.as_deref(), Some(&garbage[..]));
    assert_eq!(dead[0].key.as_deref(), Some(&b"demo/x"[..]));
    assert_eq!(dead[0].dead.kind, "json");
    assert!(!dead[0].dead.reason.is_empty());
    assert_eq!(dead[1].dead.kind, "empty");
    assert_eq!(dead[1].offset, 42);
    // The offsets move past both: nothing is read twice.
    assert_eq!(slot.processed_next, Some(43));
    assert!(slot.state.models.is_empty());
}

#[test]
fn an_event_from_a_broken_clock_is_dead_lettered_and_moves_no_watermark() {
    let config = config();
    let metrics = Metrics::new().expect("metrics");
    let mut shell = shell_with(&config, &[0]);
    let mut step = Step::new(&config, &metrics);
    let mut events = telemetry(3);
    let mut future = events[0].clone();
    future.timestamp += 1000 * 365 * 24 * 3_600_000; // a thousand years ahead
    let record_time = events[0].timestamp;
    events.insert(4, future);
    let mut encoded = encode(&events);
    encoded[4].timestamp = record_time;
    let records = records(&encoded, 0, 0);
    run(&mut step, &mut shell, &records, 256);
    let slot = &shell.slots[&tp(0)];
    let dead: Vec<_> = slot
        .outbox
        .iter()
        .filter_map(|o| match o {
            Output::DeadLetter(d) => Some(d),
            _ => None,
        })
        .collect();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].offset, 4);
    assert_eq!(dead[0].dead.kind, "future_timestamp");
    assert!(
        dead[0].dead.reason.contains("engine.max_clock_skew"),
        "{}",
        dead[0].dead.reason
    );
    let latest = events
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 4)
        .map(|(_, e)| e.timestamp)
        .max();
    assert_eq!(slot.state.stream_time, latest);
}

#[test]
fn records_of_a_restoring_partition_are_set_aside_and_of_a_revoked_one_dropped() {
    let config = config();
    let metrics = Metrics::new().expect("metrics");
    let mut shell = shell_with(&config, &[]);
    shell.assign(tp(1));
    let mut step = Step::new(&config, &metrics);
    let encoded = encode(&telemetry(2));
    let mut batch = records(&encoded[..4], 1, 100);
    batch.extend(records(&encoded[4..8], 2, 500)); // partition 2 is not assigned here
    run(&mut step, &mut shell, &batch, 3);
    let slot = &shell.slots[&tp(1)];
    assert_eq!(
        slot.phase,
        SlotPhase::Restoring {
            refetch_from: Some(100)
        }
    );
    assert!(slot.outbox.is_empty() && slot.state.models.is_empty());
    assert_eq!(slot.processed_next, None);
    assert!(!shell.slots.contains_key(&tp(2)));
    assert!(shell.owners.get("demo/drifting-000").is_none());
}

#[test]
fn nothing_is_applied_while_the_shell_rewinds_an_aborted_transaction() {
    let config = config();
    let metrics = Metrics::new().expect("metrics");
    let mut shell = shell_with(&config, &[0]);
    shell.transition(Transition::Begin);
    shell.transition(Transition::Abort);
    let mut step = Step::new(&config, &metrics);
    let encoded = encode(&telemetry(120));
    run(&mut step, &mut shell, &records(&encoded, 0, 0), 256);
    let slot = &shell.slots[&tp(0)];
    assert!(slot.state.models.is_empty());
    assert!(slot.outbox.is_empty());
    assert_eq!(slot.processed_next, None);
}

#[test]
fn records_are_counted_per_topic_once_per_run_of_a_partition() {
    let config = config();
    let metrics = Metrics::new().expect("metrics");
    let mut shell = shell_with(&config, &[0, 1]);
    let mut step = Step::new(&config, &metrics);
    let encoded = encode(&telemetry(5));
    let mut batch = records(&encoded[..20], 0, 0);
    batch.extend(records(&encoded[20..], 1, 0));
    batch.push(Record {
        topic: TOPIC,
        partition: 0,
        offset: 20,
        key: None,
        payload: Some(b"nope"),
        timestamp: None,
    });
    run(&mut step, &mut shell, &batch, 256);
    let consumed = metrics.records_consumed.with_label_values(&[TOPIC]).get();
    let applied = metrics.records_applied.with_label_values(&[TOPIC]).get();
    assert_eq!(consumed, 41);
    assert_eq!(applied, 40);
    // Models are owned by the partition that saw them.
    let owner = shell.owners.get(&events_lineage(&encoded[0]));
    assert_eq!(owner, Some(&tp(0)));
}

fn events_lineage(e: &Encoded) -> String {
    String::from_utf8(e.key.clone()).expect("lineage is text")
}

/// One restored model, as a restore hands it back.
fn restored_model(shell: &Shell, lineage: &str) -> BTreeMap<String, ModelState> {
    let (project, name) = lineage.split_once('/').expect("project/name");
    let policy = shell.engine.policy_for(lineage).expect("a policy applies");
    BTreeMap::from([(lineage.to_owned(), ModelState::new(project, name, policy))])
}

#[test]
fn a_restore_is_installed_only_into_the_assignment_it_was_read_for_and_readiness_follows() {
    let config = config();
    let mut shell = shell_with(&config, &[]);
    let readiness = shell.readiness();
    assert!(!readiness.ready(), "no assignment yet");
    shell.note_assignment();
    shell.assign(tp(0));
    shell.assign(tp(1));
    assert_eq!((readiness.partitions(), readiness.restoring()), (2, 2));
    let job = shell.restoring();
    assert_eq!(job.len(), 2);
    // While the restore is read, partition 0 polls records (set aside) and
    // partition 1 is revoked and assigned again.
    if let Some(slot) = shell.slots.get_mut(&tp(0)) {
        slot.phase.set_aside(100);
    }
    shell.release(&tp(1));
    shell.assign(tp(1));

    let mut split = Vec::new();
    let (tp0, first) = &job[0];
    let models = restored_model(&shell, "demo/drifting-000");
    assert_eq!(
        shell.install_restored(tp0, *first, models, &mut split),
        Some(Some(100)),
        "installed, and read again from the first record set aside"
    );
    let (tp1, stale) = &job[1];
    let models = restored_model(&shell, "demo/drifting-001");
    assert_eq!(
        shell.install_restored(tp1, *stale, models, &mut split),
        None,
        "a restore read for an earlier assignment is dropped"
    );
    assert!(split.is_empty());
    assert_eq!(shell.owners.get("demo/drifting-000"), Some(&tp(0)));
    assert!(shell.owners.get("demo/drifting-001").is_none());
    assert_eq!(shell.slots[&tp(0)].phase, SlotPhase::Running);
    assert!(shell.slots[&tp(1)].phase.is_restoring());
    let (current, assignment) = &shell.restoring()[0];
    assert_eq!(current, &tp(1));
    assert!(shell.awaits_restore(current, *assignment) && *assignment != *stale);
    assert_eq!((readiness.partitions(), readiness.restoring()), (2, 1));
    assert!(!readiness.ready());

    let models = restored_model(&shell, "demo/drifting-001");
    assert_eq!(
        shell.install_restored(&tp(1), *assignment, models, &mut split),
        Some(None)
    );
    assert!(readiness.ready(), "published without the lock");
}
