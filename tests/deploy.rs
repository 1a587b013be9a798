//! The deployment files hang together: docker-compose.yml, the Prometheus
//! configuration and alert rules, the Grafana provisioning and dashboard,
//! and the Dockerfile refer to services, ports, files, topics and metric
//! names that exist, and the binary does what the image asks of it.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use regex::Regex;
use yaml_rust2::{Yaml, YamlLoader};

use driftwatch::config::{Config, InputTopics};
use driftwatch::telemetry::Metrics;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn yaml(path: &str) -> Yaml {
    let text = std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("{path}: empty"))
}

fn strings(y: &Yaml) -> Vec<String> {
    y.as_vec()
        .map(|v| {
            v.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// (host path, container path) of a service's bind mounts.
fn mounts(service: &Yaml) -> Vec<(String, String)> {
    strings(&service["volumes"])
        .iter()
        .map(|v| {
            let mut parts = v.split(':');
            let host = parts.next().unwrap_or_default().to_owned();
            let container = parts.next().unwrap_or_default().to_owned();
            (host, container)
        })
        .collect()
}

fn published_ports(service: &Yaml) -> Vec<u16> {
    strings(&service["ports"])
        .iter()
        .filter_map(|p| p.split(':').next_back()?.parse().ok())
        .collect()
}

/// The Apache Kafka version the tests run against (scripts/kafka/pom.xml).
fn tested_kafka_version() -> String {
    let pom = std::fs::read_to_string(repo("scripts/kafka/pom.xml")).expect("pom");
    let version = pom
        .split_once("<kafka.version>")
        .and_then(|(_, rest)| rest.split_once("</kafka.version>"))
        .map(|(version, _)| version.trim().to_owned())
        .expect("kafka.version in the pom");
    assert!(
        version.starts_with("4."),
        "the tests pin Apache Kafka 4.x: {version}"
    );
    version
}

#[test]
fn the_helm_values_name_the_kafka_the_tests_run() {
    let values = std::fs::read_to_string(repo("helm/driftwatch/values.yaml")).expect("values");
    let named = format!(
        "Apache Kafka {} is what the tests run",
        tested_kafka_version()
    );
    assert!(values.contains(&named), "values.yaml must say: {named}");
}

fn compose_config() -> Config {
    Config::load(Some(&repo("deploy/compose/driftwatch.toml")), &[]).expect("compose config")
}

#[test]
fn compose_services_ports_files_and_topics_agree() {
    let compose = yaml("docker-compose.yml");
    let services = &compose["services"];
    for name in [
        "kafka",
        "kafka-init",
        "driftwatch",
        "simulator",
        "coordinator",
        "prometheus",
        "grafana",
    ] {
        assert!(!services[name].is_badvalue(), "service {name}");
    }
    // Kafka in KRaft mode, from the official image of the version the tests
    // run against, reachable from the host.
    let kafka = &services["kafka"];
    let tested = format!("apache/kafka:{}", tested_kafka_version());
    for name in ["kafka", "kafka-init"] {
        assert_eq!(
            services[name]["image"].as_str(),
            Some(tested.as_str()),
            "{name} runs the Kafka the tests run"
        );
    }
    let env = &kafka["environment"];
    assert!(env["KAFKA_PROCESS_ROLES"]
        .as_str()
        .unwrap_or("")
        .contains("controller"));
    assert!(env["KAFKA_ADVERTISED_LISTENERS"]
        .as_str()
        .unwrap_or("")
        .contains("EXTERNAL://localhost:29092"));
    assert!(
        published_ports(kafka).contains(&29092),
        "the test suite's bootstrap"
    );

    // Every bind-mounted file or directory exists.
    let mut mounted = 0;
    for (name, service) in services.as_hash().expect("services") {
        for (host, _) in mounts(service) {
            assert!(repo(&host).exists(), "{name:?} mounts missing {host}");
            mounted += 1;
        }
    }
    assert!(mounted >= 5);

    // driftwatch: its config is the mounted file, valid, on the compose Kafka.
    let driftwatch = &services["driftwatch"];
    let (_, config_path) = mounts(driftwatch)
        .into_iter()
        .find(|(host, _)| host.ends_with("driftwatch.toml"))
        .expect("config mount");
    let command = strings(&driftwatch["command"]);
    assert_eq!(command, ["run", "--config", config_path.as_str()]);
    let config = compose_config();
    assert_eq!(config.kafka.bootstrap_servers, "kafka:9092");
    assert!(published_ports(driftwatch).contains(&config.http.listen.port()));

    // The topics driftwatch uses are the ones kafka-init creates, the
    // changelog compacted and partitioned like the input.
    let init = strings(&services["kafka-init"]["command"]).join("\n");
    let created = |topic: &str| -> String {
        init.lines()
            .find(|l| l.contains(&format!("--topic {topic} ")))
            .unwrap_or_else(|| panic!("kafka-init does not create {topic}"))
            .to_owned()
    };
    let InputTopics::List(inputs) = &config.kafka.input else {
        panic!("the compose config lists its input topics");
    };
    let partitions = |line: &str| -> u32 {
        let re = Regex::new(r"--partitions (\d+)").expect("regex");
        re.captures(line)
            .and_then(|c| c[1].parse().ok())
            .expect("partitions")
    };
    let input = created(&inputs[0]);
    let changelog = created(&config.kafka.changelog_topic);
    assert!(changelog.contains("cleanup.policy=compact"));
    assert_eq!(partitions(&input), partitions(&changelog));
    created(&config.kafka.output_topic);
    created(&config.kafka.dlq_topic);
    created(config.kafka.status_topic.as_deref().expect("status topic"));

    // The simulator produces to that input topic on that Kafka.
    let simulator = strings(&services["simulator"]["command"]);
    assert_eq!(simulator[0], "simulate");
    let arg = |flag: &str| simulator.iter().skip_while(|a| *a != flag).nth(1).cloned();
    assert_eq!(arg("--topic").as_deref(), Some(inputs[0].as_str()));
    assert_eq!(arg("--bootstrap-servers").as_deref(), Some("kafka:9092"));
    assert_eq!(
        services["simulator"]["image"].as_str(),
        driftwatch["image"].as_str(),
        "the simulator is the driftwatch image"
    );

    // The stand-in coordinator reads driftwatch's own configuration (so its
    // topics and formats are driftwatch's), from the same image.
    let coordinator = &services["coordinator"];
    let command = strings(&coordinator["command"]);
    assert_eq!(
        command[..3],
        ["coordinate", "--config", config_path.as_str()]
    );
    assert!(mounts(coordinator)
        .iter()
        .any(|(host, container)| host.ends_with("driftwatch.toml") && *container == config_path));
    assert_eq!(coordinator["image"].as_str(), driftwatch["image"].as_str());
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_driftwatch"))
        .args(&command)
        .arg("--help")
        .output()
        .expect("driftwatch coordinate --help");
    assert!(
        output.status.success(),
        "the coordinator's flags parse: {output:?}"
    );

    // Prometheus scrapes driftwatch's published port and loads the alerts
    // from where they are mounted.
    let prometheus = yaml("deploy/prometheus/prometheus.yml");
    let targets: Vec<String> = prometheus["scrape_configs"]
        .as_vec()
        .expect("scrape configs")
        .iter()
        .flat_map(|s| s["static_configs"].as_vec().cloned().unwrap_or_default())
        .flat_map(|s| strings(&s["targets"]))
        .collect();
    assert!(targets.contains(&format!("driftwatch:{}", config.http.listen.port())));
    let prom_mounts = mounts(&services["prometheus"]);
    for rule_file in strings(&prometheus["rule_files"]) {
        assert!(
            prom_mounts.iter().any(|(_, c)| *c == rule_file),
            "{rule_file} is mounted"
        );
    }
    assert!(published_ports(&services["prometheus"]).contains(&9090));

    // Grafana: the datasource is the prometheus service; the dashboards
    // provider reads where the dashboards are mounted.
    let datasource = yaml("deploy/grafana/provisioning/datasources/prometheus.yml");
    let ds = &datasource["datasources"][0];
    assert_eq!(ds["url"].as_str(), Some("http://prometheus:9090"));
    let provider = yaml("deploy/grafana/provisioning/dashboards/dashboards.yml");
    let path = provider["providers"][0]["options"]["path"]
        .as_str()
        .expect("dashboard path")
        .to_owned();
    assert!(mounts(&services["grafana"]).iter().any(|(_, c)| *c == path));
    let dashboard = dashboard();
    let uid = ds["uid"].as_str().expect("datasource uid");
    for panel in dashboard["panels"].as_array().expect("panels") {
        assert_eq!(panel["datasource"]["uid"], uid, "{}", panel["title"]);
    }
}

fn dashboard() -> serde_json::Value {
    let text = std::fs::read_to_string(repo("deploy/grafana/dashboards/driftwatch.json"))
        .expect("dashboard");
    serde_json::from_str(&text).expect("dashboard JSON")
}

/// Metric names an expression refers to, histogram series mapped to their
/// histogram.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let re = Regex::new(r"driftwatch_[a-z0-9_]+").expect("regex");
    re.find_iter(expr)
        .map(|m| {
            let name = m.as_str();
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name)
                .to_owned()
        })
        .collect()
}

#[test]
fn dashboards_and_alerts_use_only_metrics_driftwatch_exports() {
    let exported: BTreeSet<String> = Metrics::new()
        .expect("metrics")
        .exported_names()
        .into_iter()
        .collect();
    assert!(exported.contains("driftwatch_requests_produced_total"));

    let dashboard = dashboard();
    let mut used = BTreeSet::new();
    let panels = dashboard["panels"].as_array().expect("panels");
    for panel in panels {
        for target in panel["targets"].as_array().expect("targets") {
            used.extend(metric_names(target["expr"].as_str().expect("expr")));
        }
    }
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for wanted in [
        "Events",
        "lag",
        "action",
        "model",
        "Dead letters",
        "Restore",
        "latency",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(wanted)),
            "a panel about {wanted}: {titles:?}"
        );
    }

    let alerts = yaml("deploy/prometheus/alerts.yml");
    let mut names = BTreeSet::new();
    for group in alerts["groups"].as_vec().expect("groups") {
        for rule in group["rules"].as_vec().expect("rules") {
            names.insert(rule["alert"].as_str().expect("alert name").to_owned());
            used.extend(metric_names(rule["expr"].as_str().expect("expr")));
        }
    }
    for wanted in ["Lag", "DeadLetters", "ModelSilent"] {
        assert!(
            names.iter().any(|n| n.contains(wanted)),
            "{wanted}: {names:?}"
        );
    }
    let unknown: Vec<&String> = used.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "not exported by driftwatch: {unknown:?}"
    );
    assert!(used.len() >= 10, "{used:?}");
}

