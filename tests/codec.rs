//! Codec integration tests: round trips through every wire format, schema
//! evolution, malformed payloads, the Schema Registry client, replay files and
//! format config checks.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use apache_avro::types::Value;
use apache_avro::Schema;
use driftwatch::codec::{
    read_events_file, schemas, write_events_ocf, CodecError, DecodeError, Decoder, Encoder,
    FormatConfig, FormatKind,
};
use driftwatch::model::{Action, MetricEvent, ModelRef, RetrainRequest, RetrainStatus, StatusKind};
use serde::de::DeserializeOwned;
use serde::Serialize;

const METRIC_EVENT_V0: &str = include_str!("../schemas/compat/metric_event_v0.avsc");

fn v0_schema_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/compat/metric_event_v0.avsc")
}

fn full_event() -> MetricEvent {
    MetricEvent {
        model: ModelRef::new("fraud", "scorer", Some("3")),
        timestamp: 1_700_000_000_123,
        metrics: BTreeMap::from([
            ("accuracy".to_owned(), 0.91),
            ("latency_ms".to_owned(), 12.5),
            ("my_custom".to_owned(), -3.0e-7),
        ]),
        error: Some("CUDA out of memory".to_owned()),
        tags: BTreeMap::from([
            ("region".to_owned(), "eu-west-1".to_owned()),
            ("host".to_owned(), "gpu-7".to_owned()),
        ]),
    }
}

fn sparse_event() -> MetricEvent {
    MetricEvent {
        model: ModelRef::new("vision", "detector", None),
        timestamp: 0,
        metrics: BTreeMap::from([("fps".to_owned(), 29.97)]),
        error: None,
        tags: BTreeMap::new(),
    }
}

fn events() -> Vec<MetricEvent> {
    vec![full_event(), sparse_event()]
}

fn requests() -> Vec<RetrainRequest> {
    vec![
        RetrainRequest {
            request_id: "fraud/scorer-1700000000123-abc".to_owned(),
            model: ModelRef::new("fraud", "scorer", Some("3")),
            action: Action::FullRetrain,
            rule: "accuracy-drop".to_owned(),
            detector: "page_hinkley".to_owned(),
            metric: "accuracy".to_owned(),
            observed: 0.71,
            threshold: 0.8,
            window_start: 1_699_999_000_000,
            window_end: 1_700_000_000_123,
            triggered_at: 1_700_000_000_123,
            reason: "accuracy mean 0.71 < 0.80".to_owned(),
            evidence: BTreeMap::from([
                ("baseline".to_owned(), "0.93".to_owned()),
                ("samples".to_owned(), "500".to_owned()),
            ]),
        },
        RetrainRequest {
            request_id: "r2".to_owned(),
            model: ModelRef::new("p", "n", None),
            action: Action::FineTune,
            rule: "drift".to_owned(),
            detector: "psi".to_owned(),
            metric: "drift_score".to_owned(),
            observed: 0.3,
            threshold: 0.2,
            window_start: 1,
            window_end: 2,
            triggered_at: 2,
            reason: "drift".to_owned(),
            evidence: BTreeMap::new(),
        },
    ]
}

fn statuses() -> Vec<RetrainStatus> {
    vec![
        RetrainStatus {
            request_id: "fraud/scorer-1700000000123-abc".to_owned(),
            model: ModelRef::new("fraud", "scorer", Some("3")),
            status: StatusKind::Succeeded,
            new_version: Some("4".to_owned()),
            timestamp: 1_700_000_100_000,
        },
        RetrainStatus {
            request_id: "r2".to_owned(),
            model: ModelRef::new("p", "n", None),
            status: StatusKind::Started,
            new_version: None,
            timestamp: 5,
        },
        RetrainStatus {
            request_id: "r3".to_owned(),
            model: ModelRef::new("p", "n", Some("1")),
            status: StatusKind::Failed,
            new_version: None,
            timestamp: 6,
        },
        RetrainStatus {
            request_id: "r4".to_owned(),
            model: ModelRef::new("p", "n", Some("1")),
            status: StatusKind::Accepted,
            new_version: None,
            timestamp: 7,
        },
    ]
}

fn cfg(kind: FormatKind) -> FormatConfig {
    FormatConfig {
        kind,
        ..FormatConfig::default()
    }
}

