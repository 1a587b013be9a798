//! Shewhart individuals chart with the Western Electric run rules.
//!
//! **What.** Each observation `x` (in practice a window aggregate: a mean
//! error, a mean score) is standardised against the in-control process,
//! `z = (x − μ0) / σ`, and four rules are checked on the latest points:
//!
//! | rule | pattern (the newest point takes part)                         |
//! |------|---------------------------------------------------------------|
//! | 1    | one point beyond 3σ (`|z| > 3`)                                |
//! | 2    | two of the last three beyond 2σ, on the same side (`z > 2` or `z < −2`) |
//! | 3    | four of the last five beyond 1σ, on the same side             |
//! | 4    | the last eight on the same side of μ0 (`z > 0`, or `z < 0`)    |
//!
//! **Why.** A 3σ chart alone only reacts to large shifts; the run rules add
//! sensitivity to small sustained shifts (about 1σ) at a modest cost in false
//! alarms, without any tuning beyond μ0 and σ, which makes the chart a good
//! first detector on a window aggregate whose in-control behaviour is known
//! (from a validation run, for example).
//!
//! **Reference.** Western Electric Company, *Statistical Quality Control
//! Handbook* (1956), §1.B "Tests for unnatural patterns"; Montgomery,
//! *Introduction to Statistical Quality Control*, §5.3.6. The handbook treats
//! every rule as a signal of an out-of-control process, so by default every
//! enabled rule declares a [`Level::Drift`]; rules 2–4 can be demoted to
//! [`Level::Warning`] (their false-alarm rates add up: with all four rules the
//! in-control run length drops from about 370 to about 92 points).
//!
//! Conventions: "beyond" is strict (`|z| > k`); a point exactly on μ0 is on
//! neither side and breaks a rule-4 run; a pattern must include the newest
//! point, so that a pattern is reported once, at the point that completes it,
//! and is not reported again while it slides out of the window (this matters
//! for rules configured as warnings, which do not restart the chart). Points
//! on opposite sides never combine. At the start of a stream (or after a
//! restart) fewer points than a rule's span can already hold its pattern:
//! two points beyond 2σ are two of three whatever the third. After a drift the chart forgets its
//! history (see [`Detector::update`]). Non-finite observations are ignored.
//!
//! Memory: the z-scores of the last eight points, inline (no heap).

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{Detector, Level, Verdict};

/// How many points the longest rule (rule 4) looks at.
const HISTORY: usize = 8;

/// What a run rule (2, 3 or 4) does when its pattern appears.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleAction {
    /// The rule is not checked.
    Off,
    /// The pattern is reported as [`Level::Warning`]; the chart keeps its
    /// history.
    Warning,
    /// The pattern is reported as [`Level::Drift`]; the chart restarts.
    Drift,
}

impl RuleAction {
    fn level(self) -> Option<Level> {
        match self {
            RuleAction::Off => None,
            RuleAction::Warning => Some(Level::Warning),
            RuleAction::Drift => Some(Level::Drift),
        }
    }
}

/// Which Western Electric rules are checked, and what the run rules declare.
///
/// The default is the handbook's: all four rules, each declaring a drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WesternElectricRules {
    /// Rule 1, one point beyond 3σ: always a drift when enabled.
    pub rule1: bool,
    /// Rule 2, two of three beyond 2σ on the same side.
    pub rule2: RuleAction,
    /// Rule 3, four of five beyond 1σ on the same side.
    pub rule3: RuleAction,
    /// Rule 4, eight in a row on the same side of μ0.
    pub rule4: RuleAction,
}

impl Default for WesternElectricRules {
    fn default() -> Self {
        WesternElectricRules {
            rule1: true,
            rule2: RuleAction::Drift,
            rule3: RuleAction::Drift,
            rule4: RuleAction::Drift,
        }
    }
}

impl WesternElectricRules {
    /// Only rule 1: the classic 3σ chart.
    pub fn three_sigma_only() -> Self {
        WesternElectricRules {
            rule1: true,
            rule2: RuleAction::Off,
            rule3: RuleAction::Off,
            rule4: RuleAction::Off,
        }
    }

