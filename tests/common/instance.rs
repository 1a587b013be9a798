//! driftwatch as separate processes (the built binary), so that tests can
//! kill them with SIGKILL, stop them with SIGTERM and restart them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::{free_port, TestKafka, METRIC_PARTITIONS, WAIT};

/// One `driftwatch run` process.
pub struct Instance {
    pub name: String,
    child: Child,
    http: String,
    pub log: PathBuf,
}

impl Instance {
    /// Starts `driftwatch run` with `toml` (its `http.listen` is replaced by
    /// a free port); logs go to `<dir>/<name>.log`, appended across restarts.
    pub fn spawn(dir: &Path, name: &str, toml: &str) -> Instance {
        let port = free_port();
        let toml = toml.replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        );
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, toml).expect("write config");
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_driftwatch"))
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("spawn driftwatch");
        Instance {
            name: name.to_owned(),
            child,
            http: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    /// The base URL of its HTTP API (`http://127.0.0.1:PORT`).
    pub fn http(&self) -> &str {
        &self.http
    }

    /// Waits until `/readyz` answers 200: partitions assigned and restored.
    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "{} exited with {status}; log: {}",
                    self.name,
                    self.log.display()
                );
            }
            if let Ok(resp) = reqwest::get(format!("{}/readyz", self.http)).await {
                if resp.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready in time; log: {}",
                self.name,
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The status and body of `/readyz`, or `None` while it does not answer.
    pub async fn readyz(&self) -> Option<(u16, String)> {
        let resp = reqwest::get(format!("{}/readyz", self.http)).await.ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.text().await.ok()?))
    }

    /// The text of `/metrics`.
    pub async fn metrics_text(&self) -> String {
        reqwest::get(format!("{}/metrics", self.http))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// Waits for the process to exit on its own, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} still running after {timeout:?}; log: {}",
                self.name,
                self.log.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The sum of a counter family in the instance's `/metrics`.
    pub async fn counter(&self, name: &str) -> u64 {
        let text = self.metrics_text().await;
        let family = format!("driftwatch_{name}");
        text.lines()
            .filter(|l| {
                l.strip_prefix(&family)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// Waits until the counter or gauge family `name` is above zero, at
    /// most `timeout`, and returns its value; panics naming the instance
    /// and its log otherwise.
    pub async fn wait_positive(&self, name: &str, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.counter(name).await;
            if value > 0 {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "{}: {name} still 0 after {timeout:?}; log: {}",
                self.name,
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether the process is still running (it has not exited).
    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// SIGKILL: no shutdown code runs, whatever was in flight is cut off.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("wait");
    }

    /// SIGTERM, then the exit status of a graceful shutdown.
    pub fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        assert!(sent.success());
        self.wait_exit(Duration::from_secs(60))
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // A failing test must not leave processes behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The group's committed offset of each metric partition (None: nothing
/// committed).
pub fn committed_offsets(kafka: &TestKafka, group: &str) -> Vec<Option<i64>> {
    try_committed_offsets(kafka, group).expect("committed offsets")
}

/// [`committed_offsets`], or the error when the broker does not answer in
/// 10 s (as while it restarts).
pub fn try_committed_offsets(
    kafka: &TestKafka,
    group: &str,
) -> Result<Vec<Option<i64>>, rdkafka::error::KafkaError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.bootstrap)
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..METRIC_PARTITIONS {
        tpl.add_partition(&kafka.metrics, p);
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
    Ok((0..METRIC_PARTITIONS)
        .map(|p| {
            committed
                .find_partition(&kafka.metrics, p)
                .and_then(|e| match e.offset() {
                    Offset::Offset(n) => Some(n),
                    _ => None,
                })
        })
        .collect())
}

/// Waits until the group has committed every metric partition up to `ends`.
pub async fn wait_committed(
    kafka: &TestKafka,
    group: &str,
    ends: &std::collections::HashMap<i32, i64>,
) {
    let deadline = Instant::now() + WAIT * 2;
    loop {
        let committed = committed_offsets(kafka, group);
        let done = (0..METRIC_PARTITIONS).all(|p| {
            let end = ends.get(&p).copied().unwrap_or(0);
            end == 0 || committed[p as usize] == Some(end)
        });
        if done {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "group {group} did not commit to the end: committed {committed:?}, ends {ends:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
