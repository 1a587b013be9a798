//! Per-topic record decoder.

use rustc_hash::FxHashMap;
use std::marker::PhantomData;
use std::sync::Arc;

use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::Schema;
use serde::de::DeserializeOwned;

use crate::model::{MetricEvent, MetricEventRef};

use super::registry::{Registry, SchemaSource, WriterSchema};
use super::{config_error, parse_schema, CodecError, DecodeError, FormatConfig, FormatKind};
use super::{event_reader, json_reader};

const CONFLUENT_MAGIC: u8 = 0;

/// Decodes one record value into `T`. Built once per topic, used per record;
/// `Send + Sync` so one decoder can serve several threads.
///
/// Decoding a Confluent frame whose schema id is not cached yet fetches it
/// from the Schema Registry with a blocking HTTP call: call
/// [`Decoder::decode`] from a plain thread (or `spawn_blocking`), never from
/// inside a tokio runtime.
pub struct Decoder<T> {
    kind: FormatKind,
    reader: Schema,
    /// The reader schema is the built-in MetricEvent schema, whose layout
    /// [`Decoder::decode_event`]'s specialised reader knows.
    builtin_reader: bool,
    /// Writer schema for plain Avro records (kind `avro`, or `auto` with `writer_schema`).
    plain: Option<WriterSchema>,
    /// Writer schemas by id for Confluent frames.
    confluent: Option<SchemaSource>,
    _target: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Decoder<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("kind", &self.kind)
            .field("plain_avro", &self.plain.is_some())
            .field("confluent", &self.confluent)
            .finish_non_exhaustive()
    }
}

impl<T: DeserializeOwned> Decoder<T> {
    /// `reader_schema`: the Avro schema text of `T` (one of
    /// [`schemas`](super::schemas)). Loads and parses the files named in
    /// `cfg`, and rejects writer schemas the reader schema cannot read.
    pub fn new(cfg: &FormatConfig, reader_schema: &str) -> Result<Self, CodecError> {
        super::limit_avro_allocations();
        cfg.check_kind()?;
        let reader = parse_schema("reader schema", reader_schema)?;
        let plain = match cfg.kind {
            FormatKind::Avro => Some(match cfg.writer_schema_file()? {
                Some(schema) => writer_for("writer_schema", schema, &reader)?,
                None => WriterSchema::new(reader.clone(), &reader),
            }),
            FormatKind::Auto => cfg
                .writer_schema_file()?
                .map(|schema| writer_for("writer_schema", schema, &reader))
                .transpose()?,
            FormatKind::Json | FormatKind::ConfluentAvro => None,
        };
        let confluent = match cfg.kind {
            FormatKind::ConfluentAvro | FormatKind::Auto => {
                let registry = cfg.registry_url()?.map(Registry::new);
                let mut local = FxHashMap::default();
                for (id, schema) in cfg.local_schema_files()? {
                    let key = format!("schemas.{id}");
                    local.insert(id, Arc::new(writer_for(&key, schema, &reader)?));
                }
                if registry.is_none() && local.is_empty() {
                    None
                } else {
                    Some(SchemaSource { local, registry })
                }
            }
            FormatKind::Json | FormatKind::Avro => None,
        };
        if cfg.kind == FormatKind::ConfluentAvro && confluent.is_none() {
            return Err(config_error(
                "schema_registry_url",
                "kind = \"confluent_avro\" needs schema_registry_url or schemas to decode",
            ));
        }
        Ok(Decoder {
            kind: cfg.kind,
            builtin_reader: is_builtin_event_schema(&reader),
            reader,
            plain,
            confluent,
            _target: PhantomData,
        })
    }

    /// Builds a Confluent decoder from in-memory schemas (id -> schema text);
    /// used by the demo and tests. No registry is consulted.
    pub fn confluent_local(
        schemas: &[(u32, &str)],
        reader_schema: &str,
    ) -> Result<Self, CodecError> {
        super::limit_avro_allocations();
        let reader = parse_schema("reader schema", reader_schema)?;
        let mut local = FxHashMap::default();
        for &(id, text) in schemas {
            let what = format!("schema id {id}");
            let schema = parse_schema(&what, text)?;
            local.insert(id, Arc::new(writer_for(&what, schema, &reader)?));
        }
        Ok(Decoder {
            kind: FormatKind::ConfluentAvro,
            builtin_reader: is_builtin_event_schema(&reader),
            reader,
            plain: None,
            confluent: Some(SchemaSource {
                local,
                registry: None,
            }),
            _target: PhantomData,
        })
    }

