//! The shell's step: consumed records in, engine decisions applied, the
//! outputs they call for queued. No Kafka client is touched here, so the
//! step can be driven with plain [`Record`]s in a test (as arroyo's
//! in-memory broker makes its strategies testable); the pipeline hands the
//! queued outputs to the producer (`Outputs::send_outbox`) after each
//! chunk.
//!
//! One chunk goes through in two passes: [`Step::decode`] for every record
//! (outside the shell's lock, each event borrowing from its record), then
//! [`Step::apply`] for the chunk under one lock.

use rustc_hash::FxHashMap;

use prometheus::IntCounter;

use super::shell::{Owners, Ownership, Shell, Slot, TopicPartition};
use super::PipelineError;
use crate::codec::{schemas, Decoder};
use crate::config::{Config, LatePolicy};
use crate::engine::state::PartitionState;
use crate::engine::{EventOutcome, Removed, SkipReason};
use crate::model::{EventView, MetricEvent, MetricEventRef, RetrainRequest};
use crate::telemetry::Metrics;

/// A consumed record as the step reads it: what a Kafka message holds,
/// borrowed.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    /// The record's timestamp in milliseconds (create or log-append time).
    pub timestamp: Option<i64>,
}

/// Why a record could not be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub kind: &'static str,
    pub reason: String,
}

/// A record on its way to the dead-letter topic: a copy of the original
/// with its coordinates and the reason (dead letters are rare; the copy
/// lets the record's buffer go).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub dead: DeadLetter,
}

/// What the step asks the shell to write, on the partition's behalf.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Request(RetrainRequest),
    DeadLetter(DeadLetterRecord),
    /// A removed model's changelog entry is deleted; `input_offset` is the
    /// next input offset when it was removed.
    Tombstone {
        lineage: String,
        input_offset: i64,
    },
}

/// What decoding one record gave: an event borrowing from the record, or
/// the reason it goes to the dead-letter topic.
pub type Verdict<'m> = Result<MetricEventRef<'m>, DeadLetter>;

/// The counters of one input topic, resolved once (a label look-up per
/// record costs more than the count).
#[derive(Clone)]
struct TopicCounters {
    consumed: IntCounter,
    applied: IntCounter,
}

/// Records counted in a run of one partition, added to the counters when
/// the run ends.
#[derive(Default)]
struct RunCounts {
    consumed: u64,
    applied: u64,
}

/// Decodes records and applies them to the shell's state.
pub struct Step<'a> {
    config: &'a Config,
    metrics: &'a Metrics,
    decoders: FxHashMap<String, Decoder<MetricEvent>>,
    counters: FxHashMap<String, TopicCounters>,
    /// The lineage of the record being handled (no allocation per record).
    lineage: String,
}

impl<'a> Step<'a> {
    pub fn new(config: &'a Config, metrics: &'a Metrics) -> Self {
        Step {
            config,
            metrics,
            decoders: FxHashMap::default(),
            counters: FxHashMap::default(),
            lineage: String::new(),
        }
    }

    fn counters(&mut self, topic: &str) -> TopicCounters {
        if !self.counters.contains_key(topic) {
            let counters = TopicCounters {
                consumed: self.metrics.records_consumed.with_label_values(&[topic]),
                applied: self.metrics.records_applied.with_label_values(&[topic]),
            };
            self.counters.insert(topic.to_owned(), counters);
        }
        self.counters[topic].clone()
    }

