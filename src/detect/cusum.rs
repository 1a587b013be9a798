//! Two-sided tabular CUSUM for a shift in the mean of a stream with known
//! in-control mean and standard deviation.
//!
//! With the standardized value z_i = (x_i − μ0)/σ, the upper and lower sums
//! are (Page 1954; Montgomery, *Introduction to Statistical Quality
//! Control*, 6th ed., §9.1):
//!
//! ```text
//! C+_i = max(0,  z_i − k + C+_{i−1})
//! C−_i = max(0, −z_i − k + C−_{i−1}),      C+_0 = C−_0 = 0
//! ```
//!
//! and the chart signals when either exceeds the decision interval h. The
//! reference value k (σ units) is usually half the shift to detect quickly
//! (k = 0.5 for a 1σ shift); h sets the false-alarm rate. With k = 0.5,
//! h = 4 gives an in-control average run length ARL0 ≈ 168 and h = 5 gives
//! ARL0 ≈ 465 (Montgomery, Table 9.3).
//!
//! References: E. S. Page (1954), "Continuous inspection schemes",
//! *Biometrika* 41, 100–115; D. Siegmund (1985), *Sequential Analysis*,
//! Springer (the ARL approximation used by [`Cusum::for_arl0`]).

use serde::{Deserialize, Serialize};

use super::{Detector, Level, Verdict};

/// Shift of the decision interval in Siegmund's ARL approximation
/// (b = h + 1.166): the expected overshoot of a normal random walk.
const SIEGMUND_OVERSHOOT: f64 = 1.166;

/// Invalid CUSUM parameters or state.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CusumError {
    #[error("CUSUM in-control mean must be finite, got {0}")]
    Mean(f64),
    #[error("CUSUM sigma must be finite and > 0, got {0}")]
    Sigma(f64),
    #[error("CUSUM reference value k must be finite and >= 0, got {0}")]
    Reference(f64),
    #[error("CUSUM decision interval h must be finite and > 0, got {0}")]
    DecisionInterval(f64),
    #[error(
        "CUSUM target ARL0 must be finite and > {min:.3} (the ARL0 of h -> 0 for k = {k}), got {arl0}"
    )]
    Arl0 { arl0: f64, k: f64, min: f64 },
    #[error("CUSUM warning fraction must be in (0, 1), got {0}")]
    Warning(f64),
    #[error("CUSUM sums must be finite and >= 0, got C+ = {c_plus}, C- = {c_minus}")]
    State { c_plus: f64, c_minus: f64 },
}

/// Two-sided tabular CUSUM (see the module docs for the recursion).
///
/// Holds its parameters and its two sums, nothing that grows with the
/// stream. The statistic reported is max(C+, C−) in σ units and the
/// threshold is h. After a drift both sums restart at 0, so that each run
/// length after a signal is a fresh zero-state run length.
///
/// An optional warning zone (off by default, see [`Cusum::with_warning`])
/// reports [`Level::Warning`] while max(C+, C−) > w·h for a fraction w of h.
///
/// Deserialization validates the parameters and the state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "CusumRepr")]
pub struct Cusum {
    mu0: f64,
    sigma: f64,
    k: f64,
    h: f64,
    warning: Option<f64>,
    c_plus: f64,
    c_minus: f64,
}

/// The serialized form of [`Cusum`], validated on the way in.
#[derive(Deserialize)]
struct CusumRepr {
    mu0: f64,
    sigma: f64,
    k: f64,
    h: f64,
    warning: Option<f64>,
    c_plus: f64,
    c_minus: f64,
}

impl TryFrom<CusumRepr> for Cusum {
    type Error = CusumError;

    fn try_from(r: CusumRepr) -> Result<Self, CusumError> {
        let mut c = Cusum::new(r.mu0, r.sigma, r.k, r.h)?;
        if let Some(w) = r.warning {
            c = c.with_warning(w)?;
        }
        let valid = |v: f64| v.is_finite() && v >= 0.0;
        if !valid(r.c_plus) || !valid(r.c_minus) {
            return Err(CusumError::State {
                c_plus: r.c_plus,
                c_minus: r.c_minus,
            });
        }
        c.c_plus = r.c_plus;
        c.c_minus = r.c_minus;
        Ok(c)
    }
}

