//! Seeded synthetic streams with known change points: the ground truth the
//! detectors are measured against. Continuous streams are N(0,1) before
//! their first change (unit variance throughout); 0/1 streams are Bernoulli
//! error indicators.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal, StudentT};

/// What kind of values a stream carries (and so which detectors apply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// Real values (accuracy, latency, drift scores).
    Continuous,
    /// 0/1 error indicators.
    ZeroOne,
}

/// One generated stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Stream {
    pub values: Vec<f64>,
    /// Indices where a new concept starts (the first value of it).
    pub changes: Vec<usize>,
}

/// A stream of the suite: its name, what it shows and how it is made.
#[derive(Debug, Clone, Copy)]
pub struct StreamSpec {
    pub name: &'static str,
    pub description: &'static str,
    pub kind: InputKind,
    generate: fn(&mut SmallRng) -> Stream,
}

impl StreamSpec {
    /// The stream for run `run` of the suite seeded with `seed`.
    pub fn generate(&self, seed: u64, run: u64) -> Stream {
        let mut rng = SmallRng::seed_from_u64(
            seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ run.wrapping_add(1) ^ hash(self.name),
        );
        (self.generate)(&mut rng)
    }
}

fn hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Length of the stable streams: false alarms per 10,000 samples directly.
pub const STABLE_LENGTH: usize = 10_000;
/// Length of the streams with changes.
pub const LENGTH: usize = 4_000;
/// Where the single change of the one-change streams happens.
pub const CHANGE_AT: usize = 2_000;

/// The suite, in the order the table shows it.
pub fn suite() -> Vec<StreamSpec> {
    vec![
        StreamSpec {
            name: "stable",
            description: "N(0,1) throughout",
            kind: InputKind::Continuous,
            generate: stable,
        },
        StreamSpec {
            name: "abrupt",
            description: "N(0,1), then N(1,1) from sample 2000",
            kind: InputKind::Continuous,
            generate: abrupt,
        },
        StreamSpec {
            name: "gradual",
            description: "N(0,1) and N(1,1) mixed, the new one's share rising along a sigmoid centred at 2000 over 500 samples (MOA's gradual drift)",
            kind: InputKind::Continuous,
            generate: gradual,
        },
        StreamSpec {
            name: "incremental",
            description: "mean rising linearly from 0 to 2 between samples 2000 and 3000",
            kind: InputKind::Continuous,
            generate: incremental,
        },
        StreamSpec {
            name: "recurring",
            description: "mean 0, 1.5, 0, 1.5: changes at 1500, 3000 and 4500 of 6000",
            kind: InputKind::Continuous,
            generate: recurring,
        },
        StreamSpec {
            name: "heavy-tailed",
            description: "Student-t, 3 dof, scaled to unit variance; +1 from sample 2000",
            kind: InputKind::Continuous,
            generate: heavy_tailed,
        },
        StreamSpec {
            name: "errors-stable",
            description: "0/1 errors at rate 0.1 throughout",
            kind: InputKind::ZeroOne,
            generate: errors_stable,
        },
        StreamSpec {
            name: "errors-abrupt",
            description: "0/1 errors at rate 0.1, then 0.3 from sample 2000",
            kind: InputKind::ZeroOne,
            generate: errors_abrupt,
        },
    ]
}

fn normal(rng: &mut SmallRng) -> f64 {
    // Normal::new(0, 1) cannot fail.
    Normal::new(0.0, 1.0).map_or(0.0, |n| n.sample(rng))
}

fn stable(rng: &mut SmallRng) -> Stream {
    Stream {
        values: (0..STABLE_LENGTH).map(|_| normal(rng)).collect(),
        changes: Vec::new(),
    }
}

fn abrupt(rng: &mut SmallRng) -> Stream {
    let values = (0..LENGTH)
        .map(|i| normal(rng) + if i >= CHANGE_AT { 1.0 } else { 0.0 })
        .collect();
    Stream {
        values,
        changes: vec![CHANGE_AT],
    }
}

fn gradual(rng: &mut SmallRng) -> Stream {
    const WIDTH: f64 = 500.0;
    let values = (0..LENGTH)
        .map(|i| {
            // MOA: P(new concept) = 1 / (1 + e^(-4 (t - t0) / w)).
            let share = 1.0 / (1.0 + (-4.0 * (i as f64 - CHANGE_AT as f64) / WIDTH).exp());
            let shift = if rng.gen_bool(share.clamp(0.0, 1.0)) {
                1.0
            } else {
                0.0
            };
            normal(rng) + shift
        })
        .collect();
    // The new concept is the majority from the centre of the transition;
    // it shows (5% share) from t0 - 0.74 w.
    Stream {
        values,
        changes: vec![CHANGE_AT - 368],
    }
}

