//! The operational HTTP API: `/metrics`, `/healthz`, `/readyz` and
//! `GET /models/{project}/{name}`.
//!
//! `/metrics`, `/healthz` and `/readyz` read what the pipeline publishes
//! (metrics, its heartbeat, its readiness) and never take the shell's
//! lock. `/models` looks one model up under the lock, which the pipeline
//! holds only to apply a chunk of records or to take a commit's work,
//! never while it waits for the broker.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::kafka::pipeline::Shared;

/// `/readyz` shows a Kafka client error this recent while not ready.
const RECENT_CLIENT_ERROR: Duration = Duration::from_secs(60);

/// What the handlers read.
#[derive(Clone)]
pub struct HttpState {
    pub shared: Shared,
    /// False once the pipeline thread has stopped.
    pub alive: Arc<AtomicBool>,
    /// `/healthz` fails when the pipeline loop has not turned for this long.
    pub liveness_timeout: Duration,
}

/// The router, separate from serving so tests can drive it.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/models/{project}/{name}", get(model))
        .with_state(state)
}

/// Binds `addr` and serves until `shutdown` completes. Returns the bound
/// address through `bound` (useful with port 0).
pub async fn serve(
    addr: SocketAddr,
    state: HttpState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tracing::info!(%bound, "http listening");
    let app = router(state);
    let handle = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    });
    Ok((bound, handle))
}

async fn metrics(State(state): State<HttpState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.shared.metrics.render(),
    )
        .into_response()
}

async fn healthz(State(state): State<HttpState>) -> Response {
    if !state.alive.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "pipeline stopped\n").into_response();
    }
    let age = state.shared.heartbeat.age();
    if age > state.liveness_timeout {
        let body = format!(
            "pipeline loop stuck: no turn for {}s (limit {}s)\n",
            age.as_secs(),
            state.liveness_timeout.as_secs()
        );
        return (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
    }
    (StatusCode::OK, "ok\n").into_response()
}

async fn readyz(State(state): State<HttpState>) -> Response {
    // Published by the shell: no lock, so the probe never waits on it.
    let readiness = &state.shared.readiness;
    let (ready, restoring) = (readiness.ready(), readiness.restoring());
    if ready && state.alive.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        let mut body =
            format!("not ready: {restoring} partition(s) restoring or no assignment yet\n");
        if let Some(error) = state.shared.client_errors.recent(RECENT_CLIENT_ERROR) {
            body.push_str(&format!("last Kafka client error: {error}\n"));
        }
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

async fn model(
    State(state): State<HttpState>,
    Path((project, name)): Path<(String, String)>,
) -> Response {
    let lineage = format!("{project}/{name}");
    let view = state.shared.lock().model_view(&lineage);
    match view {
        Some(view) => Json(view).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": format!("model {lineage} is not tracked by this instance") })),
        )
            .into_response(),
    }
}
