//! Per-topic record encoder.

use std::marker::PhantomData;

use apache_avro::Schema;
use serde::Serialize;

use super::{config_error, parse_schema, CodecError, EncodeError, FormatConfig, FormatKind};

/// Encodes values of `T` for one output topic. `Send + Sync`.
pub struct Encoder<T> {
    mode: Mode,
    _source: PhantomData<fn(&T)>,
}

enum Mode {
    Json,
    Avro(Schema),
    Confluent { schema: Schema, header: [u8; 5] },
}

impl<T> std::fmt::Debug for Encoder<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match &self.mode {
            Mode::Json => "json".to_owned(),
            Mode::Avro(_) => "avro".to_owned(),
            Mode::Confluent { header, .. } => {
                let id = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
                format!("confluent_avro (schema id {id})")
            }
        };
        f.debug_struct("Encoder").field("mode", &mode).finish()
    }
}

impl<T: Serialize> Encoder<T> {
    /// `schema`: the Avro schema text of `T`. Kind `auto` encodes as JSON.
    /// Kind `avro` writes with `writer_schema` if set, else `schema`. Kind
    /// `confluent_avro` needs `schema_id` and writes with `schemas[schema_id]`
    /// if listed, else `writer_schema` if set, else `schema`.
    pub fn new(cfg: &FormatConfig, schema: &str) -> Result<Self, CodecError> {
        cfg.check_kind()?;
        match cfg.kind {
            FormatKind::Auto | FormatKind::Json => Ok(Self::json()),
            FormatKind::Avro => {
                let schema = match cfg.writer_schema_file()? {
                    Some(schema) => schema,
                    None => parse_schema("schema", schema)?,
                };
                Ok(Self::with_mode(Mode::Avro(schema)))
            }
            FormatKind::ConfluentAvro => {
                let Some(id) = cfg.schema_id else {
                    return Err(config_error(
                        "schema_id",
                        "kind = \"confluent_avro\" needs schema_id to encode",
                    ));
                };
                let listed = cfg
                    .local_schema_files()?
                    .into_iter()
                    .find_map(|(listed_id, schema)| (listed_id == id).then_some(schema));
                let schema = match (listed, cfg.writer_schema_file()?) {
                    (Some(schema), _) | (None, Some(schema)) => schema,
                    (None, None) => parse_schema("schema", schema)?,
                };
                Ok(Self::confluent_with(id, schema))
            }
        }
    }

    /// A JSON encoder (serde_json of the Rust type).
    pub fn json() -> Self {
        Self::with_mode(Mode::Json)
    }

    /// A Confluent wire-format encoder writing `schema_id` in every frame.
    pub fn confluent(schema_id: u32, schema: &str) -> Result<Self, CodecError> {
        let schema = parse_schema(&format!("schema id {schema_id}"), schema)?;
        Ok(Self::confluent_with(schema_id, schema))
    }

    /// Encodes one value.
    pub fn encode(&self, value: &T) -> Result<Vec<u8>, EncodeError> {
        match &self.mode {
            Mode::Json => serde_json::to_vec(value).map_err(EncodeError::Json),
            Mode::Avro(schema) => avro_datum(schema, value),
            Mode::Confluent { schema, header } => {
                let body = avro_datum(schema, value)?;
                let mut frame = Vec::with_capacity(header.len() + body.len());
                frame.extend_from_slice(header);
                frame.extend_from_slice(&body);
                Ok(frame)
            }
        }
    }

    /// [`Encoder::encode`] through apache-avro's generic `Value` path: the
    /// reference the direct path is checked against.
    #[cfg(test)]
    pub(crate) fn encode_via_value(&self, value: &T) -> Result<Vec<u8>, EncodeError> {
        match &self.mode {
            Mode::Json => serde_json::to_vec(value).map_err(EncodeError::Json),
            Mode::Avro(schema) => avro_datum_via_value(schema, value),
            Mode::Confluent { schema, header } => {
                let mut frame = header.to_vec();
                frame.extend_from_slice(&avro_datum_via_value(schema, value)?);
                Ok(frame)
            }
        }
    }

    fn confluent_with(schema_id: u32, schema: Schema) -> Self {
        let [a, b, c, d] = schema_id.to_be_bytes();
        Self::with_mode(Mode::Confluent {
            schema,
            header: [0, a, b, c, d],
        })
    }

    fn with_mode(mode: Mode) -> Self {
        Encoder {
            mode,
            _source: PhantomData,
        }
    }
}

/// serde value -> Avro value -> resolved against the schema (strings become
/// enum symbols, options union branches, longs timestamps) -> datum bytes.
/// Writes `value` as an Avro datum of `schema`, straight from serde
/// (apache-avro's schema-aware serializer: no intermediate `Value`).
fn avro_datum<T: Serialize>(schema: &Schema, value: &T) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(256);
    apache_avro::write_avro_datum_ref(schema, value, &mut out).map_err(EncodeError::Avro)?;
    Ok(out)
}

/// The generic path: serde to an Avro `Value`, resolved against `schema`,
/// then encoded. Slower; the reference the direct path is checked against.
#[cfg(test)]
fn avro_datum_via_value<T: Serialize>(schema: &Schema, value: &T) -> Result<Vec<u8>, EncodeError> {
    let value = apache_avro::to_value(value)
        .and_then(|v| v.resolve(schema))
        .map_err(EncodeError::Avro)?;
    apache_avro::to_avro_datum(schema, value).map_err(EncodeError::Avro)
}
