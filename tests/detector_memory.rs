//! Memory per model of every detector, as a rule holds it (detector,
//! baseline and alert state), stays under the bound documented in
//! docs/detectors.md however long the stream and whatever it does.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StudentT};

use driftwatch::config::Config;
use driftwatch::detect::adwin::AdwinParams;
use driftwatch::detect::Detector;
use driftwatch::engine::detector::{DetectorState, RuleDetector, SequentialState};
use driftwatch::engine::state::RuleState;

/// Inline size of a rule's detector state: a threshold keeps nothing, a
/// sequential detector's state is boxed.
const INLINE: usize = 8;
/// The box of a sequential detector's state (the detector enum, whose two
/// large ones are boxed in turn, and its baseline).
const BOXED: usize = 144;
/// Inline and boxed: what every sequential detector holds at least.
const SEQUENTIAL: usize = INLINE + BOXED;

/// (detector table, documented bound in bytes of the rule's detector state,
/// inline and heap). See docs/detectors.md for the formulas.
fn detectors() -> Vec<(&'static str, usize)> {
    let adwin = |params: AdwinParams| SEQUENTIAL + params.memory_bound();
    vec![
        (r#"{ kind = "threshold", above = 1.0 }"#, INLINE),
        (r#"{ kind = "cusum" }"#, SEQUENTIAL),
        // A trailing baseline of N windows: a ring of fewer than 2N floats.
        (
            r#"{ kind = "cusum", baseline = { kind = "trailing", windows = 100 } }"#,
            SEQUENTIAL + 16 * 100,
        ),
        (r#"{ kind = "ewma" }"#, SEQUENTIAL),
        (r#"{ kind = "shewhart" }"#, SEQUENTIAL),
        (r#"{ kind = "page_hinkley" }"#, SEQUENTIAL),
        (r#"{ kind = "adwin" }"#, adwin(AdwinParams::default())),
        (
            r#"{ kind = "adwin", clock = 1, max_window = 1000000 }"#,
            adwin(AdwinParams {
                clock: 1,
                max_window: 1_000_000,
                ..AdwinParams::default()
            }),
        ),
        (r#"{ kind = "ddm" }"#, SEQUENTIAL),
        (r#"{ kind = "hddm_a" }"#, SEQUENTIAL),
        (r#"{ kind = "distribution" }"#, SEQUENTIAL + 8_192),
    ]
}

fn rule_spec(detector: &str) -> driftwatch::engine::policy::RuleSpec {
    let toml = format!(
        r#"
[kafka]
input_topics = ["m"]
[[policy]]
match = "*"
[[policy.rule]]
name = "r"
metric = "x"
window = {{ kind = "count", size = 1 }}
detector = {detector}
action = "fine_tune"
"#
    );
    let config = Config::from_toml_str(&toml).expect("valid");
    config.policies.policies()[0].rules[0].clone()
}

/// A long, hostile stream: heavy tails, level shifts, and 0/1 stretches.
fn stream(n: usize, seed: u64) -> impl Iterator<Item = f64> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let t = StudentT::new(3.0).expect("dof");
    (0..n).map(move |i| {
        let level = ((i / 5_000) % 4) as f64;
        if (i / 20_000) % 3 == 2 {
            f64::from(u8::from(rng.gen_bool(0.1 + 0.05 * level)))
        } else {
            level + t.sample(&mut rng)
        }
    })
}

#[test]
fn every_detector_stays_within_its_documented_memory_bound() {
    let mut table = Vec::new();
    let mut over = Vec::new();
    assert_eq!(
        std::mem::size_of::<DetectorState>(),
        INLINE,
        "the inline size changed: update docs/detectors.md"
    );
    assert_eq!(
        std::mem::size_of::<SequentialState>(),
        BOXED,
        "the boxed size changed: update docs/detectors.md"
    );
    for (detector, bound) in detectors() {
        let spec = rule_spec(detector);
        let mut d = RuleDetector::new(spec.detector.clone());
        let mut peak = d.memory_bytes();
        for x in stream(300_000, 11) {
            d.update(x);
            peak = peak.max(d.memory_bytes());
        }
        let rule = std::mem::size_of::<RuleState>();
        table.push(format!(
            "{detector:<72} peak {peak:>6} B  bound {bound:>6} B  (rule state inline: {rule} B)"
        ));
        over.extend((peak > bound).then(|| format!("{detector}: peak {peak} B > {bound} B")));
    }
    println!("{}", table.join("\n"));
    assert!(over.is_empty(), "over the documented bound: {over:#?}");
}
