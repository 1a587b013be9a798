//! Distribution drift (PSI, Kolmogorov–Smirnov, Wasserstein-1) on seeded
//! normal samples: no drift between samples of one distribution (and a PSI
//! false-positive rate near its α), a drift for a 0.5σ shift, no drift for a
//! trivial shift that huge samples make significant, and the summaries' KS
//! and W1 against the exact values from the raw samples.
//!
//! Run with `--nocapture` to see the measured figures.

use driftwatch::detect::distribution::{
    BinSpec, DistributionConfig, DistributionDrift, DriftReport, SampleSummary,
};
use driftwatch::detect::{Detector, Level};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

fn normal(n: usize, mean: f64, seed: u64) -> Vec<f64> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let d = Normal::new(mean, 1.0).expect("valid normal");
    (0..n).map(|_| d.sample(&mut rng)).collect()
}

/// The report of one current sample against one reference sample.
fn compare(reference: &[f64], current: &[f64], config: &DistributionConfig) -> DriftReport {
    let mut d = DistributionDrift::with_reference(reference, config.clone()).expect("valid");
    current.iter().for_each(|&x| d.observe(x));
    d.evaluate().expect("both samples non-empty")
}

fn show(label: &str, r: &DriftReport) {
    println!(
        "{label}: psi {:.6} (threshold {:.6}), ks D {:.5} p {:.3e}, w1 {:.5}, {:?}",
        r.psi, r.psi_threshold, r.ks_d, r.ks_p, r.w1, r.level
    );
}

#[test]
fn same_distribution_is_no_drift() {
    let config = DistributionConfig::default();
    for (n, seed) in [(1_000, 10), (100_000, 20)] {
        let r = compare(&normal(n, 0.0, seed), &normal(n, 0.0, seed + 1), &config);
        show(&format!("N(0,1) vs N(0,1), n = {n}"), &r);
        assert_ne!(r.level, Level::Drift);
        assert!(r.psi < config.psi_min && r.ks_d < config.d_min);
        assert!(r.w1 < 0.1, "{r:?}");
    }
}

#[test]
fn psi_false_positive_rate_is_near_alpha() {
    // 500 pairs of N(0,1) samples of 1000 values, α = 0.01: the PSI exceeds
    // its threshold in about 1% of them.
    let config = DistributionConfig::default();
    let reps = 500;
    let (mut psi_hits, mut ks_hits, mut warnings, mut drifts) = (0, 0, 0, 0);
    for i in 0..reps {
        let r = compare(
            &normal(1_000, 0.0, 1_000 + 2 * i),
            &normal(1_000, 0.0, 1_001 + 2 * i),
            &config,
        );
        psi_hits += usize::from(r.psi_significant());
        ks_hits += usize::from(r.ks_p < config.alpha);
        warnings += usize::from(r.level == Level::Warning);
        drifts += usize::from(r.level == Level::Drift);
    }
    let rate = |k: usize| k as f64 / reps as f64;
    println!(
        "over {reps} pairs at n = 1000, alpha = {}: PSI significant {:.1}%, KS significant {:.1}%, \
         warnings {:.1}%, drifts {:.1}%",
        config.alpha,
        100.0 * rate(psi_hits),
        100.0 * rate(ks_hits),
        100.0 * rate(warnings),
        100.0 * rate(drifts)
    );
    assert!(
        rate(psi_hits) < 0.03,
        "PSI false-positive rate {}",
        rate(psi_hits)
    );
    // Not vacuous: the threshold is not so high that nothing ever exceeds it.
    assert!(psi_hits > 0);
    assert_eq!(drifts, 0);
}

#[test]
fn half_sigma_shift_is_a_drift() {
    let config = DistributionConfig::default();
    let r = compare(&normal(1_000, 0.0, 30), &normal(1_000, 0.5, 31), &config);
    show("N(0,1) vs N(0.5,1), n = 1000", &r);
    assert_eq!(r.level, Level::Drift);
    assert!(r.psi_significant() && r.psi >= config.psi_min);
    assert!(r.ks_p < config.alpha && r.ks_d >= config.d_min);
    assert!((r.w1 - 0.5).abs() < 0.15, "{r:?}");
}

#[test]
fn trivial_shift_on_huge_samples_is_significant_but_no_drift() {
    // 0.02σ on a million values each: the PSI test sees it (its threshold
    // is about 4e-5), but the PSI (about 4e-4), D (about 0.008) and W1
    // (about 0.02) are far below any effect worth a retraining.
    let config = DistributionConfig::default();
    let n = 1_000_000;
    let r = compare(&normal(n, 0.0, 40), &normal(n, 0.02, 41), &config);
    show("N(0,1) vs N(0.02,1), n = 1e6", &r);
    assert!(r.psi_significant() && r.ks_p < config.alpha, "{r:?}");
    assert!(r.psi < config.psi_min && r.ks_d < config.d_min);
    assert!((r.w1 - 0.02).abs() < 0.01, "{r:?}");
    assert_eq!(r.level, Level::Warning);
}