    /// Decodes and validates one record. `Ok(Err(_))` is a record to
    /// dead-letter; `Err(_)` stops the pipeline (setup or transient failure,
    /// such as an unreachable Schema Registry).
    pub fn decode<'m>(&mut self, record: &Record<'m>) -> Result<Verdict<'m>, PipelineError> {
        let Some(payload) = record.payload else {
            return Ok(Err(DeadLetter {
                kind: "empty",
                reason: "record has no value".into(),
            }));
        };
        let decoder = match self.decoders.get(record.topic) {
            Some(decoder) => decoder,
            None => {
                let decoder = Decoder::new(
                    self.config.format_for_topic(record.topic),
                    schemas::METRIC_EVENT,
                )?;
                self.decoders
                    .entry(record.topic.to_owned())
                    .or_insert(decoder)
            }
        };
        match decoder.decode_event(payload) {
            Ok(event) => Ok(event.validate().map(|()| event).map_err(|e| DeadLetter {
                kind: "invalid",
                reason: e.to_string(),
            })),
            Err(e) if e.is_transient() => Err(PipelineError::Transient {
                topic: record.topic.to_owned(),
                partition: record.partition,
                offset: record.offset,
                error: e.to_string(),
            }),
            Err(e) => Ok(Err(DeadLetter {
                kind: e.kind(),
                reason: e.to_string(),
            })),
        }
    }

    /// Decodes a chunk of records.
    pub fn decode_all<'m>(
        &mut self,
        records: &[Record<'m>],
    ) -> Result<Vec<Verdict<'m>>, PipelineError> {
        records.iter().map(|r| self.decode(r)).collect()
    }

    /// Applies decoded records to the shell: each to its partition's slot,
    /// its outputs queued in the slot's outbox. Nothing is applied unless
    /// the shell's phase lets records be applied (during a rewind they are
    /// read again afterwards). Records come in runs of one partition: the
    /// slot's key and the counters are resolved once per run.
    pub fn apply(&mut self, shell: &mut Shell, records: &[Record<'_>], verdicts: &[Verdict<'_>]) {
        if records.is_empty() || !shell.phase().applies_records() {
            return;
        }
        let started = std::time::Instant::now();
        let mut tp: TopicPartition = (String::new(), -1);
        let mut counters: Option<TopicCounters> = None;
        let mut counts = RunCounts::default();
        // Each verdict is handled where it lies (an event is a few hundred
        // bytes: moving it per record showed in the profile).
        for (record, verdict) in records.iter().zip(verdicts) {
            if tp.1 != record.partition || tp.0 != record.topic {
                if let Some(c) = &counters {
                    add(c, &mut counts);
                }
                tp = (record.topic.to_owned(), record.partition);
                counters = Some(self.counters(&tp.0));
            }
            self.handle(shell, &tp, &mut counts, record, verdict);
        }
        if let Some(c) = &counters {
            add(c, &mut counts);
        }
        self.metrics
            .processing_seconds
            .observe(started.elapsed().as_secs_f64());
    }

    fn handle(
        &mut self,
        shell: &mut Shell,
        tp: &TopicPartition,
        counts: &mut RunCounts,
        record: &Record<'_>,
        verdict: &Verdict<'_>,
    ) {
        let offset = record.offset;
        let Shell {
            engine,
            slots,
            owners,
            book,
            ..
        } = shell;
        // The slot is looked up once per record.
        let slot = match slots.get_mut(tp) {
            // Fetched before a revocation: the next owner reads it.
            None => return,
            Some(slot) if slot.phase.is_restoring() => {
                // Fetched before the pause took effect: read again after restore.
                slot.phase.set_aside(offset);
                return;
            }
            Some(slot) => slot,
        };
        counts.consumed += 1;

        match verdict {
            Err(dead) => dead_letter(slot, record, dead.clone()),
            Ok(event) => {
                event.write_lineage(&mut self.lineage);
                let lineage = self.lineage.as_str();
                if offset < slot.restored_until
                    && slot
                        .state
                        .model(lineage)
                        .is_some_and(|m| offset < m.input_offset)
                {
                    // Already reflected in the restored snapshot (at-least-once restart).
                    self.metrics
                        .records_skipped
                        .with_label_values(&[record.topic, "already_applied"])
                        .inc();
                    slot.processed_next = Some(offset + 1);
                    return;
                }
                check_key(self.metrics, slot, record, lineage);
                match engine.apply_record(&mut slot.state, event, record.timestamp) {
                    EventOutcome::Applied {
                        requests,
                        new_model,
                        released,
                        removed,
                        silenced,
                    } => {
                        counts.applied += 1;
                        slot.mark_dirty(lineage);
                        slot.dirty.extend(released);
                        for gone in removed {
                            self.remove_model(slot, owners, tp, &gone);
                        }
                        for s in silenced {
                            tracing::warn!(model = %s.lineage, rule = %s.rule, last_event_at = s.last_event_at,
                                partition = tp.1, "model went silent");
                        }
                        let key = new_model
                            .then(|| slot.state.models.get_key_value(lineage))
                            .flatten();
                        if let Some((key, _)) = key {
                            if let Ownership::Split { other } = owners.claim(key, tp) {
                                self.metrics.model_split.inc();
                                tracing::warn!(model = %lineage, partition = tp.1, other_partition = other.1,
                                    "model seen on two partitions: producers must key telemetry by project/name");
                            }
                        }
                        for request in requests {
                            if let Some(status) = book.get(&request.request_id) {
                                engine.apply_status(&mut slot.state, status);
                            }
                            self.metrics
                                .requests_produced
                                .with_label_values(&[request.action.as_str()])
                                .inc();
                            tracing::info!(request_id = %request.request_id, model = %request.model,
                                action = request.action.as_str(), rule = %request.rule, reason = %request.reason,
                                "retrain request");
                            slot.outbox.push(Output::Request(request));
                        }
                    }
                    EventOutcome::Skipped(reason) => {
                        if slot.state.models.contains_key(lineage) {
                            slot.mark_dirty(lineage); // its late or future counter
                        }
                        let limits = &self.config.engine;
                        let policy = match reason {
                            SkipReason::TooLate => limits.late_events,
                            SkipReason::FutureTimestamp => limits.future_events,
                            _ => LatePolicy::Drop,
                        };
                        if policy == LatePolicy::DeadLetter {
                            let dead = DeadLetter {
                                kind: reason.as_str(),
                                reason: self.skip_reason(
                                    &slot.state,
                                    event,
                                    record.timestamp,
                                    reason,
                                ),
                            };
                            dead_letter(slot, record, dead);
                        } else {
                            self.metrics
                                .records_skipped
                                .with_label_values(&[record.topic, reason.as_str()])
                                .inc();
                        }
                    }
                }
            }
        }
        // Only now: the record's outputs are queued.
        slot.processed_next = Some(offset + 1);
    }

    /// The dead letter's reason for an event the engine refused.
    fn skip_reason(
        &self,
        state: &PartitionState,
        event: &MetricEventRef<'_>,
        record_time: Option<i64>,
        reason: SkipReason,
    ) -> String {
        let engine = &self.config.engine;
        match reason {
            SkipReason::TooLate => {
                let lateness = engine.allowed_lateness_ms;
                let watermark = state.watermark(lateness).unwrap_or(i64::MIN);
                format!(
                    "event time {} is behind the partition's watermark {} (stream time minus allowed lateness {} ms)",
                    event.timestamp, watermark, lateness
                )
            }
            SkipReason::FutureTimestamp => match record_time {
                Some(record) => format!(
                    "event time {} is more than engine.max_clock_skew ({} ms) ahead of the record's timestamp {}",
                    event.timestamp, engine.max_clock_skew_ms, record
                ),
                None => format!(
                    "event time {} is more than engine.max_clock_skew ({} ms) ahead of the partition's stream time {}",
                    event.timestamp,
                    engine.max_clock_skew_ms,
                    state.stream_time.unwrap_or(i64::MIN)
                ),
            },
            other => other.as_str().to_owned(),
        }
    }

    /// A model the engine removed: its changelog entry is deleted (a
    /// tombstone), so a restore does not bring it back and compaction
    /// forgets it.
    fn remove_model(
        &self,
        slot: &mut Slot,
        owners: &mut Owners,
        tp: &TopicPartition,
        gone: &Removed,
    ) {
        self.metrics
            .models_removed
            .with_label_values(&[gone.cause.as_str()])
            .inc();
        tracing::info!(model = %gone.lineage, cause = gone.cause.as_str(), last_event_at = ?gone.last_event_at,
            partition = tp.1, "model state removed");
        if slot.state.models.contains_key(gone.lineage.as_str()) {
            // Removed and started afresh by this very event: its snapshot
            // follows the tombstone at the next commit.
        } else {
            slot.dirty.remove(gone.lineage.as_str());
            owners.forget(&gone.lineage, tp);
        }
        slot.outbox.push(Output::Tombstone {
            lineage: gone.lineage.to_string(),
            input_offset: slot.processed_next.unwrap_or(0),
        });
    }
}