    fn any_enabled(&self) -> bool {
        self.rule1
            || [self.rule2, self.rule3, self.rule4]
                .iter()
                .any(|a| *a != RuleAction::Off)
    }
}

/// One of the four Western Electric rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeRule {
    /// One point beyond 3σ.
    Rule1,
    /// Two of three beyond 2σ, same side.
    Rule2,
    /// Four of five beyond 1σ, same side.
    Rule3,
    /// Eight in a row on the same side of μ0.
    Rule4,
}

/// Invalid parameters for a [`Shewhart`] chart.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ShewhartError {
    #[error("the in-control mean must be finite, got {0}")]
    InvalidMean(f64),
    #[error("the in-control standard deviation must be finite and positive, got {0}")]
    InvalidSigma(f64),
    #[error("no Western Electric rule is enabled")]
    NoRuleEnabled,
}

/// The result of one observation: the verdict, and the rule behind it (the
/// most severe one that fired, the lowest-numbered among equals).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ShewhartOutcome {
    pub verdict: Verdict,
    pub rule: Option<WeRule>,
}

/// A Shewhart individuals chart with the Western Electric rules, for a
/// process whose in-control mean μ0 and standard deviation σ are known.
///
/// The verdict's statistic is the newest point's signed z-score, its
/// threshold 3 (rule 1 fires when `|statistic| > threshold`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shewhart {
    mean: f64,
    sigma: f64,
    rules: WesternElectricRules,
    /// z-scores of the last points, newest first; only `len` are valid.
    recent: [f64; HISTORY],
    len: u8,
}

impl Shewhart {
    /// A chart for in-control mean `mean` (μ0) and standard deviation
    /// `sigma` (σ), checking `rules`.
    pub fn new(mean: f64, sigma: f64, rules: WesternElectricRules) -> Result<Self, ShewhartError> {
        if !mean.is_finite() {
            return Err(ShewhartError::InvalidMean(mean));
        }
        if !(sigma.is_finite() && sigma > 0.0) {
            return Err(ShewhartError::InvalidSigma(sigma));
        }
        if !rules.any_enabled() {
            return Err(ShewhartError::NoRuleEnabled);
        }
        Ok(Shewhart {
            mean,
            sigma,
            rules,
            recent: [0.0; HISTORY],
            len: 0,
        })
    }

    /// The in-control mean μ0.
    pub fn mean(&self) -> f64 {
        self.mean
    }

    /// The in-control standard deviation σ.
    pub fn sigma(&self) -> f64 {
        self.sigma
    }

    /// The rules checked.
    pub fn rules(&self) -> WesternElectricRules {
        self.rules
    }

    /// z-scores of the points kept (at most eight), newest first.
    pub fn history(&self) -> &[f64] {
        &self.recent[..usize::from(self.len).min(HISTORY)]
    }

    /// Feeds one observation and says which rule, if any, fired.
    pub fn step(&mut self, x: f64) -> ShewhartOutcome {
        const LIMIT: f64 = 3.0;
        if !x.is_finite() {
            return ShewhartOutcome {
                verdict: Verdict::stable(f64::NAN, Some(LIMIT)),
                rule: None,
            };
        }
        let z = (x - self.mean) / self.sigma;
        self.recent.copy_within(0..HISTORY - 1, 1);
        self.recent[0] = z;
        self.len = self.len.saturating_add(1).min(HISTORY as u8);

        let mut fired: Option<(Level, WeRule)> = None;
        let mut consider = |level: Option<Level>, rule: WeRule, hit: bool| {
            if let (Some(level), true) = (level, hit) {
                // Drift beats Warning; among equals the first (lowest rule) stays.
                if fired.is_none_or(|(l, _)| l == Level::Warning && level == Level::Drift) {
                    fired = Some((level, rule));
                }
            }
        };
        let history = self.history();
        consider(
            self.rules.rule1.then_some(Level::Drift),
            WeRule::Rule1,
            z.abs() > LIMIT,
        );
        consider(
            self.rules.rule2.level(),
            WeRule::Rule2,
            k_of_last_m_beyond(history, 2, 3, 2.0),
        );
        consider(
            self.rules.rule3.level(),
            WeRule::Rule3,
            k_of_last_m_beyond(history, 4, 5, 1.0),
        );
        consider(
            self.rules.rule4.level(),
            WeRule::Rule4,
            k_of_last_m_beyond(history, 8, 8, 0.0),
        );

        let level = fired.map_or(Level::Stable, |(l, _)| l);
        if level == Level::Drift {
            self.len = 0;
        }
        ShewhartOutcome {
            verdict: Verdict {
                level,
                statistic: z,
                threshold: Some(LIMIT),
            },
            rule: fired.map(|(_, r)| r),
        }
    }
}

