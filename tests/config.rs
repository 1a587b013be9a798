//! Integration tests of configuration loading, layering and validation.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use driftwatch::codec::FormatKind;
use driftwatch::config::{Config, ConfigError, InputTopics, LatePolicy};
use driftwatch::engine::policy::{Aggregate, DetectorSpec, WindowSpec};
use driftwatch::model::Action;

/// Serializes the tests that touch `DRIFTWATCH_*` environment variables.
/// Only `Config::load` reads the environment, so the other tests need not lock.
static ENV_LOCK: Mutex<()> = Mutex::new(());

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.toml")
}

/// A small valid configuration that reads no schema files.
const MINIMAL: &str = r#"
[kafka]
input_topics = ["model-metrics"]

[[policy]]
match = "*"
[[policy.rule]]
name = "accuracy-drop"
metric = "accuracy"
window = { kind = "tumbling", size = "5m" }
detector = { kind = "threshold", below = 0.85 }
action = "fine_tune"
"#;

fn overrides(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Sets environment variables for the duration of `f`, holding [`ENV_LOCK`].
fn with_env<T>(vars: &[(&str, &str)], f: impl FnOnce() -> T) -> T {
    let _guard = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    for (k, v) in vars {
        std::env::set_var(k, v);
    }
    let result = f();
    for (k, _) in vars {
        std::env::remove_var(k);
    }
    result
}

fn write_temp(toml: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    std::io::Write::write_all(&mut file, toml.as_bytes()).expect("write temp file");
    file
}

/// Applies `edit` to MINIMAL and expects an error on `key` containing `fragment`.
fn assert_error(toml: &str, key: &str, fragment: &str) -> ConfigError {
    let err = Config::from_toml_str(toml).expect_err("config should be rejected");
    assert_eq!(err.key, key, "wrong key in {err}");
    assert!(
        err.problem.contains(fragment),
        "problem {:?} should contain {fragment:?}",
        err.problem
    );
    err
}

#[test]
fn example_loads_and_compiles() {
    let text = std::fs::read_to_string(example_path()).expect("example.toml");
    let config = Config::from_toml_str(&text).expect("example.toml is valid");

    assert_eq!(config.kafka.bootstrap_servers, "localhost:9092");
    assert_eq!(
        config.kafka.input,
        InputTopics::List(vec!["model-metrics".into(), "legacy-metrics".into()])
    );
    assert_eq!(config.kafka.status_topic.as_deref(), Some("retrain-status"));
    assert_eq!(config.kafka.topic_partitions, 6);
    assert_eq!(
        config
            .kafka
            .properties
            .get("session.timeout.ms")
            .map(String::as_str),
        Some("6000")
    );
    assert_eq!(config.http.listen.port(), 8080);
    assert_eq!(config.engine.max_models_per_partition, 100_000);
    assert_eq!(config.engine.request_timeout_ms, 6 * 3_600_000);

    assert_eq!(
        config.format_for_topic("model-metrics").kind,
        FormatKind::Auto
    );
    let legacy = config.format_for_topic("legacy-metrics");
    assert_eq!(legacy.kind, FormatKind::Avro);
    assert_eq!(
        legacy.writer_schema.as_deref(),
        Some(Path::new("schemas/compat/metric_event_v0.avsc"))
    );
    assert_eq!(config.output_format.kind, FormatKind::Json);

    let policies = config.policies.policies();
    assert_eq!(policies.len(), 3);
    let ads = config.policies.for_lineage("ads/ctr").expect("ads policy");
    assert_eq!(ads.rules[0].detector.name(), "cusum");
    assert_eq!(ads.rules[1].action, None);
    assert_eq!(ads.composites[0].members, vec![1, 2]);
    let fraud = config
        .policies
        .for_lineage("fraud/scorer")
        .expect("fraud policy");
    assert_eq!(&*fraud.pattern, "fraud/*");
    assert_eq!(fraud.request_timeout_ms, 2 * 3_600_000);
    let drift = &fraud.rules[0];
    assert_eq!(
        drift.window,
        WindowSpec::Sliding {
            size_ms: 30 * 60_000,
            slide_ms: 10 * 60_000
        }
    );
    assert_eq!(drift.aggregate, Aggregate::P95);

    let default = config
        .policies
        .for_lineage("search/ranker")
        .expect("default policy");
    assert_eq!(&*default.pattern, "*");
    assert_eq!(default.request_timeout_ms, 6 * 3_600_000);
    let rule = &default.rules[0];
    assert_eq!(rule.name, "accuracy-drop");
    assert_eq!(rule.metric, "accuracy");
    assert_eq!(rule.window, WindowSpec::Tumbling { size_ms: 300_000 });
    assert_eq!(rule.aggregate, Aggregate::Mean);
    assert_eq!(
        rule.detector,
        DetectorSpec::Threshold {
            below: Some(0.85),
            above: None
        }
    );
    assert_eq!(rule.alert.confirm, 3);
    assert_eq!(rule.alert.cooldown_ms, 3_600_000);
    assert_eq!(rule.action, Some(Action::FineTune));

    let errors = &default.rules[1];
    assert_eq!(errors.window, WindowSpec::Count { size: 200 });
    assert_eq!(errors.alert.confirm, 1);
    assert_eq!(errors.alert.cooldown_ms, 0);
    assert_eq!(errors.action, Some(Action::FullRetrain));

    assert!(config.warnings().is_empty(), "{:?}", config.warnings());
}

#[test]
fn example_loads_through_load() {
    let config =
        with_env(&[], || Config::load(Some(&example_path()), &[])).expect("example.toml loads");
    assert_eq!(config.policies.policies().len(), 3);
}

#[test]
fn defaults_fill_in_missing_keys() {
    let config = Config::from_toml_str(MINIMAL).expect("valid");
    assert_eq!(config.kafka.bootstrap_servers, "localhost:9092");
    assert_eq!(config.kafka.group_id, "driftwatch");
    assert_eq!(config.kafka.output_topic, "retrain-requests");
    assert_eq!(config.kafka.dlq_topic, "driftwatch-dlq");
    assert_eq!(config.kafka.status_topic, None);
    assert!(!config.kafka.create_topics);
    assert_eq!(config.http.listen, "0.0.0.0:8080".parse().expect("addr"));
    assert_eq!(config.engine.max_models_per_partition, 100_000);
    assert_eq!(config.engine.request_timeout_ms, 21_600_000);
    assert!(config.topic_formats.is_empty());
}

#[test]
fn env_overrides_file_and_cli_overrides_env() {
    let file = write_temp(MINIMAL);
    let vars = [
        ("DRIFTWATCH_KAFKA__GROUP_ID", "from-env"),
        ("DRIFTWATCH_KAFKA__BOOTSTRAP_SERVERS", "broker:9092"),
        ("DRIFTWATCH_ENGINE__MAX_MODELS_PER_PARTITION", "7"),
        // Not nested: ignored rather than rejected as an unknown key.
        ("DRIFTWATCH_LOG", "debug"),
    ];
    let cli = overrides(&[
        ("kafka.group_id", "from-cli"),
        ("engine.request_timeout", "90m"),
    ]);
    let (env_only, with_cli) = with_env(&vars, || {
        (
            Config::load(Some(file.path()), &[]),
            Config::load(Some(file.path()), &cli),
        )
    });

    let env_only = env_only.expect("env layer is valid");
    assert_eq!(env_only.kafka.group_id, "from-env");
    assert_eq!(env_only.kafka.bootstrap_servers, "broker:9092");
    assert_eq!(env_only.engine.max_models_per_partition, 7);

    let with_cli = with_cli.expect("cli layer is valid");
    assert_eq!(with_cli.kafka.group_id, "from-cli");
    assert_eq!(with_cli.kafka.bootstrap_servers, "broker:9092");
    assert_eq!(with_cli.engine.request_timeout_ms, 90 * 60_000);
}

#[test]
fn cli_values_are_toml_literals_or_bare_strings() {
    let file = write_temp(MINIMAL);
    let cli = overrides(&[
        ("engine.max_models_per_partition", "5"),
        ("kafka.create_topics", "true"),
        ("kafka.input_topics", r#"["a", "b"]"#),
        ("kafka.group_id", "123"),
        ("http.listen", "127.0.0.1:9000"),
    ]);
    let config = with_env(&[], || Config::load(Some(file.path()), &cli)).expect("valid");
    assert_eq!(config.engine.max_models_per_partition, 5);
    assert!(config.kafka.create_topics);
    assert_eq!(
        config.kafka.input,
        InputTopics::List(vec!["a".into(), "b".into()])
    );
    assert_eq!(config.kafka.group_id, "123");
    assert_eq!(config.http.listen.port(), 9000);
}

#[test]
fn env_topic_list_may_be_comma_separated() {
    let file = write_temp(MINIMAL);
    let config = with_env(&[("DRIFTWATCH_KAFKA__INPUT_TOPICS", "a, b")], || {
        Config::load(Some(file.path()), &[])
    })
    .expect("valid");
    assert_eq!(
        config.kafka.input,
        InputTopics::List(vec!["a".into(), "b".into()])
    );
}

#[test]
fn env_unknown_key_is_an_error() {
    let file = write_temp(MINIMAL);
    let err = with_env(&[("DRIFTWATCH_KAFKA__GROUP", "x")], || {
        Config::load(Some(file.path()), &[])
    })
    .expect_err("unknown key");
    assert_eq!(err.key, "kafka.group");
    assert!(err.problem.contains("unknown key"), "{err}");
}

#[test]
fn missing_file_is_an_error() {
    let err = Config::load(Some(Path::new("/nonexistent/driftwatch.toml")), &[])
        .expect_err("missing file");
    assert_eq!(err.key, "/nonexistent/driftwatch.toml");
    assert!(err.problem.contains("cannot read"), "{err}");
}

#[test]
fn pattern_input_allows_formats_for_matching_topics() {
    let toml = r#"
[kafka]
input_pattern = "^metrics\\..*"
[format.topics."metrics.legacy"]
kind = "json"
"#;
    let config = Config::from_toml_str(toml).expect("valid");
    assert_eq!(
        config.kafka.input,
        InputTopics::Pattern("^metrics\\..*".into())
    );
    assert_eq!(
        config.format_for_topic("metrics.legacy").kind,
        FormatKind::Json
    );
    assert_eq!(
        config.format_for_topic("metrics.new").kind,
        FormatKind::Auto
    );
}

#[test]
fn warnings_for_missing_default_policy() {
    let config = Config::from_toml_str("[kafka]\ninput_topics = [\"m\"]\n").expect("valid");
    assert!(config.policies.policies().is_empty());
    assert_eq!(config.warnings().len(), 1);

    let narrow = MINIMAL.replace("match = \"*\"", "match = \"fraud/*\"");
    let config = Config::from_toml_str(&narrow).expect("valid");
    assert_eq!(
        config.warnings(),
        vec!["no policy matches every model (add match = \"*\" for a default)".to_owned()]
    );
}

// --- error cases ----------------------------------------------------------

#[test]
fn unknown_key_names_the_key() {
    let toml = MINIMAL.replace("action = ", "severity = 3\naction = ");
    let err = assert_error(&toml, "policy[0].rule[0].severity", "unknown key");
    assert!(err.problem.contains("cooldown"), "lists valid keys: {err}");
    assert_error(
        &format!("{MINIMAL}\n[telemetry]\nx = 1\n"),
        "telemetry",
        "unknown key",
    );
    assert_error(
        &MINIMAL.replace("[kafka]", "[kafka]\nbootstrap = \"x\""),
        "kafka.bootstrap",
        "unknown key",
    );
    assert_error(
        &format!("{MINIMAL}\n[format]\nkind = \"json\"\ncodec = \"x\"\n"),
        "format.codec",
        "unknown key",
    );
}

#[test]
fn bad_duration() {
    let toml = MINIMAL.replace("action = ", "cooldown = \"5 parsecs\"\naction = ");
    assert_error(
        &toml,
        "policy[0].rule[0].cooldown",
        "invalid duration \"5 parsecs\"",
    );
    assert_error(
        &MINIMAL.replace("size = \"5m\"", "size = \"0s\""),
        "policy[0].rule[0].window.size",
        "at least 1ms",
    );
}

#[test]
fn confirm_must_be_positive() {
    let toml = MINIMAL.replace("action = ", "confirm = 0\naction = ");
    assert_error(&toml, "policy[0].rule[0].confirm", "must be >= 1");
}

#[test]
fn inverted_band() {
    let toml = MINIMAL.replace("below = 0.85", "below = 0.9, above = 0.8");
    assert_error(
        &toml,
        "policy[0].rule[0].detector.below",
        "below (0.9) must be less than above (0.8)",
    );
}

#[test]
fn detector_needs_a_bound() {
    let toml = MINIMAL.replace(", below = 0.85", "");
    assert_error(&toml, "policy[0].rule[0].detector", "below and/or above");
    let toml = MINIMAL.replace("below = 0.85", "below = nan");
    assert_error(&toml, "policy[0].rule[0].detector.below", "finite");
}

#[test]
fn exactly_one_input_source() {
    let both = MINIMAL.replace("[kafka]", "[kafka]\ninput_pattern = \"^m.*\"");
    assert_error(
        &both,
        "kafka.input_topics",
        "set exactly one of kafka.input_topics or kafka.input_pattern",
    );
    let neither = MINIMAL.replace("input_topics = [\"model-metrics\"]", "");
    assert_error(
        &neither,
        "kafka.input_topics",
        "set exactly one of kafka.input_topics or kafka.input_pattern",
    );
}

#[test]
fn bad_input_pattern() {
    let pattern = |p: &str| {
        MINIMAL.replace(
            "input_topics = [\"model-metrics\"]",
            &format!("input_pattern = '{p}'"),
        )
    };
    assert_error(
        &pattern("^metrics(.*"),
        "kafka.input_pattern",
        "regular expression",
    );
    assert_error(
        &pattern("metrics.*"),
        "kafka.input_pattern",
        "must start with ^",
    );
}

#[test]
fn bad_glob() {
    let toml = MINIMAL.replace("match = \"*\"", "match = \"fraud/[abc\"");
    assert_error(&toml, "policy[0].match", "not a valid glob");
}

#[test]
fn duplicate_rule_name() {
    let rule = MINIMAL.split("[[policy.rule]]").nth(1).expect("a rule");
    let toml = format!("{MINIMAL}[[policy.rule]]{rule}");
    assert_error(
        &toml,
        "policy[0].rule[1].name",
        "duplicate rule name \"accuracy-drop\" in this policy",
    );
}

#[test]
fn wrong_type() {
    let toml = MINIMAL.replace("action = ", "confirm = \"three\"\naction = ");
    assert_error(&toml, "policy[0].rule[0].confirm", "expected an integer");
    let toml = MINIMAL.replace("[kafka]", "[kafka]\ncreate_topics = \"yes\"");
    assert_error(&toml, "kafka.create_topics", "expected a boolean");
    let toml = MINIMAL.replace("below = 0.85", "below = \"low\"");
    assert_error(
        &toml,
        "policy[0].rule[0].detector.below",
        "expected a number",
    );
}

#[test]
fn unknown_variant() {
    let toml = MINIMAL.replace("\"fine_tune\"", "\"retrain\"");
    assert_error(&toml, "policy[0].rule[0].action", "fine_tune, full_retrain");
    let toml = MINIMAL.replace("kind = \"tumbling\"", "kind = \"hopping\"");
    assert_error(
        &toml,
        "policy[0].rule[0].window.kind",
        "\"hopping\" is not one of",
    );
}

#[test]
fn missing_required_key() {
    let toml = MINIMAL.replace("metric = \"accuracy\"", "");
    assert_error(&toml, "policy[0].rule[0].metric", "missing");
}

#[test]
fn own_topics_must_not_be_inputs() {
    let toml = MINIMAL.replace("[kafka]", "[kafka]\noutput_topic = \"model-metrics\"");
    assert_error(&toml, "kafka.output_topic", "also an input topic");
    let toml = MINIMAL.replace("[kafka]", "[kafka]\ndlq_topic = \"model-metrics\"");
    assert_error(&toml, "kafka.dlq_topic", "also an input topic");
    let toml = MINIMAL
        .replace(
            "input_topics = [\"model-metrics\"]",
            "input_pattern = '^m.*'",
        )
        .replace("[kafka]", "[kafka]\nstatus_topic = \"model-status\"");
    assert_error(&toml, "kafka.status_topic", "also an input topic");
}

#[test]
fn sliding_window_rules() {
    let window = |w: &str| {
        MINIMAL.replace(
            "window = { kind = \"tumbling\", size = \"5m\" }",
            &format!("window = {{ {w} }}"),
        )
    };
    assert_error(
        &window("kind = \"sliding\", size = \"5m\", slide = \"10m\""),
        "policy[0].rule[0].window.slide",
        "slide (10m) must be less than size (5m)",
    );
    assert_error(
        &window("kind = \"sliding\", size = \"5m\", slide = \"2m\""),
        "policy[0].rule[0].window.size",
        "must be a multiple of slide",
    );
    assert_error(
        &window("kind = \"count\", size = 0"),
        "policy[0].rule[0].window.size",
        "must be >= 1",
    );
    assert_error(
        &window("kind = \"count\", size = \"5m\""),
        "policy[0].rule[0].window.size",
        "whole number of samples",
    );
}

#[test]
fn policy_needs_a_rule() {
    let toml = "[kafka]\ninput_topics = [\"m\"]\n[[policy]]\nmatch = \"*\"\n";
    assert_error(toml, "policy[0].rule", "at least one");
}

#[test]
fn topic_format_for_unknown_topic() {
    let toml = format!("{MINIMAL}\n[format.topics.\"other.topic\"]\nkind = \"json\"\n");
    assert_error(
        &toml,
        "format.topics.\"other.topic\"",
        "not one of kafka.input_topics",
    );
}

#[test]
fn format_check_errors_are_prefixed() {
    let toml = format!("{MINIMAL}\n[output_format]\nkind = \"json\"\nschema_id = 3\n");
    assert_error(&toml, "output_format.schema_id", "not used");
    let toml = format!(
        "{MINIMAL}\n[format.topics.model-metrics]\nkind = \"confluent_avro\"\nschemas = {{ abc = \"x.avsc\" }}\n"
    );
    assert_error(
        &toml,
        "format.topics.model-metrics.schemas.abc",
        "not a schema id",
    );
}

#[test]
fn bad_listen_address() {
    let toml = format!("{MINIMAL}\n[http]\nlisten = \"localhost\"\n");
    assert_error(&toml, "http.listen", "not a socket address");
}

#[test]
fn toml_syntax_error() {
    let err = Config::from_toml_str("[kafka\n").expect_err("bad toml");
    assert!(err.problem.contains("invalid TOML"), "{err}");
}

#[test]
fn processing_mode_changelog_and_instance_defaults_and_errors() {
    let config = Config::from_toml_str(MINIMAL).expect("minimal config");
    assert_eq!(
        config.kafka.processing,
        driftwatch::config::Processing::ExactlyOnce
    );
    assert_eq!(config.kafka.commit_interval_ms, 100);
    assert_eq!(
        config.kafka.changelog_topic,
        format!("{}-changelog", config.kafka.group_id)
    );
    assert!(!config.kafka.instance_id.is_empty());
    assert_eq!(config.engine.failed_backoff_ms, 30 * 60 * 1000);

    assert_error(
        &MINIMAL.replace("[kafka]", "[kafka]\nprocessing = \"twice\""),
        "kafka.processing",
        "exactly_once, at_least_once",
    );
    assert_error(
        &MINIMAL.replace("[kafka]", "[kafka]\ncommit_interval = \"0s\""),
        "kafka.commit_interval",
        "",
    );
    assert_error(
        &MINIMAL.replace("[kafka]", "[kafka]\nchangelog_topic = \"model-metrics\""),
        "kafka.changelog_topic",
        "already used",
    );
    let alo = Config::from_toml_str(&MINIMAL.replace(
        "[kafka]",
        "[kafka]\nprocessing = \"at_least_once\"\ninstance_id = \"pod-3\"",
    ))
    .expect("valid");
    assert_eq!(
        alo.kafka.processing,
        driftwatch::config::Processing::AtLeastOnce
    );
    assert_eq!(alo.kafka.instance_id, "pod-3");
}

fn with_detector(detector: &str) -> String {
    MINIMAL.replace(
        r#"detector = { kind = "threshold", below = 0.85 }"#,
        &format!("detector = {detector}"),
    )
}

#[test]
fn sequential_detectors_compile_with_defaults_and_name_bad_parameters() {
    for kind in [
        "cusum",
        "ewma",
        "shewhart",
        "page_hinkley",
        "adwin",
        "ddm",
        "hddm_a",
        "distribution",
    ] {
        let toml = with_detector(&format!(r#"{{ kind = "{kind}" }}"#));
        let config = Config::from_toml_str(&toml).unwrap_or_else(|e| panic!("{kind}: {e}"));
        let rule = &config.policies.policies()[0].rules[0];
        assert_eq!(rule.detector.name(), kind);
    }
    let key = "policy[0].rule[0].detector";
    assert_error(
        &with_detector(r#"{ kind = "cusum", h = 5, arl0 = 500 }"#),
        &format!("{key}.arl0"),
        "give h or arl0, not both",
    );
    assert_error(
        &with_detector(r#"{ kind = "page_hinkley", treshold = 5 }"#),
        &format!("{key}.treshold"),
        "unknown key",
    );
    assert_error(
        &with_detector(r#"{ kind = "adwin", delta = 2 }"#),
        key,
        "delta must be in (0, 1)",
    );
    assert_error(
        &with_detector(r#"{ kind = "kalman" }"#),
        &format!("{key}.kind"),
        "\"kalman\" is not one of: threshold, cusum",
    );
    assert_error(
        &with_detector(r#"{ kind = "ewma", baseline = { kind = "warmup" } }"#),
        &format!("{key}.baseline.windows"),
        "required",
    );
    assert_error(
        &with_detector(
            r#"{ kind = "shewhart", baseline = { kind = "fixed", mean = 1, std = 0 } }"#,
        ),
        &format!("{key}.baseline.std"),
        "> 0",
    );
}

#[test]
fn n_of_m_hysteresis_and_composites_are_checked() {
    let rule = "policy[0].rule[0]";
    let toml = MINIMAL.replace("action = ", "confirm = 3\nconfirm_of = 2\naction = ");
    assert_error(&toml, &format!("{rule}.confirm_of"), "at least confirm");
    let toml = MINIMAL.replace("action = ", "confirm = 65\naction = ");
    assert_error(&toml, &format!("{rule}.confirm"), "at most 64");
    let toml = MINIMAL.replace("action = ", "recover_after = 0\naction = ");
    assert_error(&toml, &format!("{rule}.recover_after"), ">= 1");

    let composite = |body: &str| format!("{MINIMAL}\n[[policy.composite]]\n{body}\n");
    let toml = composite(
        r#"name = "c"
all = ["accuracy-drop", "latency"]
action = "full_retrain""#,
    );
    assert_error(
        &toml,
        "policy[0].composite[0].all[1]",
        "\"latency\" is not a rule of this policy",
    );
    let toml = composite(
        r#"name = "accuracy-drop"
any = ["accuracy-drop"]
action = "full_retrain""#,
    );
    assert_error(&toml, "policy[0].composite[0].name", "duplicate rule name");
    let toml = composite(
        r#"name = "c"
any = ["accuracy-drop"]
action = "none""#,
    );
    assert_error(
        &toml,
        "policy[0].composite[0].action",
        "fine_tune or full_retrain",
    );

    let ok = composite(
        r#"name = "c"
any = ["accuracy-drop"]
cooldown = "1h"
action = "full_retrain""#,
    )
    .replace("action = \"fine_tune\"", "action = \"none\"");
    let config = Config::from_toml_str(&ok).expect("valid");
    let policy = &config.policies.policies()[0];
    assert_eq!(policy.rules[0].action, None);
    assert_eq!(policy.composites[0].members, vec![0]);
    assert_eq!(policy.composites[0].cooldown_ms, 3_600_000);
}

#[test]
fn lateness_and_late_policy() {
    let config = Config::from_toml_str(MINIMAL).expect("valid");
    assert_eq!(config.engine.allowed_lateness_ms, 0);
    assert_eq!(config.engine.late_events, LatePolicy::DeadLetter);
    let toml = format!("{MINIMAL}\n[engine]\nallowed_lateness = \"2m\"\nlate_events = \"drop\"\n");
    let config = Config::from_toml_str(&toml).expect("valid");
    assert_eq!(config.engine.allowed_lateness_ms, 120_000);
    assert_eq!(config.engine.late_events, LatePolicy::Drop);
    let toml = format!("{MINIMAL}\n[engine]\nlate_events = \"keep\"\n");
    assert_error(&toml, "engine.late_events", "\"keep\" is not one of");
}

#[test]
fn kafka_security_settings_reach_librdkafka_and_secrets_are_never_printed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").expect("ca");
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, "from-a-file\n").expect("password");
    let toml = format!(
        "{MINIMAL}\n[kafka.security]\nprotocol = \"sasl_ssl\"\nsasl_mechanism = \"scram-sha-512\"\nsasl_username = \"driftwatch\"\nsasl_password_file = {:?}\nssl_ca_location = {:?}\n",
        password_file.display().to_string(),
        ca.display().to_string(),
    )
    .replace(
        "input_topics = [\"model-metrics\"]",
        "input_topics = [\"model-metrics\"]\nproperties = { \"ssl.key.password\" = \"hunter2\", \"socket.keepalive.enable\" = \"true\" }",
    );
    let config = Config::from_toml_str(&toml).expect("valid");
    use driftwatch::kafka::client;
    // Every client the service creates, not only the base configuration:
    // each must carry the secrets themselves, not librdkafka's placeholder.
    for (role, client) in [
        ("base", client::base(&config.kafka)),
        ("group consumer", client::group_consumer(&config.kafka)),
        ("status consumer", client::status_consumer(&config.kafka)),
        ("restore consumer", client::restore_consumer(&config.kafka)),
        ("producer", client::producer(&config.kafka)),
    ] {
        assert_eq!(client.get("security.protocol"), Some("sasl_ssl"), "{role}");
        assert_eq!(
            client.get("sasl.mechanism"),
            Some("SCRAM-SHA-512"),
            "{role}"
        );
        assert_eq!(client.get("sasl.username"), Some("driftwatch"), "{role}");
        assert_eq!(client.get("sasl.password"), Some("from-a-file"), "{role}");
        assert_eq!(client.get("ssl.key.password"), Some("hunter2"), "{role}");
        assert_eq!(client.get("ssl.ca.location"), ca.to_str(), "{role}");
        assert_eq!(
            client.get("ssl.endpoint.identification.algorithm"),
            Some("https"),
            "{role}"
        );
        assert_eq!(
            client.get("socket.keepalive.enable"),
            Some("true"),
            "{role}"
        );
    }
    let printed = format!("{config:?}");
    for secret in ["from-a-file", "hunter2"] {
        assert!(!printed.contains(secret), "{secret} printed");
    }
    assert!(printed.contains("<redacted>"));
}

#[test]
fn kafka_security_errors_name_the_key() {
    let with = |extra: &str| format!("{MINIMAL}\n[kafka.security]\n{extra}\n");
    assert_error(
        &with("protocol = \"sasl_plaintext\"\nsasl_mechanism = \"GSSAPI\""),
        "kafka.security.sasl_mechanism",
        "not one of: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512",
    );
    assert_error(
        &with("protocol = \"sasl_plaintext\"\nsasl_mechanism = \"PLAIN\"\nsasl_username = \"u\""),
        "kafka.security.sasl_password",
        "required",
    );
    assert_error(
        &with("sasl_username = \"u\""),
        "kafka.security.protocol",
        "SASL settings need",
    );
    assert_error(
        &with("protocol = \"ssl\"\nssl_ca_location = \"/nonexistent/ca.pem\""),
        "kafka.security.ssl_ca_location",
        "not a readable file",
    );
    assert_error(
        &with("protocol = \"tls\""),
        "kafka.security.protocol",
        "not one of",
    );
}

#[test]
fn lifecycle_keys_default_and_validate() {
    let config = Config::from_toml_str(MINIMAL).expect("valid");
    assert_eq!(config.engine.max_clock_skew_ms, 3_600_000);
    assert_eq!(config.engine.idle_timeout_ms, 7 * 24 * 3_600_000);
    assert_eq!(config.engine.future_events, LatePolicy::DeadLetter);
    let with_engine = |engine: &str| format!("{MINIMAL}\n[engine]\n{engine}\n");
    assert_error(
        &with_engine("allowed_lateness = \"10m\"\nidle_timeout = \"5m\""),
        "engine.idle_timeout",
        "longer than engine.allowed_lateness",
    );
    assert_error(
        &with_engine("max_clock_skew = \"soon\""),
        "engine.max_clock_skew",
        "invalid duration",
    );
}

#[test]
fn a_silence_rule_takes_after_and_no_metric_or_window() {
    let silence = |rule: &str| {
        format!("{MINIMAL}\n[[policy.rule]]\nname = \"quiet\"\n{rule}\naction = \"none\"\n")
    };
    let config = Config::from_toml_str(&silence(
        r#"detector = { kind = "silence", after = "30m" }"#,
    ))
    .expect("valid");
    let policy = &config.policies.policies()[0];
    assert_eq!(policy.rules.len(), 1);
    assert_eq!(policy.silences.len(), 1);
    assert_eq!(policy.silences[0].after_ms, 30 * 60_000);
    assert_eq!(policy.silences[0].action, None);
    assert_error(
        &silence(
            r#"metric = "accuracy"
detector = { kind = "silence", after = "30m" }"#,
        ),
        "policy[0].rule[1].metric",
        "absence of events",
    );
    assert_error(
        &silence(r#"detector = { kind = "silence" }"#),
        "policy[0].rule[1].detector.after",
        "required",
    );
    assert_error(
        &silence(r#"detector = { kind = "silence", after = "8d" }"#),
        "policy[0].rule[1].detector.after",
        "shorter than engine.idle_timeout",
    );
    assert_error(
        &silence(r#"detector = { kind = "silence", after = "30m", below = 1 }"#),
        "policy[0].rule[1].detector.below",
        "unknown key",
    );
    // A rule that is not a silence rule still needs its metric and window.
    assert_error(
        &silence(r#"detector = { kind = "threshold", below = 1 }"#),
        "policy[0].rule[1].metric",
        "required",
    );
}

#[test]
fn a_reload_names_the_sections_that_need_a_restart() {
    let current = Config::from_toml_str(MINIMAL).expect("valid");
    let policies_only = MINIMAL.replace("below = 0.85", "below = 0.8");
    let new = Config::from_toml_str(&policies_only).expect("valid");
    assert!(current.changes_needing_restart(&new).is_empty());
    let mut text = format!("{policies_only}\n[format]\nkind = \"json\"\n[engine]\nlate_events = \"drop\"\nallowed_lateness = \"1m\"\n");
    text = text.replace(
        "input_topics = [\"model-metrics\"]",
        "input_topics = [\"other\"]",
    );
    let new = Config::from_toml_str(&text).expect("valid");
    assert_eq!(
        current.changes_needing_restart(&new),
        ["[kafka]", "[format]", "engine.late_events"]
    );
}

#[test]
fn the_group_consumer_refetches_soon_after_its_queue_drains_unless_told_otherwise() {
    use driftwatch::kafka::client;
    let config = Config::from_toml_str(MINIMAL).expect("valid");
    let consumer = client::group_consumer(&config.kafka);
    assert_eq!(consumer.get("fetch.queue.backoff.ms"), Some("20"));
    let toml = MINIMAL.replace(
        "input_topics = [\"model-metrics\"]",
        "input_topics = [\"model-metrics\"]\nproperties = { \"fetch.queue.backoff.ms\" = \"500\" }",
    );
    let config = Config::from_toml_str(&toml).expect("valid");
    let consumer = client::group_consumer(&config.kafka);
    assert_eq!(consumer.get("fetch.queue.backoff.ms"), Some("500"));
}
