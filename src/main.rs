//! The `driftwatch` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use driftwatch::config::Config;
use driftwatch::demo::{self, DemoOptions};
use driftwatch::simulator::{Scenario, SimulatorConfig};
use driftwatch::telemetry::{init_logging, LogFormat};
use driftwatch::{codec, evaluate, replay, service};

/// Watches ML model telemetry on Kafka for drift and degradation, and
/// requests retraining when a model needs it.
#[derive(Parser)]
#[command(name = "driftwatch", version, about)]
struct Cli {
    /// Log format on stderr (filter with RUST_LOG).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "DRIFTWATCH_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service against Kafka.
    Run(RunArgs),
    /// Run everything in-process: a Kafka cluster, a telemetry simulator and
    /// the pipeline; print retrain requests as JSON lines.
    Demo(DemoArgs),
    /// Run a file of metric events (JSON lines or Avro container) through the
    /// engine and print the retrain requests as JSON lines.
    Replay(ReplayArgs),
    /// Validate a configuration file.
    CheckConfig(ConfigArgs),
    /// Measure detectors on seeded synthetic streams (stable, abrupt,
    /// gradual, incremental, recurring, heavy-tailed, 0/1 errors): detection
    /// delay, false alarms per 10,000 stable samples, missed changes.
    Evaluate(EvaluateArgs),
    /// Produce simulated telemetry (healthy and degrading models) to a
    /// Kafka topic, keyed by model lineage.
    Simulate(SimulateArgs),
    /// Exit 0 when a running driftwatch answers /healthz (for container
    /// health checks).
    Healthcheck(HealthcheckArgs),
    /// A stand-in retrain coordinator for demos and tests: answers each
    /// retrain request with ACCEPTED, STARTED and, after --delay, SUCCEEDED
    /// with a new model version (or FAILED). It trains nothing.
    Coordinate(CoordinateArgs),
    /// Measure the pipeline against a bare Kafka consumer on the same topic,
    /// in one run: events/s of both and their ratio, resident memory per
    /// model, snapshot bytes per model and the size of /metrics.
    Bench(BenchArgs),
}

#[derive(Args)]
struct BenchArgs {
    /// A broker to run against (default: an in-process cluster).
    #[arg(long)]
    bootstrap_servers: Option<String>,
    /// Distinct models in the telemetry.
    #[arg(long, default_value_t = 1_000)]
    models: usize,
    /// Events produced and processed.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Partitions of the telemetry topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Payload format.
    #[arg(long, value_enum, default_value = "json")]
    format: SimulateFormat,
    /// Processing modes to measure, each against its own bare consumer run.
    #[arg(long, value_enum, default_value = "both")]
    processing: BenchProcessing,
    /// The configuration whose policies and [engine] the pipeline runs
    /// (default: the demo's three rules); its topics, group, bootstrap
    /// servers and [http] are the bench's own.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum BenchProcessing {
    ExactlyOnce,
    AtLeastOnce,
    Both,
}

#[derive(Args)]
struct CoordinateArgs {
    /// The driftwatch configuration: Kafka settings (security included),
    /// the requests topic (kafka.output_topic) and the status topic, and
    /// their formats.
    #[arg(long, short)]
    config: PathBuf,
    /// Overrides kafka.bootstrap_servers of --config.
    #[arg(long)]
    bootstrap_servers: Option<String>,
    /// Consumer group of the coordinator.
    #[arg(long, default_value = "driftwatch-coordinator")]
    group_id: String,
    /// Time from a request to its final status.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    delay: Duration,
    /// Every Nth request fails (0: none).
    #[arg(long, default_value_t = 0)]
    fail_every: u64,
    /// Stop after this many requests have had their final status.
    #[arg(long)]
    max_requests: Option<u64>,
}

