//! Runs detectors over the stream suite and measures them: detection
//! delay, false alarms per 10,000 stable samples, missed changes.

use crate::detect::{Detector, Level, Verdict};

use super::streams::{InputKind, Stream, StreamSpec};

/// A detector to evaluate: a name for the table and a factory, so that
/// every run starts from a fresh detector.
pub struct Candidate {
    pub name: String,
    /// Which streams it is meant for; `None`: every stream.
    pub input: Option<InputKind>,
    make: Box<dyn Fn() -> Box<dyn Detector> + Send + Sync>,
}

impl Candidate {
    pub fn new(
        name: impl Into<String>,
        input: Option<InputKind>,
        make: impl Fn() -> Box<dyn Detector> + Send + Sync + 'static,
    ) -> Self {
        Candidate {
            name: name.into(),
            input,
            make: Box::new(make),
        }
    }

    /// A fresh detector.
    pub fn detector(&self) -> Box<dyn Detector> {
        (self.make)()
    }

    /// Whether the candidate runs on streams of `kind`.
    pub fn applies_to(&self, kind: InputKind) -> bool {
        self.input.is_none_or(|k| k == kind)
    }
}

/// What one detector did on one stream.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Tally {
    pub runs: u64,
    /// Changes in all runs.
    pub changes: u64,
    pub detected: u64,
    /// Sum of detection delays (samples from the change to the detection,
    /// the detecting one included).
    pub delay_sum: u64,
    /// Drift verdicts before the first change (or in a stream without one).
    pub false_alarms: u64,
    /// Samples before the first change (all of a stream without one).
    pub stable_samples: u64,
}

impl Tally {
    pub fn mean_delay(&self) -> Option<f64> {
        (self.detected > 0).then(|| self.delay_sum as f64 / self.detected as f64)
    }

    pub fn false_alarms_per_10k(&self) -> Option<f64> {
        (self.stable_samples > 0)
            .then(|| 10_000.0 * self.false_alarms as f64 / self.stable_samples as f64)
    }

    pub fn missed(&self) -> u64 {
        self.changes - self.detected
    }

    fn add(&mut self, other: &Tally) {
        self.runs += other.runs;
        self.changes += other.changes;
        self.detected += other.detected;
        self.delay_sum += other.delay_sum;
        self.false_alarms += other.false_alarms;
        self.stable_samples += other.stable_samples;
    }
}

/// Scores one run: `drifts` are the indices of drift verdicts.
pub fn score(stream: &Stream, drifts: &[usize]) -> Tally {
    let first_change = stream
        .changes
        .first()
        .copied()
        .unwrap_or(stream.values.len());
    let mut tally = Tally {
        runs: 1,
        changes: stream.changes.len() as u64,
        stable_samples: first_change as u64,
        false_alarms: drifts.iter().filter(|d| **d < first_change).count() as u64,
        ..Tally::default()
    };
    for (i, change) in stream.changes.iter().enumerate() {
        let end = stream
            .changes
            .get(i + 1)
            .copied()
            .unwrap_or(stream.values.len());
        if let Some(d) = drifts.iter().find(|d| (*change..end).contains(*d)) {
            tally.detected += 1;
            tally.delay_sum += (d - change + 1) as u64;
        }
    }
    tally
}

/// Every verdict of `detector` over `values`.
pub fn trace(detector: &mut dyn Detector, values: &[f64]) -> Vec<Verdict> {
    values.iter().map(|x| detector.update(*x)).collect()
}

/// Indices of the drift verdicts.
pub fn drifts(verdicts: &[Verdict]) -> Vec<usize> {
    verdicts
        .iter()
        .enumerate()
        .filter(|(_, v)| v.level == Level::Drift)
        .map(|(i, _)| i)
        .collect()
}

/// Runs `candidate` on `runs` seeded instances of `stream`.
pub fn evaluate_one(
    candidate: &Candidate,
    stream: &StreamSpec,
    seed: u64,
    runs: u64,
    mut tick: impl FnMut(),
) -> Tally {
    let mut total = Tally::default();
    for run in 0..runs {
        let s = stream.generate(seed, run);
        let mut detector = candidate.detector();
        let verdicts = trace(detector.as_mut(), &s.values);
        total.add(&score(&s, &drifts(&verdicts)));
        tick();
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Says drift at the given indices, stable elsewhere.
    struct Scripted {
        at: Vec<usize>,
        i: usize,
    }

    impl Detector for Scripted {
        fn update(&mut self, _x: f64) -> Verdict {
            let level = if self.at.contains(&self.i) {
                Level::Drift
            } else {
                Level::Stable
            };
            self.i += 1;
            Verdict {
                level,
                statistic: 0.0,
                threshold: None,
            }
        }
        fn reset(&mut self) {
            self.i = 0;
        }
        fn memory_bytes(&self) -> usize {
            0
        }
    }

    #[test]
    fn delays_false_alarms_and_misses_are_counted_per_segment() {
        let stream = Stream {
            values: vec![0.0; 100],
            changes: vec![40, 60, 80],
        };
        // 10 and 20: false alarms; 44: detects the change at 40 (delay 5);
        // 50: a repeat in the same segment (neither); the change at 60 is
        // missed; 80: detected at once (delay 1).
        let mut d = Scripted {
            at: vec![10, 20, 44, 50, 80],
            i: 0,
        };
        let tally = score(&stream, &drifts(&trace(&mut d, &stream.values)));
        assert_eq!(
            tally,
            Tally {
                runs: 1,
                changes: 3,
                detected: 2,
                delay_sum: 5 + 1,
                false_alarms: 2,
                stable_samples: 40,
            }
        );
        assert_eq!(tally.mean_delay(), Some(3.0));
        assert_eq!(tally.false_alarms_per_10k(), Some(500.0));
        assert_eq!(tally.missed(), 1);
    }

    #[test]
    fn a_stream_without_changes_is_all_stable() {
        let stream = Stream {
            values: vec![0.0; 10_000],
            changes: Vec::new(),
        };
        let tally = score(&stream, &[5, 500]);
        assert_eq!(tally.false_alarms_per_10k(), Some(2.0));
        assert_eq!(tally.mean_delay(), None);
        assert_eq!(tally.missed(), 0);
    }
}
