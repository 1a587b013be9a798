//! EWMA control chart for a shift in the mean of a stream with known
//! in-control mean and standard deviation.
//!
//! The chart smooths the observations (Roberts 1959; Montgomery,
//! *Introduction to Statistical Quality Control*, 6th ed., §9.2):
//!
//! ```text
//! z_i = λ x_i + (1 − λ) z_{i−1},      z_0 = μ0,   0 < λ <= 1
//! ```
//!
//! and signals when z_i leaves μ0 ± L σ_z(i), where the exact standard
//! deviation of z_i is
//!
//! ```text
//! σ_z(i) = σ sqrt( λ/(2 − λ) · (1 − (1 − λ)^{2i}) )
//! ```
//!
//! The exact limits are narrow at the start and widen to the asymptotic
//! ones, μ0 ± L σ sqrt(λ/(2 − λ)), within a few 1/λ observations. Small λ
//! (0.05–0.25) detects small shifts; λ = 1 is the Shewhart chart.
//!
//! Published ARL tables (Lucas & Saccucci 1990, reproduced in Montgomery's
//! Table 9.11) are zero-state ARLs with the *asymptotic* limits: λ = 0.10,
//! L = 2.814 gives ARL0 = 500 and ARL = 10.3 for a 1σ shift. The exact
//! limits (the default here) keep about the same ARL0 (486 for those
//! parameters) but detect a shift present from the start sooner (8.2
//! instead of 10.3), since the early limits are narrower: compare with a
//! table only in the same mode ([`EwmaLimits`]).
//!
//! [`Ewma::zero_state_arl`] computes the ARL for either kind of limits, and
//! [`Ewma::for_arl0`] uses it to choose L.
//!
//! References: S. W. Roberts (1959), "Control chart tests based on
//! geometric moving averages", *Technometrics* 1, 239–250; J. M. Lucas and
//! M. S. Saccucci (1990), "Exponentially weighted moving average control
//! schemes: properties and enhancements", *Technometrics* 32, 1–12;
//! S. V. Crowder (1987), "A simple method for studying run-length
//! distributions of exponentially weighted moving average charts",
//! *Technometrics* 29, 401–407 (the integral equation used for the ARL).

use serde::{Deserialize, Serialize};

use super::{Detector, Level, Verdict};

/// Smallest λ for which [`Ewma::zero_state_arl`] and hence
/// [`Ewma::for_arl0`] compute an ARL (the chart itself takes any λ in
/// (0, 1]).
pub const MIN_ARL_LAMBDA: f64 = 0.01;

/// Largest target ARL0 [`Ewma::limit_width_for_arl0`] accepts: beyond it
/// the linear system of the ARL computation is too ill-conditioned.
pub const MAX_ARL0: f64 = 1e9;

fn check_arl_lambda(lambda: f64) -> Result<(), EwmaError> {
    check_lambda(lambda)?;
    if lambda < MIN_ARL_LAMBDA {
        return Err(EwmaError::ArlLambda { lambda });
    }
    Ok(())
}

/// Invalid EWMA parameters or state, or an ARL computation that failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EwmaError {
    #[error("EWMA in-control mean must be finite, got {0}")]
    Mean(f64),
    #[error("EWMA sigma must be finite and > 0, got {0}")]
    Sigma(f64),
    #[error("EWMA lambda must be in (0, 1], got {0}")]
    Lambda(f64),
    #[error("EWMA limit width L must be finite and > 0, got {0}")]
    LimitWidth(f64),
    #[error("EWMA target ARL0 must be in (1, {max:e}], got {0}", max = MAX_ARL0)]
    Arl0(f64),
    #[error(
        "EWMA ARL computation needs lambda >= {min} (its cost grows like 1/lambda^2), got {lambda}",
        min = MIN_ARL_LAMBDA
    )]
    ArlLambda { lambda: f64 },
    #[error("EWMA shift must be finite, got {0}")]
    Shift(f64),
    #[error("EWMA warning fraction must be in (0, 1), got {0}")]
    Warning(f64),
    #[error("EWMA statistic must be finite, got {0}")]
    State(f64),
    #[error("EWMA ARL computation failed: {0}")]
    Numerical(&'static str),
}

/// Which control limits an [`Ewma`] uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EwmaLimits {
    /// μ0 ± L σ sqrt(λ/(2−λ) (1 − (1−λ)^{2i})): the exact standard
    /// deviation of z_i, so early observations are judged fairly.
    #[default]
    Exact,
    /// μ0 ± L σ sqrt(λ/(2−λ)): the steady-state limits, as in the
    /// published ARL tables.
    Asymptotic,
}

