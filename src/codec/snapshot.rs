//! Changelog values: model snapshots in Confluent framing whose schema id is
//! the snapshot version, so every version ever written stays readable.

use super::snapshot_reader::read_snapshot;
use super::snapshot_writer::write_snapshot;
#[cfg(test)]
use super::Encoder;
use super::{schemas, CodecError, DecodeError, Decoder, EncodeError};
use crate::engine::snapshot::{ModelSnapshot, SNAPSHOT_VERSION};

/// Encodes the current snapshot version; decodes every known version.
#[derive(Debug)]
pub struct SnapshotCodec {
    /// apache-avro's encoder of the same schema: the reference in tests.
    #[cfg(test)]
    encoder: Encoder<ModelSnapshot>,
    decoder: Decoder<ModelSnapshot>,
}

impl SnapshotCodec {
    pub fn new() -> Result<Self, CodecError> {
        Ok(SnapshotCodec {
            #[cfg(test)]
            encoder: Encoder::confluent(SNAPSHOT_VERSION, schemas::MODEL_SNAPSHOT)?,
            decoder: Decoder::confluent_local(
                &[
                    (1, schemas::MODEL_SNAPSHOT_V1),
                    (2, schemas::MODEL_SNAPSHOT_V2),
                    (3, schemas::MODEL_SNAPSHOT_V3),
                    (4, schemas::MODEL_SNAPSHOT_V4),
                ],
                schemas::MODEL_SNAPSHOT,
            )?,
        })
    }

    /// The snapshot in Confluent framing (schema id = snapshot version),
    /// written by the writer specialised to the schema.
    pub fn encode(&self, snapshot: &ModelSnapshot) -> Result<Vec<u8>, EncodeError> {
        let [a, b, c, d] = SNAPSHOT_VERSION.to_be_bytes();
        let mut frame = Vec::with_capacity(512);
        frame.extend_from_slice(&[0, a, b, c, d]);
        write_snapshot(snapshot, &mut frame);
        Ok(frame)
    }

    /// [`SnapshotCodec::encode`] through apache-avro's generic `Value`
    /// path (the reference in tests).
    #[cfg(test)]
    pub(crate) fn encode_via_value(
        &self,
        snapshot: &ModelSnapshot,
    ) -> Result<Vec<u8>, EncodeError> {
        self.encoder.encode_via_value(snapshot)
    }

    /// [`SnapshotCodec::encode`] through apache-avro's schema-aware serde
    /// serializer (the reference in tests).
    #[cfg(test)]
    pub(crate) fn encode_via_serde(
        &self,
        snapshot: &ModelSnapshot,
    ) -> Result<Vec<u8>, EncodeError> {
        self.encoder.encode(snapshot)
    }

    /// Reads a snapshot of any version. The current version goes through
    /// the reader specialised to its schema; anything that reader does not
    /// take (older versions, damaged bytes) goes through apache-avro, whose
    /// answer stands.
    pub fn decode(&self, bytes: &[u8]) -> Result<ModelSnapshot, DecodeError> {
        let [a, b, c, d] = SNAPSHOT_VERSION.to_be_bytes();
        if let Some(body) = bytes.strip_prefix(&[0, a, b, c, d]) {
            if let Some(snapshot) = read_snapshot(body) {
                return Ok(snapshot);
            }
        }
        self.decoder.decode(bytes)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::collection::vec;
    use proptest::option::of;
    use proptest::prelude::*;

    use super::*;
    use crate::engine::snapshot::{
        CompositeSnapshot, CountersSnapshot, EvaluationSnapshot, InFlightSnapshot, PaneSnapshot,
        PendingSnapshot, RuleSnapshot, SilenceSnapshot, WindowSnapshot,
    };

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![Just(String::new()), "[a-z0-9/_-]{1,40}", "\\PC{0,12}"]
    }

    fn time() -> impl Strategy<Value = i64> {
        prop_oneof![
            Just(0i64),
            Just(i64::MIN),
            Just(i64::MAX),
            -1i64..1,
            any::<i64>()
        ]
    }

    fn double() -> impl Strategy<Value = f64> {
        prop_oneof![Just(0.0), Just(-0.0), Just(f64::INFINITY), -1e12f64..1e12]
    }

    fn evaluation() -> impl Strategy<Value = EvaluationSnapshot> {
        (
            (time(), time(), double(), time()),
            (
                of(double()),
                of(any::<bool>()),
                of(text()),
                of(double()),
                any::<bool>(),
            ),
        )
            .prop_map(
                |((start, end, value, samples), (threshold, below, level, statistic, learning))| {
                    EvaluationSnapshot {
                        start,
                        end,
                        value,
                        samples,
                        breach_threshold: threshold,
                        breach_below: below,
                        level,
                        statistic,
                        learning,
                    }
                },
            )
    }

    fn window() -> impl Strategy<Value = WindowSnapshot> {
        let pane = (time(), time(), double()).prop_map(|(start, count, figure)| PaneSnapshot {
            start,
            count,
            figure,
        });
        (time(), double(), vec(pane, 0..4)).prop_map(|(count, figure, panes)| WindowSnapshot {
            count,
            figure,
            panes,
        })
    }

    fn counts() -> impl Strategy<Value = CountersSnapshot> {
        vec(time(), 9).prop_map(|n| CountersSnapshot {
            events_applied: n[0],
            late_events: n[1],
            late_samples: n[2],
            warning_windows: n[3],
            overflow_samples: n[4],
            requests: n[5],
            suppressed_while_in_flight: n[6],
            request_timeouts: n[7],
            future_events: n[8],
        })
    }

