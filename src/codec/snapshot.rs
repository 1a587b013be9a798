//! Changelog values: model snapshots in Confluent framing whose schema id is
//! the snapshot version, so every version ever written stays readable.

use super::{schemas, CodecError, DecodeError, Decoder, EncodeError, Encoder};
use crate::engine::snapshot::{ModelSnapshot, SNAPSHOT_VERSION};

/// Encodes the current snapshot version; decodes every known version.
#[derive(Debug)]
pub struct SnapshotCodec {
    encoder: Encoder<ModelSnapshot>,
    decoder: Decoder<ModelSnapshot>,
}

impl SnapshotCodec {
    pub fn new() -> Result<Self, CodecError> {
        Ok(SnapshotCodec {
            encoder: Encoder::confluent(SNAPSHOT_VERSION, schemas::MODEL_SNAPSHOT)?,
            decoder: Decoder::confluent_local(
                &[
                    (1, schemas::MODEL_SNAPSHOT_V1),
                    (2, schemas::MODEL_SNAPSHOT_V2),
                    (3, schemas::MODEL_SNAPSHOT_V3),
                ],
                schemas::MODEL_SNAPSHOT,
            )?,
        })
    }

    pub fn encode(&self, snapshot: &ModelSnapshot) -> Result<Vec<u8>, EncodeError> {
        self.encoder.encode(snapshot)
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

    pub fn decode(&self, bytes: &[u8]) -> Result<ModelSnapshot, DecodeError> {
        self.decoder.decode(bytes)
    }
}