impl Cusum {
    /// A CUSUM for in-control mean `mu0` and standard deviation `sigma`,
    /// with reference value `k` >= 0 and decision interval `h` > 0, both in
    /// σ units.
    pub fn new(mu0: f64, sigma: f64, k: f64, h: f64) -> Result<Self, CusumError> {
        if !mu0.is_finite() {
            return Err(CusumError::Mean(mu0));
        }
        if !(sigma.is_finite() && sigma > 0.0) {
            return Err(CusumError::Sigma(sigma));
        }
        if !(k.is_finite() && k >= 0.0) {
            return Err(CusumError::Reference(k));
        }
        if !(h.is_finite() && h > 0.0) {
            return Err(CusumError::DecisionInterval(h));
        }
        Ok(Cusum {
            mu0,
            sigma,
            k,
            h,
            warning: None,
            c_plus: 0.0,
            c_minus: 0.0,
        })
    }

    /// A CUSUM with reference value `k` whose decision interval h is chosen
    /// so that the two-sided in-control ARL is `arl0` (see
    /// [`Cusum::decision_interval_for_arl0`]). For k = 0.5 and ARL0 = 370
    /// this gives h ≈ 4.77.
    pub fn for_arl0(mu0: f64, sigma: f64, k: f64, arl0: f64) -> Result<Self, CusumError> {
        let h = Self::decision_interval_for_arl0(k, arl0)?;
        Self::new(mu0, sigma, k, h)
    }

    /// Adds a warning zone: [`Level::Warning`] while max(C+, C−) exceeds
    /// `fraction`·h, with `fraction` in (0, 1). Useful to show a building
    /// deviation before it becomes a drift; it does not change when drifts
    /// are declared.
    pub fn with_warning(mut self, fraction: f64) -> Result<Self, CusumError> {
        if !(fraction.is_finite() && fraction > 0.0 && fraction < 1.0) {
            return Err(CusumError::Warning(fraction));
        }
        self.warning = Some(fraction);
        Ok(self)
    }