/// KS D and W1 of the raw samples: sup and integral of |F − G| over the two
/// empirical CDFs, by a merge of the sorted samples.
fn exact_ks_w1(a: &[f64], b: &[f64]) -> (f64, f64) {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort_unstable_by(f64::total_cmp);
    b.sort_unstable_by(f64::total_cmp);
    let (n, m) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j) = (0, 0);
    let (mut d, mut w1): (f64, f64) = (0.0, 0.0);
    let mut prev: Option<f64> = None;
    while i < a.len() || j < b.len() {
        let x = match (a.get(i), b.get(j)) {
            (Some(&u), Some(&v)) => u.min(v),
            (Some(&u), None) => u,
            (None, Some(&v)) => v,
            (None, None) => break,
        };
        if let Some(p) = prev {
            // F and G are constant on [p, x).
            w1 += (i as f64 / n - j as f64 / m).abs() * (x - p);
        }
        while a.get(i) == Some(&x) {
            i += 1;
        }
        while b.get(j) == Some(&x) {
            j += 1;
        }
        d = d.max((i as f64 / n - j as f64 / m).abs());
        prev = Some(x);
    }
    (d, w1)
}

fn summary_ks_w1(a: &[f64], b: &[f64], compression: u32) -> (f64, f64, f64) {
    let sa = SampleSummary::from_values(a, &BinSpec::default(), compression).expect("valid");
    let sb = SampleSummary::from_values(b, &BinSpec::default(), compression).expect("valid");
    let d = sa.sketch().distances(sb.sketch()).expect("non-empty");
    let allowance = sa.sketch().cdf_error_allowance() + sb.sketch().cdf_error_allowance();
    (d.ks_d, d.w1, allowance)
}

#[test]
fn ks_and_w1_of_the_summaries_match_the_raw_samples() {
    // Up to 2 × compression values the sketch is exact: so are D and W1.
    for (shift, seed) in [(0.0, 50), (0.3, 52), (1.0, 54)] {
        let a = normal(150, 0.0, seed);
        let b = normal(180, shift, seed + 1);
        let (d, w1) = exact_ks_w1(&a, &b);
        let (sd, sw1, allowance) = summary_ks_w1(&a, &b, 100);
        println!("n = 150/180, shift {shift}: D {d:.5} vs {sd:.5}, W1 {w1:.5} vs {sw1:.5}");
        assert_eq!(allowance, 0.0);
        assert!((d - sd).abs() < 1e-12 && (w1 - sw1).abs() < 1e-12);
    }
    // Beyond, they carry the sketch's error: D within the sketches' error
    // allowance (0.06 here, errors measured ≤ 0.01), W1 within 0.02σ.
    for (shift, seed) in [(0.0, 60), (0.3, 62), (1.0, 64)] {
        let a = normal(5_000, 0.0, seed);
        let b = normal(4_000, shift, seed + 1);
        let (d, w1) = exact_ks_w1(&a, &b);
        let (sd, sw1, allowance) = summary_ks_w1(&a, &b, 100);
        println!(
            "n = 5000/4000, shift {shift}: D {d:.5} vs {sd:.5} (allowance {allowance:.4}), \
             W1 {w1:.5} vs {sw1:.5}"
        );
        assert!((d - sd).abs() <= allowance, "D {d} vs {sd}");
        assert!((d - sd).abs() < 0.015, "D {d} vs {sd}");
        assert!((w1 - sw1).abs() < 0.02, "W1 {w1} vs {sw1}");
    }
}

#[test]
fn the_detector_on_a_stream() {
    // A learned reference of 2000 values, tumbling windows of 1000 checked
    // every 100 from 200 on (the defaults): 100 stable windows, then a shift.
    let config = DistributionConfig {
        reference_size: 2_000,
        ..DistributionConfig::default()
    };
    let mut d = DistributionDrift::learning(config).expect("valid");
    let (mut warnings, mut drifts) = (0, 0);
    for &x in &normal(102_000, 0.0, 70) {
        match d.update(x).level {
            Level::Drift => drifts += 1,
            Level::Warning => warnings += 1,
            Level::Stable => {}
        }
    }
    println!(
        "100 stable windows: {drifts} drifts, {warnings} observations in warning; memory {} B",
        d.memory_bytes()
    );
    assert!(drifts <= 2, "{drifts} false drifts in 100 windows");
    let shifted = normal(1_000, 0.5, 71);
    let at = shifted
        .iter()
        .position(|&x| d.update(x).level == Level::Drift);
    println!("0.5σ shift detected after {at:?} values");
    assert!(at.is_some());
}
