//! Reads the Avro datum of a version 3 [`ModelSnapshot`], the mirror of
//! [`super::snapshot_writer`]: a restore reads every snapshot of its
//! partitions, and apache-avro's generic reader (a `Value` tree, resolved,
//! then deserialized) costs tens of microseconds each.
//!
//! It reads only what the writer writes (single-block arrays and maps,
//! union branches in range, UTF-8 strings, nothing left over) and answers
//! `None` for anything else; the caller then decodes with apache-avro,
//! whose answer (a snapshot or the error) stands. So this reader never
//! accepts what apache-avro would refuse, which the property tests check
//! on arbitrary and on damaged snapshots.

use std::collections::BTreeMap;

use crate::engine::snapshot::{
    CompositeSnapshot, EvaluationSnapshot, InFlightSnapshot, ModelSnapshot, PendingSnapshot,
    RuleSnapshot, SilenceSnapshot,
};

/// Most items one array or map may announce: a corrupt count must not
/// reserve gigabytes before the bytes run out.
const MAX_ITEMS: usize = 1 << 20;

/// The snapshot in `body` (the datum after the Confluent header), or
/// `None` when it is not exactly what the writer writes.
pub fn read_snapshot(body: &[u8]) -> Option<ModelSnapshot> {
    let mut r = Reader(body);
    let snapshot = ModelSnapshot {
        project: r.string()?,
        name: r.string()?,
        version: r.optional(Reader::string)?,
        retired_versions: r.array(Reader::string)?,
        policy: r.string()?,
        input_offset: r.long()?,
        rules: r.array(Reader::rule)?,
        composites: r.array(Reader::composite)?,
        pending: r.array(Reader::pending)?,
        in_flight: r.optional(Reader::in_flight)?,
        backoff_until: r.optional(Reader::long)?,
        last_event_at: r.optional(Reader::long)?,
        counters: r.map()?,
        silences: r.array(Reader::silence)?,
        last_heard_at: r.optional(Reader::long)?,
    };
    r.0.is_empty().then_some(snapshot)
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn long(&mut self) -> Option<i64> {
        let mut n: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            if shift == 63 && b > 1 {
                return None; // beyond 64 bits
            }
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some((n >> 1) as i64 ^ -((n & 1) as i64));
            }
        }
        None
    }

    /// A non-negative length or count.
    fn count(&mut self) -> Option<usize> {
        usize::try_from(self.long()?).ok()
    }

    fn double(&mut self) -> Option<f64> {
        let bytes: [u8; 8] = self.take(8)?.try_into().ok()?;
        Some(f64::from_le_bytes(bytes))
    }

    fn boolean(&mut self) -> Option<bool> {
        match self.byte()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }

    fn string(&mut self) -> Option<String> {
        let n = self.count()?;
        let bytes = self.take(n)?;
        std::str::from_utf8(bytes).ok().map(str::to_owned)
    }

    /// A `["null", T]` union.
    fn optional<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        match self.long()? {
            0 => Some(None),
            1 => read(self).map(Some),
            _ => None,
        }
    }

    /// One block of items closed by 0, or an empty array.
    fn array<T>(&mut self, mut read: impl FnMut(&mut Self) -> Option<T>) -> Option<Vec<T>> {
        let n = self.count()?;
        if n == 0 {
            return Some(Vec::new());
        }
        if n > MAX_ITEMS || n > self.0.len() {
            return None;
        }
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(read(self)?);
        }
        (self.long()? == 0).then_some(items)
    }

    fn map(&mut self) -> Option<BTreeMap<String, i64>> {
        let n = self.count()?;
        let mut entries = BTreeMap::new();
        if n == 0 {
            return Some(entries);
        }
        if n > MAX_ITEMS || n > self.0.len() {
            return None;
        }
        for _ in 0..n {
            let key = self.string()?;
            let value = self.long()?;
            if entries.insert(key, value).is_some() {
                return None; // a repeated key: let apache-avro decide
            }
        }
        (self.long()? == 0).then_some(entries)
    }

    fn rule(&mut self) -> Option<RuleSnapshot> {
        Some(RuleSnapshot {
            rule: self.string()?,
            spec: self.string()?,
            window_start: self.optional(Self::long)?,
            window_last: self.long()?,
            values: self.array(Self::double)?,
            timestamps: self.array(Self::long)?,
            consecutive: self.long()?,
            cooldown_until: self.optional(Self::long)?,
            recent: self.long()?,
            in_alarm: self.boolean()?,
            calm: self.long()?,
            fired_in_episode: self.boolean()?,
            detector_state: self.optional(Self::string)?,
            last: self.optional(Self::evaluation)?,
        })
    }

    fn evaluation(&mut self) -> Option<EvaluationSnapshot> {
        Some(EvaluationSnapshot {
            start: self.long()?,
            end: self.long()?,
            value: self.double()?,
            samples: self.long()?,
            breach_threshold: self.optional(Self::double)?,
            breach_below: self.optional(Self::boolean)?,
            level: self.optional(Self::string)?,
            statistic: self.optional(Self::double)?,
            learning: self.boolean()?,
        })
    }

    fn composite(&mut self) -> Option<CompositeSnapshot> {
        Some(CompositeSnapshot {
            name: self.string()?,
            spec: self.string()?,
            fired_while_holding: self.boolean()?,
            cooldown_until: self.optional(Self::long)?,
        })
    }

    fn pending(&mut self) -> Option<PendingSnapshot> {
        Some(PendingSnapshot {
            timestamp: self.long()?,
            seq: self.long()?,
            values: self.array(|r| r.optional(Self::double))?,
        })
    }

    fn in_flight(&mut self) -> Option<InFlightSnapshot> {
        Some(InFlightSnapshot {
            request_id: self.string()?,
            action: self.string()?,
            issued_at: self.long()?,
            last_status: self.optional(Self::string)?,
        })
    }

    fn silence(&mut self) -> Option<SilenceSnapshot> {
        Some(SilenceSnapshot {
            name: self.string()?,
            spec: self.string()?,
            silent_since: self.optional(Self::long)?,
            cooldown_until: self.optional(Self::long)?,
        })
    }
}
