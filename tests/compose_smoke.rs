//! The compose stack without Docker: the services of docker-compose.yml run
//! as processes with their own configuration and flags, against the test
//! broker instead of the compose Kafka. driftwatch (`deploy/compose/
//! driftwatch.toml`, exactly-once), the simulator, the stand-in coordinator
//! and Prometheus (`deploy/prometheus/prometheus.yml` and `alerts.yml`,
//! Debian's prometheus). Then every query of the Grafana dashboard is asked
//! of that Prometheus: each panel has data, as a newcomer running
//! `docker compose up` would see it fill. Only the Kafka client errors
//! panel is empty, because nothing goes wrong.
//!
//! Differences from compose, all in how things are reached: topic names
//! and the group carry a suffix (the broker is shared), the broker is the
//! test broker (with a short session timeout, so a rebalance is quick), the simulator
//! runs faster and the coordinator answers after 2s, and Prometheus scrapes
//! every second.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::instance::Instance;
use common::*;
use yaml_rust2::{Yaml, YamlLoader};

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The command of a compose service.
fn compose_command(service: &str) -> Vec<String> {
    let compose = YamlLoader::load_from_str(&read("docker-compose.yml"))
        .expect("compose yaml")
        .remove(0);
    compose["services"][service]["command"]
        .as_vec()
        .unwrap_or_else(|| panic!("{service} has a command list"))
        .iter()
        .map(|v| match v {
            Yaml::String(s) => s.clone(),
            other => panic!("{service}: {other:?}"),
        })
        .collect()
}

/// Replaces the value after `flag` in `args`.
fn with_flag(mut args: Vec<String>, flag: &str, value: &str) -> Vec<String> {
    let at = args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("{flag} in {args:?}"));
    args[at + 1] = value.to_owned();
    args
}

/// A child process that is killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(name: &'static str, program: &str, args: &[String], log: &Path) -> Process {
    let out = std::fs::File::create(log).expect("log");
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("log"))
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {name} ({program}): {e}"));
    Process(child)
}