    /// Decodes one record value.
    pub fn decode(&self, payload: &[u8]) -> Result<T, DecodeError> {
        match self.route(payload)? {
            Route::Json => decode_json(payload),
            Route::JsonOrPlain => decode_json(payload).or_else(|_| self.decode_plain(payload)),
            Route::Plain => self.decode_plain(payload),
            Route::Confluent { id, body } => {
                let writer = self.confluent_writer(id)?;
                decode_avro(&writer, &self.reader, body)
            }
        }
    }

    /// Which format `payload` is read as.
    fn route<'p>(&self, payload: &'p [u8]) -> Result<Route<'p>, DecodeError> {
        let Some(&first) = payload.first() else {
            return Err(DecodeError::Empty);
        };
        Ok(match self.kind {
            FormatKind::Json => Route::Json,
            FormatKind::Avro => Route::Plain,
            FormatKind::ConfluentAvro => confluent_route(payload)?,
            FormatKind::Auto => match first {
                CONFLUENT_MAGIC if self.confluent.is_some() => confluent_route(payload)?,
                CONFLUENT_MAGIC => {
                    return Err(DecodeError::UnknownFormat {
                        first_byte: first,
                        hint: "looks like a Confluent frame but neither schema_registry_url \
                               nor schemas is configured",
                    })
                }
                b'{' => Route::Json,
                // JSON may start with whitespace (as `json` accepts); a
                // plain Avro record may too, so it gets its chance.
                _ if starts_like_json(payload) && self.plain.is_some() => Route::JsonOrPlain,
                _ if starts_like_json(payload) => Route::Json,
                _ if self.plain.is_some() => Route::Plain,
                _ => {
                    return Err(DecodeError::UnknownFormat {
                        first_byte: first,
                        hint: "not JSON, not a Confluent frame, and no writer_schema is \
                               configured for plain Avro",
                    })
                }
            },
        })
    }

    /// The writer schema registered under a Confluent frame's id.
    fn confluent_writer(&self, id: u32) -> Result<Arc<WriterSchema>, DecodeError> {
        match &self.confluent {
            Some(source) => source.get(id, &self.reader),
            None => Err(DecodeError::UnknownSchemaId(id)),
        }
    }

    fn decode_plain(&self, payload: &[u8]) -> Result<T, DecodeError> {
        match &self.plain {
            Some(writer) => decode_avro(writer, &self.reader, payload),
            // Unreachable by construction: kind avro always has a writer schema.
            None => Err(DecodeError::UnknownFormat {
                first_byte: payload.first().copied().unwrap_or_default(),
                hint: "no writer schema configured for plain Avro",
            }),
        }
    }
}

/// How one record is read.
enum Route<'p> {
    Json,
    /// JSON after leading whitespace, else plain Avro.
    JsonOrPlain,
    Plain,
    Confluent {
        id: u32,
        body: &'p [u8],
    },
}

fn confluent_route(payload: &[u8]) -> Result<Route<'_>, DecodeError> {
    let (id, body) = split_confluent_frame(payload)?;
    Ok(Route::Confluent { id, body })
}

