//! A broker that demands what a production Kafka demands: SASL/SCRAM-SHA-512
//! authentication, over TLS that verifies both ends. Apache Kafka's own
//! SASL_SSL listener (`ssl.client.auth=required`), with the SCRAM user made
//! when its storage is formatted (`kafka-storage format --add-scram`) and
//! certificates made here with openssl.
//!
//! Needs the Kafka jars (scripts/test.sh fetches them) and `openssl`
//! (scripts/test.sh installs it); without them the test fails, it never skips.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::create_topics;
use super::kafka_broker::{KafkaBroker, Listeners, ServerTls};

/// The SCRAM user the fixture creates.
pub const USER: &str = "driftwatch";
/// Its password.
pub const PASSWORD: &str = "s3cret-Pa55word";

/// The certificates of one fixture, all PEM files in its directory.
pub struct Certificates {
    /// The CA that signed the server's and the client's certificates.
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A client certificate for the same user from [`Certificates::other_ca`]:
    /// the broker must refuse it.
    pub stranger_cert: PathBuf,
    pub stranger_key: PathBuf,
    /// A CA that signed nothing here: trusting it alone must fail.
    pub other_ca: PathBuf,
}

/// Apache Kafka with SCRAM authentication over mutual TLS. Dropping it
/// kills the broker.
pub struct SecureBroker {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    pub certs: Certificates,
    broker: KafkaBroker,
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
/// certificate, all signed by the CA, and an unrelated second CA with a
/// client certificate of its own.
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
    for (name, cn, ext, ca) in [
        ("server", "localhost", Some("server.ext"), "test-ca"),
        ("client", USER, None, "test-ca"),
        ("stranger", USER, None, "other-ca"),
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
        let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
        let mut sign = vec![
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
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
        stranger_cert: dir.join("stranger.pem"),
        stranger_key: dir.join("stranger.key"),
        other_ca: dir.join("other-ca.pem"),
    }
}

impl SecureBroker {
    /// Makes the certificates, then starts Apache Kafka with the SCRAM-SHA-512
    /// user [`USER`] and a SASL_SSL listener that requires a client
    /// certificate from the test CA, and creates the `topics` (over the
    /// broker's PLAINTEXT listener, which the tests' clients never use).
    pub async fn new(topics: &[(&str, i32)]) -> SecureBroker {
        let dir = tempfile::Builder::new()
            .prefix("driftwatch-secure-broker-")
            .tempdir()
            .expect("tempdir");
        let path = dir.path().to_owned();
        let certs = make_certificates(&path);
        let broker = KafkaBroker::new(Listeners {
            scram_users: vec![(USER.to_owned(), PASSWORD.to_owned())],
            tls: Some(ServerTls {
                key: certs.server_key.clone(),
                certificate: certs.server_cert.clone(),
                client_ca: certs.ca.clone(),
            }),
        })
        .await;
        create_topics(&broker.bootstrap(), topics).await;
        SecureBroker {
            dir: Some(dir),
            path,
            certs,
            broker,
        }
    }

    /// The bootstrap address: the SASL_SSL listener.
    pub fn bootstrap(&self) -> String {
        self.broker.sasl_bootstrap()
    }

    /// The fixture's directory: certificates, logs, a place for configs.
    pub fn dir(&self) -> &Path {
        &self.path
    }

    /// The `[kafka.security]` table for SCRAM-SHA-512 over mutual TLS with
    /// host-name verification, with `password`, trusting `ca`, presenting
    /// the test CA's client certificate.
    pub fn security_toml(&self, password: &str, ca: &Path) -> String {
        self.security_toml_as(
            password,
            ca,
            &self.certs.client_cert,
            &self.certs.client_key,
        )
    }

    /// [`SecureBroker::security_toml`] presenting `certificate` and `key`.
    pub fn security_toml_as(
        &self,
        password: &str,
        ca: &Path,
        certificate: &Path,
        key: &Path,
    ) -> String {
        format!(
            "[kafka.security]\nprotocol = \"sasl_ssl\"\nsasl_mechanism = \"SCRAM-SHA-512\"\n\
             sasl_username = \"{USER}\"\nsasl_password = \"{password}\"\n\
             ssl_ca_location = \"{}\"\nssl_certificate_location = \"{}\"\n\
             ssl_key_location = \"{}\"\nssl_endpoint_identification = true\n",
            ca.display(),
            certificate.display(),
            key.display(),
        )
    }
}

impl Drop for SecureBroker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                eprintln!("secure broker logs kept in {}", dir.keep().display());
            }
        }
    }
}
