//! `[kafka.security]`: TLS and SASL (PLAIN, SCRAM-SHA-256/512) for every
//! Kafka client, and the secrets they need, which never reach a log line,
//! a `Debug` output or the HTTP API.

use std::fmt;
use std::path::Path;

use serde::Deserialize;

use super::{ConfigError, Text};

/// A secret value: printed as `<redacted>`, read with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that needs it (the client config).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// librdkafka properties whose values are secrets: kept as [`Secret`]s when
/// given through `kafka.properties`.
pub fn is_secret_property(name: &str) -> bool {
    let name = name.trim().to_ascii_lowercase();
    name.contains("password")
        || name.contains("secret")
        || name.ends_with(".pem")
        || name == "sasl.jaas.config"
        || name == "sasl.oauthbearer.config"
}

/// The transport and authentication of the Kafka clients.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Security {
    /// librdkafka `security.protocol`; `None` leaves librdkafka's default
    /// (plaintext), or whatever `kafka.properties` says.
    pub protocol: Option<Protocol>,
    pub sasl: Option<Sasl>,
    pub tls: Tls,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Plaintext => "plaintext",
            Protocol::Ssl => "ssl",
            Protocol::SaslPlaintext => "sasl_plaintext",
            Protocol::SaslSsl => "sasl_ssl",
        }
    }

    fn uses_sasl(self) -> bool {
        matches!(self, Protocol::SaslPlaintext | Protocol::SaslSsl)
    }

    fn uses_tls(self) -> bool {
        matches!(self, Protocol::Ssl | Protocol::SaslSsl)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sasl {
    /// PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
    pub mechanism: String,
    pub username: String,
    pub password: Secret,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    /// CA bundle to verify the brokers (PEM file); default: the system's.
    pub ca_location: Option<String>,
    /// Client certificate and key (PEM files), for mutual TLS.
    pub certificate_location: Option<String>,
    pub key_location: Option<String>,
    pub key_password: Option<Secret>,
    /// Verify the broker's host name against its certificate (default on).
    pub verify_hostname: bool,
}

impl Security {
    /// The librdkafka properties this security setting stands for.
    pub fn properties(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let Some(protocol) = self.protocol else {
            return out;
        };
        out.push(("security.protocol", protocol.as_str().to_owned()));
        if let Some(sasl) = &self.sasl {
            out.push(("sasl.mechanism", sasl.mechanism.clone()));
            out.push(("sasl.username", sasl.username.clone()));
            out.push(("sasl.password", sasl.password.expose().to_owned()));
        }
        if protocol.uses_tls() {
            let tls = &self.tls;
            let files = [
                ("ssl.ca.location", &tls.ca_location),
                ("ssl.certificate.location", &tls.certificate_location),
                ("ssl.key.location", &tls.key_location),
            ];
            for (key, value) in files {
                if let Some(v) = value {
                    out.push((key, v.clone()));
                }
            }
            if let Some(p) = &tls.key_password {
                out.push(("ssl.key.password", p.expose().to_owned()));
            }
            let algorithm = if tls.verify_hostname { "https" } else { "none" };
            out.push((
                "ssl.endpoint.identification.algorithm",
                algorithm.to_owned(),
            ));
        }
        out
    }
}

/// `[kafka.security]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawSecurity {
    protocol: Option<Text>,
    sasl_mechanism: Option<Text>,
    sasl_username: Option<Text>,
    sasl_password: Option<Text>,
    /// A file holding the password (a mounted Kubernetes Secret).
    sasl_password_file: Option<Text>,
    ssl_ca_location: Option<Text>,
    ssl_certificate_location: Option<Text>,
    ssl_key_location: Option<Text>,
    ssl_key_password: Option<Text>,
    ssl_key_password_file: Option<Text>,
    ssl_endpoint_identification: Option<bool>,
}

const KEY: &str = "kafka.security";

fn key(name: &str) -> String {
    format!("{KEY}.{name}")
}