    /// Decision interval h giving a two-sided in-control ARL of `arl0` for
    /// reference value `k`, from Siegmund's approximation
    /// ([`Cusum::siegmund_arl`] at shift 0) solved by bisection (the
    /// approximation increases with h).
    ///
    /// The approximation is within about 1% of the exact ARL for k = 0.5
    /// and h in [4, 5] (h = 4.77 for ARL0 = 370: 371 by Siegmund, 369 by the
    /// integral equation). Fails if `arl0` is not above the approximation
    /// at h → 0 (about 1.04 for k = 0.5).
    pub fn decision_interval_for_arl0(k: f64, arl0: f64) -> Result<f64, CusumError> {
        if !(k.is_finite() && k >= 0.0) {
            return Err(CusumError::Reference(k));
        }
        let min = Self::siegmund_arl(k, 0.0, 0.0);
        if !(arl0.is_finite() && arl0 > min) {
            return Err(CusumError::Arl0 { arl0, k, min });
        }
        let (mut lo, mut hi) = (0.0_f64, 1.0_f64);
        // The ARL grows at least like h², so this bracket is found quickly;
        // infinite ARLs (exp overflow) compare as large, which is right.
        while Self::siegmund_arl(k, hi, 0.0) < arl0 {
            lo = hi;
            hi *= 2.0;
        }
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if mid <= lo || mid >= hi {
                break;
            }
            if Self::siegmund_arl(k, mid, 0.0) < arl0 {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Ok(0.5 * (lo + hi))
    }

    /// Siegmund's approximation of the zero-state two-sided ARL for a
    /// shift of `shift` σ, reference value `k` and decision interval `h`.
    ///
    /// One-sided: ARL ≈ (exp(−2Δb) + 2Δb − 1) / (2Δ²) with b = h + 1.166,
    /// Δ = δ − k for the upper sum and Δ = −δ − k for the lower one, and
    /// ARL = b² when Δ = 0; two-sided: 1/ARL = 1/ARL+ + 1/ARL−
    /// (Montgomery §9.1.7; Siegmund 1985).
    pub fn siegmund_arl(k: f64, h: f64, shift: f64) -> f64 {
        let one_sided = |delta: f64| {
            let b = h + SIEGMUND_OVERSHOOT;
            if delta.abs() < 1e-9 {
                b * b
            } else {
                ((-2.0 * delta * b).exp() + 2.0 * delta * b - 1.0) / (2.0 * delta * delta)
            }
        };
        let up = one_sided(shift - k);
        let down = one_sided(-shift - k);
        1.0 / (1.0 / up + 1.0 / down)
    }

    /// In-control mean μ0.
    pub fn mu0(&self) -> f64 {
        self.mu0
    }

    /// In-control standard deviation σ.
    pub fn sigma(&self) -> f64 {
        self.sigma
    }

    /// Reference value k (σ units).
    pub fn k(&self) -> f64 {
        self.k
    }

    /// Decision interval h (σ units).
    pub fn h(&self) -> f64 {
        self.h
    }

    /// Warning fraction of h, if a warning zone is set.
    pub fn warning(&self) -> Option<f64> {
        self.warning
    }

    /// Upper sum C+ (σ units).
    pub fn c_plus(&self) -> f64 {
        self.c_plus
    }

    /// Lower sum C− (σ units).
    pub fn c_minus(&self) -> f64 {
        self.c_minus
    }

    fn statistic(&self) -> f64 {
        self.c_plus.max(self.c_minus)
    }

    fn level(&self, statistic: f64) -> Level {
        if statistic > self.h {
            Level::Drift
        } else if self.warning.is_some_and(|w| statistic > w * self.h) {
            Level::Warning
        } else {
            Level::Stable
        }
    }
}

impl Detector for Cusum {
    /// Updates both sums with z = (x − μ0)/σ. A non-finite `x` (a gap in
    /// the telemetry, not evidence) is ignored: the state is unchanged and
    /// the verdict describes it.
    fn update(&mut self, x: f64) -> Verdict {
        if x.is_finite() {
            let z = (x - self.mu0) / self.sigma;
            self.c_plus = (z - self.k + self.c_plus).max(0.0);
            self.c_minus = (-z - self.k + self.c_minus).max(0.0);
        }
        let statistic = self.statistic();
        let level = self.level(statistic);
        if level == Level::Drift {
            self.reset();
        }
        Verdict {
            level,
            statistic,
            threshold: Some(self.h),
        }
    }

    fn reset(&mut self) {
        self.c_plus = 0.0;
        self.c_minus = 0.0;
    }

    fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    /// Through JSON text and back: exact (serde_json's `float_roundtrip`
    /// feature is on in this crate).
    fn round_trip(orig: &Cusum) -> Cusum {
        let text = serde_json::to_string(orig).expect("serializes");
        let back: Cusum = serde_json::from_str(&text).expect("deserializes");
        assert_eq!(&back, orig);
        back
    }

    #[test]
    fn rejects_invalid_parameters() {
        assert_eq!(
            Cusum::new(0.0, 1.0, -0.1, 4.0),
            Err(CusumError::Reference(-0.1))
        );
        assert_eq!(
            Cusum::new(0.0, 1.0, 0.5, 0.0),
            Err(CusumError::DecisionInterval(0.0))
        );
        assert_eq!(
            Cusum::new(0.0, 1.0, 0.5, -1.0),
            Err(CusumError::DecisionInterval(-1.0))
        );
        assert_eq!(Cusum::new(0.0, 0.0, 0.5, 4.0), Err(CusumError::Sigma(0.0)));
        assert_eq!(
            Cusum::new(0.0, -2.0, 0.5, 4.0),
            Err(CusumError::Sigma(-2.0))
        );
        assert!(matches!(
            Cusum::new(f64::NAN, 1.0, 0.5, 4.0),
            Err(CusumError::Mean(_))
        ));
        assert!(matches!(
            Cusum::new(0.0, f64::INFINITY, 0.5, 4.0),
            Err(CusumError::Sigma(_))
        ));
        assert!(matches!(
            Cusum::new(0.0, 1.0, 0.5, 4.0).and_then(|c| c.with_warning(1.0)),
            Err(CusumError::Warning(_))
        ));
        assert!(matches!(
            Cusum::for_arl0(0.0, 1.0, 0.5, 1.0),
            Err(CusumError::Arl0 { .. })
        ));
        assert!(matches!(
            Cusum::for_arl0(0.0, 1.0, 0.5, f64::INFINITY),
            Err(CusumError::Arl0 { .. })
        ));
        assert!(matches!(
            Cusum::for_arl0(0.0, 1.0, -1.0, 370.0),
            Err(CusumError::Reference(_))
        ));
        // Messages say what is wrong.
        let msg = CusumError::Reference(-0.1).to_string();
        assert!(msg.contains("k") && msg.contains("-0.1"), "{msg}");
    }