    fn rule() -> impl Strategy<Value = RuleSnapshot> {
        (
            (
                text(),
                text(),
                of(time()),
                time(),
                vec(double(), 0..60),
                vec(time(), 0..8),
            ),
            (
                time(),
                of(time()),
                time(),
                any::<bool>(),
                time(),
                any::<bool>(),
            ),
            (of(text()), of(evaluation()), time(), of(window())),
        )
            .prop_map(
                |(
                    (rule, spec, window_start, window_last, values, timestamps),
                    (consecutive, cooldown_until, recent, in_alarm, calm, fired_in_episode),
                    (detector_state, last, id, window),
                )| RuleSnapshot {
                    rule,
                    spec,
                    window_start,
                    window_last,
                    values,
                    timestamps,
                    consecutive,
                    cooldown_until,
                    recent,
                    in_alarm,
                    calm,
                    fired_in_episode,
                    detector_state,
                    last,
                    id,
                    window,
                },
            )
    }

    fn snapshot() -> impl Strategy<Value = ModelSnapshot> {
        let composite = (text(), text(), any::<bool>(), of(time()), time()).prop_map(
            |(name, spec, fired, until, id)| CompositeSnapshot {
                name,
                spec,
                fired_while_holding: fired,
                cooldown_until: until,
                id,
            },
        );
        let pending =
            (time(), time(), vec(of(double()), 0..4)).prop_map(|(timestamp, seq, values)| {
                PendingSnapshot {
                    timestamp,
                    seq,
                    values,
                }
            });
        let in_flight =
            (text(), text(), time(), of(text())).prop_map(|(id, action, at, status)| {
                InFlightSnapshot {
                    request_id: id,
                    action,
                    issued_at: at,
                    last_status: status,
                }
            });
        let silence = (text(), text(), of(time()), of(time()), time()).prop_map(
            |(name, spec, since, until, id)| SilenceSnapshot {
                name,
                spec,
                silent_since: since,
                cooldown_until: until,
                id,
            },
        );
        (
            (
                text(),
                text(),
                of(text()),
                vec(text(), 0..3),
                text(),
                time(),
            ),
            (
                vec(rule(), 0..4),
                vec(composite, 0..3),
                vec(pending, 0..4),
                of(in_flight),
            ),
            (
                of(time()),
                of(time()),
                proptest::collection::btree_map(text(), time(), 0..10),
                vec(silence, 0..3),
                of(time()),
                of(counts()),
            ),
        )
            .prop_map(
                |(
                    (project, name, version, retired_versions, policy, input_offset),
                    (rules, composites, pending, in_flight),
                    (backoff_until, last_event_at, counters, silences, last_heard_at, counts),
                )| ModelSnapshot {
                    project,
                    name,
                    version,
                    retired_versions,
                    policy,
                    input_offset,
                    rules,
                    composites,
                    pending,
                    in_flight,
                    backoff_until,
                    last_event_at,
                    counters: counters.into_iter().collect::<BTreeMap<_, _>>(),
                    silences,
                    last_heard_at,
                    counts,
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The writer specialised to the snapshot schema writes the very
        /// bytes of apache-avro's schema-aware serde serializer, and a datum
        /// equal (as an Avro value) to its generic `Value` path, for
        /// arbitrary snapshots; and it reads back to the same snapshot.
        #[test]
        fn the_specialised_writer_agrees_with_apache_avro(snapshot in snapshot()) {
            let codec = SnapshotCodec::new().expect("codec");
            let schema = apache_avro::Schema::parse_str(schemas::MODEL_SNAPSHOT).expect("schema");
            let datum = |frame: &[u8]| {
                { crate::codec::limit_avro_allocations(); apache_avro::from_avro_datum(&schema, &mut &frame[5..], None) }.expect("a datum of the schema")
            };
            let written = codec.encode(&snapshot).expect("encode");
            prop_assert_eq!(&written, &codec.encode_via_serde(&snapshot).expect("serde path"));
            prop_assert_eq!(datum(&written), datum(&codec.encode_via_value(&snapshot).expect("value path")));
            prop_assert_eq!(codec.decode(&written).expect("decode"), snapshot);
        }

        /// The specialised reader reads what the writer wrote, and on
        /// damaged bytes (truncated, a byte changed) it never takes what
        /// apache-avro refuses, nor reads it differently: where it answers,
        /// apache-avro's generic reader gives the same snapshot.
        #[test]
        fn the_specialised_reader_never_disagrees_with_apache_avro(
            snapshot in snapshot(),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
            value in any::<u8>(),
        ) {
            let codec = SnapshotCodec::new().expect("codec");
            let written = codec.encode(&snapshot).expect("encode");
            prop_assert_eq!(super::read_snapshot(&written[5..]), Some(snapshot));
            let truncated = &written[..5 + cut.index(written.len() - 5)];
            let mut changed = written.clone();
            let at = 5 + flip.index(written.len() - 5);
            changed[at] = value;
            for damaged in [truncated, &changed[..]] {
                if let Some(ours) = super::read_snapshot(&damaged[5..]) {
                    let theirs = codec.decoder.decode(damaged);
                    prop_assert!(theirs.is_ok(), "apache-avro refuses what the reader took: {:?}", theirs);
                    let theirs = theirs.expect("checked");
                    // Compared as bytes: a changed byte may make a NaN.
                    prop_assert_eq!(codec.encode(&ours).expect("encode"), codec.encode(&theirs).expect("encode"));
                }
            }
        }
    }
}