/// EWMA control chart (see the module docs for the recursion and limits).
///
/// Holds its parameters, the smoothed value z and the number of
/// observations since the (re)start (for the exact limits), nothing that
/// grows with the stream. The statistic reported is z (in the units of the
/// observations) and the threshold is the control limit on z's side of μ0
/// (the upper one when z = μ0). After a drift, z restarts at μ0 and the
/// count at 0.
///
/// An optional warning zone (off by default, see [`Ewma::with_warning`])
/// reports [`Level::Warning`] while |z − μ0| > w·L σ_z(i).
///
/// Deserialization validates the parameters and the state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "EwmaRepr")]
pub struct Ewma {
    mu0: f64,
    sigma: f64,
    lambda: f64,
    l: f64,
    limits: EwmaLimits,
    warning: Option<f64>,
    z: f64,
    n: u64,
}

/// The serialized form of [`Ewma`], validated on the way in.
#[derive(Deserialize)]
struct EwmaRepr {
    mu0: f64,
    sigma: f64,
    lambda: f64,
    l: f64,
    limits: EwmaLimits,
    warning: Option<f64>,
    z: f64,
    n: u64,
}

impl TryFrom<EwmaRepr> for Ewma {
    type Error = EwmaError;

    fn try_from(r: EwmaRepr) -> Result<Self, EwmaError> {
        let mut e = Ewma::new(r.mu0, r.sigma, r.lambda, r.l)?.with_limits(r.limits);
        if let Some(w) = r.warning {
            e = e.with_warning(w)?;
        }
        if !r.z.is_finite() {
            return Err(EwmaError::State(r.z));
        }
        e.z = r.z;
        e.n = r.n;
        Ok(e)
    }
}

fn check_lambda(lambda: f64) -> Result<(), EwmaError> {
    if lambda.is_finite() && lambda > 0.0 && lambda <= 1.0 {
        Ok(())
    } else {
        Err(EwmaError::Lambda(lambda))
    }
}

fn check_l(l: f64) -> Result<(), EwmaError> {
    if l.is_finite() && l > 0.0 {
        Ok(())
    } else {
        Err(EwmaError::LimitWidth(l))
    }
}

impl Ewma {
    /// An EWMA chart with exact limits for in-control mean `mu0` and
    /// standard deviation `sigma`, smoothing constant `lambda` in (0, 1]
    /// and limit width `l` > 0 (in units of σ_z).
    pub fn new(mu0: f64, sigma: f64, lambda: f64, l: f64) -> Result<Self, EwmaError> {
        if !mu0.is_finite() {
            return Err(EwmaError::Mean(mu0));
        }
        if !(sigma.is_finite() && sigma > 0.0) {
            return Err(EwmaError::Sigma(sigma));
        }
        check_lambda(lambda)?;
        check_l(l)?;
        Ok(Ewma {
            mu0,
            sigma,
            lambda,
            l,
            limits: EwmaLimits::Exact,
            warning: None,
            z: mu0,
            n: 0,
        })
    }

    /// An EWMA chart with exact limits whose L gives a zero-state
    /// in-control ARL of `arl0` (see [`Ewma::limit_width_for_arl0`]); for
    /// λ = 0.1 and ARL0 = 370 this is L ≈ 2.72.
    pub fn for_arl0(mu0: f64, sigma: f64, lambda: f64, arl0: f64) -> Result<Self, EwmaError> {
        check_arl_lambda(lambda)?;
        let l = Self::limit_width_for_arl0(lambda, arl0, EwmaLimits::Exact)?;
        Self::new(mu0, sigma, lambda, l)
    }