    #[test]
    fn statistic_on_a_hand_computed_sequence() {
        // μ0 = 10, σ = 2, k = 0.5, h = 4: z = 1, 2, -1, 0.5, -4, -3, -1.5
        let mut c = Cusum::new(10.0, 2.0, 0.5, 4.0).expect("valid");
        let xs = [12.0, 14.0, 8.0, 11.0, 2.0, 4.0, 7.0];
        // C+: 0.5, 2.0, 0.5, 0.5, 0, 0, 0
        // C−: 0, 0, 0.5, 0, 3.5, 6.0 (> 4: drift, restart), then 1.0
        let expected: [(f64, f64, Level); 7] = [
            (0.5, 0.0, Level::Stable),
            (2.0, 0.0, Level::Stable),
            (0.5, 0.5, Level::Stable),
            (0.5, 0.0, Level::Stable),
            (0.0, 3.5, Level::Stable),
            (0.0, 6.0, Level::Drift),
            (0.0, 1.0, Level::Stable),
        ];
        for (x, (cp, cm, level)) in xs.iter().zip(expected) {
            let v = c.update(*x);
            assert_eq!(v.level, level, "x = {x}");
            assert!(close(v.statistic, cp.max(cm)), "x = {x}: {v:?}");
            assert_eq!(v.threshold, Some(4.0));
            if level != Level::Drift {
                assert!(close(c.c_plus(), cp) && close(c.c_minus(), cm), "x = {x}");
            }
        }
    }

    #[test]
    fn restarts_after_a_drift_and_detects_the_next_change() {
        let mut c = Cusum::new(0.0, 1.0, 0.5, 4.0).expect("valid");
        // A +3σ shift: C+ grows by 2.5 a step, drift on the 2nd value.
        assert_eq!(c.update(3.0).level, Level::Stable);
        let v = c.update(3.0);
        assert_eq!(v.level, Level::Drift);
        assert!(close(v.statistic, 5.0));
        assert_eq!((c.c_plus(), c.c_minus()), (0.0, 0.0));
        // Back in control for a while: no signal.
        for _ in 0..50 {
            assert_eq!(c.update(0.0).level, Level::Stable);
        }
        // A downward shift is detected as well.
        assert_eq!(c.update(-3.0).level, Level::Stable);
        assert_eq!(c.update(-3.0).level, Level::Drift);
    }

    #[test]
    fn warning_zone() {
        let mut c = Cusum::new(0.0, 1.0, 0.5, 4.0)
            .and_then(|c| c.with_warning(0.5))
            .expect("valid");
        // Warning above 0.5·h = 2, drift above h = 4.
        assert_eq!(c.update(2.0).level, Level::Stable); // C+ = 1.5
        assert_eq!(c.update(1.0).level, Level::Stable); // 2.0, not > 2
        assert_eq!(c.update(1.0).level, Level::Warning); // 2.5
        assert_eq!(c.update(2.0).level, Level::Warning); // 4.0, not > 4
        assert_eq!(c.update(0.6).level, Level::Drift); // 4.1
        assert_eq!(c.update(0.0).level, Level::Stable); // restarted
    }

    #[test]
    fn reset_forgets_the_sums() {
        let mut c = Cusum::new(0.0, 1.0, 0.5, 4.0).expect("valid");
        let fresh = c.clone();
        c.update(2.0);
        c.update(-1.0);
        assert_ne!(c, fresh);
        c.reset();
        assert_eq!(c, fresh);
    }

