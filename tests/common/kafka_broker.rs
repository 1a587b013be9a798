//! An Apache Kafka broker of its own for one test (KRaft, one node), run by
//! `scripts/kafka-broker.sh` from the jars scripts/test.sh fetches: for the
//! tests that kill the broker or need listeners the shared one lacks
//! (SASL/SCRAM over mutual TLS).
//!
//! Its directory holds the configuration, the log directory and the logs; it
//! is kept (and named on stderr) when the test panics or
//! [`KEEP_LOGS_ENV`] is set. Dropping the broker kills it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Set (to anything), the broker's directory is kept even when the test passes.
pub const KEEP_LOGS_ENV: &str = "DRIFTWATCH_TEST_KEEP_LOGS";

/// What the broker offers beyond its PLAINTEXT listener.
#[derive(Default, Clone)]
pub struct Listeners {
    /// SCRAM-SHA-512 users (name, password), made when the storage is
    /// formatted; with any, a SASL listener is added.
    pub scram_users: Vec<(String, String)>,
    /// TLS for the SASL listener (SASL_SSL): the server's PEM key and
    /// certificate, and the CA its clients' certificates must come from.
    pub tls: Option<ServerTls>,
}

/// The broker's side of mutual TLS, as PEM files.
#[derive(Clone)]
pub struct ServerTls {
    pub key: PathBuf,
    pub certificate: PathBuf,
    pub client_ca: PathBuf,
}

/// One Apache Kafka broker in a temporary directory.
pub struct KafkaBroker {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    bootstrap: String,
    sasl_bootstrap: Option<String>,
    starts: u32,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka-broker.sh")
}

/// Runs `scripts/kafka-broker.sh <command>` for the broker in `work`;
/// panics with its output if it fails.
fn run_script(work: &Path, command: &str, env: &[(&str, String)]) {
    let out = Command::new("bash")
        .arg(script())
        .arg(command)
        .env("KAFKA_WORK", work)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script().display()));
    assert!(
        out.status.success(),
        "kafka-broker.sh {command} failed ({}); broker directory {}:\n{}{}",
        out.status,
        work.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a blocking script command off the async runtime's worker.
async fn run_script_async(work: PathBuf, command: &'static str) {
    tokio::task::spawn_blocking(move || run_script(&work, command, &[]))
        .await
        .expect("kafka-broker.sh task");
}

impl KafkaBroker {
    /// Formats a fresh log directory and starts the broker on free loopback
    /// ports; returns once it takes connections.
    pub async fn new(listeners: Listeners) -> KafkaBroker {
        let dir = tempfile::Builder::new()
            .prefix("driftwatch-kafka-")
            .tempdir()
            .expect("tempdir");
        let path = dir.path().to_owned();
        let work = path.clone();
        tokio::task::spawn_blocking(move || init(&work, &listeners))
            .await
            .expect("init task");
        let env = std::fs::read_to_string(path.join("env")).expect("broker env");
        let value = |key: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let mut broker = KafkaBroker {
            bootstrap: value("KAFKA_BOOTSTRAP").expect("KAFKA_BOOTSTRAP in env"),
            sasl_bootstrap: value("KAFKA_SASL_BOOTSTRAP"),
            dir: Some(dir),
            path,
            starts: 0,
        };
        broker.start().await;
        broker
    }

    /// The PLAINTEXT listener, `127.0.0.1:port`.
    pub fn bootstrap(&self) -> String {
        self.bootstrap.clone()
    }

    /// The SASL listener (SASL_SSL with [`Listeners::tls`]), if any.
    pub fn sasl_bootstrap(&self) -> String {
        self.sasl_bootstrap
            .clone()
            .expect("the broker was made without SCRAM users")
    }

    /// The broker's directory (configuration, data, logs).
    pub fn dir(&self) -> &Path {
        &self.path
    }

    /// The broker's own log.
    pub fn log(&self) -> PathBuf {
        self.path.join("logs/server.log")
    }

    /// Starts the broker (again) on the same ports and log directory.
    pub async fn start(&mut self) {
        run_script_async(self.path.clone(), "start").await;
        self.starts += 1;
    }

    /// SIGKILL: the broker gets no chance to flush or close anything.
    pub fn kill(&mut self) {
        run_script(&self.path, "kill9", &[]);
    }

    /// SIGTERM, a clean shutdown.
    pub fn stop(&mut self) {
        run_script(&self.path, "stop", &[]);
    }

    /// How many times the broker was started.
    pub fn starts(&self) -> u32 {
        self.starts
    }
}

fn init(work: &Path, listeners: &Listeners) {
    let mut env: Vec<(&str, String)> = Vec::new();
    if !listeners.scram_users.is_empty() {
        let users: Vec<String> = listeners
            .scram_users
            .iter()
            .map(|(name, password)| format!("{name}:{password}"))
            .collect();
        env.push(("KAFKA_SCRAM_USERS", users.join(" ")));
    }
    if let Some(tls) = &listeners.tls {
        // Kafka's PEM key store: the unencrypted PKCS#8 key, then the chain.
        let keystore = work.join("server-keystore.pem");
        let key = std::fs::read_to_string(&tls.key).expect("server key");
        let certificate = std::fs::read_to_string(&tls.certificate).expect("server certificate");
        std::fs::write(&keystore, format!("{key}{certificate}")).expect("keystore");
        env.push(("KAFKA_TLS_KEYSTORE", keystore.display().to_string()));
        env.push(("KAFKA_TLS_TRUSTSTORE", tls.client_ca.display().to_string()));
    }
    run_script(work, "init", &env);
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("kill9")
            .env("KAFKA_WORK", &self.path)
            .output();
        if std::thread::panicking() || std::env::var_os(KEEP_LOGS_ENV).is_some() {
            if let Some(dir) = self.dir.take() {
                eprintln!("the broker's directory is kept: {}", dir.keep().display());
            }
        }
    }
}
