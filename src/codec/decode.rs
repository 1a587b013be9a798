//! Per-topic record decoder.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;

use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::Schema;
use serde::de::DeserializeOwned;

use super::registry::{Registry, SchemaSource, WriterSchema};
use super::{config_error, parse_schema, CodecError, DecodeError, FormatConfig, FormatKind};

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
                let mut local = HashMap::new();
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
        let reader = parse_schema("reader schema", reader_schema)?;
        let mut local = HashMap::with_capacity(schemas.len());
        for &(id, text) in schemas {
            let what = format!("schema id {id}");
            let schema = parse_schema(&what, text)?;
            local.insert(id, Arc::new(writer_for(&what, schema, &reader)?));
        }
        Ok(Decoder {
            kind: FormatKind::ConfluentAvro,
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
        let Some(&first) = payload.first() else {
            return Err(DecodeError::Empty);
        };
        match self.kind {
            FormatKind::Json => decode_json(payload),
            FormatKind::Avro => self.decode_plain(payload),
            FormatKind::ConfluentAvro => self.decode_confluent(payload),
            FormatKind::Auto => match first {
                CONFLUENT_MAGIC if self.confluent.is_some() => self.decode_confluent(payload),
                CONFLUENT_MAGIC => Err(DecodeError::UnknownFormat {
                    first_byte: first,
                    hint: "looks like a Confluent frame but neither schema_registry_url \
                           nor schemas is configured",
                }),
                b'{' => decode_json(payload),
                // JSON may start with whitespace (as `json` accepts); a
                // plain Avro record may too, so it gets its chance.
                _ if starts_like_json(payload) => match decode_json(payload) {
                    Err(_) if self.plain.is_some() => self.decode_plain(payload),
                    result => result,
                },
                _ if self.plain.is_some() => self.decode_plain(payload),
                _ => Err(DecodeError::UnknownFormat {
                    first_byte: first,
                    hint: "not JSON, not a Confluent frame, and no writer_schema is \
                           configured for plain Avro",
                }),
            },
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

    fn decode_confluent(&self, payload: &[u8]) -> Result<T, DecodeError> {
        let (id, body) = split_confluent_frame(payload)?;
        let Some(source) = &self.confluent else {
            return Err(DecodeError::UnknownSchemaId(id));
        };
        let writer = source.get(id, &self.reader)?;
        decode_avro(&writer, &self.reader, body)
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
}
