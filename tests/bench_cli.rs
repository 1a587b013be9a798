//! `driftwatch bench` end to end on the in-process cluster, small: it
//! produces the events, reads them with a bare consumer, runs the real
//! pipeline as a child and accounts for every event. (Figures are for
//! BENCHMARKS.md; this checks the tool, not the speed.)

use std::process::Command;

#[test]
fn bench_runs_the_pipeline_against_a_bare_consumer_and_accounts_for_every_event() {
    let output = Command::new(env!("CARGO_BIN_EXE_driftwatch"))
        .args([
            "bench",
            "--models",
            "50",
            "--events",
            "3000",
            "--partitions",
            "2",
            "--processing",
            "at-least-once",
        ])
        .env("RUST_LOG", "error")
        .output()
        .expect("driftwatch bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bench failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("produced 3000 events"), "{stdout}");
    assert!(stdout.contains("bare consumer (at_least_once)"), "{stdout}");
    let run = stdout
        .lines()
        .find(|l| l.starts_with("driftwatch run (at_least_once)"))
        .unwrap_or_else(|| panic!("no pipeline figure: {stdout}"));
    let ratio: f64 = run
        .rsplit("ratio to bare consumer ")
        .next()
        .and_then(|r| r.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ratio in {run:?}"));
    assert!(ratio > 0.0, "{run}");
    // Every event applied, once, and the models all tracked.
    assert!(
        stdout.contains("applied 3000 skipped 0 dead-lettered 0"),
        "{stdout}"
    );
    assert!(stdout.contains("models 50;"), "{stdout}");
    assert!(stdout.contains("/metrics "), "{stdout}");
}
