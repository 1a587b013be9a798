//! The Rust Page-Hinkley, DDM and HDDM-A detectors reproduce River's
//! detections (and warnings) exactly, index for index.
//!
//! The fixtures `tests/fixtures/river/{page_hinkley,ddm,hddm_a}_*.json` hold
//! River's parameters, the stream and the indices after which River's
//! detector reported a drift (and a warning). They are written by
//! `scripts/river/{page_hinkley,ddm,hddm_a}.py` (see their headers to
//! rerun them) with the River pinned in `scripts/river/requirements.txt`.
//!
//! The fixtures also hold, after every value, the test statistic computed
//! from River's internal state; the Rust verdict's `statistic` must equal
//! it exactly (not within a tolerance): the ports do River's float
//! operations in River's order, so a slip shows long before it moves a
//! detection index.

use std::fs;
use std::path::{Path, PathBuf};

use driftwatch::detect::ddm::{Ddm, DdmParams};
use driftwatch::detect::hddm::{HddmA, HddmAParams};
use driftwatch::detect::page_hinkley::{PageHinkley, PageHinkleyParams};
use driftwatch::detect::{Detector, Level};
use serde::de::DeserializeOwned;
use serde::Deserialize;

const RIVER_VERSION: &str = "0.26.1";

#[derive(Debug, Deserialize)]
struct Fixture<P> {
    detector: String,
    params: P,
    river_version: String,
    stream: Vec<f64>,
    detections: Vec<usize>,
    warnings: Option<Vec<usize>>,
    /// serde_json reads floats exactly (its `float_roundtrip` feature is on
    /// in this crate), so River's statistics are compared bit for bit.
    #[serde(default)]
    statistics: Option<Vec<f64>>,
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/river")
}

/// The fixtures named `<prefix>_*.json`, sorted, with their file names.
fn fixtures<P: DeserializeOwned>(prefix: &str) -> Vec<(String, Fixture<P>)> {
    let mut paths: Vec<PathBuf> = fs::read_dir(fixture_dir())
        .expect("tests/fixtures/river exists")
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with(&format!("{prefix}_")) && name.ends_with(".json")
        })
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no {prefix}_*.json fixtures");
    paths
        .into_iter()
        .map(|path| {
            let text = fs::read_to_string(&path).expect("readable fixture");
            let fixture: Fixture<P> =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            (name, fixture)
        })
        .collect()
}

/// What a run of a detector reported: the drift and warning indices.
struct Run {
    detections: Vec<usize>,
    warnings: Vec<usize>,
    statistics: Vec<f64>,
}

fn run<D: Detector>(
    mut detector: D,
    stream: &[f64],
    drift: impl Fn(&D) -> bool,
    warning: impl Fn(&D) -> bool,
) -> Run {
    let mut out = Run {
        detections: Vec::new(),
        warnings: Vec::new(),
        statistics: Vec::with_capacity(stream.len()),
    };
    for (i, &x) in stream.iter().enumerate() {
        let verdict = detector.update(x);
        let (d, w) = (drift(&detector), warning(&detector));
        // The verdict agrees with River's flags (Drift wins over a warning).
        let expected = if d {
            Level::Drift
        } else if w {
            Level::Warning
        } else {
            Level::Stable
        };
        assert_eq!(verdict.level, expected, "verdict at index {i}");
        out.statistics.push(verdict.statistic);
        if d {
            out.detections.push(i);
        }
        if w {
            out.warnings.push(i);
        }
    }
    out
}