/// Whether at least `k` of the last `m` z-scores (newest first) lie beyond
/// `limit` on the side of the newest one, the newest among them. Fewer than
/// `m` points can already hold the pattern (two beyond 2σ in the first two).
fn k_of_last_m_beyond(history: &[f64], k: usize, m: usize, limit: f64) -> bool {
    let window = &history[..m.min(history.len())];
    let Some(&newest) = window.first() else {
        return false;
    };
    let side = if newest > limit {
        1.0
    } else if newest < -limit {
        -1.0
    } else {
        return false;
    };
    window.iter().filter(|z| side * **z > limit).count() >= k
}

impl Detector for Shewhart {
    /// Feeds one observation; after a drift the history is cleared, so a
    /// new pattern must build up from the next point on.
    fn update(&mut self, x: f64) -> Verdict {
        self.step(x).verdict
    }

    fn reset(&mut self) {
        self.recent = [0.0; HISTORY];
        self.len = 0;
    }

    fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(rules: WesternElectricRules) -> Shewhart {
        // μ0 = 10, σ = 2: a z-score z is the value 10 + 2z.
        Shewhart::new(10.0, 2.0, rules).unwrap()
    }

    fn only(rule: WeRule, action: RuleAction) -> WesternElectricRules {
        let mut r = WesternElectricRules {
            rule1: false,
            rule2: RuleAction::Off,
            rule3: RuleAction::Off,
            rule4: RuleAction::Off,
        };
        match rule {
            WeRule::Rule1 => r.rule1 = true,
            WeRule::Rule2 => r.rule2 = action,
            WeRule::Rule3 => r.rule3 = action,
            WeRule::Rule4 => r.rule4 = action,
        }
        r
    }

    /// Feeds z-scores, returns the levels and rules.
    fn feed(c: &mut Shewhart, zs: &[f64]) -> Vec<(Level, Option<WeRule>)> {
        zs.iter()
            .map(|z| {
                let o = c.step(10.0 + 2.0 * z);
                (o.verdict.level, o.rule)
            })
            .collect()
    }

    fn levels(c: &mut Shewhart, zs: &[f64]) -> Vec<Level> {
        feed(c, zs).into_iter().map(|(l, _)| l).collect()
    }

    use Level::{Drift as D, Stable as S, Warning as W};

    #[test]
    fn invalid_parameters_are_errors() {
        let r = WesternElectricRules::default();
        assert!(matches!(
            Shewhart::new(f64::NAN, 1.0, r),
            Err(ShewhartError::InvalidMean(_))
        ));
        assert_eq!(
            Shewhart::new(0.0, 0.0, r),
            Err(ShewhartError::InvalidSigma(0.0))
        );
        assert_eq!(
            Shewhart::new(0.0, -1.0, r),
            Err(ShewhartError::InvalidSigma(-1.0))
        );
        assert!(matches!(
            Shewhart::new(0.0, f64::INFINITY, r),
            Err(ShewhartError::InvalidSigma(_))
        ));
        let none = WesternElectricRules {
            rule1: false,
            rule2: RuleAction::Off,
            rule3: RuleAction::Off,
            rule4: RuleAction::Off,
        };
        assert_eq!(
            Shewhart::new(0.0, 1.0, none),
            Err(ShewhartError::NoRuleEnabled)
        );
    }