async fn prometheus_query(base: &str, expr: &str) -> serde_json::Value {
    let resp: serde_json::Value = reqwest::Client::new()
        .get(format!("{base}/api/v1/query"))
        .query(&[("query", expr)])
        .send()
        .await
        .expect("prometheus query")
        .json()
        .await
        .expect("prometheus json");
    assert_eq!(resp["status"], "success", "{expr}: {resp}");
    resp["data"]["result"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_services_run_and_every_dashboard_panel_fills() {
    let bootstrap = std::env::var(BOOTSTRAP_ENV).unwrap_or_default();
    assert!(
        !bootstrap.is_empty(),
        "needs the test broker: run scripts/test.sh"
    );
    let kafka = unprovisioned_kafka(&bootstrap);
    let dir = tempfile::tempdir().expect("tempdir");

    // driftwatch with the compose configuration, on this test's topics.
    let mut toml = read("deploy/compose/driftwatch.toml");
    for (key, old, new) in [
        (
            "bootstrap_servers",
            "\"kafka:9092\"",
            format!("\"{bootstrap}\"\nproperties = {{ \"session.timeout.ms\" = \"6000\" }}"),
        ),
        (
            "group_id",
            "\"driftwatch\"",
            format!("\"{}\"", kafka.group("compose")),
        ),
        (
            "input_topics",
            "[\"model-metrics\"]",
            format!("[\"{}\"]", kafka.metrics),
        ),
        (
            "output_topic",
            "\"retrain-requests\"",
            format!("\"{}\"", kafka.requests),
        ),
        (
            "status_topic",
            "\"retrain-status\"",
            format!("\"{}\"", kafka.status),
        ),
        (
            "dlq_topic",
            "\"driftwatch-dlq\"",
            format!("\"{}\"", kafka.dlq),
        ),
        (
            "changelog_topic",
            "\"driftwatch-changelog\"",
            format!("\"{}\"", kafka.changelog),
        ),
        ("listen", "\"0.0.0.0:9464\"", "\"127.0.0.1:0\"".to_owned()),
    ] {
        let line = format!("{key} = {old}");
        assert!(toml.contains(&line), "the compose config has {line}");
        toml = toml.replace(&line, &format!("{key} = {new}"));
    }
    create_topics(&bootstrap, &kafka.topics_to_create()).await;
    let mut driftwatch = Instance::spawn(dir.path(), "driftwatch", &toml);
    let config_path = dir.path().join("driftwatch.toml");
    driftwatch.wait_ready().await;

    // The coordinator and the simulator with their compose flags.
    let bin = env!("CARGO_BIN_EXE_driftwatch");
    let coordinator = with_flag(
        compose_command("coordinator"),
        "--config",
        config_path.to_str().expect("path"),
    );
    let mut coordinator = with_flag(coordinator, "--delay", "2s");
    coordinator.extend(["--group-id".to_owned(), kafka.group("coordinator")]);
    let _coordinator = spawn(
        "coordinator",
        bin,
        &coordinator,
        &dir.path().join("coordinator.log"),
    );
    let simulator = with_flag(
        compose_command("simulator"),
        "--bootstrap-servers",
        &bootstrap,
    );
    let simulator = with_flag(simulator, "--topic", &kafka.metrics);
    let simulator = with_flag(simulator, "--ticks-per-second", "20");
    let simulator = with_flag(simulator, "--status-topic", &kafka.status);
    let _simulator = spawn(
        "simulator",
        bin,
        &simulator,
        &dir.path().join("simulator.log"),
    );
    // A few records that are not telemetry, for the dead-letter panel.
    let producer = producer(&kafka);
    for i in 0..3 {
        produce_raw(
            &producer,
            &kafka.metrics,
            Some(b"demo/garbage"),
            Some(format!("not json {i}").as_bytes()),
        )
        .await;
    }
    // And, once the stream has moved on, an event from long before it:
    // too late, dead-lettered as such.
    let deadline = Instant::now() + Duration::from_secs(60);
    while driftwatch.counter("records_applied_total").await < 400 {
        assert!(
            Instant::now() < deadline,
            "the simulator's telemetry is not applied"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut late = simulated(40, 6, 1, 1).remove(0);
    late.timestamp -= 24 * 3600 * 1000;
    produce_events(&kafka, &producer, &[late], Some(Wire::Json)).await;

    // Prometheus with the compose configuration, scraping this driftwatch.
    let prom_port = free_port();
    let scrape_target = driftwatch.http().trim_start_matches("http://").to_owned();
    let prom_config = read("deploy/prometheus/prometheus.yml")
        .replace("driftwatch:9464", &scrape_target)
        .replace("scrape_interval: 5s", "scrape_interval: 1s")
        .replace("evaluation_interval: 15s", "evaluation_interval: 1s")
        .replace(
            "/etc/prometheus/alerts.yml",
            repo("deploy/prometheus/alerts.yml").to_str().expect("path"),
        );
    let prom_config_path = dir.path().join("prometheus.yml");
    std::fs::write(&prom_config_path, prom_config).expect("prometheus config");
    let _prometheus = spawn(
        "prometheus",
        "prometheus",
        &[
            format!("--config.file={}", prom_config_path.display()),
            format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()),
            format!("--web.listen-address=127.0.0.1:{prom_port}"),
        ],
        &dir.path().join("prometheus.log"),
    );
    let prom = format!("http://127.0.0.1:{prom_port}");

    // Every panel's queries, until each panel has data (or time is up).
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/dashboards/driftwatch.json"))
            .expect("dashboard");
    let allowed_empty = ["Kafka client errors"];
    let deadline = Instant::now() + Duration::from_secs(120);
    // A panel has data when one of its queries answers; every query without
    // an answer is listed if a panel has none.
    let mut empty: BTreeMap<String, Vec<String>> = BTreeMap::new();
    loop {
        empty.clear();
        let mut filled: Vec<String> = Vec::new();
        for panel in dashboard["panels"].as_array().expect("panels") {
            let title = panel["title"].as_str().expect("title").to_owned();
            for target in panel["targets"].as_array().expect("targets") {
                let expr = target["expr"].as_str().expect("expr");
                let answer = match reqwest::get(format!("{prom}/-/ready")).await {
                    Ok(r) if r.status().is_success() => prometheus_query(&prom, expr).await,
                    _ => serde_json::Value::Null,
                };
                if answer.as_array().is_none_or(Vec::is_empty) {
                    empty
                        .entry(title.clone())
                        .or_default()
                        .push(expr.to_owned());
                } else {
                    filled.push(title.clone());
                }
            }
        }
        let missing: Vec<&String> = empty
            .keys()
            .filter(|t| !allowed_empty.contains(&t.as_str()) && !filled.contains(t))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "panels without data after 120 s: {empty:#?}\nlogs in {}",
            dir.keep().display()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    // Nothing went wrong with Kafka, so that panel stays empty.
    assert!(empty.contains_key("Kafka client errors"), "{empty:#?}");

    // The loop went round: requests were answered and applied.
    let statuses =
        prometheus_query(&prom, "sum(driftwatch_statuses_total{outcome=\"applied\"})").await;
    assert!(
        statuses.as_array().is_some_and(|r| !r.is_empty()),
        "{statuses}"
    );
    // Prometheus loaded the alert rules and evaluates them without error.
    let rules: serde_json::Value = reqwest::get(format!("{prom}/api/v1/rules"))
        .await
        .expect("rules")
        .json()
        .await
        .expect("rules json");
    let loaded: Vec<serde_json::Value> = rules["data"]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .collect();
    let defined = read("deploy/prometheus/alerts.yml")
        .matches("- alert:")
        .count();
    assert!(defined >= 6);
    assert_eq!(loaded.len(), defined, "{rules}");
    for rule in loaded {
        assert_eq!(rule["health"], "ok", "{rule}");
    }
    // The three records that are not telemetry and the late event.
    assert_eq!(driftwatch.counter("records_dead_lettered_total").await, 4);
    let metrics = driftwatch.metrics_text().await;
    assert!(
        metrics.lines().any(|l| {
            l.starts_with("driftwatch_records_dead_lettered_total{") && l.contains("too_late")
        }),
        "the late event is dead-lettered as too late:\n{metrics}"
    );
}