/// Encodes and decodes every value through JSON, plain Avro, Confluent Avro
/// and auto-detection, checking each comes back equal.
fn round_trip_all<T>(values: &[T], schema: &str)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let json = Encoder::<T>::json();
    let avro = Encoder::<T>::new(&cfg(FormatKind::Avro), schema).unwrap();
    let confluent = Encoder::<T>::confluent(42, schema).unwrap();

    let json_decoder = Decoder::<T>::new(&cfg(FormatKind::Json), schema).unwrap();
    let avro_decoder = Decoder::<T>::new(&cfg(FormatKind::Avro), schema).unwrap();
    let confluent_decoder = Decoder::<T>::confluent_local(&[(42, schema)], schema).unwrap();
    // Auto-detection as configured: Confluent frames by local schema id,
    // JSON objects (leading whitespace allowed), nothing else.
    let dir = tempfile::tempdir().unwrap();
    let schema_file = dir.path().join("schema.avsc");
    std::fs::write(&schema_file, schema).unwrap();
    let auto_decoder = Decoder::<T>::new(
        &FormatConfig {
            kind: FormatKind::Auto,
            schemas: BTreeMap::from([("42".to_owned(), schema_file)]),
            ..FormatConfig::default()
        },
        schema,
    )
    .unwrap();
    let auto_cfg = Decoder::<T>::new(&cfg(FormatKind::Auto), schema).unwrap();

    for value in values {
        let bytes = json.encode(value).unwrap();
        assert_eq!(&json_decoder.decode(&bytes).unwrap(), value, "json");
        assert_eq!(&auto_cfg.decode(&bytes).unwrap(), value, "auto json");
        assert_eq!(&auto_decoder.decode(&bytes).unwrap(), value, "auto json");
        let spaced = [b"\n  \t".as_slice(), &bytes].concat();
        assert_eq!(
            &json_decoder.decode(&spaced).unwrap(),
            value,
            "json, spaced"
        );
        assert_eq!(
            &auto_cfg.decode(&spaced).unwrap(),
            value,
            "auto json, spaced"
        );

        let bytes = avro.encode(value).unwrap();
        assert_eq!(&avro_decoder.decode(&bytes).unwrap(), value, "plain avro");

        let bytes = confluent.encode(value).unwrap();
        assert_eq!(&bytes[..5], &[0, 0, 0, 0, 42], "confluent header");
        // The body is a plain datum. (Bytes are not compared: apache-avro
        // keeps maps in a HashMap, so map entry order varies per encoding.)
        assert_eq!(&avro_decoder.decode(&bytes[5..]).unwrap(), value, "body");
        assert_eq!(
            &confluent_decoder.decode(&bytes).unwrap(),
            value,
            "confluent"
        );
        assert_eq!(&auto_decoder.decode(&bytes).unwrap(), value, "auto");
    }
}

#[test]
fn metric_events_round_trip_through_every_format() {
    round_trip_all(&events(), schemas::METRIC_EVENT);
}

#[test]
fn retrain_requests_round_trip_through_every_format() {
    round_trip_all(&requests(), schemas::RETRAIN_REQUEST);
}

#[test]
fn retrain_statuses_round_trip_through_every_format() {
    round_trip_all(&statuses(), schemas::RETRAIN_STATUS);
}

#[test]
fn json_uses_rust_field_names_and_screaming_enum_symbols() {
    let bytes = Encoder::json().encode(&requests()[0]).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(json["action"], "FULL_RETRAIN");
    assert_eq!(json["window_start"], 1_699_999_000_000_i64);
    assert_eq!(json["model"]["version"], "3");
}

/// The Avro bytes carry the schema's types: a logical timestamp, an enum
/// symbol, union branches and maps, readable by any Avro implementation.
#[test]
fn avro_encoding_uses_schema_types() {
    let schema = Schema::parse_str(schemas::RETRAIN_REQUEST).unwrap();
    let encoder = Encoder::new(&cfg(FormatKind::Avro), schemas::RETRAIN_REQUEST).unwrap();
    let bytes = encoder.encode(&requests()[0]).unwrap();
    let value = apache_avro::from_avro_datum(&schema, &mut &bytes[..], None).unwrap();
    let Value::Record(fields) = value else {
        panic!("not a record: {value:?}");
    };
    let field = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(field("action"), Value::Enum(1, "FULL_RETRAIN".to_owned()));
    assert_eq!(
        field("triggered_at"),
        Value::TimestampMillis(1_700_000_000_123)
    );
    let Value::Record(model) = field("model") else {
        panic!("model is not a record");
    };
    assert_eq!(
        model[2],
        (
            "version".to_owned(),
            Value::Union(1, Box::new(Value::String("3".to_owned())))
        )
    );
    assert!(matches!(field("evidence"), Value::Map(m) if m.len() == 2));
}

