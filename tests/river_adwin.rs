//! The Rust ADWIN reproduces River's exactly: the same drift indices, and
//! bit for bit the same window state (`width`, `total`, `variance`) at the
//! checkpoints River's run recorded.
//!
//! The fixtures `tests/fixtures/river/adwin_*.json` hold River's parameters
//! (all five, so River's defaults are not assumed), the stream, the indices
//! after which `river.drift.ADWIN` reported a drift, and River's window
//! state after every 100th value and around each detection. They are
//! written by `scripts/river/adwin.py` (see its header to rerun it) with
//! the River pinned in `scripts/river/requirements.txt`. Several fixtures
//! run the same stream with `clock` 1 and 32.
//!
//! Exact equality holds because the port does River's floating-point
//! operations in River's order (River 0.26's ADWIN is itself Rust), and the
//! stream values and River's sums are read from the fixture text with a
//! correctly rounding parser.

use std::fs;
use std::path::{Path, PathBuf};

use driftwatch::detect::adwin::{Adwin, AdwinParams, DEFAULT_MAX_WINDOW};
use driftwatch::detect::{Detector, Level};
use serde::Deserialize;

const RIVER_VERSION: &str = "0.26.1";

#[derive(Debug, Deserialize)]
struct Fixture {
    detector: String,
    params: AdwinParams,
    river_version: String,
    stream: Vec<f64>,
    detections: Vec<usize>,
    checkpoint_index: Vec<usize>,
    checkpoint_width: Vec<u64>,
    /// serde_json reads floats exactly (its `float_roundtrip` feature is on
    /// in this crate), so River's sums are compared bit for bit.
    checkpoint_total: Vec<f64>,
    checkpoint_variance: Vec<f64>,
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/river")
}

/// The fixtures `adwin_*.json`, sorted, with their file names.
fn fixtures() -> Vec<(String, Fixture)> {
    let mut paths: Vec<PathBuf> = fs::read_dir(fixture_dir())
        .expect("tests/fixtures/river exists")
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with("adwin_") && name.ends_with(".json")
        })
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no adwin_*.json fixtures");
    paths
        .into_iter()
        .map(|path| {
            let text = fs::read_to_string(&path).expect("readable fixture");
            let fixture: Fixture =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let n = fixture.checkpoint_index.len();
            assert!(
                fixture.checkpoint_width.len() == n
                    && fixture.checkpoint_total.len() == n
                    && fixture.checkpoint_variance.len() == n,
                "{}: checkpoint arrays of different lengths",
                path.display()
            );
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            (name, fixture)
        })
        .collect()
}

/// The window state after one value.
#[derive(Debug, Clone, Copy, PartialEq)]
struct State {
    width: u64,
    total_bits: u64,
    variance_bits: u64,
}

/// Runs the Rust ADWIN over a fixture's stream: its detection indices and
/// its state after every value.
fn run(params: AdwinParams, stream: &[f64]) -> (Vec<usize>, Vec<State>) {
    let mut adwin = Adwin::new(params).expect("valid fixture parameters");
    let mut detections = Vec::new();
    let mut states = Vec::with_capacity(stream.len());
    for (i, &x) in stream.iter().enumerate() {
        let verdict = adwin.update(x);
        assert_eq!(verdict.level == Level::Drift, adwin.drift_detected());
        if verdict.level == Level::Drift {
            detections.push(i);
            // On a test, a drift is exactly statistic > threshold.
            let threshold = verdict.threshold.expect("a tested split");
            assert!(verdict.statistic > threshold, "value {i}: {verdict:?}");
        }
        states.push(State {
            width: adwin.width(),
            total_bits: adwin.total().to_bits(),
            variance_bits: adwin.variance().to_bits(),
        });
    }
    (detections, states)
}

#[test]
fn adwin_matches_river_exactly() {
    let mut clocks = Vec::new();
    let mut with_detections = 0;
    for (name, fixture) in fixtures() {
        assert_eq!(fixture.detector, "adwin", "{name}");
        assert_eq!(fixture.river_version, RIVER_VERSION, "{name}");
        // The fixtures never come near the window cap (not in River).
        assert_eq!(fixture.params.max_window, DEFAULT_MAX_WINDOW, "{name}");
        assert!((fixture.stream.len() as u64) < fixture.params.max_window);

        let (detections, states) = run(fixture.params, &fixture.stream);
        assert_eq!(
            detections, fixture.detections,
            "{name}: drift indices differ from River's"
        );
        for (j, &i) in fixture.checkpoint_index.iter().enumerate() {
            let river = State {
                width: fixture.checkpoint_width[j],
                total_bits: fixture.checkpoint_total[j].to_bits(),
                variance_bits: fixture.checkpoint_variance[j].to_bits(),
            };
            assert_eq!(
                states[i],
                river,
                "{name}: window state after value {i} differs from River's \
                 (Rust total {}, variance {}; River {}, {})",
                f64::from_bits(states[i].total_bits),
                f64::from_bits(states[i].variance_bits),
                fixture.checkpoint_total[j],
                fixture.checkpoint_variance[j],
            );
        }
        clocks.push(fixture.params.clock);
        if !fixture.detections.is_empty() {
            with_detections += 1;
        }
    }
    // The suite covers the test after every value and River's default.
    assert!(clocks.contains(&1) && clocks.contains(&32), "{clocks:?}");
    assert!(with_detections >= 5, "too few fixtures with detections");
}

/// With `clock` c, the cut test runs only on the c-th, 2c-th, ... value
/// since the (re)start, so River's detections fall there, and a detection
/// restarts the count.
#[test]
fn detections_fall_on_clock_ticks() {
    for (name, fixture) in fixtures() {
        let clock = fixture.params.clock as usize;
        let mut start = 0;
        for &i in &fixture.detections {
            assert_eq!((i + 1 - start) % clock, 0, "{name}: drift at {i}");
            assert!(
                i + 1 - start > fixture.params.grace_period as usize,
                "{name}: drift at {i} within the grace period"
            );
            start = i + 1;
        }
    }
}