/// The instructions of the Dockerfile's last stage.
fn runtime_stage() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo("Dockerfile")).expect("Dockerfile");
    let joined = text.replace("\\\n", " ");
    let lines: Vec<(String, String)> = joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (op, rest) = l.split_once(' ')?;
            Some((op.to_uppercase(), rest.trim().to_owned()))
        })
        .collect();
    let last_from = lines
        .iter()
        .rposition(|(op, _)| op == "FROM")
        .expect("a FROM");
    assert!(
        lines.iter().filter(|(op, _)| op == "FROM").count() >= 2,
        "multi-stage"
    );
    lines[last_from..].to_vec()
}

fn json_args(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("exec form expected: {s}: {e}"))
}

#[test]
fn the_image_runs_the_binary_as_non_root_with_a_working_healthcheck() {
    let stage = runtime_stage();
    let get = |op: &str| -> Vec<String> {
        stage
            .iter()
            .filter(|(o, _)| o == op)
            .map(|(_, r)| r.clone())
            .collect()
    };
    let user = get("USER").pop().expect("a USER");
    let uid: u32 = user
        .split(':')
        .next()
        .and_then(|u| u.parse().ok())
        .expect("numeric uid");
    assert!(uid > 0, "non-root");
    let entrypoint = json_args(&get("ENTRYPOINT").pop().expect("ENTRYPOINT"));
    let binary = entrypoint[0].clone();
    assert!(
        get("COPY")
            .iter()
            .any(|c| c.starts_with("--from=build") && c.ends_with(&binary)),
        "the entrypoint is the binary copied from the build stage"
    );
    // COPY sources exist, and .dockerignore does not hide them.
    let ignored = std::fs::read_to_string(repo(".dockerignore")).expect(".dockerignore");
    let text = std::fs::read_to_string(repo("Dockerfile")).expect("Dockerfile");
    for line in text
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let parts: Vec<&str> = line.split_whitespace().collect();
        for source in &parts[1..parts.len() - 1] {
            assert!(repo(source).exists(), "COPY source {source}");
            assert!(
                !ignored.lines().any(|i| i.trim() == *source),
                "{source} is in .dockerignore"
            );
        }
    }

    // What the image runs, run with the same binary.
    let bin = env!("CARGO_BIN_EXE_driftwatch");
    let run = |args: &[String]| {
        Command::new(bin)
            .args(args)
            .current_dir(repo("."))
            .output()
            .expect("runs")
    };
    assert!(run(&["--help".to_owned()]).status.success());
    let mut cmd = json_args(&get("CMD").pop().expect("CMD"));
    assert_eq!(cmd[0], "run");
    // The default config the image ships (example.toml) is valid.
    assert!(get("COPY")
        .iter()
        .any(|c| c.starts_with("config/example.toml ") && c.ends_with(&cmd[2])));
    cmd = vec![
        "check-config".to_owned(),
        "--config".to_owned(),
        "config/example.toml".to_owned(),
    ];
    assert!(run(&cmd).status.success());

    // The HEALTHCHECK command: healthy against a server answering 200,
    // unhealthy against a closed port.
    let health = get("HEALTHCHECK").pop().expect("HEALTHCHECK");
    let exec = health.split_once("CMD ").expect("CMD").1;
    let mut args = json_args(exec);
    assert_eq!(args[0], binary);
    assert_eq!(args[1], "healthcheck");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    let url_at = args.iter().position(|a| a == "--url").expect("--url") + 1;
    args[url_at] = format!("http://127.0.0.1:{port}/healthz");
    assert!(run(&args[1..]).status.success(), "healthy");
    server.join().expect("server");
    args[url_at] = format!("http://127.0.0.1:{port}/healthz");
    assert!(!run(&args[1..]).status.success(), "closed port: unhealthy");
}