    /// The same chart with the given kind of limits (L is kept: use
    /// [`Ewma::limit_width_for_arl0`] with the same kind to keep an ARL0).
    pub fn with_limits(mut self, limits: EwmaLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Adds a warning zone: [`Level::Warning`] while |z − μ0| exceeds
    /// `fraction` of the limit half-width, with `fraction` in (0, 1). It
    /// shows a building deviation and does not change when drifts are
    /// declared.
    pub fn with_warning(mut self, fraction: f64) -> Result<Self, EwmaError> {
        if !(fraction.is_finite() && fraction > 0.0 && fraction < 1.0) {
            return Err(EwmaError::Warning(fraction));
        }
        self.warning = Some(fraction);
        Ok(self)
    }

    /// Zero-state ARL (z_0 = μ0) of a chart with smoothing constant
    /// `lambda` and limit width `l` when the mean is shifted by `shift` σ
    /// from the first observation on (0 for the in-control ARL0), normal
    /// observations.
    ///
    /// Computed from Crowder's (1987) integral equation
    /// A(x) = 1 + ∫_{−c}^{c} A(y) φ((y − (1−λ)x)/λ − δ)/λ dy, with
    /// c = L sqrt(λ/(2−λ)) in σ units, by Gauss–Legendre (Nyström)
    /// quadrature. For the exact limits, the time-varying limits are
    /// handled by a backward recursion A_i(x) = 1 + ∫_{|y|<c_{i+1}} A_{i+1}(y)
    /// f(y|x) dy, from the step where c_i has reached c (to 5e-8) down to
    /// A_0(0). Reproduces Montgomery's Table 9.11 to three digits (tests).
    /// Needs λ >= [`MIN_ARL_LAMBDA`]: the cost grows like 1/λ^{1.5} with
    /// the asymptotic limits and like 1/λ² with the exact ones.
    pub fn zero_state_arl(
        lambda: f64,
        l: f64,
        shift: f64,
        limits: EwmaLimits,
    ) -> Result<f64, EwmaError> {
        check_arl_lambda(lambda)?;
        check_l(l)?;
        if !shift.is_finite() {
            return Err(EwmaError::Shift(shift));
        }
        arl::zero_state(lambda, l, shift, limits)
    }

    /// Limit width L giving a zero-state in-control ARL of `arl0`, in
    /// (1, [`MAX_ARL0`]], with smoothing constant `lambda` and the given
    /// kind of limits. The ARL increases with L, so [`Ewma::zero_state_arl`]
    /// is solved for L by regula falsi (Illinois variant) on ln ARL, to
    /// 1e-6 in L.
    pub fn limit_width_for_arl0(
        lambda: f64,
        arl0: f64,
        limits: EwmaLimits,
    ) -> Result<f64, EwmaError> {
        check_arl_lambda(lambda)?;
        if !(arl0 > 1.0 && arl0 <= MAX_ARL0) {
            return Err(EwmaError::Arl0(arl0));
        }
        let target = arl0.ln();
        let g = |l: f64| -> Result<f64, EwmaError> {
            let a = arl::zero_state(lambda, l, 0.0, limits)?;
            if a.is_finite() && a >= 1.0 {
                Ok(a.ln() - target)
            } else {
                Err(EwmaError::Numerical("ARL out of range"))
            }
        };
        // ARL → 1 as L → 0, so a small L is below any target > 1.
        let (mut lo, mut hi) = (1e-3, 3.0);
        let (mut g_lo, mut g_hi) = (g(lo)?, g(hi)?);
        if g_lo >= 0.0 {
            return Err(EwmaError::Arl0(arl0));
        }
        while g_hi < 0.0 {
            if hi >= 20.0 {
                return Err(EwmaError::Numerical("no L gives that ARL0"));
            }
            lo = hi;
            g_lo = g_hi;
            hi += 1.0;
            g_hi = g(hi)?;
        }
        let mut side = 0;
        for _ in 0..100 {
            if hi - lo < 1e-6 {
                break;
            }
            let mid = (lo * g_hi - hi * g_lo) / (g_hi - g_lo);
            let mid = if mid > lo && mid < hi {
                mid
            } else {
                0.5 * (lo + hi)
            };
            let g_mid = g(mid)?;
            if g_mid == 0.0 {
                return Ok(mid);
            }
            if g_mid < 0.0 {
                lo = mid;
                g_lo = g_mid;
                if side == -1 {
                    g_hi *= 0.5;
                }
                side = -1;
            } else {
                hi = mid;
                g_hi = g_mid;
                if side == 1 {
                    g_lo *= 0.5;
                }
                side = 1;
            }
        }
        Ok(0.5 * (lo + hi))
    }

    /// In-control mean μ0.
    pub fn mu0(&self) -> f64 {
        self.mu0
    }

    /// In-control standard deviation σ of one observation.
    pub fn sigma(&self) -> f64 {
        self.sigma
    }

    /// Smoothing constant λ.
    pub fn lambda(&self) -> f64 {
        self.lambda
    }

    /// Limit width L (units of σ_z).
    pub fn l(&self) -> f64 {
        self.l
    }

    /// The kind of control limits.
    pub fn limits(&self) -> EwmaLimits {
        self.limits
    }

    /// Warning fraction of the limit half-width, if a warning zone is set.
    pub fn warning(&self) -> Option<f64> {
        self.warning
    }

    /// The smoothed value z.
    pub fn z(&self) -> f64 {
        self.z
    }

    /// Observations since the (re)start.
    pub fn observations(&self) -> u64 {
        self.n
    }

    /// Half-width L σ_z(i) of the control limits after the current
    /// observation.
    pub fn half_width(&self) -> f64 {
        let steady = self.lambda / (2.0 - self.lambda);
        let variance = match self.limits {
            EwmaLimits::Asymptotic => steady,
            EwmaLimits::Exact => {
                let q = (1.0 - self.lambda) * (1.0 - self.lambda);
                // powf: n may exceed i32; the power underflows to 0, as it should.
                steady * (1.0 - q.powf(self.n as f64))
            }
        };
        self.l * self.sigma * variance.sqrt()
    }

    fn verdict(&self) -> Verdict {
        let half = self.half_width();
        let dev = self.z - self.mu0;
        let level = if dev.abs() > half {
            Level::Drift
        } else if self.warning.is_some_and(|w| dev.abs() > w * half) {
            Level::Warning
        } else {
            Level::Stable
        };
        let threshold = if dev >= 0.0 {
            self.mu0 + half
        } else {
            self.mu0 - half
        };
        Verdict {
            level,
            statistic: self.z,
            threshold: Some(threshold),
        }
    }
}

impl Detector for Ewma {
    /// Smooths `x` into z and compares z with the limits for the number of
    /// observations since the (re)start. A non-finite `x` (a gap in the
    /// telemetry, not evidence) is ignored: the state is unchanged and the
    /// verdict describes it.
    fn update(&mut self, x: f64) -> Verdict {
        if x.is_finite() {
            self.z = self.lambda * x + (1.0 - self.lambda) * self.z;
            self.n = self.n.saturating_add(1);
        }
        let verdict = self.verdict();
        if verdict.level == Level::Drift {
            self.reset();
        }
        verdict
    }

