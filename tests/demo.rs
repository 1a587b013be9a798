//! `driftwatch demo`: every drifting model gets a request and no healthy
//! model gets any; the in-process coordinator answers each request, and the
//! retrained version, sent healthy, goes quiet: the loop closes.

use std::collections::BTreeSet;
use std::time::Duration;

use driftwatch::demo::{self, DemoOptions};
use driftwatch::model::StatusKind;
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
        coordinator_delay: Duration::from_secs(1),
    };
    let report = demo::run(options, std::future::pending(), |_| Ok(()))
        .await
        .expect("demo runs");
    let requests = &report.requests;
    let fired: BTreeSet<String> = requests.iter().map(|r| r.model.lineage()).collect();
    let sim = Simulator::new(simulator);
    let drifting: BTreeSet<String> = sim.drifting_models().into_iter().collect();
    assert_eq!(fired, drifting, "requests: {requests:#?}");
    let ids: BTreeSet<&str> = requests.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(ids.len(), requests.len(), "no request id twice");

    // Each request is answered ACCEPTED, STARTED, SUCCEEDED with a new
    // version; that version is sent healthy and never asked for.
    for request in requests {
        let answers: Vec<StatusKind> = report
            .statuses
            .iter()
            .filter(|s| s.request_id == request.request_id)
            .map(|s| s.status)
            .collect();
        assert_eq!(
            answers,
            [
                StatusKind::Accepted,
                StatusKind::Started,
                StatusKind::Succeeded
            ],
            "statuses of {}",
            request.model
        );
    }
    let retrained: BTreeSet<(String, String)> = report
        .statuses
        .iter()
        .filter_map(|s| Some((s.model.lineage(), s.new_version.clone()?)))
        .collect();
    assert_eq!(
        retrained
            .iter()
            .map(|(m, _)| m.clone())
            .collect::<BTreeSet<_>>(),
        drifting
    );
    for (model, version) in &retrained {
        // The simulator sends the new version, and driftwatch applies it.
        let view = &report.models[model];
        assert_eq!(view.version.as_ref(), Some(version), "{model}");
        // Its rules started afresh with the version; they hold its samples.
        assert!(
            view.rules
                .values()
                .any(|r| r.buffered_samples > 0 || r.last_window.is_some()),
            "{model} sends {version}"
        );
        assert!(
            !requests
                .iter()
                .any(|r| &r.model.lineage() == model && r.model.version.as_ref() == Some(version)),
            "{model} retrained as {version} is quiet"
        );
    }
}