impl Decoder<MetricEvent> {
    /// Decodes one MetricEvent, borrowing its strings from `payload`: the
    /// pipeline's hot path. JSON in the plain form goes through a reader
    /// specialised to it, other JSON through serde_json into the borrowed
    /// type; Avro written with the built-in schema through a
    /// reader specialised to it. Anything those do not take (an error, an
    /// Avro datum of another writer schema or layout) is decoded by
    /// [`Decoder::decode`], whose answer stands: so both give the same
    /// event, or the same error, for every record.
    pub fn decode_event<'p>(&self, payload: &'p [u8]) -> Result<MetricEventRef<'p>, DecodeError> {
        let fast = match self.route(payload)? {
            Route::Json | Route::JsonOrPlain => {
                json_reader::read_event(payload).or_else(|| serde_json::from_slice(payload).ok())
            }
            Route::Plain => match &self.plain {
                Some(writer) if self.builtin_reader && !writer.resolve => {
                    event_reader::read_event(payload)
                }
                _ => None,
            },
            Route::Confluent { id, body } => {
                let resolves = match &self.confluent {
                    Some(source) => source.resolves(id, &self.reader)?,
                    None => return Err(DecodeError::UnknownSchemaId(id)),
                };
                if self.builtin_reader && !resolves {
                    event_reader::read_event(body)
                } else {
                    None
                }
            }
        };
        match fast {
            Some(event) => Ok(event),
            None => self.decode(payload).map(MetricEventRef::from),
        }
    }
}

/// Splits a Confluent frame into its schema id and Avro body.
fn split_confluent_frame(payload: &[u8]) -> Result<(u32, &[u8]), DecodeError> {
    match payload {
        [] => Err(DecodeError::Empty),
        [magic, ..] if *magic != CONFLUENT_MAGIC => Err(DecodeError::BadMagicByte(*magic)),
        [_, a, b, c, d, body @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), body)),
        short => Err(DecodeError::Truncated { len: short.len() }),
    }
}

fn decode_json<T: DeserializeOwned>(payload: &[u8]) -> Result<T, DecodeError> {
    serde_json::from_slice(payload).map_err(DecodeError::Json)
}

fn decode_avro<T: DeserializeOwned>(
    writer: &WriterSchema,
    reader: &Schema,
    body: &[u8],
) -> Result<T, DecodeError> {
    let mut rest = body;
    let value =
        apache_avro::from_avro_datum(&writer.schema, &mut rest, None).map_err(DecodeError::Avro)?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes { count: rest.len() });
    }
    let value = if writer.resolve {
        value.resolve(reader).map_err(DecodeError::Avro)?
    } else {
        value
    };
    apache_avro::from_value(&value).map_err(DecodeError::Avro)
}

fn is_builtin_event_schema(reader: &Schema) -> bool {
    Schema::parse_str(super::schemas::METRIC_EVENT).is_ok_and(|builtin| builtin == *reader)
}

/// Pairs a configured writer schema with the reader, rejecting it up front
/// when the reader cannot read what it writes.
fn writer_for(key: &str, schema: Schema, reader: &Schema) -> Result<WriterSchema, CodecError> {
    SchemaCompatibility::can_read(&schema, reader).map_err(|e| {
        config_error(
            key,
            format!("writer schema cannot be read with the reader schema: {e}"),
        )
    })?;
    Ok(WriterSchema::new(schema, reader))
}

/// Checks a writer schema fetched from the registry against the reader.
pub(crate) fn check_fetched(id: u32, schema: &Schema, reader: &Schema) -> Result<(), DecodeError> {
    SchemaCompatibility::can_read(schema, reader).map_err(|e| DecodeError::InvalidWriterSchema {
        id,
        problem: format!("cannot be read with the reader schema: {e}"),
    })
}