    fn reset(&mut self) {
        self.z = self.mu0;
        self.n = 0;
    }

    fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
    }
}

/// Zero-state ARL of the EWMA chart by Nyström quadrature of Crowder's
/// integral equation, in σ units (μ0 = 0, σ = 1).
mod arl {
    use super::{EwmaError, EwmaLimits};

    /// Exact limits are taken as converged once (1−λ)^{2i} is below this
    /// (the limit is then within 5e-8 of the steady one, relatively).
    const CONVERGED: f64 = 1e-7;

    fn normal_pdf(z: f64) -> f64 {
        const INV_SQRT_2PI: f64 = 0.398_942_280_401_432_7;
        INV_SQRT_2PI * (-0.5 * z * z).exp()
    }

    /// Gauss–Legendre nodes and weights on [−1, 1] (Newton's method on
    /// the Legendre polynomial, from the Chebyshev-like first guesses).
    pub(super) fn gauss_legendre(n: usize) -> (Vec<f64>, Vec<f64>) {
        let mut nodes = Vec::with_capacity(n);
        let mut weights = Vec::with_capacity(n);
        let nf = n as f64;
        for i in 1..=n {
            let mut x = (std::f64::consts::PI * (i as f64 - 0.25) / (nf + 0.5)).cos();
            let mut dp = 1.0;
            for _ in 0..100 {
                let (mut p0, mut p1) = (1.0, x);
                for k in 2..=n {
                    let kf = k as f64;
                    let p2 = ((2.0 * kf - 1.0) * x * p1 - (kf - 1.0) * p0) / kf;
                    p0 = p1;
                    p1 = p2;
                }
                dp = nf * (x * p1 - p0) / (x * x - 1.0);
                let dx = p1 / dp;
                x -= dx;
                if dx.abs() < 1e-15 {
                    break;
                }
            }
            nodes.push(x);
            weights.push(2.0 / ((1.0 - x * x) * dp * dp));
        }
        (nodes, weights)
    }

    /// Solves `a` x = `b` (a row-major n×n) by Gaussian elimination with
    /// partial pivoting; the solution replaces `b`.
    fn solve(a: &mut [f64], b: &mut [f64]) -> Result<(), EwmaError> {
        let n = b.len();
        for c in 0..n {
            let mut p = c;
            for r in c + 1..n {
                if a[r * n + c].abs() > a[p * n + c].abs() {
                    p = r;
                }
            }
            let pivot = a[p * n + c];
            if pivot == 0.0 || !pivot.is_finite() {
                return Err(EwmaError::Numerical("singular ARL system"));
            }
            if p != c {
                for j in 0..n {
                    a.swap(c * n + j, p * n + j);
                }
                b.swap(c, p);
            }
            for r in c + 1..n {
                let f = a[r * n + c] / pivot;
                if f != 0.0 {
                    for j in c..n {
                        a[r * n + j] -= f * a[c * n + j];
                    }
                    b[r] -= f * b[c];
                }
            }
        }
        for r in (0..n).rev() {
            let mut s = b[r];
            for j in r + 1..n {
                s -= a[r * n + j] * b[j];
            }
            b[r] = s / a[r * n + r];
        }
        Ok(())
    }

