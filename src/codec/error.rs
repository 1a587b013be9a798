//! Error types of the codec layer.

use std::path::PathBuf;

/// A setup problem: a file is unreadable, a schema is invalid, a setting is
/// missing. Raised when a [`Decoder`](super::Decoder) or
/// [`Encoder`](super::Encoder) is built, or by the replay file helpers.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// A format setting is wrong; `key` names the field (e.g. `schemas.7`).
    #[error("{key}: {problem}")]
    Config { key: String, problem: String },
    /// An in-memory schema text (reader schema, local Confluent schema) is not valid Avro.
    #[error("{what}: invalid Avro schema: {source}")]
    Schema {
        what: String,
        #[source]
        source: apache_avro::Error,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A JSON-lines replay file has a bad line (1-based).
    #[error("{}: line {line}: {source}", path.display())]
    JsonLine {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    /// An Avro object container file is unreadable, or record `index` (0-based) is bad.
    #[error("{}: {}{source}", path.display(), index.map(|i| format!("record {i}: ")).unwrap_or_default())]
    Ocf {
        path: PathBuf,
        index: Option<usize>,
        #[source]
        source: apache_avro::Error,
    },
}

/// A per-record decoding failure. See [`DecodeError::kind`] and
/// [`DecodeError::is_transient`] for how callers should route it.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The payload has no bytes (e.g. a tombstone).
    #[error("empty payload")]
    Empty,
    /// The payload is not valid JSON for the expected type.
    #[error("invalid JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// The Avro body is corrupt or does not match the schemas.
    #[error("invalid Avro body: {0}")]
    Avro(#[source] apache_avro::Error),
    /// The Avro body decoded but bytes were left over: the writer schema is not the one used.
    #[error("invalid Avro body: {count} trailing byte(s) after the record")]
    TrailingBytes { count: usize },
    /// A Confluent frame does not start with magic byte 0.
    #[error("bad magic byte {0:#04x} (Confluent wire format starts with 0x00)")]
    BadMagicByte(u8),
    /// A Confluent frame is shorter than its 5-byte header.
    #[error("truncated Confluent header: {len} byte(s), need at least 5")]
    Truncated { len: usize },
    /// No writer schema is known for this id (not in the local map, 404 from the registry).
    #[error("unknown schema id {0}")]
    UnknownSchemaId(u32),
    /// The writer schema registered under this id cannot be used.
    #[error("schema id {id}: unusable writer schema: {problem}")]
    InvalidWriterSchema { id: u32, problem: String },
    /// The Schema Registry could not be reached or failed; the record may be fine.
    #[error("schema registry unavailable while fetching schema id {id}: {reason}")]
    RegistryUnavailable { id: u32, reason: String },
    /// Auto-detection could not tell the payload's format.
    #[error("format not recognised (first byte {first_byte:#04x}): {hint}")]
    UnknownFormat { first_byte: u8, hint: &'static str },
}

impl DecodeError {
    /// Short stable label for metrics and the DLQ header, e.g. "empty", "json",
    /// "avro", "bad_magic_byte", "truncated", "unknown_schema_id",
    /// "invalid_writer_schema", "registry_unavailable", "unknown_format".
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::Empty => "empty",
            DecodeError::Json(_) => "json",
            DecodeError::Avro(_) | DecodeError::TrailingBytes { .. } => "avro",
            DecodeError::BadMagicByte(_) => "bad_magic_byte",
            DecodeError::Truncated { .. } => "truncated",
            DecodeError::UnknownSchemaId(_) => "unknown_schema_id",
            DecodeError::InvalidWriterSchema { .. } => "invalid_writer_schema",
            DecodeError::RegistryUnavailable { .. } => "registry_unavailable",
            DecodeError::UnknownFormat { .. } => "unknown_format",
        }
    }

    /// True when the record may be fine and the failure is environmental
    /// (registry unreachable, 5xx, auth failure): the caller must NOT
    /// dead-letter it but stop and retry later.
    pub fn is_transient(&self) -> bool {
        matches!(self, DecodeError::RegistryUnavailable { .. })
    }
}

/// A failure to encode a value.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// serde_json refused the value.
    #[error("JSON encoding failed: {0}")]
    Json(#[source] serde_json::Error),
    /// The value does not fit the Avro schema.
    #[error("Avro encoding failed: {0}")]
    Avro(#[source] apache_avro::Error),
}
