//! Avro binary encoding of a [`ModelSnapshot`], written by hand for the
//! one schema it has (`schemas/model_snapshot_v4.avsc`, field by field in
//! schema order). At fleet scale every changed model is snapshotted at
//! every commit, and apache-avro's schema-aware serializer looks every
//! field up by name: this writer does only the encoding. The property
//! tests check its datums against apache-avro's (`codec::snapshot`).
//!
//! Avro binary, as the specification has it: `long` as a zig-zag varint,
//! `double` as 8 little-endian bytes, `boolean` as one byte, `string` as
//! its length then its UTF-8 bytes, a union as the branch index then the
//! value, an array or map as one block (item count, items) closed by 0.

use std::collections::BTreeMap;

use crate::engine::snapshot::{
    CompositeSnapshot, CountersSnapshot, EvaluationSnapshot, InFlightSnapshot, ModelSnapshot,
    PaneSnapshot, PendingSnapshot, RuleSnapshot, SilenceSnapshot, WindowSnapshot,
};

/// Appends the Avro datum of `snapshot` (schema version 4) to `out`.
pub fn write_snapshot(snapshot: &ModelSnapshot, out: &mut Vec<u8>) {
    let mut w = Writer(out);
    w.string(&snapshot.project);
    w.string(&snapshot.name);
    w.optional(snapshot.version.as_deref(), Writer::string);
    w.array(&snapshot.retired_versions, |w, v| w.string(v));
    w.string(&snapshot.policy);
    w.long(snapshot.input_offset);
    w.array(&snapshot.rules, Writer::rule);
    w.array(&snapshot.composites, Writer::composite);
    w.array(&snapshot.pending, Writer::pending);
    w.optional(snapshot.in_flight.as_ref(), Writer::in_flight);
    w.optional(snapshot.backoff_until, Writer::long);
    w.optional(snapshot.last_event_at, Writer::long);
    w.map(&snapshot.counters);
    w.array(&snapshot.silences, Writer::silence);
    w.optional(snapshot.last_heard_at, Writer::long);
    w.optional(snapshot.counts.as_ref(), Writer::counts);
}

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn long(&mut self, value: i64) {
        let mut n = ((value << 1) ^ (value >> 63)) as u64;
        while n >= 0x80 {
            self.0.push((n as u8) | 0x80);
            n >>= 7;
        }
        self.0.push(n as u8);
    }

    fn length(&mut self, n: usize) {
        self.long(i64::try_from(n).unwrap_or(i64::MAX));
    }

    fn double(&mut self, value: f64) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    fn boolean(&mut self, value: bool) {
        self.0.push(u8::from(value));
    }

    fn string(&mut self, value: &str) {
        self.length(value.len());
        self.0.extend_from_slice(value.as_bytes());
    }

    /// A `["null", T]` union.
    fn optional<T>(&mut self, value: Option<T>, write: impl FnOnce(&mut Self, T)) {
        match value {
            None => self.long(0),
            Some(v) => {
                self.long(1);
                write(self, v);
            }
        }
    }

    fn array<T>(&mut self, items: &[T], mut write: impl FnMut(&mut Self, &T)) {
        if !items.is_empty() {
            self.length(items.len());
            for item in items {
                write(self, item);
            }
        }
        self.long(0);
    }

    fn map(&mut self, entries: &BTreeMap<String, i64>) {
        if !entries.is_empty() {
            self.length(entries.len());
            for (key, value) in entries {
                self.string(key);
                self.long(*value);
            }
        }
        self.long(0);
    }

    fn rule(&mut self, rule: &RuleSnapshot) {
        self.string(&rule.rule);
        self.string(&rule.spec);
        self.optional(rule.window_start, Self::long);
        self.long(rule.window_last);
        self.array(&rule.values, |w, v| w.double(*v));
        self.array(&rule.timestamps, |w, t| w.long(*t));
        self.long(rule.consecutive);
        self.optional(rule.cooldown_until, Self::long);
        self.long(rule.recent);
        self.boolean(rule.in_alarm);
        self.long(rule.calm);
        self.boolean(rule.fired_in_episode);
        self.optional(rule.detector_state.as_deref(), Self::string);
        self.optional(rule.last.as_ref(), Self::evaluation);
        self.long(rule.id);
        self.optional(rule.window.as_ref(), Self::window);
    }

    fn window(&mut self, w: &WindowSnapshot) {
        self.long(w.count);
        self.double(w.figure);
        self.array(&w.panes, Self::pane);
    }

    fn pane(&mut self, p: &PaneSnapshot) {
        self.long(p.start);
        self.long(p.count);
        self.double(p.figure);
    }

    fn counts(&mut self, c: &CountersSnapshot) {
        for n in [
            c.events_applied,
            c.late_events,
            c.late_samples,
            c.warning_windows,
            c.overflow_samples,
            c.requests,
            c.suppressed_while_in_flight,
            c.request_timeouts,
            c.future_events,
        ] {
            self.long(n);
        }
    }

    fn evaluation(&mut self, e: &EvaluationSnapshot) {
        self.long(e.start);
        self.long(e.end);
        self.double(e.value);
        self.long(e.samples);
        self.optional(e.breach_threshold, Self::double);
        self.optional(e.breach_below, Self::boolean);
        self.optional(e.level.as_deref(), Self::string);
        self.optional(e.statistic, Self::double);
        self.boolean(e.learning);
    }

    fn composite(&mut self, c: &CompositeSnapshot) {
        self.string(&c.name);
        self.string(&c.spec);
        self.boolean(c.fired_while_holding);
        self.optional(c.cooldown_until, Self::long);
        self.long(c.id);
    }

    fn pending(&mut self, p: &PendingSnapshot) {
        self.long(p.timestamp);
        self.long(p.seq);
        self.array(&p.values, |w, v| w.optional(*v, Self::double));
    }

    fn in_flight(&mut self, f: &InFlightSnapshot) {
        self.string(&f.request_id);
        self.string(&f.action);
        self.long(f.issued_at);
        self.optional(f.last_status.as_deref(), Self::string);
    }

    fn silence(&mut self, s: &SilenceSnapshot) {
        self.string(&s.name);
        self.string(&s.spec);
        self.optional(s.silent_since, Self::long);
        self.optional(s.cooldown_until, Self::long);
        self.long(s.id);
    }
}
