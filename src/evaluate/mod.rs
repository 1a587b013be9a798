//! `driftwatch evaluate`: detectors over a suite of seeded synthetic streams
//! with known change points, measured for detection delay, false alarms
//! per 10,000 stable samples and missed changes; optionally one plot per
//! stream.
//!
//! The detectors are built exactly as a rule builds them (the `detector`
//! table of a rule, through the configuration), from a configuration file
//! or from the defaults below.

mod plot;
mod run;
mod streams;

use std::fmt::Write as _;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::config::{Config, ConfigError};
use crate::engine::detector::RuleDetector;
pub use plot::{write_plots, PlotError};
pub use run::{Candidate, Tally};
pub use streams::{suite, InputKind, Stream, StreamSpec};

/// The default detectors, as rule `detector` tables. The charts use the
/// streams' known in-control mean and σ (a fixed baseline of 0 and 1).
pub const DEFAULT_DETECTORS: &[(&str, &str)] = &[
    (
        "cusum",
        r#"{ kind = "cusum", k = 0.5, arl0 = 370, baseline = { kind = "fixed", mean = 0, std = 1 } }"#,
    ),
    (
        "ewma",
        r#"{ kind = "ewma", lambda = 0.1, arl0 = 370, baseline = { kind = "fixed", mean = 0, std = 1 } }"#,
    ),
    (
        "shewhart",
        r#"{ kind = "shewhart", baseline = { kind = "fixed", mean = 0, std = 1 } }"#,
    ),
    ("page_hinkley", r#"{ kind = "page_hinkley" }"#),
    ("adwin", r#"{ kind = "adwin" }"#),
    ("adwin-clock1", r#"{ kind = "adwin", clock = 1 }"#),
    ("ddm", r#"{ kind = "ddm" }"#),
    ("hddm_a", r#"{ kind = "hddm_a" }"#),
    ("distribution", r#"{ kind = "distribution" }"#),
];

/// Options of one evaluation.
#[derive(Debug, Clone, Copy)]
pub struct EvaluateOptions {
    /// Seeded runs of every stream.
    pub runs: u64,
    pub seed: u64,
    /// Show a progress bar on stderr (hidden anyway when it is not a terminal).
    pub progress: bool,
}

/// One row of the result: a detector on a stream.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub detector: String,
    pub stream: &'static str,
    pub runs: u64,
    pub changes: u64,
    pub mean_delay: Option<f64>,
    pub false_alarms_per_10k: Option<f64>,
    pub missed: u64,
}

/// The result of an evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub seed: u64,
    pub runs: u64,
    pub rows: Vec<Row>,
}

/// The default candidates (see [`DEFAULT_DETECTORS`]).
pub fn default_candidates() -> Result<Vec<Candidate>, ConfigError> {
    let rules: Vec<(String, String)> = DEFAULT_DETECTORS
        .iter()
        .map(|(name, table)| ((*name).to_owned(), (*table).to_owned()))
        .collect();
    let toml = rules_config(&rules);
    let config = Config::from_toml_str(&toml)?;
    Ok(candidates_from_config(&config))
}

/// One candidate per rule of `config` (its first policy wins for a rule
/// name that several policies use).
pub fn candidates_from_config(config: &Config) -> Vec<Candidate> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for policy in config.policies.policies() {
        for rule in &policy.rules {
            if !seen.insert(rule.name.clone()) {
                continue;
            }
            let spec = rule.detector.clone();
            let input = match spec.name() {
                "ddm" | "hddm_a" => Some(InputKind::ZeroOne),
                "cusum" | "ewma" | "shewhart" | "distribution" | "threshold" => {
                    Some(InputKind::Continuous)
                }
                _ => None,
            };
            out.push(Candidate::new(rule.name.clone(), input, move || {
                Box::new(RuleDetector::new(spec.clone()))
            }));
        }
    }
    out
}

fn rules_config(rules: &[(String, String)]) -> String {
    let mut toml =
        String::from("[kafka]\ninput_topics = [\"evaluate\"]\n[[policy]]\nmatch = \"*\"\n");
    for (name, table) in rules {
        let _ = write!(
            toml,
            "[[policy.rule]]\nname = {name:?}\nmetric = \"x\"\nwindow = {{ kind = \"count\", size = 1 }}\ndetector = {table}\naction = \"fine_tune\"\n"
        );
    }
    toml
}

/// Runs every candidate on every stream it applies to.
pub fn evaluate(candidates: &[Candidate], options: &EvaluateOptions) -> Evaluation {
    let streams = suite();
    let units: u64 = candidates
        .iter()
        .map(|c| streams.iter().filter(|s| c.applies_to(s.kind)).count() as u64)
        .sum::<u64>()
        * options.runs;
    let bar = if options.progress {
        ProgressBar::new(units)
    } else {
        ProgressBar::hidden()
    };
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} {msg}")
    {
        bar.set_style(style);
    }
    let mut rows = Vec::new();
    for candidate in candidates {
        for stream in streams.iter().filter(|s| candidate.applies_to(s.kind)) {
            bar.set_message(format!("{} on {}", candidate.name, stream.name));
            let tally =
                run::evaluate_one(candidate, stream, options.seed, options.runs, || bar.inc(1));
            rows.push(Row {
                detector: candidate.name.clone(),
                stream: stream.name,
                runs: tally.runs,
                changes: tally.changes,
                mean_delay: tally.mean_delay(),
                false_alarms_per_10k: tally.false_alarms_per_10k(),
                missed: tally.missed(),
            });
        }
    }
    bar.finish_and_clear();
    Evaluation {
        seed: options.seed,
        runs: options.runs,
        rows,
    }
}

impl Evaluation {
    /// The table: one section per detector, one row per stream.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "driftwatch evaluate: {} runs per stream, seed {}",
            self.runs, self.seed
        );
        let _ = writeln!(
            out,
            "delay: samples from a change to its first drift verdict (mean over detected changes);"
        );
        let _ = writeln!(
            out,
            "FA/10k: drift verdicts before the first change per 10,000 such samples; missed: changes never flagged before the next."
        );
        let _ = writeln!(
            out,
            "cusum, ewma and shewhart judge against the streams' known in-control mean 0 and sigma 1."
        );
        let _ = writeln!(out);
        let _ = writeln!(out, "streams:");
        for s in suite() {
            let _ = writeln!(out, "  {:<14} {}", s.name, s.description);
        }
        let mut detector = "";
        for row in &self.rows {
            if row.detector != detector {
                detector = &row.detector;
                let _ = writeln!(out);
                let _ = writeln!(out, "{detector}");
                let _ = writeln!(
                    out,
                    "  {:<14} {:>5} {:>8} {:>11} {:>9} {:>7}",
                    "stream", "runs", "changes", "mean delay", "FA/10k", "missed"
                );
            }
            let delay = row
                .mean_delay
                .map_or_else(|| "-".to_owned(), |d| format!("{d:.1}"));
            let fa = row
                .false_alarms_per_10k
                .map_or_else(|| "-".to_owned(), |f| format!("{f:.1}"));
            let _ = writeln!(
                out,
                "  {:<14} {:>5} {:>8} {:>11} {:>9} {:>7}",
                row.stream, row.runs, row.changes, delay, fa, row.missed
            );
        }
        out
    }
}