/// MetricEvent as written by an old producer (schema v0).
#[derive(Serialize)]
struct EventV0 {
    model: ModelV0,
    timestamp: i64,
    metrics: BTreeMap<String, f64>,
}

#[derive(Serialize)]
struct ModelV0 {
    project: String,
    name: String,
}

fn event_v0() -> EventV0 {
    EventV0 {
        model: ModelV0 {
            project: "fraud".to_owned(),
            name: "scorer".to_owned(),
        },
        timestamp: 1_600_000_000_000,
        metrics: BTreeMap::from([("accuracy".to_owned(), 0.5)]),
    }
}

fn expected_from_v0() -> MetricEvent {
    MetricEvent {
        model: ModelRef::new("fraud", "scorer", None),
        timestamp: 1_600_000_000_000,
        metrics: BTreeMap::from([("accuracy".to_owned(), 0.5)]),
        error: None,
        tags: BTreeMap::new(),
    }
}

#[test]
fn old_writer_schema_resolves_to_current_reader_with_defaults() {
    // Plain Avro with the old writer schema named in the config.
    let v0_cfg = FormatConfig {
        kind: FormatKind::Avro,
        writer_schema: Some(v0_schema_path()),
        ..FormatConfig::default()
    };
    let bytes = Encoder::new(&v0_cfg, METRIC_EVENT_V0)
        .unwrap()
        .encode(&event_v0())
        .unwrap();
    let decoder = Decoder::<MetricEvent>::new(&v0_cfg, schemas::METRIC_EVENT).unwrap();
    assert_eq!(decoder.decode(&bytes).unwrap(), expected_from_v0());

    // The same body is not decodable with the current schema as writer.
    let current = Decoder::<MetricEvent>::new(&cfg(FormatKind::Avro), schemas::METRIC_EVENT)
        .unwrap()
        .decode(&bytes);
    assert!(current.is_err(), "{current:?}");

    // Confluent frames: one decoder, both schema versions by id.
    let old = Encoder::confluent(1, METRIC_EVENT_V0)
        .unwrap()
        .encode(&event_v0())
        .unwrap();
    let new = Encoder::confluent(2, schemas::METRIC_EVENT)
        .unwrap()
        .encode(&full_event())
        .unwrap();
    let decoder = Decoder::<MetricEvent>::confluent_local(
        &[(1, METRIC_EVENT_V0), (2, schemas::METRIC_EVENT)],
        schemas::METRIC_EVENT,
    )
    .unwrap();
    assert_eq!(decoder.decode(&old).unwrap(), expected_from_v0());
    assert_eq!(decoder.decode(&new).unwrap(), full_event());
}

#[test]
fn incompatible_writer_schema_is_rejected_at_setup_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("request.avsc");
    std::fs::write(&path, schemas::RETRAIN_REQUEST).unwrap();
    let config = FormatConfig {
        kind: FormatKind::ConfluentAvro,
        schemas: BTreeMap::from([("9".to_owned(), path)]),
        ..FormatConfig::default()
    };
    let err = Decoder::<MetricEvent>::new(&config, schemas::METRIC_EVENT).unwrap_err();
    assert!(
        matches!(&err, CodecError::Config { key, .. } if key == "schemas.9"),
        "{err}"
    );
}

fn expect_kind<T: Debug>(result: Result<T, DecodeError>, kind: &str) -> DecodeError {
    match result {
        Ok(v) => panic!("expected a {kind} error, decoded {v:?}"),
        Err(e) => {
            assert_eq!(e.kind(), kind, "{e}");
            assert!(!e.is_transient(), "{e}");
            e
        }
    }
}