/// A secret given inline or in a file (not both); the file's content with
/// one trailing newline removed.
fn secret(
    inline: Option<Text>,
    file: Option<Text>,
    name: &str,
) -> Result<Option<Secret>, ConfigError> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(ConfigError::new(
            key(&format!("{name}_file")),
            format!("give {name} or {name}_file, not both"),
        )),
        (Some(Text(v)), None) => Ok(Some(Secret(v))),
        (None, Some(Text(path))) => {
            let text = std::fs::read_to_string(path.trim()).map_err(|e| {
                ConfigError::new(
                    key(&format!("{name}_file")),
                    format!("cannot read {path:?}: {e}"),
                )
            })?;
            let value = text.strip_suffix('\n').unwrap_or(&text);
            let value = value.strip_suffix('\r').unwrap_or(value);
            Ok(Some(Secret(value.to_owned())))
        }
        (None, None) => Ok(None),
    }
}

fn readable_file(name: &str, value: Option<Text>) -> Result<Option<String>, ConfigError> {
    let Some(Text(path)) = value else {
        return Ok(None);
    };
    let path = path.trim().to_owned();
    if !Path::new(&path).is_file() {
        return Err(ConfigError::new(
            key(name),
            format!("{path:?} is not a readable file"),
        ));
    }
    Ok(Some(path))
}

impl RawSecurity {
    pub(super) fn compile(self) -> Result<Security, ConfigError> {
        let protocol = match self
            .protocol
            .as_ref()
            .map(|t| t.0.trim().to_ascii_lowercase())
        {
            None => None,
            Some(p) => Some(match p.as_str() {
                "plaintext" => Protocol::Plaintext,
                "ssl" => Protocol::Ssl,
                "sasl_plaintext" => Protocol::SaslPlaintext,
                "sasl_ssl" => Protocol::SaslSsl,
                other => {
                    return Err(ConfigError::new(
                        key("protocol"),
                        format!(
                            "{other:?} is not one of: plaintext, ssl, sasl_plaintext, sasl_ssl"
                        ),
                    ))
                }
            }),
        };
        let password = secret(self.sasl_password, self.sasl_password_file, "sasl_password")?;
        let sasl_given =
            self.sasl_mechanism.is_some() || self.sasl_username.is_some() || password.is_some();
        let sasl = if protocol.is_some_and(Protocol::uses_sasl) {
            let mechanism = match self.sasl_mechanism.map(|t| t.0.trim().to_ascii_uppercase()) {
                Some(m) if ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"].contains(&m.as_str()) => m,
                Some(other) => {
                    return Err(ConfigError::new(
                        key("sasl_mechanism"),
                        format!("{other:?} is not one of: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"),
                    ))
                }
                None => {
                    return Err(ConfigError::new(
                        key("sasl_mechanism"),
                        "required with a sasl protocol",
                    ))
                }
            };
            let username = self
                .sasl_username
                .map(|t| t.0)
                .filter(|u| !u.trim().is_empty())
                .ok_or_else(|| {
                    ConfigError::new(key("sasl_username"), "required with a sasl protocol")
                })?;
            let password = password.ok_or_else(|| {
                ConfigError::new(
                    key("sasl_password"),
                    "required with a sasl protocol (or sasl_password_file)",
                )
            })?;
            Some(Sasl {
                mechanism,
                username,
                password,
            })
        } else if sasl_given {
            return Err(ConfigError::new(
                key("protocol"),
                "SASL settings need protocol = \"sasl_plaintext\" or \"sasl_ssl\"",
            ));
        } else {
            None
        };
        let tls = Tls {
            ca_location: readable_file("ssl_ca_location", self.ssl_ca_location)?,
            certificate_location: readable_file(
                "ssl_certificate_location",
                self.ssl_certificate_location,
            )?,
            key_location: readable_file("ssl_key_location", self.ssl_key_location)?,
            key_password: secret(
                self.ssl_key_password,
                self.ssl_key_password_file,
                "ssl_key_password",
            )?,
            verify_hostname: self.ssl_endpoint_identification.unwrap_or(true),
        };
        let tls_given = tls
            != Tls {
                verify_hostname: tls.verify_hostname,
                ..Tls::default()
            };
        if tls_given && !protocol.is_some_and(Protocol::uses_tls) {
            return Err(ConfigError::new(
                key("protocol"),
                "TLS settings need protocol = \"ssl\" or \"sasl_ssl\"",
            ));
        }
        if tls.certificate_location.is_some() != tls.key_location.is_some() {
            return Err(ConfigError::new(
                key("ssl_key_location"),
                "a client certificate needs its key, and a key its certificate",
            ));
        }
        Ok(Security {
            protocol,
            sasl,
            tls,
        })
    }
}