#[derive(Args)]
struct SimulateArgs {
    /// Kafka to produce to (overrides kafka.bootstrap_servers of --config).
    #[arg(long, env = "DRIFTWATCH_SIMULATE_BOOTSTRAP")]
    bootstrap_servers: Option<String>,
    /// A driftwatch configuration whose kafka settings (bootstrap servers,
    /// security, properties) the producer uses; its first input topic is
    /// the default topic.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Topic to produce to.
    #[arg(long)]
    topic: Option<String>,
    #[arg(long, default_value_t = 40)]
    models: usize,
    /// How many of the models degrade partway through.
    #[arg(long, default_value_t = 4)]
    drifting: usize,
    /// How the drifting models degrade.
    #[arg(long, value_enum, default_value = "mixed")]
    scenario: ScenarioArg,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Ticks (one event per model) per second.
    #[arg(long, default_value_t = 10.0)]
    ticks_per_second: f64,
    /// Stop after this many ticks (default: until interrupted).
    #[arg(long)]
    ticks: Option<u64>,
    /// Event time between ticks.
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
    tick: Duration,
    /// Event time of the first tick, ms since the epoch (default: now).
    #[arg(long)]
    start_ms: Option<i64>,
    /// Payload format.
    #[arg(long, value_enum, default_value = "json")]
    format: SimulateFormat,
    /// Schema id written in the Confluent frame (with --format avro).
    #[arg(long, default_value_t = 1)]
    schema_id: u32,
    /// Follow the coordinator's statuses on this topic: after SUCCEEDED
    /// with a new version, that model sends the new version, healthy
    /// (default: the configuration's kafka.status_topic).
    #[arg(long)]
    status_topic: Option<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ScenarioArg {
    Mixed,
    Accuracy,
    Errors,
    Latency,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum SimulateFormat {
    Json,
    Avro,
}

#[derive(Args)]
struct HealthcheckArgs {
    /// The health endpoint to ask.
    #[arg(long, default_value = "http://127.0.0.1:9464/healthz")]
    url: String,
}

#[derive(Args)]
struct EvaluateArgs {
    /// Evaluate the detectors of this configuration's rules instead of the
    /// defaults.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Seeded runs of every stream.
    #[arg(long, default_value_t = 30)]
    runs: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write one SVG per stream into this directory: the metric, each
    /// detector's statistic, thresholds and detections.
    #[arg(long, value_name = "DIR")]
    plot: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: EvaluateFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum EvaluateFormat {
    Table,
    Json,
}

#[derive(Args)]
struct ConfigArgs {
    /// TOML configuration file.
    #[arg(long, short, env = "DRIFTWATCH_CONFIG")]
    config: PathBuf,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Overrides kafka.bootstrap_servers.
    #[arg(long)]
    bootstrap_servers: Option<String>,
    /// Overrides kafka.group_id.
    #[arg(long)]
    group_id: Option<String>,
    /// Overrides http.listen.
    #[arg(long)]
    http_listen: Option<String>,
    /// Overrides any key: --set engine.max_models_per_partition=5000
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// How often to check the configuration file for changes (policies and
    /// [engine] reload without a restart, as on SIGHUP); 0s: SIGHUP only.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    watch_interval: Duration,
}

#[derive(Args)]
struct DemoArgs {
    /// Number of simulated models.
    #[arg(long, default_value_t = 40)]
    models: usize,
    /// How many of them degrade partway through.
    #[arg(long, default_value_t = 4)]
    drifting: usize,
    /// How long to run (e.g. 30s, 2m).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Seed of the simulator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Simulated minutes (one event per model each) per second.
    #[arg(long, default_value_t = 20)]
    ticks_per_second: u32,
    /// Where to serve /metrics and the model API.
    #[arg(long, default_value = "127.0.0.1:9464")]
    http_listen: SocketAddr,
    /// Wall-clock time the in-process stand-in coordinator takes to answer
    /// a request with SUCCEEDED and a new model version.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    coordinator_delay: Duration,
}

#[derive(Args)]
struct ReplayArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Events: JSON lines, or an Avro object container file.
    input: PathBuf,
    /// Also write a self-contained HTML report: a timeline per model
    /// (metric values, window aggregates, detections, requests).
    #[arg(long, value_name = "FILE.html")]
    report: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::CheckConfig(args) => check_config(&args),
        Command::Replay(args) => replay_file(&args),
        Command::Run(args) => with_runtime(run(args)),
        Command::Demo(args) => with_runtime(run_demo(args)),
        Command::Evaluate(args) => evaluate(&args),
        Command::Simulate(args) => simulate(&args),
        Command::Healthcheck(args) => healthcheck(&args),
        Command::Coordinate(args) => coordinate(&args),
        Command::Bench(args) => bench(&args),
    }
}

fn bench(args: &BenchArgs) -> ExitCode {
    use driftwatch::config::Processing;
    let config_toml = match &args.config {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => {
                eprintln!("error: {}: cannot read config file: {e}", path.display());
                return ExitCode::from(2);
            }
        },
        None => demo::DEMO_CONFIG.to_owned(),
    };
    let executable = match std::env::current_exe() {
        Ok(path) => path,
        Err(e) => {
            eprintln!("error: cannot find the driftwatch executable: {e}");
            return ExitCode::FAILURE;
        }
    };
    let options = driftwatch::bench::BenchOptions {
        bootstrap_servers: args.bootstrap_servers.clone(),
        models: args.models,
        events: args.events,
        partitions: args.partitions.max(1),
        format: match args.format {
            SimulateFormat::Json => driftwatch::simulate::WireFormat::Json,
            SimulateFormat::Avro => driftwatch::bench::confluent_format(),
        },
        modes: match args.processing {
            BenchProcessing::ExactlyOnce => vec![Processing::ExactlyOnce],
            BenchProcessing::AtLeastOnce => vec![Processing::AtLeastOnce],
            BenchProcessing::Both => vec![Processing::ExactlyOnce, Processing::AtLeastOnce],
        },
        config_toml,
        executable,
    };
    match driftwatch::bench::run(&options, &mut std::io::stdout()) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn coordinate(args: &CoordinateArgs) -> ExitCode {
    let config = match load_config(&args.config, &[]) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let Some(status_topic) = config.kafka.status_topic.clone() else {
        eprintln!("error: kafka.status_topic: the coordinator needs a status topic to answer on");
        return ExitCode::from(2);
    };
    let mut client = driftwatch::kafka::client::base(&config.kafka);
    if let Some(bootstrap) = &args.bootstrap_servers {
        client.set("bootstrap.servers", bootstrap);
    }
    let options = driftwatch::coordinate::CoordinateOptions {
        requests_topic: config.kafka.output_topic.clone(),
        status_topic,
        group_id: args.group_id.clone(),
        request_format: config.output_format.clone(),
        status_format: config.status_format.clone(),
        delay: args.delay,
        fail_every: (args.fail_every > 0).then_some(args.fail_every),
    };
    let stop = stop_on_signal();
    eprintln!(
        "answering retrain requests from {} on {} (final status after {})",
        options.requests_topic,
        options.status_topic,
        humantime::format_duration(options.delay)
    );
    match driftwatch::coordinate::run(&client, &options, args.max_requests, &stop) {
        Ok(counts) => {
            eprintln!(
                "answered {} requests: {} succeeded, {} failed ({} records were not requests)",
                counts.requests, counts.succeeded, counts.failed, counts.undecodable
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A flag set on Ctrl-C or SIGTERM, for the commands that finish their
/// current step and flush before exiting.
fn stop_on_signal() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = std::sync::Arc::clone(&stop);
    let _ = std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            rt.block_on(service::termination_signal());
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    });
    stop
}

fn simulate(args: &SimulateArgs) -> ExitCode {
    let (mut client, default_topic, default_status) = match &args.config {
        Some(path) => match load_config(path, &[]) {
            Ok(config) => {
                let topic = match &config.kafka.input {
                    driftwatch::config::InputTopics::List(topics) => topics.first().cloned(),
                    driftwatch::config::InputTopics::Pattern(_) => None,
                };
                (
                    driftwatch::kafka::client::base(&config.kafka),
                    topic,
                    config.kafka.status_topic.clone(),
                )
            }
            Err(code) => return code,
        },
        None => (rdkafka::ClientConfig::new(), None, None),
    };
    if let Some(bootstrap) = &args.bootstrap_servers {
        client.set("bootstrap.servers", bootstrap);
    }
    if client.get("bootstrap.servers").is_none() {
        eprintln!("error: give --bootstrap-servers or a --config with kafka.bootstrap_servers");
        return ExitCode::from(2);
    }
    let Some(topic) = args.topic.clone().or(default_topic) else {
        eprintln!("error: give --topic (the configuration names no input topic)");
        return ExitCode::from(2);
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let options = driftwatch::simulate::SimulateOptions {
        topic,
        simulator: SimulatorConfig {
            models: args.models,
            drifting: args.drifting,
            seed: args.seed,
            start_ms: args.start_ms.unwrap_or(now_ms),
            tick_ms: args.tick.as_millis() as i64,
            scenario: match args.scenario {
                ScenarioArg::Mixed => Scenario::Mixed,
                ScenarioArg::Accuracy => Scenario::Accuracy,
                ScenarioArg::Errors => Scenario::Errors,
                ScenarioArg::Latency => Scenario::Latency,
            },
        },
        ticks_per_second: args.ticks_per_second,
        max_ticks: args.ticks,
        status_topic: args.status_topic.clone().or(default_status),
        format: match args.format {
            SimulateFormat::Json => driftwatch::simulate::WireFormat::Json,
            SimulateFormat::Avro => driftwatch::simulate::WireFormat::ConfluentAvro {
                schema_id: args.schema_id,
            },
        },
    };
    // Ctrl-C / SIGTERM: finish the tick, flush, exit.
    let stop = stop_on_signal();
    eprintln!(
        "simulating {} models ({} drifting) to {}",
        args.models,
        args.drifting.min(args.models),
        options.topic
    );
    match driftwatch::simulate::produce(&client, &options, &stop) {
        Ok(events) => {
            eprintln!("produced {events} events");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn healthcheck(args: &HealthcheckArgs) -> ExitCode {
    let client = match reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            eprintln!("unhealthy: {e}");
            return ExitCode::FAILURE;
        }
    };
    match client.get(&args.url).send() {
        Ok(response) if response.status().is_success() => ExitCode::SUCCESS,
        Ok(response) => {
            eprintln!("unhealthy: {} answered {}", args.url, response.status());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("unhealthy: {e}");
            ExitCode::FAILURE
        }
    }
}

fn evaluate(args: &EvaluateArgs) -> ExitCode {
    let candidates = match &args.config {
        Some(path) => match load_config(path, &[]) {
            Ok(config) => evaluate::candidates_from_config(&config),
            Err(code) => return code,
        },
        None => match evaluate::default_candidates() {
            Ok(candidates) => candidates,
            Err(e) => {
                eprintln!("error: built-in detectors: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    if args.runs == 0 {
        eprintln!("error: --runs must be at least 1");
        return ExitCode::from(2);
    }
    let options = evaluate::EvaluateOptions {
        runs: args.runs,
        seed: args.seed,
        progress: true,
    };
    let result = evaluate::evaluate(&candidates, &options);
    match args.format {
        EvaluateFormat::Table => print!("{}", result.table()),
        EvaluateFormat::Json => match serde_json::to_string_pretty(&result) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
    }
    if let Some(dir) = &args.plot {
        match evaluate::write_plots(&candidates, args.seed, dir) {
            Ok(files) => {
                for f in files {
                    eprintln!("wrote {}", f.display());
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

fn with_runtime(fut: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(fut),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(path: &std::path::Path, overrides: &[(String, String)]) -> Result<Config, ExitCode> {
    Config::load(Some(path), overrides).map_err(|e| {
        eprintln!("error: invalid configuration: {e}");
        ExitCode::from(2)
    })
}

fn check_config(args: &ConfigArgs) -> ExitCode {
    let config = match load_config(&args.config, &[]) {
        Ok(c) => c,
        Err(code) => return code,
    };
    println!("{}: ok", args.config.display());
    for policy in config.policies.policies() {
        let mut rules: Vec<String> = policy
            .rules
            .iter()
            .map(|r| format!("{} ({})", r.name, r.detector.name()))
            .collect();
        rules.extend(policy.composites.iter().map(|c| {
            let members: Vec<&str> = policy.members(c).map(|r| r.name.as_str()).collect();
            format!(
                "{} ({} of {})",
                c.name,
                c.combine.as_str(),
                members.join(", ")
            )
        }));
        println!("  policy {:?}: {}", policy.pattern, rules.join(", "));
    }
    for warning in config.warnings() {
        println!("  warning: {warning}");
    }
    ExitCode::SUCCESS
}

fn replay_file(args: &ReplayArgs) -> ExitCode {
    let config = match load_config(&args.config.config, &[]) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let events = match codec::read_events_file(&args.input) {
        Ok(events) => events,
        Err(e) => {
            eprintln!("error: {}: {e}", args.input.display());
            return ExitCode::FAILURE;
        }
    };
    let engine = service::engine_for(&config);
    let report = match &args.report {
        None => replay::replay(&engine, events),
        Some(path) => {
            let (report, mut timeline) = replay::replay_with_timeline(&engine, events);
            timeline.title = format!("driftwatch replay of {}", args.input.display());
            if let Err(e) = std::fs::write(path, driftwatch::report::render_html(&timeline)) {
                eprintln!("error: {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
            eprintln!("report written to {}", path.display());
            report
        }
    };
    for request in &report.requests {
        if let Err(e) = demo::print_request(request) {
            eprintln!("error: writing output: {e}");
            return ExitCode::FAILURE;
        }
    }
    for (index, reason) in &report.invalid {
        eprintln!("invalid event #{index}: {reason}");
    }
    eprintln!(
        "replayed: {} applied, {} skipped {:?}, {} invalid, {} requests",
        report.applied,
        report.skipped.values().sum::<u64>(),
        report.skipped,
        report.invalid.len(),
        report.requests.len()
    );
    ExitCode::SUCCESS
}

async fn run(args: RunArgs) -> ExitCode {
    let mut overrides = Vec::new();
    let flags = [
        ("kafka.bootstrap_servers", &args.bootstrap_servers),
        ("kafka.group_id", &args.group_id),
        ("http.listen", &args.http_listen),
    ];
    for (key, value) in flags {
        if let Some(v) = value {
            overrides.push((key.to_owned(), v.clone()));
        }
    }
    for kv in &args.set {
        match kv.split_once('=') {
            Some((k, v)) => overrides.push((k.trim().to_owned(), v.trim().to_owned())),
            None => {
                eprintln!("error: --set {kv:?}: expected KEY=VALUE");
                return ExitCode::from(2);
            }
        }
    }
    let config = match load_config(&args.config.config, &overrides) {
        Ok(c) => c,
        Err(code) => return code,
    };
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let reload = service::ReloadSource {
        path: args.config.config.clone(),
        overrides,
        poll: (!args.watch_interval.is_zero()).then_some(args.watch_interval),
    };
    let running = match service::start_with_reload(config, Some(reload)).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "startup failed");
            return ExitCode::FAILURE;
        }
    };
    match running.until(service::termination_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "service failed");
            ExitCode::FAILURE
        }
    }
}

async fn run_demo(args: DemoArgs) -> ExitCode {
    let options = DemoOptions {
        simulator: SimulatorConfig {
            models: args.models,
            drifting: args.drifting,
            seed: args.seed,
            ..SimulatorConfig::default()
        },
        duration: args.duration,
        ticks_per_second: args.ticks_per_second,
        http_listen: args.http_listen,
        coordinator_delay: args.coordinator_delay,
    };
    match demo::run(options, service::termination_signal(), demo::print_line).await {
        Ok(report) => {
            let summary = demo::summarize(&report.requests);
            eprintln!(
                "demo finished: {} retrain request(s), {} status(es) from the coordinator",
                report.requests.len(),
                report.statuses.len()
            );
            for (model, count) in summary {
                eprintln!("  {model}: {count}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}