fn add(counters: &TopicCounters, counts: &mut RunCounts) {
    counters.consumed.inc_by(counts.consumed);
    counters.applied.inc_by(counts.applied);
    *counts = RunCounts::default();
}

/// Queues a record for the dead-letter topic with its reason.
fn dead_letter(slot: &mut Slot, record: &Record<'_>, dead: DeadLetter) {
    slot.outbox.push(Output::DeadLetter(DeadLetterRecord {
        topic: record.topic.to_owned(),
        partition: record.partition,
        offset: record.offset,
        key: record.key.map(<[u8]>::to_vec),
        payload: record.payload.map(<[u8]>::to_vec),
        dead,
    }));
}

/// Counts (and logs, first per partition) a record whose key is not the
/// lineage of the model in its value: such a producer splits a model's
/// telemetry across partitions. The event is still applied.
fn check_key(metrics: &Metrics, slot: &mut Slot, record: &Record<'_>, lineage: &str) {
    let Some(key) = record.key else {
        return;
    };
    if key == lineage.as_bytes() {
        return;
    }
    metrics
        .key_mismatch
        .with_label_values(&[record.topic])
        .inc();
    let key = String::from_utf8_lossy(&key[..key.len().min(256)]);
    if !slot.key_mismatch_logged {
        slot.key_mismatch_logged = true;
        tracing::warn!(topic = record.topic, partition = record.partition, offset = record.offset, %key, model = lineage,
            "record key is not the model's lineage (project/name): key telemetry by lineage so a model stays on one partition; further mismatches on this partition are only counted");
    } else {
        tracing::debug!(topic = record.topic, partition = record.partition, offset = record.offset, %key, model = lineage,
            "record key is not the model's lineage");
    }
}