/// promtool, from Debian's prometheus package (scripts/test.sh installs it).
fn promtool(args: &[&str]) -> std::process::Output {
    Command::new("promtool")
        .args(args)
        .output()
        .expect("promtool (Debian's prometheus package; scripts/test.sh installs it)")
}

fn assert_promtool(args: &[&str]) {
    let out = promtool(args);
    assert!(
        out.status.success(),
        "promtool {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The rules and the scrape configuration are valid for Prometheus itself,
/// every alert behaves as its unit tests say (`alerts_test.yml`: it fires
/// on its series after its `for`, and not on a healthy one), and every
/// dashboard query is valid PromQL.
#[test]
fn prometheus_rules_config_and_dashboard_queries_pass_promtool() {
    let alerts = repo("deploy/prometheus/alerts.yml");
    assert_promtool(&["check", "rules", alerts.to_str().expect("path")]);

    // The configuration names the rules where compose mounts them.
    let dir = tempfile::tempdir().expect("tempdir");
    let config =
        std::fs::read_to_string(repo("deploy/prometheus/prometheus.yml")).expect("prometheus.yml");
    assert!(config.contains("/etc/prometheus/alerts.yml"));
    let local = dir.path().join("prometheus.yml");
    std::fs::write(
        &local,
        config.replace("/etc/prometheus/alerts.yml", alerts.to_str().expect("path")),
    )
    .expect("write");
    assert_promtool(&["check", "config", local.to_str().expect("path")]);

    // Every alert has a unit test, and they pass.
    let tests_path = repo("deploy/prometheus/alerts_test.yml");
    let tests = yaml("deploy/prometheus/alerts_test.yml");
    let tested: BTreeSet<String> = tests["tests"]
        .as_vec()
        .expect("tests")
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_vec().cloned().unwrap_or_default())
        .filter_map(|a| a["alertname"].as_str().map(str::to_owned))
        .collect();
    let rules = yaml("deploy/prometheus/alerts.yml");
    for group in rules["groups"].as_vec().expect("groups") {
        for rule in group["rules"].as_vec().expect("rules") {
            let name = rule["alert"].as_str().expect("alert name");
            assert!(
                tested.contains(name),
                "{name} has no test in alerts_test.yml"
            );
        }
    }
    assert_promtool(&["test", "rules", tests_path.to_str().expect("path")]);

    // The dashboard's queries, as recording rules, parse.
    let mut recording = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, panel) in dashboard()["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .enumerate()
    {
        for (j, target) in panel["targets"]
            .as_array()
            .expect("targets")
            .iter()
            .enumerate()
        {
            let expr = target["expr"].as_str().expect("expr");
            recording.push_str(&format!(
                "      - record: dashboard:panel{i}:target{j}\n        expr: {}\n",
                serde_json::to_string(expr).expect("quoted")
            ));
        }
    }
    let dashboard_rules = dir.path().join("dashboard.yml");
    std::fs::write(&dashboard_rules, recording).expect("write");
    assert_promtool(&["check", "rules", dashboard_rules.to_str().expect("path")]);
}

/// No archive or package is committed (a stray tarball once was); the
/// repository holds sources, and `.gitignore` keeps such files out.
#[test]
fn the_repository_tracks_no_archives() {
    let out = Command::new("git")
        .args(["ls-files"])
        .current_dir(repo("."))
        .output()
        .expect("git ls-files");
    assert!(out.status.success(), "git ls-files failed");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.lines().any(|f| f == "Cargo.toml"),
        "not the repository"
    );
    let archive = Regex::new(r"\.(tar|tar\.[a-z0-9]+|tgz|zip|whl|jar|deb|rpm)$").expect("regex");
    let archives: Vec<&str> = listed.lines().filter(|f| archive.is_match(f)).collect();
    assert!(archives.is_empty(), "archives committed: {archives:?}");
}
