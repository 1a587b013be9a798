//! The binary as a user runs it: `check-config`, and `run` shutting down
//! gracefully on SIGTERM with its offsets committed.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::instance::committed_offsets;
use common::*;

fn driftwatch() -> Command {
    Command::new(env!("CARGO_BIN_EXE_driftwatch"))
}

#[test]
fn check_config_accepts_the_example_and_names_the_key_of_an_error() {
    let ok = driftwatch()
        .args(["check-config", "--config", "config/example.toml"])
        .output()
        .expect("run");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("ok"));

    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[kafka]\ninput_topics = [\"m\"]\n[[policy]]\nmatch = \"*\"\n[[policy.rule]]\nname = \"a\"\nmetric = \"accuracy\"\n\
         window = { kind = \"tumbling\", size = \"5 parsecs\" }\ndetector = { kind = \"threshold\", below = 0.8 }\naction = \"fine_tune\"\n",
    )
    .expect("write");
    let out = driftwatch()
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("policy[0].rule[0].window.size"), "{stderr}");
    assert!(stderr.contains("5 parsecs"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_stops_on_sigterm_with_offsets_committed_and_exit_zero() {
    let kafka = kafka().await;
    let events = simulated(6, 2, 60, 4);
    produce_events(&kafka, &producer(&kafka), &events, None).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("driftwatch.toml");
    let port = free_port();
    let toml =
        config_toml(&kafka, "sigterm-test").replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    std::fs::write(&config_path, toml).expect("write config");
    let mut child = driftwatch()
        .args(["run", "--config"])
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");

    // Wait until it has consumed everything, as its own /metrics says.
    let url = format!("http://127.0.0.1:{port}/metrics");
    let want = format!(
        "driftwatch_records_applied_total{{topic=\"{}\"}} {}",
        kafka.metrics,
        events.len()
    );
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(
            Instant::now() < deadline,
            "service did not process the records"
        );
        if let Ok(resp) = reqwest::get(&url).await {
            if resp.text().await.unwrap_or_default().contains(&want) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "exit status {status}");

    // Every partition's committed offset is its end: nothing left to redo.
    let committed = committed_offsets(&kafka, &kafka.group("sigterm-test"));
    let ends = end_offsets(&kafka.bootstrap, &kafka.metrics);
    for p in 0..METRIC_PARTITIONS {
        assert_eq!(
            committed[p as usize],
            ends.get(&p).copied(),
            "partition {p}"
        );
    }
}

/// The case from the issue that named it: one event of `p/a` stamped in the
/// year 3000 between healthy and degraded telemetry. The replay refuses it
/// as a future timestamp and both degraded models get their requests.
#[test]
fn replay_refuses_a_year_3000_event_and_still_flags_the_degraded_models() {
    let t0: i64 = 1_767_225_600_000;
    let event = |name: &str, minute: i64, accuracy: f64| {
        serde_json::json!({
            "model": {"project": "p", "name": name},
            "timestamp": t0 + minute * 60_000,
            "metrics": {"accuracy": accuracy},
        })
    };
    let mut lines: Vec<serde_json::Value> = (0..100).map(|m| event("a", m, 0.95)).collect();
    let mut broken = event("a", 100, 0.95);
    broken["timestamp"] = serde_json::json!(32_503_680_000_000_i64);
    lines.push(broken);
    lines.extend((100..400).map(|m| event("a", m, 0.5)));
    lines.extend((100..400).map(|m| event("b", m + 300, 0.5)));
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("events.jsonl");
    let text: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    std::fs::write(&input, text.join("\n")).expect("write");
    let out = driftwatch()
        .args(["replay", "--config", "config/demo.toml"])
        .arg(&input)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("700 applied, 1 skipped {\"future_timestamp\": 1}"),
        "{stderr}"
    );
    let models: std::collections::BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let r: serde_json::Value = serde_json::from_str(l).expect("request json");
            format!(
                "{}/{}",
                r["model"]["project"].as_str().unwrap_or(""),
                r["model"]["name"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(models, ["p/a".to_owned(), "p/b".to_owned()].into());
}
