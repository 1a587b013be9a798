//! Trigger latency: from the moment the event that triggers a retrain
//! request is produced to the moment the request is visible to a
//! read_committed consumer, with the service running exactly-once against
//! a real broker while telemetry flows at a steady rate.
//!
//! The baseline, measured in the same run, is a probe record produced every
//! 20 ms to a probe topic by the same producer and read by a read_committed
//! consumer: the broker's own produce-to-visible latency under the same
//! load. The ratio is what driftwatch adds (mostly the commit interval:
//! a request becomes visible when its transaction commits).
//!
//! `cargo bench --bench trigger_latency` (needs `DRIFTWATCH_TEST_BOOTSTRAP`;
//! `DRIFTWATCH_BENCH_FETCH_WAIT_MS` sets the service's `fetch.wait.max.ms`).
//! Under `cargo test` it runs briefly as a smoke test.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use driftwatch::codec::Encoder;
use driftwatch::config::Config;
use driftwatch::model::{MetricEvent, RetrainRequest};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

struct Size {
    models: usize,
    drifting: usize,
    ticks: usize,
    ticks_per_second: u64,
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let Ok(bootstrap) = std::env::var(common::BOOTSTRAP_ENV) else {
        eprintln!(
            "trigger_latency bench: set {} to a broker (scripts/test.sh starts one)",
            common::BOOTSTRAP_ENV
        );
        std::process::exit(if bench { 2 } else { 0 });
    };
    let size = if bench {
        Size {
            models: 100,
            drifting: 80,
            ticks: 600,
            ticks_per_second: 20,
        }
    } else {
        Size {
            models: 20,
            drifting: 10,
            ticks: 150,
            ticks_per_second: 50,
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(&bootstrap, size));
}

/// A record's value and the instant it was seen.
type Seen = Vec<(Instant, Vec<u8>)>;

/// Records seen by a read_committed consumer, with the instant each was seen.
struct Watcher {
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    fn start(bootstrap: &str, topic: &str, partitions: i32) -> Watcher {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "latency-bench-watcher")
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("fetch.wait.max.ms", "10")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .expect("tpl");
        }
        consumer.assign(&tpl).expect("assign");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(Ok(msg)) = consumer.poll(Duration::from_millis(10)) {
                        let at = Instant::now();
                        let payload = msg.payload().unwrap_or_default().to_vec();
                        seen.lock().expect("lock").push((at, payload));
                    }
                }
            })
        };
        Watcher {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn len(&self) -> usize {
        self.seen.lock().expect("lock").len()
    }

    fn finish(mut self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("watcher thread");
        }
        std::mem::take(&mut *self.seen.lock().expect("lock"))
    }
}

async fn run(bootstrap: &str, size: Size) {
    let kafka = common::real_kafka(bootstrap).await;
    let probe_topic = format!("{}-probe", kafka.requests);
    common::create_topics(bootstrap, &[(&probe_topic, 1)]).await;
    let toml = common::config_toml(&kafka, "latency-bench");
    let toml = common::set_key(&toml, "processing", "\"exactly_once\"");
    let toml = common::set_key(&toml, "request_timeout", "\"1h\"");
    // How long the broker may hold the service's fetches when no data is
    // ready (librdkafka's default is 500 ms; a broker that does not answer
    // a fetch as soon as data arrives adds up to this much).
    let toml = match std::env::var("DRIFTWATCH_BENCH_FETCH_WAIT_MS") {
        Ok(ms) => common::set_key(
            &toml,
            "properties",
            &format!("{{ \"session.timeout.ms\" = \"6000\", \"fetch.wait.max.ms\" = \"{ms}\" }}"),
        ),
        Err(_) => toml,
    };
    let config = Config::from_toml_str(&toml).expect("config");
    let events = common::simulated(size.models, size.drifting, size.ticks, 5);
    let expected = common::oracle(&config, &events);

    let running = common::start(config).await;
    let requests = Watcher::start(bootstrap, &kafka.requests, 2);
    let probes = Watcher::start(bootstrap, &probe_topic, 1);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "0")
        .create()
        .expect("producer");
    let encoder = Encoder::<MetricEvent>::json();

    // Produce tick by tick at a steady rate; remember when each event went.
    let mut produced_at: HashMap<(String, i64), Instant> = HashMap::new();
    let mut probe_sent: Vec<Instant> = Vec::new();
    let tick = Duration::from_micros(1_000_000 / size.ticks_per_second);
    let mut next_probe = Instant::now();
    let started = Instant::now();
    for (i, chunk) in events.chunks(size.models).enumerate() {
        let due = started + tick * i as u32;
        tokio::time::sleep_until(due.into()).await;
        for event in chunk {
            let payload = encoder.encode(event).expect("encode");
            let key = event.model.lineage();
            produced_at.insert((key.clone(), event.timestamp), Instant::now());
            let record = FutureRecord::to(&kafka.metrics).key(&key).payload(&payload);
            // Deliveries are not awaited one by one: the stream keeps flowing.
            drop(
                producer
                    .send_result(record)
                    .map_err(|(e, _)| e)
                    .expect("enqueue"),
            );
        }
        if Instant::now() >= next_probe {
            let payload = probe_sent.len().to_string();
            probe_sent.push(Instant::now());
            drop(
                producer
                    .send_result(FutureRecord::<(), _>::to(&probe_topic).payload(&payload))
                    .map_err(|(e, _)| e)
                    .expect("enqueue probe"),
            );
            next_probe += Duration::from_millis(20);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while requests.len() < expected.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = requests.finish();
    let probes_seen = probes.finish();
    common::stop(running).await;

    let mut latencies = Vec::new();
    let mut unmatched = 0;
    for (at, payload) in &seen {
        let request: RetrainRequest = serde_json::from_slice(payload).expect("request json");
        match produced_at.get(&(request.model.lineage(), request.triggered_at)) {
            Some(sent) => latencies.push(at.duration_since(*sent)),
            None => unmatched += 1,
        }
    }
    let mut baseline: Vec<Duration> = probes_seen
        .iter()
        .filter_map(|(at, payload)| {
            let n: usize = std::str::from_utf8(payload).ok()?.parse().ok()?;
            Some(at.duration_since(*probe_sent.get(n)?))
        })
        .collect();
    assert!(
        !latencies.is_empty(),
        "no request was matched to its triggering event"
    );
    assert!(!baseline.is_empty(), "no probe came back");
    latencies.sort();
    baseline.sort();
    let (p50, p99) = (percentile(&latencies, 50.0), percentile(&latencies, 99.0));
    let (b50, b99) = (percentile(&baseline, 50.0), percentile(&baseline, 99.0));
    println!(
        "trigger latency, {} models at {} events/s, {} requests ({} expected, {} unmatched):",
        size.models,
        size.models as u64 * size.ticks_per_second,
        latencies.len(),
        expected.len(),
        unmatched
    );
    println!(
        "  driftwatch  p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms",
        ms(p50),
        ms(p99),
        ms(*latencies.last().expect("one"))
    );
    println!("  baseline    p50 {:>7.1} ms  p99 {:>7.1} ms  ({} probes, plain produce -> read_committed)", ms(b50), ms(b99), baseline.len());
    println!(
        "  ratio       p50 {:>7.2}     p99 {:>7.2}",
        ms(p50) / ms(b50).max(1e-3),
        ms(p99) / ms(b99).max(1e-3)
    );
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