#[test]
fn malformed_payloads_are_classified() {
    let schema = schemas::METRIC_EVENT;
    let json = Decoder::<MetricEvent>::new(&cfg(FormatKind::Json), schema).unwrap();
    let avro = Decoder::<MetricEvent>::new(&cfg(FormatKind::Avro), schema).unwrap();
    let confluent = Decoder::<MetricEvent>::confluent_local(&[(7, schema)], schema).unwrap();
    let auto = Decoder::<MetricEvent>::new(&cfg(FormatKind::Auto), schema).unwrap();

    for decoder in [&json, &avro, &confluent, &auto] {
        expect_kind(decoder.decode(b""), "empty");
    }
    expect_kind(json.decode(b"{\"model\": nope"), "json");
    expect_kind(json.decode(b"\x00\x01binary"), "json");
    expect_kind(
        json.decode(br#"{"model": {"project": "p", "name": "n"}, "metrics": {}}"#),
        "json",
    );
    expect_kind(auto.decode(b"{oops"), "json");

    let frame = Encoder::confluent(7, schema)
        .unwrap()
        .encode(&full_event())
        .unwrap();
    let mut bad_magic = frame.clone();
    bad_magic[0] = 1;
    expect_kind(confluent.decode(&bad_magic), "bad_magic_byte");
    expect_kind(confluent.decode(&frame[..3]), "truncated");
    expect_kind(confluent.decode(&frame[..1]), "truncated");

    let mut unknown = frame.clone();
    unknown[4] = 8;
    let err = expect_kind(confluent.decode(&unknown), "unknown_schema_id");
    assert!(matches!(err, DecodeError::UnknownSchemaId(8)));

    // Corrupt bodies: cut short, a negative string length, trailing bytes.
    expect_kind(confluent.decode(&frame[..frame.len() - 3]), "avro");
    expect_kind(confluent.decode(&[0, 0, 0, 0, 7, 0x01, b'x']), "avro");
    expect_kind(confluent.decode(&[0, 0, 0, 0, 7]), "avro");
    let mut trailing = frame.clone();
    trailing.push(0);
    expect_kind(confluent.decode(&trailing), "avro");
    expect_kind(avro.decode(&frame[5..frame.len() - 1]), "avro");

    // Auto without any Avro setting cannot read binary.
    expect_kind(auto.decode(&frame), "unknown_format");
    expect_kind(auto.decode(&frame[5..]), "unknown_format");
}

#[test]
fn auto_detects_plain_avro_when_a_writer_schema_is_configured() {
    let config = FormatConfig {
        writer_schema: Some(v0_schema_path()),
        ..FormatConfig::default()
    };
    let decoder = Decoder::<MetricEvent>::new(&config, schemas::METRIC_EVENT).unwrap();
    let v0_cfg = FormatConfig {
        kind: FormatKind::Avro,
        writer_schema: Some(v0_schema_path()),
        ..FormatConfig::default()
    };
    let bytes = Encoder::new(&v0_cfg, METRIC_EVENT_V0)
        .unwrap()
        .encode(&event_v0())
        .unwrap();
    assert_eq!(decoder.decode(&bytes).unwrap(), expected_from_v0());
    let json = serde_json::to_vec(&full_event()).unwrap();
    assert_eq!(decoder.decode(&json).unwrap(), full_event());
}

mod registry {
    use super::*;
    use axum::extract::{Path as UrlPath, State};
    use axum::http::StatusCode;
    use axum::routing::get;
    use axum::{Json, Router};

    struct Server {
        url: String,
        hits: Arc<AtomicUsize>,
    }

    /// A fake Schema Registry: id 1 is MetricEvent, id 2 is not Avro,
    /// id 5 always fails with 503, anything else is 404.
    fn start() -> Server {
        let hits = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = std::sync::mpsc::channel();
        let state = Arc::clone(&hits);
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let app = Router::new()
                    .route("/schemas/ids/{id}", get(schema_by_id))
                    .with_state(state);
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        let addr = rx.recv().unwrap();
        Server {
            url: format!("http://{addr}/"),
            hits,
        }
    }

    async fn schema_by_id(
        State(hits): State<Arc<AtomicUsize>>,
        UrlPath(id): UrlPath<u32>,
    ) -> Result<Json<serde_json::Value>, StatusCode> {
        hits.fetch_add(1, Ordering::SeqCst);
        match id {
            1 => Ok(Json(serde_json::json!({ "schema": schemas::METRIC_EVENT }))),
            2 => Ok(Json(
                serde_json::json!({ "schema": "syntax = \"proto3\";", "schemaType": "PROTOBUF" }),
            )),
            5 => Err(StatusCode::SERVICE_UNAVAILABLE),
            _ => Err(StatusCode::NOT_FOUND),
        }
    }

    fn decoder(url: &str) -> Decoder<MetricEvent> {
        let config = FormatConfig {
            kind: FormatKind::ConfluentAvro,
            schema_registry_url: Some(url.to_owned()),
            ..FormatConfig::default()
        };
        assert_eq!(config.check(), Ok(()));
        Decoder::new(&config, schemas::METRIC_EVENT).unwrap()
    }

    fn frame(id: u32) -> Vec<u8> {
        Encoder::confluent(id, schemas::METRIC_EVENT)
            .unwrap()
            .encode(&full_event())
            .unwrap()
    }

    #[test]
    fn fetches_writer_schema_once_and_caches_it() {
        let server = start();
        let decoder = decoder(&server.url);
        assert_eq!(decoder.decode(&frame(1)).unwrap(), full_event());
        assert_eq!(server.hits.load(Ordering::SeqCst), 1);
        assert_eq!(decoder.decode(&frame(1)).unwrap(), full_event());
        assert_eq!(
            server.hits.load(Ordering::SeqCst),
            1,
            "second decode is cached"
        );
    }

    #[test]
    fn unknown_id_is_permanent_and_not_retried() {
        let server = start();
        let decoder = decoder(&server.url);
        expect_kind(decoder.decode(&frame(3)), "unknown_schema_id");
        assert_eq!(server.hits.load(Ordering::SeqCst), 1);
        expect_kind(decoder.decode(&frame(2)), "invalid_writer_schema");
    }

    #[test]
    fn server_errors_are_retried_then_transient() {
        let server = start();
        let decoder = decoder(&server.url);
        let err = decoder.decode(&frame(5)).unwrap_err();
        assert_eq!(err.kind(), "registry_unavailable", "{err}");
        assert!(err.is_transient());
        assert_eq!(server.hits.load(Ordering::SeqCst), 3, "retried");
        // The failure is not cached: the registry is asked again next time.
        assert!(decoder.decode(&frame(5)).unwrap_err().is_transient());
        assert_eq!(server.hits.load(Ordering::SeqCst), 6);
    }

    #[test]
    fn closed_port_is_transient() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let decoder = decoder(&format!("http://127.0.0.1:{port}"));
        let err = decoder.decode(&frame(1)).unwrap_err();
        assert_eq!(err.kind(), "registry_unavailable", "{err}");
        assert!(err.is_transient());
    }

    #[test]
    fn local_schemas_are_consulted_before_the_registry() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("event.avsc");
        std::fs::write(&path, schemas::METRIC_EVENT).unwrap();
        let config = FormatConfig {
            kind: FormatKind::ConfluentAvro,
            schema_registry_url: Some(format!("http://127.0.0.1:{port}")),
            schemas: BTreeMap::from([("11".to_owned(), path)]),
            ..FormatConfig::default()
        };
        let decoder = Decoder::<MetricEvent>::new(&config, schemas::METRIC_EVENT).unwrap();
        assert_eq!(decoder.decode(&frame(11)).unwrap(), full_event());
    }
}

