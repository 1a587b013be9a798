//! A tansu broker of its own for one test, with durable storage: its log and
//! committed offsets live in a bucket of a local S3 server (moto), so that
//! the broker can be killed and started again and keep what it stored.
//!
//! Caveat (tansu 0.6.0): the S3 engine writes a partition's `watermark.json`
//! before the record batch object. SIGKILL between the two leaves a hole:
//! after the restart the high watermark counts a batch that is not there,
//! and the producer's retry of it is refused as a duplicate sequence number.
//!
//! Needs `DRIFTWATCH_TANSU_BIN` and `DRIFTWATCH_MOTO_BIN` (scripts/test.sh
//! exports both); without them the test fails, it never skips.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{append_log, free_port};

/// Names the tansu binary.
pub const TANSU_BIN_ENV: &str = "DRIFTWATCH_TANSU_BIN";
/// Names the moto_server binary (a local S3 server).
pub const MOTO_BIN_ENV: &str = "DRIFTWATCH_MOTO_BIN";
/// Set (to anything), the log directory is kept even when the test passes.
pub const KEEP_LOGS_ENV: &str = "DRIFTWATCH_TEST_KEEP_LOGS";
/// How long a process may take to accept connections.
const STARTUP: Duration = Duration::from_secs(30);
/// The bucket tansu keeps its data in.
const BUCKET: &str = "driftwatch-durable";

/// tansu on a free loopback port, storing into moto's S3 (also on a free
/// port). Both processes log to files in [`DurableBroker::dir`], which is
/// kept (and named on stderr) when the test panics or [`KEEP_LOGS_ENV`] is
/// set. Dropping it kills both.
pub struct DurableBroker {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    tansu_bin: PathBuf,
    s3_port: u16,
    kafka_port: u16,
    moto: Child,
    tansu: Option<Child>,
    starts: u32,
}

fn bin_from_env(var: &str) -> PathBuf {
    super::bin_from_env(
        var,
        &format!("run scripts/test.sh, which exports {TANSU_BIN_ENV} and {MOTO_BIN_ENV}, or set it yourself"),
    )
}

impl DurableBroker {
    /// Starts moto, creates the bucket, starts tansu on it and waits until
    /// tansu accepts connections.
    pub async fn new() -> DurableBroker {
        let tansu_bin = bin_from_env(TANSU_BIN_ENV);
        let moto_bin = bin_from_env(MOTO_BIN_ENV);
        let dir = tempfile::Builder::new()
            .prefix("driftwatch-durable-broker-")
            .tempdir()
            .expect("tempdir");
        let path = dir.path().to_owned();
        let s3_port = free_port();
        let moto_log = path.join("moto.log");
        let out = append_log(&moto_log);
        let moto = Command::new(&moto_bin)
            .args(["-H", "127.0.0.1", "-p", &s3_port.to_string()])
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log handle"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", moto_bin.display()));
        let mut broker = DurableBroker {
            dir: Some(dir),
            path,
            tansu_bin,
            s3_port,
            kafka_port: free_port(),
            moto,
            tansu: None,
            starts: 0,
        };
        broker.create_bucket().await;
        broker.start().await;
        broker
    }

    /// Creates the bucket, retrying while moto is starting up.
    async fn create_bucket(&mut self) {
        let url = format!("http://127.0.0.1:{}/{BUCKET}", self.s3_port);
        let client = reqwest::Client::new();
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(status) = self.moto.try_wait().expect("try_wait moto") {
                panic!(
                    "moto exited with {status} before the bucket was created; log: {}",
                    self.moto_log().display()
                );
            }
            match client.put(&url).send().await {
                Ok(resp) if resp.status().is_success() => return,
                Ok(resp) => panic!(
                    "PUT {url}: {}; log: {}",
                    resp.status(),
                    self.moto_log().display()
                ),
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "moto did not answer PUT {url} in {STARTUP:?}: {e}; log: {}",
                    self.moto_log().display()
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `host:port` of the broker, the same across restarts.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.kafka_port)
    }

    /// The directory of the logs (and a place for the test's own files).
    pub fn dir(&self) -> &Path {
        &self.path
    }

    /// tansu's output, appended across restarts (each start begins with a
    /// `== start N` line).
    pub fn tansu_log(&self) -> PathBuf {
        self.path.join("tansu.log")
    }

    /// moto's output.
    pub fn moto_log(&self) -> PathBuf {
        self.path.join("moto.log")
    }

    /// Whether tansu is running (started and not killed).
    pub fn running(&self) -> bool {
        self.tansu.is_some()
    }

    /// Starts tansu on the broker's port and storage and waits until it
    /// accepts connections. Panics if it is running already.
    pub async fn start(&mut self) {
        assert!(self.tansu.is_none(), "tansu is running already");
        self.starts += 1;
        let log = self.tansu_log();
        let mut out = append_log(&log);
        {
            use std::io::Write;
            writeln!(out, "== start {}", self.starts).expect("write log");
        }
        let listener = format!("tcp://{}", self.bootstrap());
        let child = Command::new(&self.tansu_bin)
            .arg("broker")
            .args(["--listener-url", &listener])
            .args(["--advertised-listener-url", &listener])
            .args(["--storage-engine", &format!("s3://{BUCKET}/")])
            .env("AWS_ENDPOINT", format!("http://127.0.0.1:{}", self.s3_port))
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log handle"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", self.tansu_bin.display()));
        let tansu = self.tansu.insert(child);
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(status) = tansu.try_wait().expect("try_wait tansu") {
                self.tansu = None;
                panic!(
                    "tansu (start {}) exited with {status}; log: {}",
                    self.starts,
                    log.display()
                );
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", self.kafka_port))
                .await
                .is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "tansu (start {}) did not accept connections in {STARTUP:?}; log: {}",
                self.starts,
                log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM to tansu (an orderly stop, as a rolling restart does), and
    /// waits for it to be gone (SIGKILL after 10 s). Panics if it is not
    /// running.
    pub fn stop(&mut self) {
        let mut tansu = self.tansu.take().expect("tansu is not running");
        let pid = tansu.id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while tansu.try_wait().expect("try_wait").is_none() {
            if std::time::Instant::now() > deadline {
                let _ = tansu.kill();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL to tansu (nothing is flushed, connections drop), and waits
    /// for it to be gone. Panics if it is not running.
    pub fn kill(&mut self) {
        let mut tansu = self.tansu.take().expect("tansu is not running");
        tansu.kill().expect("SIGKILL tansu");
        tansu.wait().expect("wait for tansu");
    }
}

impl Drop for DurableBroker {
    fn drop(&mut self) {
        // A failing test must not leave processes behind.
        if let Some(mut tansu) = self.tansu.take() {
            let _ = tansu.kill();
            let _ = tansu.wait();
        }
        let _ = self.moto.kill();
        let _ = self.moto.wait();
        if std::thread::panicking() || std::env::var_os(KEEP_LOGS_ENV).is_some() {
            if let Some(dir) = self.dir.take() {
                eprintln!("durable broker logs kept in {}", dir.keep().display());
            }
        }
    }
}
