//! Reads the Avro datum of a version 4 [`ModelSnapshot`], the mirror of
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

use super::avro_bytes::{Reader, MAX_ITEMS};

use crate::engine::snapshot::{
    CompositeSnapshot, CountersSnapshot, EvaluationSnapshot, InFlightSnapshot, ModelSnapshot,
    PaneSnapshot, PendingSnapshot, RuleSnapshot, SilenceSnapshot, WindowSnapshot,
};

/// The snapshot in `body` (the datum after the Confluent header), or
/// `None` when it is not exactly what the writer writes.
pub fn read_snapshot(body: &[u8]) -> Option<ModelSnapshot> {
    let mut r = Reader::new(body);
    let snapshot = ModelSnapshot {
        project: r.owned_string()?,
        name: r.owned_string()?,
        version: r.optional(Reader::owned_string)?,
        retired_versions: r.array(Reader::owned_string)?,
        policy: r.owned_string()?,
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
        counts: r.optional(Reader::counts)?,
    };
    r.is_empty().then_some(snapshot)
}

impl Reader<'_> {
    /// One block of items closed by 0, or an empty array.
    fn array<T>(&mut self, mut read: impl FnMut(&mut Self) -> Option<T>) -> Option<Vec<T>> {
        let n = self.count()?;
        if n == 0 {
            return Some(Vec::new());
        }
        if n > MAX_ITEMS || n > self.remaining() {
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
        if n > MAX_ITEMS || n > self.remaining() {
            return None;
        }
        for _ in 0..n {
            let key = self.str()?.to_owned();
            let value = self.long()?;
            if entries.insert(key, value).is_some() {
                return None; // a repeated key: let apache-avro decide
            }
        }
        (self.long()? == 0).then_some(entries)
    }

    fn rule(&mut self) -> Option<RuleSnapshot> {
        Some(RuleSnapshot {
            rule: self.owned_string()?,
            spec: self.owned_string()?,
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
            detector_state: self.optional(Self::owned_string)?,
            last: self.optional(Self::evaluation)?,
            id: self.long()?,
            window: self.optional(Self::window)?,
        })
    }

    fn window(&mut self) -> Option<WindowSnapshot> {
        Some(WindowSnapshot {
            count: self.long()?,
            figure: self.double()?,
            panes: self.array(Self::pane)?,
        })
    }

    fn pane(&mut self) -> Option<PaneSnapshot> {
        Some(PaneSnapshot {
            start: self.long()?,
            count: self.long()?,
            figure: self.double()?,
        })
    }

    fn counts(&mut self) -> Option<CountersSnapshot> {
        Some(CountersSnapshot {
            events_applied: self.long()?,
            late_events: self.long()?,
            late_samples: self.long()?,
            warning_windows: self.long()?,
            overflow_samples: self.long()?,
            requests: self.long()?,
            suppressed_while_in_flight: self.long()?,
            request_timeouts: self.long()?,
            future_events: self.long()?,
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
            level: self.optional(Self::owned_string)?,
            statistic: self.optional(Self::double)?,
            learning: self.boolean()?,
        })
    }

    fn composite(&mut self) -> Option<CompositeSnapshot> {
        Some(CompositeSnapshot {
            name: self.owned_string()?,
            spec: self.owned_string()?,
            fired_while_holding: self.boolean()?,
            cooldown_until: self.optional(Self::long)?,
            id: self.long()?,
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
            request_id: self.owned_string()?,
            action: self.owned_string()?,
            issued_at: self.long()?,
            last_status: self.optional(Self::owned_string)?,
        })
    }

    fn silence(&mut self) -> Option<SilenceSnapshot> {
        Some(SilenceSnapshot {
            name: self.owned_string()?,
            spec: self.owned_string()?,
            silent_since: self.optional(Self::long)?,
            cooldown_until: self.optional(Self::long)?,
            id: self.long()?,
        })
    }
}
