//! A broker that demands what a production Kafka demands: SASL/SCRAM
//! authentication, over TLS that verifies both ends.
//!
//! tansu 0.6.0 with its SQLite engine authenticates SCRAM users (its other
//! engines keep none), but its TLS flags cannot be given together (`--cert`
//! and `--key` conflict in its command line). So TLS is terminated by socat
//! in front of it, as a TLS proxy would be, and tansu advertises the TLS
//! port: every connection a client makes goes through TLS, then SCRAM.
//!
//! ```text
//! client --TLS (server cert, client cert required)--> socat :tls_port
//!        --plaintext--> tansu --authentication :sasl_port (SQLite storage)
//! ```
//!
//! The user and the topics are made before authentication is switched on:
//! tansu's own `user create` cannot authenticate, so the fixture starts tansu
//! without `--authentication`, creates them, and restarts it on the same
//! database with it.
//!
//! Needs `DRIFTWATCH_TANSU_SQL_BIN` (scripts/test.sh builds and exports it),
//! `openssl` and `socat` (scripts/test.sh installs them); without them the
//! test fails, it never skips.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{append_log, create_topics, free_port};

/// Names tansu built with the SQLite engine.
pub const TANSU_SQL_BIN_ENV: &str = "DRIFTWATCH_TANSU_SQL_BIN";
/// The SCRAM user the fixture creates.
pub const USER: &str = "driftwatch";
/// Its password.
pub const PASSWORD: &str = "s3cret-Pa55word";
/// How long a process may take to accept connections.
const STARTUP: Duration = Duration::from_secs(30);

/// The certificates of one fixture, all PEM files in its directory.
pub struct Certificates {
    /// The CA that signed the server's and the client's certificates.
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A CA that signed nothing here: trusting it alone must fail.
    pub other_ca: PathBuf,
}

/// tansu with SCRAM authentication behind a socat TLS front. Dropping it
/// kills both.
pub struct SecureBroker {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    pub certs: Certificates,
    tls_port: u16,
    tansu: Child,
    socat: Child,
}

fn tansu_bin() -> PathBuf {
    super::bin_from_env(
        TANSU_SQL_BIN_ENV,
        "tansu 0.6.0 built with --features libsql (run scripts/test.sh, which builds and exports it)",
    )
}

/// Runs a command to completion; panics with its output if it fails.
fn run(program: &str, args: &[&str], dir: &Path) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("running {program} (is it installed? scripts/test.sh installs it): {e}")
        });
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and localhost, a client
/// certificate, all signed by the CA, and an unrelated second CA.
fn make_certificates(dir: &Path) -> Certificates {
    let ca = |name: &str| {
        run(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.pem"),
            ],
            dir,
        );
    };
    ca("test-ca");
    ca("other-ca");
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .expect("server.ext");
    for (name, cn, ext) in [
        ("server", "localhost", Some("server.ext")),
        ("client", USER, None),
    ] {
        run(
            "openssl",
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={cn}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ],
            dir,
        );
        let (csr, pem) = (format!("{name}.csr"), format!("{name}.pem"));
        let mut sign = vec![
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            &csr,
            "-CA",
            "test-ca.pem",
            "-CAkey",
            "test-ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
        ];
        if let Some(ext) = ext {
            sign.extend(["-extfile", ext]);
        }
        run("openssl", &sign, dir);
    }
    Certificates {
        ca: dir.join("test-ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
        other_ca: dir.join("other-ca.pem"),
    }
}

