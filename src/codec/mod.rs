//! Wire formats of the records driftwatch reads and writes: JSON, plain Avro
//! (a bare datum with a configured writer schema) and Avro in the Confluent
//! wire format (magic byte 0, big-endian u32 schema id, Avro body), plus
//! replay-file helpers.
//!
//! A [`Decoder`] or [`Encoder`] is built once per topic from a
//! [`FormatConfig`]; all schema parsing happens then (or, for schemas fetched
//! from a Schema Registry, once per schema id), never per record.

mod avro_bytes;
mod decode;
mod encode;
mod error;
mod event_reader;
mod file;
mod json_reader;
mod registry;
mod snapshot;
mod snapshot_reader;
mod snapshot_writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use apache_avro::Schema;

pub use decode::Decoder;
pub use encode::Encoder;
pub use error::{CodecError, DecodeError, EncodeError};
pub use file::{read_events_file, write_events_ocf};
pub use snapshot::SnapshotCodec;

/// The built-in (current) Avro schemas of the domain types in [`crate::model`].
pub mod schemas {
    /// Schema of [`crate::model::MetricEvent`].
    pub const METRIC_EVENT: &str = include_str!("../../schemas/metric_event.avsc");
    /// Schema of [`crate::model::RetrainRequest`].
    pub const RETRAIN_REQUEST: &str = include_str!("../../schemas/retrain_request.avsc");
    /// Schema of [`crate::model::RetrainStatus`].
    pub const RETRAIN_STATUS: &str = include_str!("../../schemas/retrain_status.avsc");
    /// Version 1 of [`crate::engine::snapshot::ModelSnapshot`] (changelog values).
    pub const MODEL_SNAPSHOT_V1: &str = include_str!("../../schemas/model_snapshot_v1.avsc");
    /// Version 2: detector state, N-of-M alert state, composites and the
    /// samples waiting for the watermark.
    pub const MODEL_SNAPSHOT_V2: &str = include_str!("../../schemas/model_snapshot_v2.avsc");
    /// Version 3: the state of silence rules.
    pub const MODEL_SNAPSHOT_V3: &str = include_str!("../../schemas/model_snapshot_v3.avsc");
    /// Version 4: compact windows, definitions by id, counters as fields.
    pub const MODEL_SNAPSHOT_V4: &str = include_str!("../../schemas/model_snapshot_v4.avsc");
    /// The snapshot schema this build writes and reads into.
    pub const MODEL_SNAPSHOT: &str = MODEL_SNAPSHOT_V4;
}

/// The longest string and the largest array or map count apache-avro may
/// allocate for while decoding one datum: 4 MiB (and 4 Mi items), far
/// beyond any record driftwatch accepts. Its default (512 Mi, counted in
/// items for arrays and maps) let one corrupt count reserve tens of
/// gigabytes and abort the process, a poison pill that a restart reads
/// again; the damaged-record property tests found it.
pub const MAX_AVRO_ALLOCATION: usize = 4 << 20;

/// Applies [`MAX_AVRO_ALLOCATION`]. The cap is process-wide and set by the
/// first decode, so every decoder's constructor calls this before
/// anything can be decoded.
pub(crate) fn limit_avro_allocations() {
    let cap = apache_avro::util::max_allocation_bytes(MAX_AVRO_ALLOCATION);
    if cap != MAX_AVRO_ALLOCATION {
        tracing::warn!(
            cap,
            wanted = MAX_AVRO_ALLOCATION,
            "apache-avro's allocation cap was set before driftwatch's decoders"
        );
    }
}

/// Which wire format a topic carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FormatKind {
    /// Decoding: detect per record (0 → Confluent, `{` → JSON, else plain
    /// Avro if a writer schema is configured). Encoding: JSON.
    #[default]
    Auto,
    /// serde_json of the Rust types.
    Json,
    /// A bare Avro datum; the writer schema comes from the config.
    Avro,
    /// Confluent wire format: magic 0, big-endian u32 schema id, Avro datum.
    ConfluentAvro,
}

impl FormatKind {
    fn config_name(self) -> &'static str {
        match self {
            FormatKind::Auto => "auto",
            FormatKind::Json => "json",
            FormatKind::Avro => "avro",
            FormatKind::ConfluentAvro => "confluent_avro",
        }
    }
}

/// Per-topic wire format, deserialized from the TOML config (deny_unknown_fields).
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct FormatConfig {
    /// The wire format; `auto` when omitted.
    #[serde(default)]
    pub kind: FormatKind,
    /// Plain Avro: writer schema file. Default: the built-in current schema.
    pub writer_schema: Option<PathBuf>,
    /// Confluent Avro: Schema Registry base URL to fetch writer schemas by id.
    pub schema_registry_url: Option<String>,
    /// Confluent Avro: local schema id (decimal string key) -> schema file.
    #[serde(default)]
    pub schemas: BTreeMap<String, PathBuf>,
    /// Encoding only: schema id written in the Confluent frame.
    pub schema_id: Option<u32>,
}

