//! Writer schemas for the Confluent wire format: a local id -> schema map and
//! an optional Confluent Schema Registry client with a per-id cache.
//!
//! The registry client is blocking (`reqwest::blocking`): decode from a plain
//! std thread, never from inside a tokio runtime (reqwest panics there).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use apache_avro::Schema;
use reqwest::StatusCode;
use rustc_hash::FxHashMap;

use super::DecodeError;

/// Attempts per fetch before the registry counts as unavailable.
const ATTEMPTS: u32 = 3;
/// Pause before the second attempt; doubles per attempt.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A parsed writer schema plus whether records written with it need schema
/// resolution against the reader schema (false when both are the same).
#[derive(Debug)]
pub(crate) struct WriterSchema {
    pub(crate) schema: Schema,
    pub(crate) resolve: bool,
}

impl WriterSchema {
    pub(crate) fn new(schema: Schema, reader: &Schema) -> Self {
        let resolve = schema != *reader;
        WriterSchema { schema, resolve }
    }
}

/// Where Confluent writer schemas come from: the local map first, then the registry.
#[derive(Debug)]
pub(crate) struct SchemaSource {
    /// By id, hashed cheaply: looked up for every record.
    pub(crate) local: FxHashMap<u32, Arc<WriterSchema>>,
    pub(crate) registry: Option<Registry>,
}

impl SchemaSource {
    /// The writer schema registered under `id`.
    pub(crate) fn get(&self, id: u32, reader: &Schema) -> Result<Arc<WriterSchema>, DecodeError> {
        if let Some(found) = self.local.get(&id) {
            return Ok(Arc::clone(found));
        }
        match &self.registry {
            Some(registry) => registry.get(id, reader),
            None => Err(DecodeError::UnknownSchemaId(id)),
        }
    }

    /// Whether the writer schema registered under `id` needs resolution
    /// to the reader's (no reference counted per record for a local one).
    pub(crate) fn resolves(&self, id: u32, reader: &Schema) -> Result<bool, DecodeError> {
        match self.local.get(&id) {
            Some(found) => Ok(found.resolve),
            None => self.get(id, reader).map(|writer| writer.resolve),
        }
    }
}

/// A Confluent Schema Registry client that caches parsed schemas by id.
/// Schema ids are immutable in the registry, so the cache never expires.
/// Failed look-ups are not cached.
pub(crate) struct Registry {
    base_url: String,
    /// Built lazily on the first fetch so that constructing a decoder inside
    /// an async context does not create a blocking client there.
    client: OnceLock<reqwest::blocking::Client>,
    cache: RwLock<HashMap<u32, Arc<WriterSchema>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// The part of the registry's `GET /schemas/ids/{id}` answer we use.
#[derive(serde::Deserialize)]
struct SchemaResponse {
    schema: String,
    #[serde(default, rename = "schemaType")]
    schema_type: Option<String>,
}

impl Registry {
    pub(crate) fn new(base_url: &str) -> Self {
        Registry {
            base_url: base_url.trim_end_matches('/').to_owned(),
            client: OnceLock::new(),
            cache: RwLock::new(HashMap::new()),
        }
    }

    fn get(&self, id: u32, reader: &Schema) -> Result<Arc<WriterSchema>, DecodeError> {
        let cached = self
            .cache
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned();
        if let Some(found) = cached {
            return Ok(found);
        }
        let response = self.fetch(id)?;
        if let Some(kind) = response.schema_type.as_deref() {
            if !kind.eq_ignore_ascii_case("AVRO") {
                return Err(DecodeError::InvalidWriterSchema {
                    id,
                    problem: format!("schemaType is {kind}, not AVRO"),
                });
            }
        }
        let schema =
            Schema::parse_str(&response.schema).map_err(|e| DecodeError::InvalidWriterSchema {
                id,
                problem: e.to_string(),
            })?;
        super::decode::check_fetched(id, &schema, reader)?;
        let parsed = Arc::new(WriterSchema::new(schema, reader));
        let mut cache = self.cache.write().unwrap_or_else(PoisonError::into_inner);
        Ok(Arc::clone(cache.entry(id).or_insert(parsed)))
    }

    fn client(&self, id: u32) -> Result<&reqwest::blocking::Client, DecodeError> {
        if let Some(client) = self.client.get() {
            return Ok(client);
        }
        let client = reqwest::blocking::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| DecodeError::RegistryUnavailable {
                id,
                reason: format!("cannot build HTTP client: {e}"),
            })?;
        Ok(self.client.get_or_init(|| client))
    }

    /// Fetches `id`, retrying connection errors, 429 and 5xx a few times.
    fn fetch(&self, id: u32) -> Result<SchemaResponse, DecodeError> {
        let client = self.client(id)?;
        let url = format!("{}/schemas/ids/{id}", self.base_url);
        let unavailable = |reason: String| DecodeError::RegistryUnavailable { id, reason };
        let mut backoff = FIRST_BACKOFF;
        let mut last_problem = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                std::thread::sleep(backoff);
                backoff *= 2;
            }
            let response = match client
                .get(&url)
                .header(
                    reqwest::header::ACCEPT,
                    "application/vnd.schemaregistry.v1+json, application/json",
                )
                .send()
            {
                Ok(response) => response,
                Err(e) => {
                    last_problem = format!("GET {url}: {e}");
                    continue;
                }
            };
            let status = response.status();
            if status == StatusCode::NOT_FOUND {
                return Err(DecodeError::UnknownSchemaId(id));
            }
            if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                last_problem = format!("GET {url}: HTTP {status}");
                continue;
            }
            if !status.is_success() {
                // 401/403 and the like: a deployment problem, not the record's fault.
                return Err(unavailable(format!("GET {url}: HTTP {status}")));
            }
            return response
                .json::<SchemaResponse>()
                .map_err(|e| unavailable(format!("GET {url}: unexpected response body: {e}")));
        }
        Err(unavailable(format!(
            "{last_problem} (after {ATTEMPTS} attempts)"
        )))
    }
}
