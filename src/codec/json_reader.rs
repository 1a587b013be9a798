//! Reads the JSON of a [`MetricEventRef`] as model servers write it,
//! borrowing its strings: serde_json is general (any field order, escapes,
//! unknown fields) and was half of the pipeline thread.
//!
//! It takes only the plain form: the known fields each at most once,
//! strings without escapes or control characters, integers that fit an
//! `i64` (a timestamp) and numbers that read as finite doubles; it answers
//! `None` for anything else and the decoder then asks serde_json, whose
//! answer (an event or the error) stands. The property tests in
//! [`super::decode`] check that it agrees with serde_json wherever it
//! answers.

use crate::model::borrowed::Entries;
use crate::model::{MetricEventRef, ModelRefView, Text};

/// The event in `json`, or `None` when it is not in the plain form.
pub(super) fn read_event(json: &[u8]) -> Option<MetricEventRef<'_>> {
    // Valid UTF-8 as a whole (one pass), so every string between quotes is.
    let text = std::str::from_utf8(json).ok()?;
    let mut r = Reader {
        text,
        bytes: json,
        at: 0,
    };
    let mut model = None;
    let mut timestamp = None;
    // The maps are read into the event's entries where they will stay.
    let (mut metrics, mut has_metrics) = (Entries::default(), false);
    let mut error = None;
    let (mut tags, mut has_tags) = (Entries::default(), false);
    r.object(|r, key| match key {
        "model" if model.is_none() => {
            model = Some(r.model()?);
            Some(())
        }
        "timestamp" if timestamp.is_none() => {
            timestamp = Some(r.integer()?);
            Some(())
        }
        "metrics" if !has_metrics => {
            has_metrics = true;
            r.entries(&mut metrics, Reader::double)
        }
        "error" if error.is_none() => {
            error = Some(r.nullable_text()?);
            Some(())
        }
        "tags" if !has_tags => {
            has_tags = true;
            r.entries(&mut tags, Reader::text)
        }
        _ => None,
    })?;
    r.skip_whitespace();
    if r.at != json.len() {
        return None;
    }
    Some(MetricEventRef {
        model: model?,
        timestamp: timestamp?,
        metrics,
        error: error.flatten(),
        tags,
    })
}

/// The bytes that end a plain string: its closing quote, or what only a
/// string this reader leaves to serde_json holds (an escape, a control
/// character). One look-up per byte instead of three comparisons.
static ENDS_PLAIN_STRING: [bool; 256] = {
    let mut ends = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        ends[b] = true;
        b += 1;
    }
    ends[b'"' as usize] = true;
    ends[b'\\' as usize] = true;
    ends
};