    /// Quadrature nodes: three per standard deviation (λ) of the
    /// transition density across [−c, c]. Two already give the ARL to
    /// about 1e-6 relative for λ in [0.01, 1] (tested).
    pub(super) fn node_count(lambda: f64, c: f64) -> usize {
        let per_sd = 2.0 * c / lambda;
        (3.0 * per_sd).ceil().clamp(24.0, 400.0) as usize
    }

    pub(super) fn zero_state(
        lambda: f64,
        l: f64,
        shift: f64,
        limits: EwmaLimits,
    ) -> Result<f64, EwmaError> {
        let c = l * (lambda / (2.0 - lambda)).sqrt();
        zero_state_with(lambda, l, shift, limits, node_count(lambda, c))
    }

    /// [`zero_state`] with `r` quadrature nodes.
    pub(super) fn zero_state_with(
        lambda: f64,
        l: f64,
        shift: f64,
        limits: EwmaLimits,
        r: usize,
    ) -> Result<f64, EwmaError> {
        let c = l * (lambda / (2.0 - lambda)).sqrt();
        let (gx, gw) = gauss_legendre(r);
        // Density of the next z given the current one, z' = (1−λ)z + λX.
        let kernel =
            |y: f64, x: f64| normal_pdf((y - (1.0 - lambda) * x) / lambda - shift) / lambda;

        // Steady-state limits: (I − K W) A = 1 on the nodes of [−c, c].
        let nodes: Vec<f64> = gx.iter().map(|x| c * x).collect();
        let weights: Vec<f64> = gw.iter().map(|w| c * w).collect();
        let mut m = vec![0.0; r * r];
        for i in 0..r {
            for j in 0..r {
                let id = if i == j { 1.0 } else { 0.0 };
                m[i * r + j] = id - weights[j] * kernel(nodes[j], nodes[i]);
            }
        }
        let mut values = vec![1.0; r];
        solve(&mut m, &mut values)?;

        // A(x) = 1 + Σ_j w_j f(y_j | x) A(y_j) (Nyström's interpolation).
        let at = |x: f64, nodes: &[f64], weights: &[f64], values: &[f64]| {
            1.0 + nodes
                .iter()
                .zip(weights)
                .zip(values)
                .map(|((y, w), a)| w * kernel(*y, x) * a)
                .sum::<f64>()
        };
        if limits == EwmaLimits::Asymptotic || lambda >= 1.0 {
            // For λ = 1 the exact limits are the steady ones from i = 1 on.
            return Ok(at(0.0, &nodes, &weights, &values));
        }

        // Exact limits c_i = c sqrt(1 − q^i), q = (1−λ)²: A_I ≈ A for the
        // first I with q^I below CONVERGED, then back to A_0(0).
        let q = (1.0 - lambda) * (1.0 - lambda);
        let mut last = 1usize;
        let mut qi = q;
        while qi > CONVERGED {
            qi *= q;
            last += 1;
        }
        let (mut nodes, mut weights, mut values) = (nodes, weights, values);
        let mut next_nodes = vec![0.0; r];
        let mut next_weights = vec![0.0; r];
        let mut next_values = vec![0.0; r];
        for i in (1..last).rev() {
            let ci = c * (1.0 - q.powi(i as i32)).sqrt();
            for j in 0..r {
                next_nodes[j] = ci * gx[j];
                next_weights[j] = ci * gw[j];
            }
            for j in 0..r {
                next_values[j] = at(next_nodes[j], &nodes, &weights, &values);
            }
            std::mem::swap(&mut nodes, &mut next_nodes);
            std::mem::swap(&mut weights, &mut next_weights);
            std::mem::swap(&mut values, &mut next_values);
        }
        Ok(at(0.0, &nodes, &weights, &values))
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
    fn round_trip(orig: &Ewma) -> Ewma {
        let text = serde_json::to_string(orig).expect("serializes");
        let back: Ewma = serde_json::from_str(&text).expect("deserializes");
        assert_eq!(&back, orig);
        back
    }

    #[test]
    fn rejects_invalid_parameters() {
        for lambda in [0.0, -0.1, 1.5, f64::NAN] {
            assert!(
                matches!(Ewma::new(0.0, 1.0, lambda, 3.0), Err(EwmaError::Lambda(_))),
                "lambda = {lambda}"
            );
        }
        assert!(Ewma::new(0.0, 1.0, 1.0, 3.0).is_ok());
        assert_eq!(Ewma::new(0.0, 0.0, 0.1, 3.0), Err(EwmaError::Sigma(0.0)));
        assert_eq!(Ewma::new(0.0, -1.0, 0.1, 3.0), Err(EwmaError::Sigma(-1.0)));
        assert_eq!(
            Ewma::new(0.0, 1.0, 0.1, 0.0),
            Err(EwmaError::LimitWidth(0.0))
        );
        assert!(matches!(
            Ewma::new(f64::INFINITY, 1.0, 0.1, 3.0),
            Err(EwmaError::Mean(_))
        ));
        assert!(matches!(
            Ewma::new(0.0, 1.0, 0.1, 3.0).and_then(|e| e.with_warning(0.0)),
            Err(EwmaError::Warning(_))
        ));
        assert_eq!(
            Ewma::for_arl0(0.0, 1.0, 0.1, 1.0),
            Err(EwmaError::Arl0(1.0))
        );
        assert!(matches!(
            Ewma::for_arl0(0.0, 1.0, 0.0, 370.0),
            Err(EwmaError::Lambda(_))
        ));
        assert!(matches!(
            Ewma::for_arl0(0.0, 1.0, 0.005, 370.0),
            Err(EwmaError::ArlLambda { .. })
        ));
        assert!(matches!(
            Ewma::zero_state_arl(0.1, 2.7, f64::NAN, EwmaLimits::Exact),
            Err(EwmaError::Shift(_))
        ));
        let msg = EwmaError::Lambda(1.5).to_string();
        assert!(msg.contains("lambda") && msg.contains("1.5"), "{msg}");
    }

    #[test]
    fn statistic_and_exact_limits_on_a_hand_computed_sequence() {
        // μ0 = 10, σ = 2, λ = 0.5, L = 3: σ_z(i) = 2 sqrt((1 − 0.25^i)/3),
        // so the half-widths are 3, 3.354, 3.437 for i = 1, 2, 3.
        let half = |i: i32| 3.0 * 2.0 * ((1.0 - 0.25_f64.powi(i)) / 3.0).sqrt();
        let mut e = Ewma::new(10.0, 2.0, 0.5, 3.0).expect("valid");
        assert!(close(e.half_width(), 0.0));

        let v = e.update(12.0); // z = 11
        assert_eq!(v.level, Level::Stable);
        assert!(close(v.statistic, 11.0));
        assert!(close(half(1), 3.0));
        assert_eq!(v.threshold, Some(10.0 + half(1)));

        let v = e.update(14.0); // z = 12.5 < 13.354
        assert_eq!(v.level, Level::Stable);
        assert!(close(v.statistic, 12.5));
        assert_eq!(v.threshold, Some(10.0 + half(2)));

        let v = e.update(18.0); // z = 15.25 > 13.437: drift, restart
        assert_eq!(v.level, Level::Drift);
        assert!(close(v.statistic, 15.25));
        assert_eq!(v.threshold, Some(10.0 + half(3)));
        assert_eq!((e.z(), e.observations()), (10.0, 0));

        let v = e.update(6.0); // z = 8, lower limit 7 (i = 1 again)
        assert_eq!(v.level, Level::Stable);
        assert!(close(v.statistic, 8.0));
        assert_eq!(v.threshold, Some(10.0 - half(1)));

        let v = e.update(2.0); // z = 5 < 6.646: a downward drift
        assert_eq!(v.level, Level::Drift);
        assert!(close(v.statistic, 5.0));
        assert_eq!(v.threshold, Some(10.0 - half(2)));
    }

    #[test]
    fn asymptotic_limits_are_constant() {
        let mut e = Ewma::new(10.0, 2.0, 0.5, 3.0)
            .expect("valid")
            .with_limits(EwmaLimits::Asymptotic);
        let steady = 3.0 * 2.0 / 3.0_f64.sqrt();
        assert!(close(e.half_width(), steady));
        // z = 11, 12.5, 13.25: all within 10 ± 3.464 with these limits,
        // while the exact limits flagged 15.25 above.
        for x in [12.0, 14.0, 14.0] {
            let v = e.update(x);
            assert_eq!(v.level, Level::Stable);
            let t = v.threshold.expect("has a threshold");
            assert!((t - (10.0 + steady)).abs() < 1e-12, "{t}");
        }
        assert!(close(e.z(), 13.25));
        assert_eq!(e.update(16.0).level, Level::Drift); // z = 14.625
    }

    #[test]
    fn warning_zone() {
        let mut e = Ewma::new(0.0, 1.0, 1.0, 3.0)
            .and_then(|e| e.with_warning(0.5))
            .expect("valid");
        // λ = 1: z = x, half-width 3 from the first observation.
        assert_eq!(e.update(1.5).level, Level::Stable);
        assert_eq!(e.update(-1.6).level, Level::Warning);
        assert_eq!(e.update(2.9).level, Level::Warning);
        assert_eq!(e.update(3.1).level, Level::Drift);
    }

    #[test]
    fn reset_forgets_the_state() {
        let mut e = Ewma::new(5.0, 1.0, 0.2, 2.86).expect("valid");
        let fresh = e.clone();
        e.update(6.0);
        e.update(4.5);
        assert_ne!(e, fresh);
        e.reset();
        assert_eq!(e, fresh);
    }

    #[test]
    fn restarts_after_a_drift_and_detects_the_next_change() {
        let mut e = Ewma::new(0.0, 1.0, 0.2, 3.0).expect("valid");
        let mut steps = 0;
        while e.update(3.0).level != Level::Drift {
            steps += 1;
            assert!(steps < 100, "no drift for a 3σ shift");
        }
        assert_eq!((e.z(), e.observations()), (0.0, 0));
        for _ in 0..200 {
            assert_eq!(e.update(0.0).level, Level::Stable);
        }
        let mut steps = 0;
        while e.update(-3.0).level != Level::Drift {
            steps += 1;
            assert!(steps < 100, "no drift for a -3σ shift");
        }
    }

    #[test]
    fn non_finite_observations_are_ignored() {
        let mut e = Ewma::new(0.0, 1.0, 0.3, 3.0).expect("valid");
        e.update(0.5);
        let before = e.clone();
        for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let v = e.update(x);
            assert_eq!(v.level, Level::Stable);
            assert!(close(v.statistic, 0.15));
        }
        assert_eq!(e, before);
    }