/// True when the first byte that is not JSON whitespace opens an object.
fn starts_like_json(payload: &[u8]) -> bool {
    payload
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .is_some_and(|b| *b == b'{')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confluent_frame_splits_into_id_and_body() {
        let (id, body) = split_confluent_frame(&[0, 0, 0, 1, 2, 9, 9]).unwrap();
        assert_eq!(id, 258);
        assert_eq!(body, &[9, 9]);
        assert!(matches!(
            split_confluent_frame(&[0, 0, 0]),
            Err(DecodeError::Truncated { len: 3 })
        ));
        assert!(matches!(
            split_confluent_frame(&[7, 0, 0, 0, 1]),
            Err(DecodeError::BadMagicByte(7))
        ));
    }

    mod decode_event {
        //! `Decoder::decode_event` (borrowed, specialised) against
        //! `Decoder::decode` (serde_json and apache-avro into the owned
        //! type): the same event or the same error for every record.

        use std::collections::BTreeMap;

        use proptest::prelude::*;

        use super::super::*;
        use crate::codec::{schemas, Encoder};
        use crate::model::{EventView, ModelRef};

        fn text() -> impl Strategy<Value = String> {
            prop_oneof![
                4 => "[a-z_]{1,8}",
                1 => "[ -~]{0,6}",
                1 => "[\\\"/\n\té😀a-z]{0,5}",
            ]
        }

        fn value() -> impl Strategy<Value = f64> {
            prop_oneof![
                any::<f64>().prop_filter("finite", |v| v.is_finite()),
                (-1000i64..1000).prop_map(|v| v as f64),
                Just(f64::INFINITY),
            ]
        }

        fn event() -> impl Strategy<Value = MetricEvent> {
            (
                (text(), text(), proptest::option::of(text())),
                prop_oneof![0i64..3_000_000_000_000, any::<i64>()],
                proptest::collection::btree_map(text(), value(), 0..6),
                proptest::option::of(text()),
                proptest::collection::btree_map(text(), text(), 0..4),
            )
                .prop_map(
                    |((project, name, version), timestamp, metrics, error, tags)| MetricEvent {
                        model: ModelRef {
                            project,
                            name,
                            version,
                        },
                        timestamp,
                        metrics,
                        error,
                        tags,
                    },
                )
        }

        fn json_decoder() -> Decoder<MetricEvent> {
            let cfg = FormatConfig {
                kind: FormatKind::Json,
                ..FormatConfig::default()
            };
            Decoder::new(&cfg, schemas::METRIC_EVENT).unwrap()
        }

        fn avro_decoder() -> Decoder<MetricEvent> {
            Decoder::confluent_local(&[(1, schemas::METRIC_EVENT)], schemas::METRIC_EVENT).unwrap()
        }

        fn plain_decoder() -> Decoder<MetricEvent> {
            let cfg = FormatConfig {
                kind: FormatKind::Avro,
                ..FormatConfig::default()
            };
            Decoder::new(&cfg, schemas::METRIC_EVENT).unwrap()
        }

        type Decoded = Result<(MetricEvent, Result<(), crate::model::InvalidEvent>), String>;

        /// Both decoders' answers for `bytes`, with each event's validation,
        /// as their debug text (so a NaN metric compares equal to itself).
        fn both_text(decoder: &Decoder<MetricEvent>, bytes: &[u8]) -> (String, String) {
            let (fast, generic) = both(decoder, bytes);
            (format!("{fast:?}"), format!("{generic:?}"))
        }

        /// Both decoders' answers for `bytes`, with each event's validation.
        fn both(decoder: &Decoder<MetricEvent>, bytes: &[u8]) -> (Decoded, Decoded) {
            let fast = decoder
                .decode_event(bytes)
                .map(|e| (e.to_owned_event(), EventView::validate(&e)))
                .map_err(|e| e.to_string());
            let generic = decoder
                .decode(bytes)
                .map(|e| {
                    let valid = e.validate();
                    (e, valid)
                })
                .map_err(|e| e.to_string());
            (fast, generic)
        }

        fn confluent_bytes(event: &MetricEvent) -> Vec<u8> {
            Encoder::confluent(1, schemas::METRIC_EVENT)
                .unwrap()
                .encode(event)
                .unwrap()
        }

        /// One damage to a record: a byte changed, cut short or grown.
        fn damage(mut bytes: Vec<u8>, at: usize, byte: u8, how: u8) -> Vec<u8> {
            let at = at % (bytes.len() + 1);
            match how % 4 {
                0 if at < bytes.len() => bytes[at] = byte,
                1 => bytes.truncate(at),
                2 => bytes.insert(at, byte),
                _ => bytes.push(byte),
            }
            bytes
        }

        proptest! {
            #[test]
            fn valid_records_decode_to_the_same_event(event in event()) {
                let json = serde_json::to_vec(&event).unwrap();
                let (fast, generic) = both(&json_decoder(), &json);
                prop_assert_eq!(&fast, &generic);
                if generic.is_ok() {
                    // A borrowed path took it, not the fallback: the
                    // specialised reader unless a string needed an escape.
                    prop_assert!(serde_json::from_slice::<MetricEventRef>(&json).is_ok());
                    prop_assert!(
                        json_reader::read_event(&json).is_some() || json.contains(&b'\\'),
                        "{}", String::from_utf8_lossy(&json)
                    );
                }

                let confluent = confluent_bytes(&event);
                let (fast, generic) = both(&avro_decoder(), &confluent);
                prop_assert_eq!(&fast, &generic);
                prop_assert_eq!(generic.map(|(e, _)| e), Ok(event.clone()));
                // The specialised reader took it, not the fallback.
                let read = event_reader::read_event(&confluent[5..]).map(|e| e.to_owned_event());
                prop_assert_eq!(read, Some(event.clone()));

                let (fast, generic) = both(&plain_decoder(), &confluent[5..]);
                prop_assert_eq!(fast, generic);
            }

            #[test]
            fn damaged_records_decode_alike(
                event in event(),
                at in any::<usize>(),
                byte in any::<u8>(),
                how in any::<u8>(),
            ) {
                let json = damage(serde_json::to_vec(&event).unwrap(), at, byte, how);
                let (fast, generic) = both_text(&json_decoder(), &json);
                prop_assert_eq!(fast, generic);
                // What the specialised reader takes, serde_json takes alike.
                if let Some(read) = json_reader::read_event(&json) {
                    let generic = json_decoder().decode(&json).map_err(|e| e.to_string());
                    prop_assert_eq!(
                        format!("{:?}", Ok::<_, String>(read.to_owned_event())),
                        format!("{generic:?}")
                    );
                }

                let confluent = damage(confluent_bytes(&event), at, byte, how);
                let (fast, generic) = both_text(&avro_decoder(), &confluent);
                prop_assert_eq!(&fast, &generic);
                if confluent.starts_with(&[0, 0, 0, 0, 1]) {
                    // What the specialised reader takes, apache-avro takes alike.
                    if let Some(read) = event_reader::read_event(&confluent[5..]) {
                        let generic = avro_decoder().decode(&confluent).map_err(|e| e.to_string());
                        prop_assert_eq!(
                            format!("{:?}", Ok::<_, String>(read.to_owned_event())),
                            format!("{generic:?}")
                        );
                    }
                }
            }
        }

        #[test]
        fn a_corrupt_count_is_refused_without_reserving_for_it() {
            // project "p", name "n", no version, timestamp 1, then a
            // metrics map announcing 500,000,000 entries: apache-avro's
            // default cap let it reserve ~40 GB and abort the process.
            let mut frame = vec![0, 0, 0, 0, 1, 2, b'p', 2, b'n', 0, 2];
            let mut n: u64 = 500_000_000 << 1;
            while n >= 0x80 {
                frame.push((n as u8) | 0x80);
                n >>= 7;
            }
            frame.push(n as u8);
            frame.extend([2, b'a', 0, 0, 0, 0, 0, 0, 0, 0]);
            let (fast, generic) = both(&avro_decoder(), &frame);
            assert_eq!(fast, generic);
            let error = generic.unwrap_err();
            assert!(error.contains("allocate"), "{error}");
        }

        #[test]
        fn repeated_names_keep_the_last_value_in_both() {
            let json = br#"{"model":{"project":"p","name":"n"},"timestamp":1,
                "metrics":{"a":1,"a":2},"tags":{"t":"x","t":"y"}}"#;
            let (fast, generic) = both(&json_decoder(), json);
            assert_eq!(fast, generic);
            let (event, _) = fast.unwrap();
            assert_eq!(event.metrics, BTreeMap::from([("a".to_owned(), 2.0)]));
            assert_eq!(event.tags["t"], "y");
        }

        #[test]
        fn an_error_names_the_same_cause() {
            let json = br#"{"model":{"project":"p"},"timestamp":1}"#;
            let (fast, generic) = both(&json_decoder(), json);
            assert_eq!(fast, generic);
            assert!(fast.unwrap_err().contains("name"));
        }
    }
}
