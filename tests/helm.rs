//! The Helm chart (helm/driftwatch): every value the templates use exists in
//! values.yaml and is allowed by values.schema.json; the manifests rendered
//! by helm for the default values and for an all-options values file are
//! valid Kubernetes objects (kubernetes-validate, Kubernetes 1.29), agree
//! with each other, and carry a configuration driftwatch accepts.
//!
//! Needs helm and kubernetes-validate, which scripts/test.sh installs into
//! .tools/ (DRIFTWATCH_HELM_BIN, DRIFTWATCH_KUBE_VALIDATE_BIN).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use regex::Regex;
use yaml_rust2::{Yaml, YamlLoader};

fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("helm/driftwatch")
}

fn tool(env: &str) -> PathBuf {
    let path = std::env::var(env).unwrap_or_else(|_| {
        panic!("{env} is not set: run scripts/test.sh, which installs the chart tools into .tools/")
    });
    PathBuf::from(path)
}

fn values() -> Yaml {
    let text = std::fs::read_to_string(chart().join("values.yaml")).expect("values.yaml");
    YamlLoader::load_from_str(&text)
        .expect("values.yaml parses")
        .remove(0)
}

fn schema() -> serde_json::Value {
    let text = std::fs::read_to_string(chart().join("values.schema.json")).expect("schema");
    serde_json::from_str(&text).expect("schema parses")
}

/// Every `.Values.a.b.c` path the templates use.
fn used_paths() -> BTreeSet<Vec<String>> {
    let re = Regex::new(r"\.Values((?:\.[A-Za-z0-9_]+)+)").expect("regex");
    let mut paths = BTreeSet::new();
    for entry in std::fs::read_dir(chart().join("templates")).expect("templates") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("template");
        for c in re.captures_iter(&text) {
            paths.insert(
                c[1].trim_start_matches('.')
                    .split('.')
                    .map(str::to_owned)
                    .collect(),
            );
        }
    }
    paths
}

#[test]
fn every_value_the_templates_use_is_in_values_yaml_and_the_schema() {
    let values = values();
    let schema = schema();
    let paths = used_paths();
    assert!(paths.len() > 30, "{paths:?}");
    for path in &paths {
        let mut v = &values;
        let mut s = &schema;
        for key in path {
            v = &v[key.as_str()];
            assert!(!v.is_badvalue(), "values.yaml lacks {}", path.join("."));
            s = &s["properties"][key];
            assert!(
                s.is_object(),
                "values.schema.json does not allow {}",
                path.join(".")
            );
        }
    }
    // The schema closes every object it describes: a misspelt key fails.
    fn closed(s: &serde_json::Value, at: &str) {
        if let Some(props) = s["properties"].as_object() {
            assert_eq!(s["additionalProperties"], false, "{at} is open");
            for (k, v) in props {
                closed(v, &format!("{at}.{k}"));
            }
        }
    }
    closed(&schema, "values");
}

fn render(extra: &[&str]) -> Result<String, String> {
    let out = Command::new(tool("DRIFTWATCH_HELM_BIN"))
        .args(["template", "dw"])
        .arg(chart())
        .args(extra)
        .output()
        .expect("helm runs");
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).expect("utf-8"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn validate(manifests: &str, dir: &Path, name: &str) -> Vec<Yaml> {
    let file = dir.join(name);
    std::fs::write(&file, manifests).expect("write manifests");
    let out = Command::new(tool("DRIFTWATCH_KUBE_VALIDATE_BIN"))
        .args(["--strict", "-k", "1.29"])
        .arg(&file)
        .output()
        .expect("kubernetes-validate runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{name}: {report}");
    for kind in ["deployment", "service", "configmap", "poddisruptionbudget"] {
        assert!(
            report.contains(&format!("passed for resource {kind}/")),
            "{name}: {kind} in {report}"
        );
    }
    YamlLoader::load_from_str(manifests)
        .expect("manifests parse")
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

fn find<'a>(docs: &'a [Yaml], kind: &str) -> Option<&'a Yaml> {
    docs.iter().find(|d| d["kind"].as_str() == Some(kind))
}

