//! A [`MetricEvent`] that borrows its strings from the record it was
//! decoded from: the pipeline decodes every record into one, so the hot
//! path allocates nothing per event (a handful of metrics and tags fit
//! inline). Read through [`EventView`], it answers exactly as the owned
//! event decoded from the same bytes would.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use smallvec::SmallVec;

use super::{EventView, MetricEvent, ModelRef};

/// A string borrowed from the input when it can be (JSON without
/// escapes, any Avro string), owned otherwise.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Text<'a>(pub Cow<'a, str>);

impl Text<'_> {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

/// The model of a [`MetricEventRef`]: project, name and version.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ModelRefView<'a> {
    #[serde(borrow)]
    pub project: Text<'a>,
    #[serde(borrow)]
    pub name: Text<'a>,
    #[serde(default, borrow)]
    pub version: Option<Text<'a>>,
}

/// Named entries sorted by name, each name once: a later duplicate
/// replaces an earlier one, as inserting into a map does. So the same
/// record gives the same entries as [`MetricEvent`]'s `BTreeMap`s.
#[derive(Debug, Clone, PartialEq)]
pub struct Entries<'a, V>(SmallVec<[(Text<'a>, V); 4]>);

impl<V> Default for Entries<'_, V> {
    fn default() -> Self {
        Entries(SmallVec::new())
    }
}

impl<'a, V> Entries<'a, V> {
    /// Room for `n` more entries.
    pub fn reserve(&mut self, n: usize) {
        self.0.reserve(n);
    }

    /// Adds an entry as it arrived; [`Entries::settle`] orders them once
    /// the last has. (Filled in place: an event's entries are read
    /// straight into it, not moved there.)
    pub fn push_arrival(&mut self, name: Text<'a>, value: V) {
        self.0.push((name, value));
    }

    /// Sorts the entries that arrived by name, each name once: the last
    /// of a repeated name wins, as inserting into a map does.
    pub fn settle(&mut self) {
        if self.0.windows(2).all(|w| w[0].0 < w[1].0) {
            // Already in order, each name once (what serde and Avro
            // writers of a sorted map write).
            return;
        }
        // Stable: among equal names the arrival order stays, so the last
        // of each run is the one a map keeps.
        self.0.sort_by(|a, b| a.0.cmp(&b.0));
        self.0.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                std::mem::swap(&mut later.1, &mut kept.1);
            }
            same
        });
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entry named `name`. A scan, not a binary search: events carry
    /// a handful of entries, and comparing lengths first skips most names
    /// without comparing their bytes.
    pub fn get(&self, name: &str) -> Option<&V> {
        self.0
            .iter()
            .find(|(k, _)| k.as_str() == name)
            .map(|(_, v)| v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }
}

impl<'de: 'a, 'a, V: Deserialize<'de>> Deserialize<'de> for Entries<'a, V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor<'a, V>(PhantomData<(Text<'a>, V)>);
        impl<'de: 'a, 'a, V: Deserialize<'de>> Visitor<'de> for EntriesVisitor<'a, V> {
            type Value = Entries<'a, V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut entries = Entries::default();
                while let Some((name, value)) = map.next_entry::<Text<'a>, V>()? {
                    entries.push_arrival(name, value);
                }
                entries.settle();
                Ok(entries)
            }
        }
        deserializer.deserialize_map(EntriesVisitor(PhantomData))
    }
}

/// One telemetry record, its strings borrowed from the record's bytes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct MetricEventRef<'a> {
    #[serde(borrow)]
    pub model: ModelRefView<'a>,
    pub timestamp: i64,
    #[serde(default, borrow)]
    pub metrics: Entries<'a, f64>,
    #[serde(default, borrow)]
    pub error: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub tags: Entries<'a, Text<'a>>,
}

impl MetricEventRef<'_> {
    /// The same event, owning its strings.
    pub fn to_owned_event(&self) -> MetricEvent {
        MetricEvent {
            model: ModelRef::new(
                self.model.project.as_str(),
                self.model.name.as_str(),
                self.model.version.as_ref().map(Text::as_str),
            ),
            timestamp: self.timestamp,
            metrics: self.metrics().map(|(k, v)| (k.to_owned(), v)).collect(),
            error: self.error.as_ref().map(|e| e.as_str().to_owned()),
            tags: self
                .tags()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }
    }
}

impl From<MetricEvent> for MetricEventRef<'_> {
    /// An owned event as a view (the strings move, nothing is copied).
    fn from(event: MetricEvent) -> Self {
        let owned = |s: String| Text(Cow::Owned(s));
        MetricEventRef {
            model: ModelRefView {
                project: owned(event.model.project),
                name: owned(event.model.name),
                version: event.model.version.map(owned),
            },
            timestamp: event.timestamp,
            metrics: Entries(
                event
                    .metrics
                    .into_iter()
                    .map(|(k, v)| (owned(k), v))
                    .collect(),
            ),
            error: event.error.map(owned),
            tags: Entries(
                event
                    .tags
                    .into_iter()
                    .map(|(k, v)| (owned(k), owned(v)))
                    .collect(),
            ),
        }
    }
}

impl EventView for MetricEventRef<'_> {
    fn project(&self) -> &str {
        self.model.project.as_str()
    }
    fn name(&self) -> &str {
        self.model.name.as_str()
    }
    fn version(&self) -> Option<&str> {
        self.model.version.as_ref().map(Text::as_str)
    }
    fn timestamp(&self) -> i64 {
        self.timestamp
    }
    fn has_error(&self) -> bool {
        self.error.is_some()
    }
    fn metric(&self, name: &str) -> Option<f64> {
        self.metrics.get(name).copied()
    }
    fn metrics(&self) -> impl Iterator<Item = (&str, f64)> {
        self.metrics.iter().map(|(k, v)| (k, *v))
    }
    fn metric_count(&self) -> usize {
        self.metrics.len()
    }
    fn tags(&self) -> impl Iterator<Item = (&str, &str)> {
        self.tags.iter().map(|(k, v)| (k, v.as_str()))
    }
    fn tag_count(&self) -> usize {
        self.tags.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_without_escapes_are_borrowed_and_duplicates_keep_the_last() {
        let json = br#"{"model":{"project":"p","name":"n","version":"3"},"timestamp":5,
            "metrics":{"b":1,"a":2.5,"b":3},"tags":{"k":"v\n"}}"#;
        let event: MetricEventRef = serde_json::from_slice(json).unwrap();
        assert!(matches!(event.model.project.0, Cow::Borrowed("p")));
        assert!(matches!(
            event.model.version.as_ref().map(|v| &v.0),
            Some(Cow::Borrowed("3"))
        ));
        assert!(matches!(event.tags.0[0].1 .0, Cow::Owned(_)));
        let metrics: Vec<_> = event.metrics().collect();
        assert_eq!(metrics, [("a", 2.5), ("b", 3.0)]);
        let owned: MetricEvent = serde_json::from_slice(json).unwrap();
        assert_eq!(event.to_owned_event(), owned);
        assert_eq!(MetricEventRef::from(owned.clone()), event);
    }
}