struct Reader<'a> {
    /// The whole record, checked to be UTF-8.
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    /// The next byte after whitespace, not consumed.
    fn peek(&mut self) -> Option<u8> {
        self.skip_whitespace();
        self.bytes.get(self.at).copied()
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// `{ "key": value, ... }`, each value read by `field`.
    fn object(&mut self, mut field: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.expect(b'{')?;
        if self.peek()? == b'}' {
            self.at += 1;
            return Some(());
        }
        loop {
            let key = self.str()?;
            self.expect(b':')?;
            field(self, key)?;
            match self.peek()? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A string without escapes or control characters, borrowed.
    fn str(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        let start = self.at;
        let len = self.bytes[start..]
            .iter()
            .position(|&b| ENDS_PLAIN_STRING[usize::from(b)])?;
        let end = start + len;
        if self.bytes[end] != b'"' {
            return None;
        }
        self.at = end + 1;
        // Both ends are at ASCII quotes: character boundaries.
        self.text.get(start..end)
    }

    fn text(&mut self) -> Option<Text<'a>> {
        self.str().map(|s| Text(s.into()))
    }

    /// `null` or a string.
    fn nullable_text(&mut self) -> Option<Option<Text<'a>>> {
        if self.peek()? == b'n' {
            let rest = &self.bytes[self.at..];
            if rest.starts_with(b"null") {
                self.at += 4;
                return Some(None);
            }
            return None;
        }
        self.text().map(Some)
    }

    fn model(&mut self) -> Option<ModelRefView<'a>> {
        let mut project = None;
        let mut name = None;
        let mut version = None;
        self.object(|r, key| match key {
            "project" if project.is_none() => {
                project = Some(r.text()?);
                Some(())
            }
            "name" if name.is_none() => {
                name = Some(r.text()?);
                Some(())
            }
            "version" if version.is_none() => {
                version = Some(r.nullable_text()?);
                Some(())
            }
            _ => None,
        })?;
        Some(ModelRefView {
            project: project?,
            name: name?,
            version: version.flatten(),
        })
    }

    /// The bytes of a JSON number (its grammar checked) and whether it is
    /// an integer (no fraction, no exponent).
    fn number(&mut self) -> Option<(&'a str, bool)> {
        self.skip_whitespace();
        let start = self.at;
        let digits = |r: &mut Self| {
            let from = r.at;
            while r.bytes.get(r.at).is_some_and(u8::is_ascii_digit) {
                r.at += 1;
            }
            r.at - from
        };
        if self.bytes.get(self.at) == Some(&b'-') {
            self.at += 1;
        }
        let int_start = self.at;
        let int_digits = digits(self);
        if int_digits == 0 || (int_digits > 1 && self.bytes[int_start] == b'0') {
            return None;
        }
        let mut integer = true;
        if self.bytes.get(self.at) == Some(&b'.') {
            self.at += 1;
            integer = false;
            if digits(self) == 0 {
                return None;
            }
        }
        if let Some(b'e' | b'E') = self.bytes.get(self.at) {
            self.at += 1;
            integer = false;
            if let Some(b'+' | b'-') = self.bytes.get(self.at) {
                self.at += 1;
            }
            if digits(self) == 0 {
                return None;
            }
        }
        Some((self.text.get(start..self.at)?, integer))
    }

    /// An integer that fits an `i64` (not `-0`, which serde_json reads
    /// as a double).
    fn integer(&mut self) -> Option<i64> {
        let (text, integer) = self.number()?;
        if !integer || text == "-0" {
            return None;
        }
        text.parse().ok()
    }

    /// A number as a finite double. Integers of up to 15 digits are
    /// exact; other numbers are parsed correctly rounded, as serde_json's
    /// `float_roundtrip` parses them.
    fn double(&mut self) -> Option<f64> {
        let (text, integer) = self.number()?;
        if integer {
            let digits = text.trim_start_matches('-');
            if digits.len() > 15 || text == "-0" {
                return None;
            }
            return text.parse::<i64>().ok().map(|n| n as f64);
        }
        text.parse::<f64>().ok().filter(|v| v.is_finite())
    }

    /// An object of entries, each value read by `value`, into `entries`.
    fn entries<V>(
        &mut self,
        entries: &mut Entries<'a, V>,
        mut value: impl FnMut(&mut Self) -> Option<V>,
    ) -> Option<()> {
        self.object(|r, key| {
            let value = value(r)?;
            entries.push_arrival(Text(key.into()), value);
            Some(())
        })?;
        entries.settle();
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_plain_form_and_leaves_the_rest_to_serde_json() {
        let json = br#" {"model": {"project":"p","name":"n","version":null},
            "timestamp": 1700000000000, "metrics": {"a": 0.5, "b": -3, "c": 1e-3},
            "error": "oom", "tags": {"k": "v"}} "#;
        let event = read_event(json).expect("plain form");
        let reference: MetricEventRef = serde_json::from_slice(json).unwrap();
        assert_eq!(event, reference);
        for other in [
            &br#"{"model":{"project":"p\n","name":"n"},"timestamp":1}"#[..],
            br#"{"model":{"project":"p","name":"n"},"timestamp":1,"x":2}"#,
            br#"{"model":{"project":"p","name":"n"},"timestamp":1.5}"#,
            br#"{"model":{"project":"p","name":"n"},"timestamp":1,"timestamp":2}"#,
            br#"{"model":{"project":"p","name":"n"},"timestamp":01}"#,
            br#"{"model":{"project":"p","name":"n"},"timestamp":1} x"#,
            br#"{"model":{"project":"p","name":"n"},"timestamp":1,"metrics":{"a":1e999}}"#,
        ] {
            assert_eq!(
                read_event(other),
                None,
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }
}