    #[test]
    fn default_rules_are_the_handbooks() {
        let r = WesternElectricRules::default();
        assert!(r.rule1);
        assert_eq!(
            (r.rule2, r.rule3, r.rule4),
            (RuleAction::Drift, RuleAction::Drift, RuleAction::Drift)
        );
    }

    #[test]
    fn rule1_one_point_beyond_three_sigma() {
        let mut c = chart(only(WeRule::Rule1, RuleAction::Drift));
        assert_eq!(levels(&mut c, &[0.0, 2.9, -2.99, 3.0]), [S, S, S, S]);
        assert_eq!(feed(&mut c, &[3.01]), [(D, Some(WeRule::Rule1))]);
        assert_eq!(feed(&mut c, &[-3.5]), [(D, Some(WeRule::Rule1))]);
        // The verdict carries the z-score and the 3σ limit.
        let v = c.update(10.0 + 2.0 * 1.5);
        assert_eq!(v.statistic, 1.5);
        assert_eq!(v.threshold, Some(3.0));
    }

    #[test]
    fn rule2_two_of_three_beyond_two_sigma_same_side() {
        let mut c = chart(only(WeRule::Rule2, RuleAction::Drift));
        // Two consecutive.
        assert_eq!(levels(&mut c, &[2.5, 2.1]), [S, D]);
        // Two of three, with one inside between.
        assert_eq!(levels(&mut c, &[2.5, 0.3, 2.2]), [S, S, D]);
        // Below too.
        assert_eq!(levels(&mut c, &[-2.5, 1.0, -2.2]), [S, S, D]);
        // Two of four is not two of three.
        assert_eq!(levels(&mut c, &[2.5, 0.0, 0.0, 2.5]), [S, S, S, S]);
        // Exactly 2σ is not beyond.
        c.reset();
        assert_eq!(levels(&mut c, &[2.0, 2.5, 2.0]), [S, S, S]);
    }

    #[test]
    fn rule2_opposite_sides_do_not_combine() {
        let mut c = chart(only(WeRule::Rule2, RuleAction::Drift));
        assert_eq!(levels(&mut c, &[2.5, -2.5, 0.0, 2.5, -2.5, 0.0]), [S; 6]);
        // Two of three on one side do count, whatever lies between.
        assert_eq!(levels(&mut c, &[2.5, -2.5, 2.5]), [S, S, D]);
    }

    #[test]
    fn rule3_four_of_five_beyond_one_sigma_same_side() {
        let mut c = chart(only(WeRule::Rule3, RuleAction::Drift));
        assert_eq!(levels(&mut c, &[1.5, 1.2, 0.5, 1.1, 1.9]), [S, S, S, S, D]);
        assert_eq!(
            levels(&mut c, &[-1.5, -1.2, -0.2, -1.1, -1.9]),
            [S, S, S, S, D]
        );
        // Three of five only.
        c.reset();
        assert_eq!(levels(&mut c, &[1.5, 0.0, 1.2, 0.0, 1.1]), [S; 5]);
    }

    #[test]
    fn rule3_opposite_sides_do_not_combine() {
        let mut c = chart(only(WeRule::Rule3, RuleAction::Drift));
        assert_eq!(
            levels(&mut c, &[1.5, -1.5, 1.5, -1.5, 1.5, 1.5, -1.5]),
            [S; 7]
        );
        // Four beyond 1σ in absolute value, two on each side.
        c.reset();
        assert_eq!(levels(&mut c, &[1.5, 1.5, -1.5, -1.5, 1.5]), [S; 5]);
    }

    #[test]
    fn rule4_eight_on_the_same_side() {
        let mut c = chart(only(WeRule::Rule4, RuleAction::Drift));
        let above = [0.1, 0.5, 0.2, 0.9, 0.3, 0.05, 0.7, 0.4];
        let mut expected = [S; 8];
        expected[7] = D;
        assert_eq!(levels(&mut c, &above), expected);
        let below = above.map(|z| -z);
        assert_eq!(levels(&mut c, &below), expected);
        // Seven only.
        c.reset();
        assert_eq!(levels(&mut c, &above[..7]), [S; 7]);
    }