    #[test]
    fn non_finite_observations_are_ignored() {
        let mut c = Cusum::new(0.0, 1.0, 0.5, 4.0).expect("valid");
        c.update(2.0);
        let before = c.clone();
        for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let v = c.update(x);
            assert_eq!(v.level, Level::Stable);
            assert!(close(v.statistic, 1.5));
        }
        assert_eq!(c, before);
    }

    #[test]
    fn serde_round_trip_and_validation() {
        let mut c = Cusum::for_arl0(3.0, 0.5, 0.5, 370.0)
            .and_then(|c| c.with_warning(0.8))
            .expect("valid");
        c.update(3.7);
        c.update(3.2);
        let back = round_trip(&c);
        let json = serde_json::to_string(&c).expect("serializes");
        // The state goes on identically.
        let (mut a, mut b) = (c.clone(), back);
        for x in [3.1, 4.0, 2.2, 3.9] {
            assert_eq!(a.update(x), b.update(x));
        }

        let bad = json.replace("\"sigma\":0.5", "\"sigma\":-0.5");
        assert_ne!(bad, json);
        let err = serde_json::from_str::<Cusum>(&bad).expect_err("negative sigma");
        assert!(err.to_string().contains("sigma"), "{err}");
        let bad = r#"{"mu0":0,"sigma":1,"k":0.5,"h":4,"warning":null,"c_plus":-1,"c_minus":0}"#;
        assert!(serde_json::from_str::<Cusum>(bad).is_err());
    }

    #[test]
    fn memory_is_constant_over_a_long_stream() {
        let mut c = Cusum::new(0.0, 1.0, 0.5, 5.0).expect("valid");
        let m = c.memory_bytes();
        assert_eq!(m, std::mem::size_of::<Cusum>());
        for i in 0..100_000 {
            c.update(((i * 7919) % 13) as f64 / 6.0 - 1.0);
            assert_eq!(c.memory_bytes(), m);
        }
    }

    #[test]
    fn siegmund_approximation() {
        // Montgomery §9.1.7: k = 0.5, h = 5 gives a one-sided ARL0 of
        // 938.2, so 469.1 two-sided (exact: 465), and ARL+(1σ) = 10.4.
        assert!((Cusum::siegmund_arl(0.5, 5.0, 0.0) - 469.1).abs() < 0.1);
        assert!((Cusum::siegmund_arl(0.5, 5.0, 1.0) - 10.34).abs() < 0.05);
        // Δ = 0 (k = 0 in control): one-sided b², two-sided b²/2.
        let b: f64 = 4.0 + SIEGMUND_OVERSHOOT;
        assert!(close(Cusum::siegmund_arl(0.0, 4.0, 0.0), b * b / 2.0));
        // Continuous through Δ = 0 (k = 1, shift = 1 for the upper side).
        let near = Cusum::siegmund_arl(1.0, 4.0, 1.0 + 1e-6);
        let at = Cusum::siegmund_arl(1.0, 4.0, 1.0);
        assert!((near - at).abs() / at < 1e-4, "{near} vs {at}");
    }

    #[test]
    fn decision_interval_for_arl0() {
        // The classic design for ARL0 = 370 with k = 0.5 is h ≈ 4.77.
        let h = Cusum::decision_interval_for_arl0(0.5, 370.0).expect("valid");
        assert!((h - 4.77).abs() < 0.01, "h = {h}");
        assert!((Cusum::siegmund_arl(0.5, h, 0.0) - 370.0).abs() < 1e-6);
        // Monotone in the target, and works for k = 0 and large targets.
        let h2 = Cusum::decision_interval_for_arl0(0.5, 1000.0).expect("valid");
        assert!(h2 > h);
        let h0 = Cusum::decision_interval_for_arl0(0.0, 370.0).expect("valid");
        assert!((Cusum::siegmund_arl(0.0, h0, 0.0) - 370.0).abs() < 1e-6);
        let big = Cusum::decision_interval_for_arl0(0.5, 1e12).expect("valid");
        assert!(big.is_finite() && big > h2);
    }
}