    #[test]
    fn serde_round_trip_and_validation() {
        let mut e = Ewma::new(3.0, 0.5, 0.1, 2.7)
            .and_then(|e| e.with_warning(0.7))
            .expect("valid")
            .with_limits(EwmaLimits::Asymptotic);
        e.update(3.4);
        e.update(2.9);
        let back = round_trip(&e);
        let json = serde_json::to_string(&e).expect("serializes");
        assert!(json.contains("\"limits\":\"asymptotic\""), "{json}");
        let (mut a, mut b) = (e.clone(), back);
        for x in [3.1, 4.0, 2.2, 3.9] {
            assert_eq!(a.update(x), b.update(x));
        }

        let bad = json.replace("\"lambda\":0.1", "\"lambda\":1.1");
        assert_ne!(bad, json);
        let err = serde_json::from_str::<Ewma>(&bad).expect_err("lambda > 1");
        assert!(err.to_string().contains("lambda"), "{err}");
    }

    #[test]
    fn memory_is_constant_over_a_long_stream() {
        let mut e = Ewma::new(0.0, 1.0, 0.1, 2.7).expect("valid");
        let m = e.memory_bytes();
        assert_eq!(m, std::mem::size_of::<Ewma>());
        for i in 0..100_000 {
            e.update(((i * 7919) % 13) as f64 / 6.0 - 1.0);
            assert_eq!(e.memory_bytes(), m);
        }
    }