#[test]
fn replay_files_in_json_lines_and_ocf_give_the_same_events() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("events.jsonl");
    let mut text = String::new();
    for event in events() {
        text.push_str(&serde_json::to_string(&event).unwrap());
        text.push_str("\n\n");
    }
    std::fs::write(&jsonl, text).unwrap();
    let ocf = dir.path().join("events.avro");
    write_events_ocf(&ocf, &events()).unwrap();

    assert_eq!(read_events_file(&jsonl).unwrap(), events());
    assert_eq!(read_events_file(&ocf).unwrap(), events());
}

#[test]
fn ocf_written_with_an_old_schema_reads_with_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.avro");
    let schema = Schema::parse_str(METRIC_EVENT_V0).unwrap();
    let mut writer = apache_avro::Writer::new(&schema, Vec::new());
    writer.append_ser(event_v0()).unwrap();
    std::fs::write(&path, writer.into_inner().unwrap()).unwrap();
    assert_eq!(read_events_file(&path).unwrap(), vec![expected_from_v0()]);
}

#[test]
fn bad_json_line_reports_its_line_number() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let good = serde_json::to_string(&full_event()).unwrap();
    std::fs::write(&path, format!("{good}\n\n{good}\n{{\"model\": 1}}\n")).unwrap();
    let err = read_events_file(&path).unwrap_err();
    assert!(matches!(err, CodecError::JsonLine { line: 4, .. }), "{err}");
    assert!(err.to_string().contains("line 4"), "{err}");
}

#[test]
fn missing_replay_file_is_an_io_error() {
    let err = read_events_file(Path::new("/nonexistent/events.jsonl")).unwrap_err();
    assert!(matches!(err, CodecError::Io { .. }), "{err}");
}

