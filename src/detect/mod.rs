//! Change detectors: small pure types, each with bounded memory and a
//! serializable state (so that the changelog can hold it), fed one
//! observation at a time.
//!
//! They know nothing of models, windows or Kafka: a rule feeds them window
//! aggregates or raw values, `driftwatch evaluate` feeds them synthetic
//! streams. Each says after every observation whether the stream is stable,
//! in a warning zone, or has drifted, and exposes its statistic and
//! threshold so that plots can show why.

use serde::{Deserialize, Serialize};

pub mod adwin;
pub mod cusum;
pub mod ddm;
pub mod distribution;
pub mod ewma;
pub mod hddm;
pub mod page_hinkley;
pub mod shewhart;

/// How a detector judges the stream after an observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Stable,
    /// Out of the ordinary, not yet a drift (detectors with a warning zone).
    Warning,
    /// A change is detected.
    Drift,
}

/// What a detector says after one observation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Verdict {
    pub level: Level,
    /// The detector's test statistic after the observation.
    pub statistic: f64,
    /// The value the statistic is compared with to declare a drift, where
    /// the detector has one (for plots).
    pub threshold: Option<f64>,
}

impl Verdict {
    pub fn stable(statistic: f64, threshold: Option<f64>) -> Self {
        Verdict {
            level: Level::Stable,
            statistic,
            threshold,
        }
    }
}

/// A sequential change detector over a stream of real values (0/1 for the
/// error-rate detectors).
pub trait Detector {
    /// Feeds one observation and returns the verdict after it. After a
    /// drift the detector restarts on its own (as River's do), so that the
    /// next change can be detected.
    fn update(&mut self, x: f64) -> Verdict;

    /// Forgets everything seen (a new model version, for example).
    fn reset(&mut self);

    /// Bytes the detector occupies, inline and on the heap: bounded for
    /// every detector, whatever the length of the stream.
    fn memory_bytes(&self) -> usize;
}