/// Waits until `port` accepts connections, or panics naming the log.
async fn wait_listening(child: &mut Child, what: &str, port: u16, log: &Path) {
    let deadline = Instant::now() + STARTUP;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("{what} exited with {status}; log: {}", log.display());
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {port} in {STARTUP:?}; log: {}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn spawn_tansu(bin: &Path, dir: &Path, port: u16, advertised: u16, authentication: bool) -> Child {
    let mut cmd = Command::new(bin);
    cmd.arg("broker")
        .args(["--listener-url", &format!("tcp://127.0.0.1:{port}")])
        .args([
            "--advertised-listener-url",
            &format!("tcp://127.0.0.1:{advertised}"),
        ])
        // Relative to the working directory: tansu joins the path to it.
        .args(["--storage-engine", "sqlite://tansu.db"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(append_log(&dir.join("tansu.log")))
        .stderr(append_log(&dir.join("tansu.log")));
    if authentication {
        cmd.arg("--authentication");
    }
    cmd.spawn()
        .unwrap_or_else(|e| panic!("spawning {}: {e}", bin.display()))
}

impl SecureBroker {
    /// Makes the certificates, creates the SCRAM-SHA-512 user [`USER`] and
    /// the `topics`, then starts tansu with authentication and the TLS
    /// front, and waits until both listen.
    pub async fn new(topics: &[(&str, i32)]) -> SecureBroker {
        let bin = tansu_bin();
        let dir = tempfile::Builder::new()
            .prefix("driftwatch-secure-broker-")
            .tempdir()
            .expect("tempdir");
        let path = dir.path().to_owned();
        let certs = make_certificates(&path);
        let sasl_port = free_port();
        let tls_port = free_port();
        let log = path.join("tansu.log");

        // Set up without authentication, advertising the plain port.
        let mut setup = spawn_tansu(&bin, &path, sasl_port, sasl_port, false);
        wait_listening(&mut setup, "tansu (setup)", sasl_port, &log).await;
        run(
            &bin.display().to_string(),
            &[
                "user",
                "create",
                USER,
                PASSWORD,
                "--mechanism",
                "scram512",
                "--broker",
                &format!("tcp://127.0.0.1:{sasl_port}"),
            ],
            &path,
        );
        create_topics(&format!("127.0.0.1:{sasl_port}"), topics).await;
        setup.kill().expect("stop tansu (setup)");
        setup.wait().expect("wait tansu (setup)");

        let mut tansu = spawn_tansu(&bin, &path, sasl_port, tls_port, true);
        wait_listening(&mut tansu, "tansu", sasl_port, &log).await;
        let socat_log = path.join("socat.log");
        let mut socat = Command::new("socat")
            .arg(format!(
                "openssl-listen:{tls_port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},cafile={},verify=1",
                certs.server_cert.display(),
                certs.server_key.display(),
                certs.ca.display(),
            ))
            .arg(format!("tcp:127.0.0.1:{sasl_port}"))
            .stdin(Stdio::null())
            .stdout(append_log(&socat_log))
            .stderr(append_log(&socat_log))
            .spawn()
            .unwrap_or_else(|e| panic!("spawning socat (scripts/test.sh installs it): {e}"));
        wait_listening(&mut socat, "socat", tls_port, &socat_log).await;
        SecureBroker {
            dir: Some(dir),
            path,
            certs,
            tls_port,
            tansu,
            socat,
        }
    }

    /// The bootstrap address: the TLS front.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.tls_port)
    }

    /// The fixture's directory: certificates, logs, a place for configs.
    pub fn dir(&self) -> &Path {
        &self.path
    }

    /// The `[kafka.security]` table for SCRAM-SHA-512 over mutual TLS with
    /// host-name verification, with `password` and trusting `ca`.
    pub fn security_toml(&self, password: &str, ca: &Path) -> String {
        format!(
            "[kafka.security]\nprotocol = \"sasl_ssl\"\nsasl_mechanism = \"SCRAM-SHA-512\"\n\
             sasl_username = \"{USER}\"\nsasl_password = \"{password}\"\n\
             ssl_ca_location = \"{}\"\nssl_certificate_location = \"{}\"\n\
             ssl_key_location = \"{}\"\nssl_endpoint_identification = true\n",
            ca.display(),
            self.certs.client_cert.display(),
            self.certs.client_key.display(),
        )
    }
}

impl Drop for SecureBroker {
    fn drop(&mut self) {
        let _ = self.socat.kill();
        let _ = self.socat.wait();
        let _ = self.tansu.kill();
        let _ = self.tansu.wait();
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                eprintln!("secure broker logs kept in {}", dir.keep().display());
            }
        }
    }
}
