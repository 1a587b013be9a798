//! Model snapshots (the changelog values): a restored model equals the one
//! captured, continues mid-window as if nothing happened, and a snapshot
//! written by an earlier version of the format still restores.

use driftwatch::codec::SnapshotCodec;
use driftwatch::config::Config;
use driftwatch::engine::snapshot::{ModelSnapshot, SNAPSHOT_VERSION};
use driftwatch::engine::state::PartitionState;
use driftwatch::engine::{Engine, EventOutcome};
use driftwatch::model::{MetricEvent, RetrainRequest};
use driftwatch::service::engine_for;
use driftwatch::simulator::{Simulator, SimulatorConfig};

/// The fixture's model, and the tick after which it was captured.
const FIXTURE_MODEL: &str = "demo/drifting-000";
const FIXTURE_TICK: usize = 68;

fn engine() -> Engine {
    engine_for(&Config::from_toml_str(driftwatch::demo::DEMO_CONFIG).expect("demo config"))
}

fn events(ticks: usize) -> Vec<MetricEvent> {
    let mut sim = Simulator::new(SimulatorConfig {
        models: 4,
        drifting: 2,
        seed: 42,
        ..SimulatorConfig::default()
    });
    (0..ticks).flat_map(|_| sim.tick()).collect()
}

fn apply(
    engine: &Engine,
    state: &mut PartitionState,
    events: &[MetricEvent],
) -> Vec<RetrainRequest> {
    events
        .iter()
        .flat_map(|e| match engine.apply_event(state, e) {
            EventOutcome::Applied { requests, .. } => requests,
            EventOutcome::Skipped(_) => Vec::new(),
        })
        .collect()
}

/// Snapshots every model of `state` through the codec and restores them.
fn round_trip(engine: &Engine, state: &PartitionState) -> PartitionState {
    let codec = SnapshotCodec::new().expect("codec");
    let mut restored = PartitionState::default();
    for (lineage, model) in &state.models {
        let policy = engine.policy_for(lineage.as_str()).expect("policy");
        let bytes = codec
            .encode(&ModelSnapshot::capture(model, Some(policy), 0))
            .expect("encode");
        let snapshot = codec.decode(&bytes).expect("decode");
        restored.insert_restored(snapshot.restore(policy));
    }
    restored
}

#[test]
fn restored_state_equals_captured_state_and_continues_mid_window() {
    let engine = engine();
    let all = events(200);
    for split in [37, 83, 121] {
        let (before, after) = all.split_at(split * 4 + 2); // mid-tick, mid-window
        let mut uninterrupted = PartitionState::default();
        let mut expected = apply(&engine, &mut uninterrupted, before);

        let mut restored = round_trip(&engine, &uninterrupted);
        assert_eq!(
            restored, uninterrupted,
            "split {split}: restored state differs"
        );
        let before_restart = expected.len();
        expected.extend(apply(&engine, &mut uninterrupted, after));
        let mut resumed: Vec<RetrainRequest> = expected[..before_restart].to_vec();
        resumed.extend(apply(&engine, &mut restored, after));
        assert_eq!(
            resumed, expected,
            "split {split}: requests after the restore differ"
        );
        assert_eq!(restored, uninterrupted);
    }
    // The windows of every kind held samples at some split (not vacuous).
    let mut state = PartitionState::default();
    apply(&engine, &mut state, &all[..FIXTURE_TICK * 4 + 2]);
    let model = &state.models[FIXTURE_MODEL];
    assert!(model.rules.iter().all(|r| r.window.buffered() > 0));
}

fn fixture_state() -> PartitionState {
    let mut state = PartitionState::default();
    apply(&engine(), &mut state, &events(FIXTURE_TICK));
    state
}

/// Writes the fixture of the snapshot version this build writes, as
/// `tests/fixtures/model_snapshot_v<N>.bin`. A tool, not a check: run once
/// per new snapshot version with `cargo test --test snapshot -- --ignored
/// write_fixture`; a committed fixture must never change.
#[test]
#[ignore = "a tool: writes the fixture of a new snapshot version"]
fn write_fixture() {
    let engine = engine();
    let state = fixture_state();
    let policy = engine.policy_for(FIXTURE_MODEL).expect("policy");
    let snapshot = ModelSnapshot::capture(&state.models[FIXTURE_MODEL], Some(policy), 1234);
    let bytes = SnapshotCodec::new()
        .expect("codec")
        .encode(&snapshot)
        .expect("encode");
    let path = format!("tests/fixtures/model_snapshot_v{SNAPSHOT_VERSION}.bin");
    assert!(
        !std::path::Path::new(&path).exists(),
        "{path} is committed already; a fixture never changes"
    );
    std::fs::write(path, bytes).expect("write fixture");
}

#[test]
fn a_version_1_snapshot_restores_and_continues() {
    restores_and_continues(1);
}

#[test]
fn a_version_2_snapshot_restores_and_continues() {
    restores_and_continues(2);
}

#[test]
fn a_version_3_snapshot_restores_and_continues() {
    restores_and_continues(3);
}

#[test]
fn a_version_4_snapshot_restores_and_continues() {
    restores_and_continues(4);
}

/// The committed fixture of snapshot `version` decodes, restores under the
/// current code and continues as uninterrupted processing does.
fn restores_and_continues(version: u8) {
    let path = format!("tests/fixtures/model_snapshot_v{version}.bin");
    let bytes = std::fs::read(&path).expect("fixture committed in the repository");
    assert_eq!(
        &bytes[..5],
        &[0, 0, 0, 0, version],
        "Confluent frame with snapshot version {version}"
    );
    let snapshot = SnapshotCodec::new()
        .expect("codec")
        .decode(&bytes)
        .expect("decodes");
    assert_eq!(snapshot.lineage(), FIXTURE_MODEL);
    assert_eq!(snapshot.input_offset, 1234);
    assert_eq!(snapshot.version.as_deref(), Some("v1"));
    let engine = engine();
    let policy = engine.policy_for(FIXTURE_MODEL).expect("policy");
    if version < 4 {
        let names: Vec<&str> = snapshot.rules.iter().map(|r| r.rule.as_str()).collect();
        assert_eq!(names, ["accuracy-drop", "error-rate", "latency-p95"]);
    } else {
        // Version 4 keys rules by the id of their definition.
        let ids: Vec<u64> = snapshot.rules.iter().map(|r| r.id as u64).collect();
        assert_eq!(ids, policy.fingerprints().rule_ids);
    }

    // Continuing from the snapshot gives what uninterrupted processing gives.
    let mut restored = PartitionState::default();
    restored.insert_restored(snapshot.restore(policy));
    let mut uninterrupted = fixture_state();
    let rest: Vec<MetricEvent> = events(200)
        .split_off(FIXTURE_TICK * 4)
        .into_iter()
        .filter(|e| e.model.lineage() == FIXTURE_MODEL)
        .collect();
    assert_eq!(
        apply(&engine, &mut restored, &rest),
        apply(&engine, &mut uninterrupted, &rest)
    );
    assert!(
        !apply(&engine, &mut fixture_state(), &rest).is_empty(),
        "the continuation fires (not vacuous)"
    );
}