/// Compares every fixture, reports all of them, fails if any differs.
fn check<P: DeserializeOwned, D: Detector>(
    prefix: &str,
    detector_name: &str,
    make: impl Fn(&P) -> D,
    drift: impl Fn(&D) -> bool + Copy,
    warning: impl Fn(&D) -> bool + Copy,
) {
    let mut failures = Vec::new();
    for (name, fx) in fixtures::<P>(prefix) {
        assert_eq!(fx.detector, detector_name, "{name}");
        assert_eq!(fx.river_version, RIVER_VERSION, "{name}");
        let got = run(make(&fx.params), &fx.stream, drift, warning);
        let detections_ok = got.detections == fx.detections;
        let warnings_ok = fx.warnings.as_ref().is_none_or(|w| *w == got.warnings);
        // `==`, not bits: River's `max` and Rust's may pick different zeros.
        let statistics_diff = fx.statistics.as_ref().map(|river| {
            assert_eq!(river.len(), got.statistics.len(), "{name}");
            river
                .iter()
                .zip(&got.statistics)
                .enumerate()
                .filter(|(_, (a, b))| a != b)
                .map(|(i, (a, b))| (i, *a, *b))
                .collect::<Vec<_>>()
        });
        let statistics_ok = statistics_diff.as_ref().is_none_or(Vec::is_empty);
        eprintln!(
            "{name}: {} values, River {} detections{}, Rust {} detections{}{}: {}",
            fx.stream.len(),
            fx.detections.len(),
            fx.warnings
                .as_ref()
                .map(|w| format!(" {} warnings", w.len()))
                .unwrap_or_default(),
            got.detections.len(),
            if fx.warnings.is_some() {
                format!(" {} warnings", got.warnings.len())
            } else {
                String::new()
            },
            match &statistics_diff {
                Some(d) if d.is_empty() => {
                    format!(", statistics equal at all {} values", got.statistics.len())
                }
                Some(d) => format!(
                    ", statistics differ at {} of {} values",
                    d.len(),
                    got.statistics.len()
                ),
                None => String::new(),
            },
            if detections_ok && warnings_ok && statistics_ok {
                "identical"
            } else {
                "DIFFERENT"
            }
        );
        if !detections_ok {
            failures.push(format!(
                "{name}: detections River {:?} Rust {:?}",
                fx.detections, got.detections
            ));
        }
        if !warnings_ok {
            let first_diff = fx
                .warnings
                .iter()
                .flatten()
                .zip(&got.warnings)
                .position(|(a, b)| a != b);
            failures.push(format!(
                "{name}: warnings differ (River {}, Rust {}, first difference at position {first_diff:?})",
                fx.warnings.as_ref().map_or(0, Vec::len),
                got.warnings.len()
            ));
        }
        if let Some(diff) = statistics_diff.filter(|d| !d.is_empty()) {
            failures.push(format!(
                "{name}: statistics differ at {} values, first (index, River, Rust): {:?}",
                diff.len(),
                diff[0]
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn page_hinkley_matches_river() {
    check::<PageHinkleyParams, _>(
        "page_hinkley",
        "page_hinkley",
        |p| PageHinkley::new(*p).expect("valid fixture parameters"),
        PageHinkley::drift_detected,
        |_| false,
    );
}

#[test]
fn ddm_matches_river() {
    check::<DdmParams, _>(
        "ddm",
        "ddm",
        |p| Ddm::new(*p).expect("valid fixture parameters"),
        Ddm::drift_detected,
        Ddm::warning_detected,
    );
}

#[test]
fn hddm_a_matches_river() {
    check::<HddmAParams, _>(
        "hddm_a",
        "hddm_a",
        |p| HddmA::new(*p).expect("valid fixture parameters"),
        HddmA::drift_detected,
        HddmA::warning_detected,
    );
}

/// The fixtures exercise what they are meant to: drifts and restarts on
/// the changing streams, warnings for the detectors that have them.
#[test]
fn fixtures_cover_restarts_and_warnings() {
    for prefix in ["page_hinkley", "ddm", "hddm_a"] {
        let fxs = fixtures::<serde_json::Value>(prefix);
        assert!(
            fxs.iter()
                .all(|(_, f)| f.statistics.as_ref().map(Vec::len) == Some(f.stream.len())),
            "{prefix}: a statistic per value"
        );
    }
    let ph = fixtures::<PageHinkleyParams>("page_hinkley");
    assert!(ph.iter().any(|(_, f)| f.detections.len() > 3));
    for prefix in ["ddm", "hddm_a"] {
        let fxs = fixtures::<serde_json::Value>(prefix);
        assert!(fxs.iter().any(|(_, f)| f.detections.len() > 2), "{prefix}");
        assert!(
            fxs.iter()
                .all(|(_, f)| f.warnings.as_ref().is_some_and(|w| !w.is_empty())),
            "{prefix}"
        );
    }
}