/// The ConfigMap's driftwatch.toml passes `driftwatch check-config`, with
/// the secret files it names present (as their Secrets would mount them).
fn check_config(docs: &[Yaml], dir: &Path) {
    let toml = find(docs, "ConfigMap").expect("ConfigMap")["data"]["driftwatch.toml"]
        .as_str()
        .expect("driftwatch.toml")
        .to_owned();
    let mounted = dir.join("mounted");
    for file in ["sasl/password", "tls/ca.crt", "tls/tls.crt", "tls/tls.key"] {
        let path = mounted.join(file);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
        std::fs::write(&path, "secret\n").expect("file");
    }
    let toml = toml.replace("/etc/driftwatch/", &format!("{}/", mounted.display()));
    let config = dir.join("driftwatch.toml");
    std::fs::write(&config, toml).expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_driftwatch"))
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .expect("check-config");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn default_and_all_options_renders_are_valid_and_consistent() {
    let dir = tempfile::tempdir().expect("tempdir");

    let default = validate(
        &render(&[]).expect("default values render"),
        dir.path(),
        "default.yaml",
    );
    let deployment = find(&default, "Deployment").expect("Deployment");
    assert_eq!(
        deployment["spec"]["replicas"].as_i64(),
        values()["replicaCount"].as_i64()
    );
    let strategy = &deployment["spec"]["strategy"]["rollingUpdate"];
    assert_eq!(
        strategy["maxSurge"].as_i64(),
        Some(0),
        "no surge beyond the partitions"
    );
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    let container = &pod["containers"][0];
    assert_eq!(
        container["securityContext"]["readOnlyRootFilesystem"].as_bool(),
        Some(true)
    );
    assert_eq!(
        container["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    let service = find(&default, "Service").expect("Service");
    assert_eq!(
        service["spec"]["ports"][0]["targetPort"].as_str(),
        container["ports"][0]["name"].as_str()
    );
    for optional in ["ServiceMonitor", "PrometheusRule", "ScaledObject"] {
        assert!(find(&default, optional).is_none(), "{optional} is opt-in");
    }
    check_config(&default, dir.path());

    let values = chart().join("ci/all-options-values.yaml");
    let all = render(&["-f", values.to_str().expect("utf-8")]).expect("all options render");
    let all = validate(&all, dir.path(), "all.yaml");
    let deployment = find(&all, "Deployment").expect("Deployment");
    assert!(
        deployment["spec"]["replicas"].is_badvalue(),
        "KEDA owns the replica count"
    );
    let volumes: Vec<&str> = deployment["spec"]["template"]["spec"]["volumes"]
        .as_vec()
        .expect("volumes")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert!(
        volumes.contains(&"sasl") && volumes.contains(&"tls"),
        "{volumes:?}"
    );
    let monitor = find(&all, "ServiceMonitor").expect("ServiceMonitor");
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"].as_str(),
        Some("http")
    );
    assert_eq!(
        monitor["spec"]["endpoints"][0]["path"].as_str(),
        Some("/metrics")
    );
    // The alert rules ship unchanged: the same groups as the file compose
    // mounts and promtool tests.
    let rule = find(&all, "PrometheusRule").expect("PrometheusRule");
    let alerts = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/alerts.yml"),
    )
    .expect("alerts.yml");
    let alerts = YamlLoader::load_from_str(&alerts)
        .expect("alerts yaml")
        .remove(0);
    assert_eq!(rule["spec"]["groups"], alerts["groups"]);
    assert!(rule["spec"]["groups"][0]["rules"]
        .as_vec()
        .is_some_and(|r| r.len() >= 6));
    assert_eq!(
        rule["metadata"]["labels"]["release"].as_str(),
        Some("prometheus")
    );
    let scaled = find(&all, "ScaledObject").expect("ScaledObject");
    assert_eq!(
        scaled["spec"]["scaleTargetRef"]["name"].as_str(),
        deployment["metadata"]["name"].as_str()
    );
    assert_eq!(
        scaled["spec"]["maxReplicaCount"].as_i64(),
        Some(12),
        "capped at the partitions"
    );
    assert_eq!(
        scaled["spec"]["triggers"].as_vec().map(Vec::len),
        Some(2),
        "one per input topic"
    );
    check_config(&all, dir.path());
}

#[test]
fn bad_values_are_refused_before_anything_renders() {
    let err = render(&["--set", "replicaCount=9"]).expect_err("more replicas than partitions");
    assert!(err.contains("must not exceed inputPartitions"), "{err}");
    let err = render(&["--set", "format.kind=xml"]).expect_err("unknown format");
    assert!(err.contains("format.kind"), "{err}");
    let err = render(&["--set", "kafka.bootstrapServer=x"]).expect_err("misspelt key");
    assert!(err.contains("bootstrapServer"), "{err}");
}
