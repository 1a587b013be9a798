//! `/healthz` is a liveness probe that notices a hung pipeline loop: it
//! fails once the loop has not turned for the liveness timeout, recovers
//! when it turns again, and fails for good once the pipeline has stopped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use driftwatch::config::Config;
use driftwatch::http::{self, HttpState};
use driftwatch::kafka::pipeline::Shared;
use driftwatch::kafka::shell::Shell;
use driftwatch::service::engine_for;
use driftwatch::telemetry::Metrics;

async fn healthz(base: &str) -> (u16, String) {
    let resp = reqwest::get(format!("{base}/healthz"))
        .await
        .expect("GET /healthz");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body"))
}

#[tokio::test]
async fn healthz_fails_while_the_loop_does_not_turn_and_once_the_pipeline_stopped() {
    let config = Config::from_toml_str(driftwatch::demo::DEMO_CONFIG).expect("demo config");
    let shared = Shared::new(
        Shell::new(engine_for(&config)),
        Arc::new(Metrics::new().expect("metrics")),
    );
    let alive = Arc::new(AtomicBool::new(true));
    let state = HttpState {
        shared: shared.clone(),
        alive: Arc::clone(&alive),
        liveness_timeout: Duration::from_millis(300),
    };
    let (addr, _server) = http::serve(
        "127.0.0.1:0".parse().expect("addr"),
        state,
        std::future::pending(),
    )
    .await
    .expect("serve");
    let base = format!("http://{addr}");

    shared.heartbeat.beat();
    assert_eq!(healthz(&base).await, (200, "ok\n".to_owned()));

    // No turn for longer than the timeout: a hung loop.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = healthz(&base).await;
    assert_eq!(status, 503);
    assert!(
        body.starts_with("pipeline loop stuck: no turn for"),
        "{body}"
    );

    // The loop turns again.
    shared.heartbeat.beat();
    assert_eq!(healthz(&base).await.0, 200);

    alive.store(false, Ordering::Relaxed);
    assert_eq!(healthz(&base).await, (503, "pipeline stopped\n".to_owned()));
}
