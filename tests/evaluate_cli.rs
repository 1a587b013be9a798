//! `driftwatch evaluate` end to end: the table lists every detector on the
//! streams it applies to, the plots are written, and `--config` evaluates
//! the rules of a configuration.

use std::process::Command;

use driftwatch::evaluate::{suite, DEFAULT_DETECTORS};

fn evaluate(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_driftwatch"))
        .arg("evaluate")
        .args(args)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn the_table_covers_every_detector_and_stream_and_plots_are_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plots = dir.path().join("plots");
    let table = evaluate(&["--runs", "2", "--plot", plots.to_str().expect("utf-8")]);
    for (name, _) in DEFAULT_DETECTORS {
        assert!(
            table.lines().any(|l| l == *name),
            "section for {name} in:\n{table}"
        );
    }
    for stream in suite() {
        assert!(
            table.contains(&format!("  {:<14}     2", stream.name)),
            "row for {} in:\n{table}",
            stream.name
        );
        let svg = std::fs::read_to_string(plots.join(format!("{}.svg", stream.name)))
            .expect("plot written");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains(stream.name), "the plot names its stream");
    }
    // The 0/1 detectors run on the 0/1 streams only.
    let ddm = table.split("\nddm\n").nth(1).expect("ddm section");
    let ddm = ddm.split("\n\n").next().unwrap_or(ddm);
    assert!(ddm.contains("errors-abrupt") && !ddm.contains("heavy-tailed"));
}

#[test]
fn json_output_and_config_rules() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml");
    let json = evaluate(&["--runs", "1", "--format", "json", "--config", config]);
    let value: serde_json::Value = serde_json::from_str(&json).expect("json");
    let detectors: std::collections::BTreeSet<&str> = value["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| r["detector"].as_str())
        .collect();
    for rule in ["ctr-accuracy-cusum", "input-drift", "accuracy-drop"] {
        assert!(detectors.contains(rule), "{rule} in {detectors:?}");
    }
}