#[test]
fn check_rejects_bad_ids_and_missing_files_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("event.avsc");
    std::fs::write(&good, schemas::METRIC_EVENT).unwrap();

    let with_schemas = |entries: &[(&str, &Path)]| FormatConfig {
        kind: FormatKind::ConfluentAvro,
        schemas: entries
            .iter()
            .map(|(k, p)| ((*k).to_owned(), p.to_path_buf()))
            .collect(),
        ..FormatConfig::default()
    };

    assert_eq!(with_schemas(&[("1", &good)]).check(), Ok(()));

    let (key, problem) = with_schemas(&[("abc", &good)]).check().unwrap_err();
    assert_eq!(key, "schemas.abc");
    assert!(problem.contains("not a schema id"), "{problem}");

    let (key, _) = with_schemas(&[("4294967296", &good)]).check().unwrap_err();
    assert_eq!(key, "schemas.4294967296");

    let missing = dir.path().join("missing.avsc");
    let (key, problem) = with_schemas(&[("3", &missing)]).check().unwrap_err();
    assert_eq!(key, "schemas.3");
    assert!(problem.contains("missing.avsc"), "{problem}");

    let not_avro = dir.path().join("not_avro.avsc");
    std::fs::write(&not_avro, "{\"type\": \"wat\"}").unwrap();
    let (key, _) = with_schemas(&[("3", &not_avro)]).check().unwrap_err();
    assert_eq!(key, "schemas.3");

    let config = FormatConfig {
        kind: FormatKind::Avro,
        writer_schema: Some(missing.clone()),
        ..FormatConfig::default()
    };
    assert_eq!(config.check().unwrap_err().0, "writer_schema");
    assert!(Decoder::<MetricEvent>::new(&config, schemas::METRIC_EVENT).is_err());
}

#[test]
fn check_enforces_what_each_kind_needs() {
    let confluent = cfg(FormatKind::ConfluentAvro);
    assert_eq!(confluent.check().unwrap_err().0, "schema_registry_url");

    let encoder_only = FormatConfig {
        schema_id: Some(3),
        ..cfg(FormatKind::ConfluentAvro)
    };
    assert_eq!(encoder_only.check(), Ok(()));
    assert_eq!(encoder_only.check_encoder(), Ok(()));
    assert!(Encoder::<MetricEvent>::new(&encoder_only, schemas::METRIC_EVENT).is_ok());
    assert!(Decoder::<MetricEvent>::new(&encoder_only, schemas::METRIC_EVENT).is_err());

    let decoder_only = FormatConfig {
        schema_registry_url: Some("http://registry:8081".to_owned()),
        ..cfg(FormatKind::ConfluentAvro)
    };
    assert_eq!(decoder_only.check(), Ok(()));
    assert_eq!(decoder_only.check_encoder().unwrap_err().0, "schema_id");
    let err = Encoder::<MetricEvent>::new(&decoder_only, schemas::METRIC_EVENT).unwrap_err();
    assert!(
        matches!(&err, CodecError::Config { key, .. } if key == "schema_id"),
        "{err}"
    );

    let bad_url = FormatConfig {
        schema_registry_url: Some("registry:8081".to_owned()),
        ..cfg(FormatKind::ConfluentAvro)
    };
    assert_eq!(bad_url.check().unwrap_err().0, "schema_registry_url");

    let json_with_id = FormatConfig {
        schema_id: Some(1),
        ..cfg(FormatKind::Json)
    };
    assert_eq!(json_with_id.check().unwrap_err().0, "schema_id");

    assert_eq!(FormatConfig::default().check(), Ok(()));
    assert_eq!(cfg(FormatKind::Avro).check(), Ok(()));
}

#[test]
fn format_config_reads_from_toml() {
    let config: FormatConfig = toml::from_str(
        r#"
        kind = "confluent_avro"
        schema_registry_url = "http://localhost:8081"
        schema_id = 12
        [schemas]
        "12" = "schemas/metric_event.avsc"
        "#,
    )
    .unwrap();
    assert_eq!(config.kind, FormatKind::ConfluentAvro);
    assert_eq!(config.schema_id, Some(12));
    assert_eq!(
        config.schemas.get("12"),
        Some(&PathBuf::from("schemas/metric_event.avsc"))
    );
    assert_eq!(
        toml::from_str::<FormatConfig>("").unwrap(),
        FormatConfig::default()
    );
    assert!(toml::from_str::<FormatConfig>("kind = \"protobuf\"").is_err());
    assert!(toml::from_str::<FormatConfig>("registry = \"x\"").is_err());
}

#[test]
fn codecs_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Decoder<MetricEvent>>();
    assert_send_sync::<Encoder<RetrainRequest>>();
    assert_send_sync::<DecodeError>();
    assert_send_sync::<CodecError>();
}
