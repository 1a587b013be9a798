//! Hot reload of policies: on SIGHUP or a changed file, `driftwatch run`
//! applies new policies without a restart, keeps the state of rules whose
//! definition did not change, and rejects an invalid configuration while
//! the previous one stays in force.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The demo policies with `error-rate` changed and `f1-drop` added;
/// `accuracy-drop` and `latency-p95` unchanged.
fn reloaded(toml: &str) -> String {
    let changed = toml.replace(
        "detector = { kind = \"threshold\", above = 0.25 }",
        "detector = { kind = \"threshold\", above = 0.3 }",
    );
    assert_ne!(changed, toml, "the demo config has the error-rate rule");
    format!(
        "{changed}\n[[policy.rule]]\nname = \"f1-drop\"\nmetric = \"f1_score\"\nwindow = {{ kind = \"tumbling\", size = \"5m\" }}\ndetector = {{ kind = \"threshold\", below = 0.8 }}\naction = \"fine_tune\"\n"
    )
}

async fn get(url: &str) -> String {
    match reqwest::get(url).await {
        Ok(resp) => resp.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn buffered(view: &serde_json::Value, rule: &str) -> Option<u64> {
    view["rules"][rule]["buffered_samples"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_and_file_changes_reload_policies_keeping_unchanged_rule_state() {
    let kafka = kafka().await;
    let events = simulated(4, 1, 37, 5);
    produce_events(&kafka, &producer(&kafka), &events, None).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("driftwatch.toml");
    let port = free_port();
    let original =
        config_toml(&kafka, "reload-test").replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    std::fs::write(&config_path, &original).expect("write config");
    let log = dir.path().join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_driftwatch"))
        .args(["run", "--watch-interval", "200ms", "--config"])
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn");
    let base = format!("http://127.0.0.1:{port}");
    let metrics = format!("{base}/metrics");
    let model = format!("{base}/models/demo/healthy-000");
    let applied = format!(
        "driftwatch_records_applied_total{{topic=\"{}\"}} {}",
        kafka.metrics,
        events.len()
    );
    wait_for("every event applied", async || {
        get(&metrics).await.contains(&applied)
    })
    .await;
    let before: serde_json::Value = serde_json::from_str(&get(&model).await).expect("view");
    for rule in ["accuracy-drop", "error-rate", "latency-p95"] {
        assert!(
            buffered(&before, rule).unwrap_or(0) > 0,
            "{rule} holds samples: {before}"
        );
    }

    // A valid change, announced by SIGHUP.
    std::fs::write(&config_path, reloaded(&original)).expect("write config");
    let hup = |pid: u32| {
        assert!(Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .expect("kill")
            .success());
    };
    hup(child.id());
    wait_for("the reload applied", async || {
        get(&metrics)
            .await
            .contains("driftwatch_config_reloads_total{outcome=\"applied\"} 1")
    })
    .await;
    let after: serde_json::Value = serde_json::from_str(&get(&model).await).expect("view");
    assert_eq!(
        buffered(&after, "accuracy-drop"),
        buffered(&before, "accuracy-drop"),
        "an unchanged rule keeps its window"
    );
    assert_eq!(
        after["rules"]["accuracy-drop"]["last_window"],
        before["rules"]["accuracy-drop"]["last_window"]
    );
    assert_eq!(
        buffered(&after, "latency-p95"),
        buffered(&before, "latency-p95")
    );
    assert_eq!(
        buffered(&after, "error-rate"),
        Some(0),
        "a changed rule starts fresh"
    );
    assert_eq!(
        buffered(&after, "f1-drop"),
        Some(0),
        "a new rule starts fresh"
    );

    // An invalid configuration is rejected, by key; the previous one stays.
    let invalid = reloaded(&original).replace("size = \"5m\"", "size = \"5 parsecs\"");
    std::fs::write(&config_path, invalid).expect("write config");
    hup(child.id());
    wait_for("the reload rejected", async || {
        get(&metrics)
            .await
            .contains("driftwatch_config_reloads_total{outcome=\"rejected\"} 1")
    })
    .await;
    let kept: serde_json::Value = serde_json::from_str(&get(&model).await).expect("view");
    assert!(
        kept["rules"]["f1-drop"].is_object(),
        "the reloaded policy stays: {kept}"
    );

    // A valid file change without a signal: the watcher applies it.
    std::fs::write(&config_path, &original).expect("write config");
    wait_for("the file change applied", async || {
        get(&metrics)
            .await
            .contains("driftwatch_config_reloads_total{outcome=\"applied\"} 2")
    })
    .await;
    let back: serde_json::Value = serde_json::from_str(&get(&model).await).expect("view");
    assert!(
        back["rules"]["f1-drop"].is_null(),
        "f1-drop removed: {back}"
    );
    assert_eq!(
        buffered(&back, "accuracy-drop"),
        buffered(&before, "accuracy-drop")
    );

    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill")
        .success());
    let status = child.wait().expect("exit");
    assert!(status.success(), "{status}");
    let stderr = std::fs::read_to_string(&log).expect("log");
    assert!(
        stderr.contains("configuration reload rejected") && stderr.contains("5 parsecs"),
        "the rejection names the problem: {stderr}"
    );
    assert!(stderr.contains("policy[0].rule["), "and the key");
}
