//! `driftwatch demo`: every drifting model gets at least one request and no
//! healthy model gets any.

use std::collections::BTreeSet;
use std::time::Duration;

use driftwatch::demo::{self, DemoOptions};
use driftwatch::simulator::{Simulator, SimulatorConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_requests_retraining_for_drifting_models_only() {
    let simulator = SimulatorConfig {
        models: 20,
        drifting: 4,
        seed: 3,
        ..SimulatorConfig::default()
    };
    let options = DemoOptions {
        simulator,
        duration: Duration::from_secs(15),
        ticks_per_second: 40,
        http_listen: "127.0.0.1:0".parse().expect("addr"),
    };
    let requests = demo::run(options, std::future::pending(), |_| Ok(()))
        .await
        .expect("demo runs");
    let fired: BTreeSet<String> = requests.iter().map(|r| r.model.lineage()).collect();
    let sim = Simulator::new(simulator);
    let drifting: BTreeSet<String> = sim.drifting_models().into_iter().collect();
    assert_eq!(fired, drifting, "requests: {requests:#?}");
    let ids: BTreeSet<&str> = requests.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(ids.len(), requests.len(), "no request id twice");
}