fn incremental(rng: &mut SmallRng) -> Stream {
    let values = (0..LENGTH)
        .map(|i| {
            let progress = (i as f64 - CHANGE_AT as f64) / 1_000.0;
            normal(rng) + 2.0 * progress.clamp(0.0, 1.0)
        })
        .collect();
    Stream {
        values,
        changes: vec![CHANGE_AT],
    }
}

fn recurring(rng: &mut SmallRng) -> Stream {
    let values = (0..6_000)
        .map(|i| normal(rng) + if (i / 1_500) % 2 == 1 { 1.5 } else { 0.0 })
        .collect();
    Stream {
        values,
        changes: vec![1_500, 3_000, 4_500],
    }
}

fn heavy_tailed(rng: &mut SmallRng) -> Stream {
    // Var(t_3) = 3: divide by √3 for unit variance.
    let t = StudentT::new(3.0).ok();
    let values = (0..LENGTH)
        .map(|i| {
            let x = t.as_ref().map_or(0.0, |t| t.sample(rng)) / 3f64.sqrt();
            x + if i >= CHANGE_AT { 1.0 } else { 0.0 }
        })
        .collect();
    Stream {
        values,
        changes: vec![CHANGE_AT],
    }
}

fn bernoulli(rng: &mut SmallRng, p: f64) -> f64 {
    f64::from(u8::from(rng.gen_bool(p)))
}

fn errors_stable(rng: &mut SmallRng) -> Stream {
    Stream {
        values: (0..STABLE_LENGTH).map(|_| bernoulli(rng, 0.1)).collect(),
        changes: Vec::new(),
    }
}

fn errors_abrupt(rng: &mut SmallRng) -> Stream {
    let values = (0..LENGTH)
        .map(|i| bernoulli(rng, if i >= CHANGE_AT { 0.3 } else { 0.1 }))
        .collect();
    Stream {
        values,
        changes: vec![CHANGE_AT],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean(v: &[f64]) -> f64 {
        v.iter().sum::<f64>() / v.len() as f64
    }

    fn variance(v: &[f64]) -> f64 {
        let m = mean(v);
        v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64
    }

    fn spec(name: &str) -> StreamSpec {
        suite()
            .into_iter()
            .find(|s| s.name == name)
            .expect("stream in the suite")
    }

    #[test]
    fn streams_are_deterministic_per_seed_and_run() {
        for s in suite() {
            assert_eq!(s.generate(1, 0), s.generate(1, 0), "{}", s.name);
            assert_ne!(s.generate(1, 0), s.generate(1, 1), "{}", s.name);
            assert_ne!(s.generate(1, 0), s.generate(2, 0), "{}", s.name);
        }
    }

    #[test]
    fn streams_have_the_stated_moments_before_and_after_their_changes() {
        let abrupt = spec("abrupt").generate(3, 0);
        let (before, after) = abrupt.values.split_at(CHANGE_AT);
        assert!(mean(before).abs() < 0.1 && (mean(after) - 1.0).abs() < 0.1);
        assert!((variance(before) - 1.0).abs() < 0.15);

        let heavy = spec("heavy-tailed").generate(3, 0).values;
        assert!(
            (variance(&heavy[..CHANGE_AT]) - 1.0).abs() < 0.5,
            "unit variance (heavy tails: loose)"
        );
        assert!((mean(&heavy[CHANGE_AT..]) - 1.0).abs() < 0.15);

        let inc = spec("incremental").generate(3, 0).values;
        assert!((mean(&inc[3_000..]) - 2.0).abs() < 0.1);

        let rec = spec("recurring").generate(3, 0);
        assert_eq!(rec.changes, vec![1_500, 3_000, 4_500]);
        assert!((mean(&rec.values[1_500..3_000]) - 1.5).abs() < 0.1);
        assert!(mean(&rec.values[3_000..4_500]).abs() < 0.1);

        let errors = spec("errors-abrupt").generate(3, 0).values;
        assert!(errors.iter().all(|e| *e == 0.0 || *e == 1.0));
        assert!((mean(&errors[..CHANGE_AT]) - 0.1).abs() < 0.03);
        assert!((mean(&errors[CHANGE_AT..]) - 0.3).abs() < 0.03);

        let gradual = spec("gradual").generate(3, 0).values;
        assert!(mean(&gradual[..1_500]).abs() < 0.1);
        assert!((mean(&gradual[2_600..]) - 1.0).abs() < 0.1);
    }
}