impl FormatConfig {
    /// Checks the config without network access: files readable and parse
    /// as Avro, ids are u32, settings fit the kind (e.g. `confluent_avro`
    /// needs `schema_registry_url` or `schemas` to decode, or `schema_id` to
    /// encode; `json` takes no schema settings). `Err((key, problem))` where
    /// key is the field name, e.g. `("schemas.abc", "not a schema id: ...")`.
    ///
    /// This check accepts a config usable by either side; use
    /// [`FormatConfig::check_encoder`] for an output topic.
    pub fn check(&self) -> Result<(), (String, String)> {
        self.validate().map_err(into_key_problem)
    }

    /// [`FormatConfig::check`] plus what only an encoder needs:
    /// `confluent_avro` requires `schema_id`.
    pub fn check_encoder(&self) -> Result<(), (String, String)> {
        self.check()?;
        if self.kind == FormatKind::ConfluentAvro && self.schema_id.is_none() {
            return Err((
                "schema_id".to_owned(),
                "kind = \"confluent_avro\" needs schema_id to encode".to_owned(),
            ));
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), CodecError> {
        self.check_kind()?;
        self.registry_url()?;
        self.writer_schema_file()?;
        self.local_schema_files()?;
        Ok(())
    }

    /// Rejects settings the kind does not use, and a Confluent config with nothing to go on.
    fn check_kind(&self) -> Result<(), CodecError> {
        let kind = self.kind;
        let unused = |key: &str| {
            Err(config_error(
                key,
                format!(
                    "not used with kind = \"{}\"; remove it or change kind",
                    kind.config_name()
                ),
            ))
        };
        let schema_settings = [
            ("writer_schema", self.writer_schema.is_some()),
            ("schema_registry_url", self.schema_registry_url.is_some()),
            ("schemas", !self.schemas.is_empty()),
            ("schema_id", self.schema_id.is_some()),
        ];
        match kind {
            FormatKind::Json => {
                if let Some((key, _)) = schema_settings.iter().find(|(_, set)| *set) {
                    return unused(key);
                }
            }
            FormatKind::Avro => {
                if let Some((key, _)) = schema_settings[1..].iter().find(|(_, set)| *set) {
                    return unused(key);
                }
            }
            FormatKind::Auto => {
                // Auto encodes as JSON, so a frame id would be silently ignored.
                if self.schema_id.is_some() {
                    return unused("schema_id");
                }
            }
            FormatKind::ConfluentAvro => {
                if self.schema_registry_url.is_none()
                    && self.schemas.is_empty()
                    && self.schema_id.is_none()
                {
                    return Err(config_error(
                        "schema_registry_url",
                        "kind = \"confluent_avro\" needs schema_registry_url or schemas \
                         (to decode) or schema_id (to encode)",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The registry base URL, checked to be an http(s) URL.
    fn registry_url(&self) -> Result<Option<&str>, CodecError> {
        let Some(url) = self.schema_registry_url.as_deref() else {
            return Ok(None);
        };
        let key = "schema_registry_url";
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| config_error(key, format!("not a URL: {url:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(config_error(
                key,
                format!("{url:?} is not an http or https URL"),
            ));
        }
        Ok(Some(url))
    }

    fn writer_schema_file(&self) -> Result<Option<Schema>, CodecError> {
        self.writer_schema
            .as_deref()
            .map(|path| load_schema_file("writer_schema", path))
            .transpose()
    }

    /// The `schemas` map, ids parsed and files loaded.
    fn local_schema_files(&self) -> Result<Vec<(u32, Schema)>, CodecError> {
        let mut loaded: Vec<(u32, Schema)> = Vec::with_capacity(self.schemas.len());
        for (raw_id, path) in &self.schemas {
            let key = format!("schemas.{raw_id}");
            let id = parse_schema_id(raw_id).map_err(|problem| config_error(&key, problem))?;
            if loaded.iter().any(|(seen, _)| *seen == id) {
                return Err(config_error(
                    &key,
                    format!("schema id {id} is listed twice"),
                ));
            }
            loaded.push((id, load_schema_file(&key, path)?));
        }
        Ok(loaded)
    }
}

fn parse_schema_id(raw: &str) -> Result<u32, String> {
    raw.trim()
        .parse::<u32>()
        .map_err(|e| format!("not a schema id: {raw:?} ({e}); expected a decimal u32"))
}

fn load_schema_file(key: &str, path: &Path) -> Result<Schema, CodecError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| config_error(key, format!("cannot read {}: {e}", path.display())))?;
    Schema::parse_str(&text).map_err(|e| {
        config_error(
            key,
            format!("{} is not a valid Avro schema: {e}", path.display()),
        )
    })
}

fn parse_schema(what: &str, text: &str) -> Result<Schema, CodecError> {
    Schema::parse_str(text).map_err(|source| CodecError::Schema {
        what: what.to_owned(),
        source,
    })
}

fn config_error(key: &str, problem: impl Into<String>) -> CodecError {
    CodecError::Config {
        key: key.to_owned(),
        problem: problem.into(),
    }
}

fn into_key_problem(err: CodecError) -> (String, String) {
    match err {
        CodecError::Config { key, problem } => (key, problem),
        other => ("format".to_owned(), other.to_string()),
    }
}
