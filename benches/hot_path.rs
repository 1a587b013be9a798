//! The hot path on one core, without Kafka: decode (JSON, or Avro in
//! Confluent framing) + validate + route + windows + detectors + alert
//! logic, for the default three-rule policy (`config/demo.toml`), over
//! the simulator's telemetry of 1,000 models (100 events each, event time
//! one minute apart). Target: 2,000,000 events/s.
//!
//! `cargo bench --bench hot_path`. Under `cargo test` each case runs once.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

use driftwatch::codec::{schemas, Decoder, Encoder};
use driftwatch::config::Config;
use driftwatch::engine::state::PartitionState;
use driftwatch::engine::EventOutcome;
use driftwatch::model::{EventView, MetricEvent};
use driftwatch::simulator::{Simulator, SimulatorConfig};

const MODELS: usize = 1_000;
const TICKS: usize = 100;

/// The records of the run: payload and record timestamp.
fn records(encoder: &Encoder<MetricEvent>) -> Vec<(Vec<u8>, i64)> {
    let mut sim = Simulator::new(SimulatorConfig {
        models: MODELS,
        drifting: MODELS / 10,
        ..SimulatorConfig::default()
    });
    (0..TICKS)
        .flat_map(|_| sim.tick())
        .map(|e| (encoder.encode(&e).expect("encode"), e.timestamp))
        .collect()
}

fn hot_path(c: &mut Criterion) {
    let config = Config::from_toml_str(driftwatch::demo::DEMO_CONFIG).expect("demo config");
    let engine = driftwatch::service::engine_for(&config);
    let cases = [
        (
            "json",
            Encoder::json(),
            Decoder::<MetricEvent>::new(
                config.format_for_topic("model-metrics"),
                schemas::METRIC_EVENT,
            )
            .expect("decoder"),
        ),
        (
            "confluent_avro",
            Encoder::confluent(1, schemas::METRIC_EVENT).expect("encoder"),
            Decoder::confluent_local(&[(1, schemas::METRIC_EVENT)], schemas::METRIC_EVENT)
                .expect("decoder"),
        ),
    ];
    let mut group = c.benchmark_group("hot_path");
    group.sample_size(10);
    for (name, encoder, decoder) in cases {
        let input = records(&encoder);
        group.throughput(Throughput::Elements(input.len() as u64));
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                PartitionState::default,
                |part| {
                    let mut requests = 0;
                    for (payload, record_time) in &input {
                        let event = decoder.decode_event(payload).expect("decode");
                        event.validate().expect("valid");
                        if let EventOutcome::Applied { requests: r, .. } =
                            engine.apply_record(part, &event, Some(*record_time))
                        {
                            requests += r.len();
                        }
                    }
                    requests
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
