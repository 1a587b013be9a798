//! Memory per model of every detector, as a rule holds it (detector,
//! baseline and alert state), stays under the bound documented in
//! docs/detectors.md however long the stream and whatever it does.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StudentT};

use driftwatch::config::Config;
use driftwatch::detect::adwin::AdwinParams;
use driftwatch::detect::Detector;
use driftwatch::engine::detector::{DetectorState, RuleDetector};
use driftwatch::engine::state::RuleState;

/// Inline size of a rule's detector state (an enum over every detector;
/// the two large ones are boxed).
const INLINE: usize = 144;

/// (detector table, documented bound in bytes of the rule's detector state,
/// inline and heap). See docs/detectors.md for the formulas.
fn detectors() -> Vec<(&'static str, usize)> {
    let adwin = |params: AdwinParams| INLINE + params.memory_bound();
    vec![
        (r#"{ kind = "threshold", above = 1.0 }"#, INLINE),
        (r#"{ kind = "cusum" }"#, INLINE),
        // A trailing baseline of N windows: a ring of fewer than 2N floats.
        (
            r#"{ kind = "cusum", baseline = { kind = "trailing", windows = 100 } }"#,
            INLINE + 16 * 100,
        ),
        (r#"{ kind = "ewma" }"#, INLINE),
        (r#"{ kind = "shewhart" }"#, INLINE),
        (r#"{ kind = "page_hinkley" }"#, INLINE),
        (r#"{ kind = "adwin" }"#, adwin(AdwinParams::default())),
        (
            r#"{ kind = "adwin", clock = 1, max_window = 1000000 }"#,
            adwin(AdwinParams {
                clock: 1,
                max_window: 1_000_000,
                ..AdwinParams::default()
            }),
        ),
        (r#"{ kind = "ddm" }"#, INLINE),
        (r#"{ kind = "hddm_a" }"#, INLINE),
        (r#"{ kind = "distribution" }"#, INLINE + 8_192),
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