    #[test]
    fn rule4_a_point_on_the_other_side_or_on_the_centre_breaks_the_run() {
        let mut c = chart(only(WeRule::Rule4, RuleAction::Drift));
        let zs = [0.5, 0.5, 0.5, 0.5, -0.1, 0.5, 0.5, 0.5, 0.5];
        assert_eq!(levels(&mut c, &zs), [S; 9]);
        c.reset();
        let zs = [0.5, 0.5, 0.5, 0.0, 0.5, 0.5, 0.5, 0.5, 0.5];
        assert_eq!(levels(&mut c, &zs), [S; 9]);
        // Four below then four above: never eight on one side.
        c.reset();
        let zs = [-0.5, -0.5, -0.5, -0.5, 0.5, 0.5, 0.5, 0.5];
        assert_eq!(levels(&mut c, &zs), [S; 8]);
    }

    #[test]
    fn run_rules_can_be_warnings_that_keep_the_history() {
        let rules = WesternElectricRules {
            rule1: true,
            rule2: RuleAction::Warning,
            rule3: RuleAction::Off,
            rule4: RuleAction::Off,
        };
        let mut c = chart(rules);
        assert_eq!(
            feed(&mut c, &[2.5, 2.5]),
            [(S, None), (W, Some(WeRule::Rule2))]
        );
        assert_eq!(c.history().len(), 2);
        // The pattern is not reported again as it slides out.
        assert_eq!(levels(&mut c, &[0.0, 0.0]), [S, S]);
        // Rule 1 still declares a drift, and wins over a warning.
        assert_eq!(
            feed(&mut c, &[2.5, 3.5]),
            [(S, None), (D, Some(WeRule::Rule1))]
        );
    }

    #[test]
    fn the_most_severe_rule_wins() {
        let rules = WesternElectricRules {
            rule1: true,
            rule2: RuleAction::Warning,
            rule3: RuleAction::Drift,
            rule4: RuleAction::Off,
        };
        let mut c = chart(rules);
        // 1.5, 0, 1.5, 2.5, 2.5: rule 2 (warning) and rule 3 (drift).
        let out = feed(&mut c, &[1.5, 0.0, 1.5, 2.5, 2.5]);
        assert_eq!(out[3], (S, None));
        assert_eq!(out[4], (D, Some(WeRule::Rule3)));
    }

    #[test]
    fn a_drift_restarts_the_chart() {
        let mut c = chart(WesternElectricRules::default());
        assert_eq!(levels(&mut c, &[2.5, 2.5]), [S, D]);
        assert!(c.history().is_empty());
        // The earlier 2.5s are forgotten: one more is not a pattern.
        assert_eq!(levels(&mut c, &[2.5]), [S]);
    }

    #[test]
    fn in_control_noise_is_stable_under_default_rules() {
        let mut c = chart(WesternElectricRules::default());
        let zs = [
            0.3, -0.8, 1.2, -0.1, 0.6, -1.4, 0.2, 0.9, -0.5, 1.1, -0.3, 0.4,
        ];
        assert_eq!(levels(&mut c, &zs), [S; 12]);
    }

    #[test]
    fn memory_is_the_last_eight_points() {
        let mut c = chart(WesternElectricRules::default());
        let before = c.memory_bytes();
        feed(&mut c, &[0.1, -0.1].repeat(20));
        assert_eq!(c.history().len(), 8);
        assert_eq!(c.memory_bytes(), before);
        assert!(before <= 128, "{before}");
    }

    #[test]
    fn non_finite_observations_are_ignored() {
        let mut c = chart(WesternElectricRules::default());
        feed(&mut c, &[0.5; 7]);
        let v = c.update(f64::NAN);
        assert_eq!(v.level, S);
        assert_eq!(c.history().len(), 7);
        assert_eq!(levels(&mut c, &[0.5]), [D]);
    }

    #[test]
    fn state_round_trips_through_serde() {
        let mut c = chart(WesternElectricRules::default());
        feed(&mut c, &[0.5, 1.5, -0.25]);
        let json = serde_json::to_string(&c).unwrap();
        let back: Shewhart = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
    }
}
