//! Reads the Avro datum of a [`MetricEventRef`] written with the
//! built-in MetricEvent schema (`schemas/metric_event.avsc`), borrowing
//! its strings: apache-avro's generic reader builds a `Value` tree and
//! then deserializes it, several allocations per field.
//!
//! Like [`super::snapshot_reader`], it reads only what apache-avro's
//! writer writes (maps in one block, union branches in range, UTF-8
//! strings, nothing left over) and answers `None` for anything else; the
//! decoder then asks apache-avro, whose answer (an event or the error)
//! stands. The property tests in [`super::decode`] check that it never
//! accepts what apache-avro refuses, and agrees where both accept.

use super::avro_bytes::{Reader, MAX_ITEMS};
use crate::model::borrowed::Entries;
use crate::model::{MetricEventRef, ModelRefView, Text};

/// The event in `body` (the datum, after any Confluent header), or `None`
/// when it is not exactly what the writer writes.
pub(super) fn read_event(body: &[u8]) -> Option<MetricEventRef<'_>> {
    let mut r = Reader::new(body);
    // The maps are read into the event where it lies (moving a few
    // hundred bytes of inline entries per map showed in the profile).
    let mut event = MetricEventRef {
        model: ModelRefView {
            project: text(&mut r)?,
            name: text(&mut r)?,
            version: r.optional(text)?,
        },
        timestamp: r.long()?,
        metrics: Entries::default(),
        error: None,
        tags: Entries::default(),
    };
    map(&mut r, &mut event.metrics, Reader::double)?;
    event.error = r.optional(text)?;
    map(&mut r, &mut event.tags, text)?;
    r.is_empty().then_some(event)
}

fn text<'a>(r: &mut Reader<'a>) -> Option<Text<'a>> {
    r.str().map(|s| Text(s.into()))
}

/// A map in one block closed by 0, or an empty map.
fn map<'a, V>(
    r: &mut Reader<'a>,
    entries: &mut Entries<'a, V>,
    mut value: impl FnMut(&mut Reader<'a>) -> Option<V>,
) -> Option<()> {
    let n = r.count()?;
    if n == 0 {
        return Some(());
    }
    if n > MAX_ITEMS || n > r.remaining() {
        return None;
    }
    entries.reserve(n);
    for _ in 0..n {
        let key = text(r)?;
        let value = value(r)?;
        entries.push_arrival(key, value);
    }
    (r.long()? == 0).then(|| entries.settle())
}
