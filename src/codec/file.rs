//! Replay input files: Avro object container files or JSON lines.

use std::io::Write;
use std::path::Path;

use apache_avro::{Reader, Schema, Writer};

use super::{parse_schema, schemas, CodecError};
use crate::model::MetricEvent;

/// The first bytes of every Avro object container file.
const OCF_MAGIC: &[u8] = b"Obj\x01";

/// Reads a replay input file of MetricEvents: an Avro object container file
/// (detected by its "Obj\x01" magic; its embedded writer schema is resolved
/// against the built-in schema) or JSON lines (blank lines skipped). An
/// error names the line number (1-based) or record index (0-based).
pub fn read_events_file(path: &Path) -> Result<Vec<MetricEvent>, CodecError> {
    let bytes = std::fs::read(path).map_err(|source| CodecError::Io {
        path: path.to_owned(),
        source,
    })?;
    if bytes.starts_with(OCF_MAGIC) {
        read_ocf(path, &bytes)
    } else {
        read_json_lines(path, &bytes)
    }
}

fn read_ocf(path: &Path, bytes: &[u8]) -> Result<Vec<MetricEvent>, CodecError> {
    super::limit_avro_allocations();
    let reader_schema = built_in_schema()?;
    let ocf_error = |index: Option<usize>| {
        move |source| CodecError::Ocf {
            path: path.to_owned(),
            index,
            source,
        }
    };
    let reader = Reader::with_schema(&reader_schema, bytes).map_err(ocf_error(None))?;
    reader
        .enumerate()
        .map(|(index, value)| {
            value
                .and_then(|value| apache_avro::from_value::<MetricEvent>(&value))
                .map_err(ocf_error(Some(index)))
        })
        .collect()
}

fn read_json_lines(path: &Path, bytes: &[u8]) -> Result<Vec<MetricEvent>, CodecError> {
    bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.trim_ascii().is_empty())
        .map(|(index, line)| {
            serde_json::from_slice(line).map_err(|source| CodecError::JsonLine {
                path: path.to_owned(),
                line: index + 1,
                source,
            })
        })
        .collect()
}

/// Writes events as an Avro object container file with the built-in schema
/// (for tests and tooling). Overwrites `path`.
pub fn write_events_ocf(path: &Path, events: &[MetricEvent]) -> Result<(), CodecError> {
    let schema = built_in_schema()?;
    let ocf_error = |index: Option<usize>| {
        move |source| CodecError::Ocf {
            path: path.to_owned(),
            index,
            source,
        }
    };
    let io_error = |source| CodecError::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::create(path).map_err(io_error)?;
    let mut writer = Writer::new(&schema, std::io::BufWriter::new(file));
    for (index, event) in events.iter().enumerate() {
        writer.append_ser(event).map_err(ocf_error(Some(index)))?;
    }
    let mut out = writer.into_inner().map_err(ocf_error(None))?;
    out.flush().map_err(io_error)
}

fn built_in_schema() -> Result<Schema, CodecError> {
    parse_schema("built-in MetricEvent schema", schemas::METRIC_EVENT)
}