    #[test]
    fn arl_reproduces_the_published_table() {
        // Montgomery, Introduction to SQC (6th ed.), Table 9.11, from
        // Lucas & Saccucci (1990): zero-state ARLs, asymptotic limits.
        // (λ, L, ARL at shifts 0, 0.5σ, 1σ, 2σ)
        let table = [
            (0.40, 3.054, [500.0, 71.2, 14.3, 3.5]),
            (0.25, 2.998, [500.0, 48.2, 11.1, 3.6]),
            (0.20, 2.962, [500.0, 41.8, 10.5, 3.7]),
            (0.10, 2.814, [500.0, 31.3, 10.3, 4.4]),
            (0.05, 2.615, [500.0, 28.8, 11.4, 5.2]),
        ];
        for (lambda, l, arls) in table {
            for (shift, published) in [0.0, 0.5, 1.0, 2.0].into_iter().zip(arls) {
                let arl = Ewma::zero_state_arl(lambda, l, shift, EwmaLimits::Asymptotic)
                    .expect("computes");
                // The table is rounded to 3 significant digits (2 below 10).
                let tol = if published < 10.0 {
                    0.05
                } else {
                    0.0051 * published
                };
                assert!(
                    (arl - published).abs() <= tol,
                    "λ = {lambda}, L = {l}, shift {shift}: {arl} vs {published}"
                );
            }
        }
    }

