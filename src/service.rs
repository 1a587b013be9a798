//! Wires a configuration into a running service: metrics, topics, the
//! pipeline thread and the HTTP API, with graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::config::Config;
use crate::engine::{Engine, Limits};
use crate::http::{self, HttpState};
use crate::kafka::pipeline::{self, Shared};
use crate::kafka::shell::Shell;
use crate::kafka::{admin, PipelineError};
use crate::telemetry::Metrics;

/// `/healthz` fails when the pipeline loop has not turned for this long.
/// Longer than anything the loop may legitimately wait on (a transaction
/// commit times out after 60 s; a restore beats while it reads, and fails
/// after 120 s without progress).
pub const LIVENESS_TIMEOUT: Duration = Duration::from_secs(180);

/// Errors that stop the service.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("metrics registry: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("http server on {addr}: {source}")]
    Http {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error("pipeline thread panicked")]
    Panicked,
}

/// Where a running service reloads its configuration from: on SIGHUP, and
/// when the file's content changes (checked every `poll`; a ConfigMap
/// update swaps the file). Policies and `[engine]` limits apply at once;
/// other sections need a restart.
#[derive(Debug, Clone)]
pub struct ReloadSource {
    pub path: PathBuf,
    /// The CLI overrides the service started with, applied again.
    pub overrides: Vec<(String, String)>,
    /// `None`: on SIGHUP only.
    pub poll: Option<Duration>,
}

/// A service whose pipeline runs on its own thread.
pub struct Running {
    pub shared: Shared,
    pub http_addr: SocketAddr,
    done: oneshot::Receiver<Result<(), PipelineError>>,
    thread: std::thread::JoinHandle<()>,
    http: tokio::task::JoinHandle<std::io::Result<()>>,
    http_stop: oneshot::Sender<()>,
    reloader: Option<tokio::task::JoinHandle<()>>,
}

/// The engine a configuration describes.
pub fn engine_for(config: &Config) -> Engine {
    Engine::new(
        config.policies.clone(),
        Limits {
            max_models_per_partition: config.engine.max_models_per_partition,
            allowed_lateness_ms: config.engine.allowed_lateness_ms,
            max_clock_skew_ms: config.engine.max_clock_skew_ms,
            idle_timeout_ms: config.engine.idle_timeout_ms,
        },
    )
}

/// Starts the service: creates missing topics if configured, starts the
/// pipeline thread and the HTTP server.
pub async fn start(config: Config) -> Result<Running, ServiceError> {
    start_with_reload(config, None).await
}

/// [`start`], also reloading the configuration from `reload`.
pub async fn start_with_reload(
    config: Config,
    reload: Option<ReloadSource>,
) -> Result<Running, ServiceError> {
    let metrics = Arc::new(Metrics::new()?);
    if config.kafka.create_topics {
        admin::ensure_topics(&config).await?;
    }
    let shared = Shared::new(Shell::new(engine_for(&config)), metrics);
    let alive = Arc::new(AtomicBool::new(true));
    let (http_stop, http_stopped) = oneshot::channel::<()>();
    let state = HttpState {
        shared: shared.clone(),
        alive: Arc::clone(&alive),
        liveness_timeout: LIVENESS_TIMEOUT,
    };
    let addr = config.http.listen;
    let (http_addr, http) = http::serve(addr, state, async {
        let _ = http_stopped.await;
    })
    .await
    .map_err(|source| ServiceError::Http { addr, source })?;

    let reloader =
        reload.map(|source| tokio::spawn(watch_config(source, config.clone(), shared.clone())));
    let (done_tx, mut done) = oneshot::channel();
    let (started_tx, started_rx) = oneshot::channel::<()>();
    let thread_shared = shared.clone();
    let thread = std::thread::Builder::new()
        .name("driftwatch-pipeline".into())
        .spawn(move || {
            let result = pipeline::run(&config, &thread_shared, move || {
                let _ = started_tx.send(());
            });
            alive.store(false, Ordering::Relaxed);
            if let Err(e) = &result {
                tracing::error!(error = %e, "pipeline failed");
            }
            let _ = done_tx.send(result);
        })
        .map_err(|source| ServiceError::Http { addr, source })?;
    // A pipeline that cannot even start fails the start.
    if started_rx.await.is_err() {
        if let Some(r) = &reloader {
            r.abort();
        }
        let _ = http_stop.send(());
        let _ = http.await;
        return Err(match (&mut done).await {
            Ok(Err(e)) => e.into(),
            _ => ServiceError::Panicked,
        });
    }
    Ok(Running {
        shared,
        http_addr,
        done,
        thread,
        http,
        http_stop,
        reloader,
    })
}

/// Reloads the configuration on SIGHUP or a change of the file: a valid one
/// replaces the engine (state of unchanged rules kept), an invalid one is
/// logged with its key and counted, and the previous stays in force.
async fn watch_config(source: ReloadSource, mut current: Config, shared: Shared) {
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "no SIGHUP handler: configuration reloads on file change only");
            None
        }
    };
    let mut last = std::fs::read(&source.path).ok();
    let mut poll = source.poll.map(tokio::time::interval);
    loop {
        let by_signal = tokio::select! {
            Some(()) = async {
                match hangup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            } => true,
            _ = async {
                match poll.as_mut() {
                    Some(p) => p.tick().await,
                    None => std::future::pending().await,
                }
            } => false,
        };
        let content = std::fs::read(&source.path).ok();
        if !by_signal && content == last {
            continue;
        }
        last = content;
        let trigger = if by_signal { "SIGHUP" } else { "file change" };
        match Config::load(Some(&source.path), &source.overrides) {
            Err(e) => {
                shared
                    .metrics
                    .config_reloads
                    .with_label_values(&["rejected"])
                    .inc();
                tracing::error!(
                    trigger,
                    path = %source.path.display(),
                    key = %e.key,
                    problem = %e.problem,
                    "configuration reload rejected; the previous configuration stays in force"
                );
            }
            Ok(new) => {
                let pending = current.changes_needing_restart(&new);
                if !pending.is_empty() {
                    tracing::warn!(
                        trigger,
                        sections = %pending.join(", "),
                        "these changes apply after a restart; policies and engine limits apply now"
                    );
                }
                let moved = shared.lock().reload(engine_for(&new));
                shared
                    .metrics
                    .config_reloads
                    .with_label_values(&["applied"])
                    .inc();
                tracing::info!(
                    trigger,
                    policies = new.policies.policies().len(),
                    models_moved = moved,
                    "configuration reloaded"
                );
                current = new;
            }
        }
    }
}

impl Running {
    /// Runs until `stop` completes or the pipeline ends by itself, then
    /// shuts down gracefully: the pipeline finishes its batch, commits and
    /// leaves the group; the HTTP server stops.
    pub async fn until(
        mut self,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), ServiceError> {
        let result = tokio::select! {
            _ = stop => {
                tracing::info!("shutting down");
                self.shared.shutdown.store(true, Ordering::Relaxed);
                (&mut self.done).await
            }
            result = &mut self.done => result,
        };
        if let Some(r) = &self.reloader {
            r.abort();
        }
        let _ = self.http_stop.send(());
        let _ = self.http.await;
        let joined = tokio::task::spawn_blocking(move || self.thread.join()).await;
        match (result, joined) {
            (Ok(Ok(())), Ok(Ok(()))) => Ok(()),
            (Ok(Err(e)), _) => Err(e.into()),
            _ => Err(ServiceError::Panicked),
        }
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn termination_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