    #[test]
    fn arl_of_the_shewhart_chart() {
        // λ = 1 is the Shewhart chart: ARL = 1/P(|X| > L).
        for limits in [EwmaLimits::Exact, EwmaLimits::Asymptotic] {
            let a0 = Ewma::zero_state_arl(1.0, 3.0, 0.0, limits).expect("computes");
            assert!((a0 - 370.398).abs() < 1e-3, "{a0}");
            let a1 = Ewma::zero_state_arl(1.0, 3.0, 1.0, limits).expect("computes");
            assert!((a1 - 43.895).abs() < 1e-3, "{a1}");
        }
    }

    #[test]
    fn arl_with_exact_limits() {
        // Computed here; exact limits keep ARL0 a little below the
        // asymptotic one and detect a shift present from the start sooner.
        let a0 = Ewma::zero_state_arl(0.1, 2.814, 0.0, EwmaLimits::Exact).expect("computes");
        let a1 = Ewma::zero_state_arl(0.1, 2.814, 1.0, EwmaLimits::Exact).expect("computes");
        assert!((a0 - 486.43).abs() < 0.01, "{a0}");
        assert!((a1 - 8.157).abs() < 0.001, "{a1}");
    }

    #[test]
    fn arl_is_converged_in_the_number_of_nodes() {
        for (lambda, l, limits) in [
            (0.01, 2.5, EwmaLimits::Asymptotic),
            (0.03, 2.6, EwmaLimits::Exact),
            (0.1, 2.7, EwmaLimits::Exact),
            (0.5, 3.0, EwmaLimits::Exact),
        ] {
            let c: f64 = l * (lambda / (2.0_f64 - lambda)).sqrt();
            let r = arl::node_count(lambda, c);
            for shift in [0.0, 1.0] {
                let a = arl::zero_state_with(lambda, l, shift, limits, r).expect("computes");
                let b = arl::zero_state_with(lambda, l, shift, limits, 2 * r).expect("computes");
                assert!(
                    (a - b).abs() / b < 1e-6,
                    "λ = {lambda} {limits:?}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn gauss_legendre_integrates_polynomials_exactly() {
        let (x, w) = arl::gauss_legendre(5);
        // Exact up to degree 9: ∫_{-1}^{1} t^8 dt = 2/9.
        let s: f64 = x.iter().zip(&w).map(|(x, w)| w * x.powi(8)).sum();
        assert!((s - 2.0 / 9.0).abs() < 1e-14, "{s}");
        assert!((w.iter().sum::<f64>() - 2.0).abs() < 1e-14);
    }

    #[test]
    fn limit_width_for_arl0() {
        // λ = 0.10, ARL0 = 500 with asymptotic limits: L = 2.814 (Table 9.11).
        let l = Ewma::limit_width_for_arl0(0.1, 500.0, EwmaLimits::Asymptotic).expect("solves");
        assert!((l - 2.814).abs() < 0.001, "L = {l}");
        // λ = 1, ARL0 = 370.4: the 3σ Shewhart chart.
        let l = Ewma::limit_width_for_arl0(1.0, 370.398, EwmaLimits::Exact).expect("solves");
        assert!((l - 3.0).abs() < 1e-4, "L = {l}");
        // Exact limits need a slightly wider L for the same ARL0.
        let e = Ewma::for_arl0(0.0, 1.0, 0.1, 370.0).expect("solves");
        let asym = Ewma::limit_width_for_arl0(0.1, 370.0, EwmaLimits::Asymptotic).expect("solves");
        assert!(e.l() > asym, "{} vs {asym}", e.l());
        assert_eq!(e.limits(), EwmaLimits::Exact);
        let a = Ewma::zero_state_arl(0.1, e.l(), 0.0, EwmaLimits::Exact).expect("computes");
        assert!(
            (a - 370.0).abs() / 370.0 < 1e-4,
            "ARL0 = {a} for L = {}",
            e.l()
        );
        // Large targets work up to MAX_ARL0, beyond it they are refused.
        let l = Ewma::limit_width_for_arl0(0.1, MAX_ARL0, EwmaLimits::Exact).expect("solves");
        let a = Ewma::zero_state_arl(0.1, l, 0.0, EwmaLimits::Exact).expect("computes");
        assert!(
            (a - MAX_ARL0).abs() / MAX_ARL0 < 1e-3,
            "ARL0 = {a} for L = {l}"
        );
        assert_eq!(
            Ewma::limit_width_for_arl0(0.1, 1e10, EwmaLimits::Exact),
            Err(EwmaError::Arl0(1e10))
        );
    }
}
