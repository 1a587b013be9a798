//! Compiled policies: which rules apply to which models. Built from the
//! configuration by [`crate::config`], used read-only by the engine.

use std::sync::{Arc, OnceLock};

use globset::{Glob, GlobMatcher};

pub use super::alert::{AlertSpec, Combine};
pub use super::detector::DetectorSpec;
use super::snapshot::Fingerprints;
use crate::model::Action;

/// How samples are grouped before a detector looks at them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowSpec {
    /// Every `size` samples form one window (tumbling by count).
    Count { size: usize },
    /// Consecutive, non-overlapping event-time windows of `size_ms`,
    /// aligned to the epoch.
    Tumbling { size_ms: i64 },
    /// Event-time windows of `size_ms` starting every `slide_ms`
    /// (`slide_ms` < `size_ms`), aligned to the epoch.
    Sliding { size_ms: i64, slide_ms: i64 },
}

/// How a window's samples are summarised into one number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    Mean,
    /// 95th percentile (nearest rank).
    P95,
    Max,
    Min,
    Sum,
    /// Number of samples in the window.
    Count,
    /// Share of samples that are non-zero: the error rate of a 0/1 stream
    /// such as `inference_error`.
    Rate,
}

impl Aggregate {
    pub fn as_str(self) -> &'static str {
        match self {
            Aggregate::Mean => "mean",
            Aggregate::P95 => "p95",
            Aggregate::Max => "max",
            Aggregate::Min => "min",
            Aggregate::Sum => "sum",
            Aggregate::Count => "count",
            Aggregate::Rate => "rate",
        }
    }
}

/// One rule of a policy: a metric, windowed and aggregated, judged by a
/// detector, turned into an alarm by the alert logic.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSpec {
    pub name: String,
    pub metric: String,
    pub window: WindowSpec,
    pub aggregate: Aggregate,
    pub detector: DetectorSpec,
    pub alert: AlertSpec,
    /// What the rule asks for when it fires; `None`: the rule only feeds
    /// composite rules.
    pub action: Option<Action>,
}

/// A rule over other rules of the same policy: fires when any (or all) of
/// its members are in alarm at once, for example so that a latency spike
/// alone does not cause a full retrain.
#[derive(Debug, Clone, PartialEq)]
pub struct CompositeSpec {
    pub name: String,
    pub combine: Combine,
    /// Indices of the member rules in the policy's rules.
    pub members: Vec<usize>,
    pub cooldown_ms: i64,
    pub action: Action,
}

/// A rule on the absence of telemetry: the model is silent once its
/// partition's watermark passes its last event plus `after_ms`. Silence is
/// judged by the watermark, so it needs no event of the model itself.
#[derive(Debug, Clone, PartialEq)]
pub struct SilenceSpec {
    pub name: String,
    pub after_ms: i64,
    /// Event-time quiet period after the rule fires.
    pub cooldown_ms: i64,
    /// What the rule asks for; `None`: visible only (`/models`, logs and
    /// the silent-models gauge).
    pub action: Option<Action>,
}

/// A set of rules for the models whose lineage matches a glob.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The glob on `project/name`, as written in the configuration
    /// (shared: every model governed by the policy names it).
    pub pattern: Arc<str>,
    matcher: GlobMatcher,
    pub rules: Vec<RuleSpec>,
    pub composites: Vec<CompositeSpec>,
    /// Rules on silence (no telemetry for a while).
    pub silences: Vec<SilenceSpec>,
    /// Event time after which an unresolved request no longer blocks new ones.
    pub request_timeout_ms: i64,
    /// Event time after a FAILED request before a new request may fire.
    pub failed_backoff_ms: i64,
    /// Computed on first use (snapshots need them for every model).
    fingerprints: OnceLock<Fingerprints>,
}

impl Policy {
    /// Builds a policy; fails if `pattern` is not a valid glob.
    pub fn new(
        pattern: &str,
        rules: Vec<RuleSpec>,
        request_timeout_ms: i64,
    ) -> Result<Self, globset::Error> {
        let matcher = Glob::new(pattern)?.compile_matcher();
        Ok(Policy {
            pattern: Arc::from(pattern),
            matcher,
            rules,
            composites: Vec::new(),
            silences: Vec::new(),
            request_timeout_ms,
            failed_backoff_ms: 0,
            fingerprints: OnceLock::new(),
        })
    }

    /// Adds composite rules over this policy's rules.
    pub fn with_composites(mut self, composites: Vec<CompositeSpec>) -> Self {
        self.composites = composites;
        self.fingerprints = OnceLock::new();
        self
    }

    /// Adds rules on silence.
    pub fn with_silences(mut self, silences: Vec<SilenceSpec>) -> Self {
        self.silences = silences;
        self.fingerprints = OnceLock::new();
        self
    }

    /// Sets the back-off after a FAILED request.
    pub fn with_failed_backoff(mut self, failed_backoff_ms: i64) -> Self {
        self.failed_backoff_ms = failed_backoff_ms;
        self
    }

    /// The fingerprints of the rules and composites, which decide whether
    /// a snapshot's rule state still applies.
    pub fn fingerprints(&self) -> &Fingerprints {
        self.fingerprints.get_or_init(|| Fingerprints::of(self))
    }

    /// The member rules of `composite`, one of this policy's composites.
    pub fn members<'a>(
        &'a self,
        composite: &'a CompositeSpec,
    ) -> impl Iterator<Item = &'a RuleSpec> + 'a {
        composite.members.iter().filter_map(|m| self.rules.get(*m))
    }

    pub fn matches(&self, lineage: &str) -> bool {
        self.matcher.is_match(lineage)
    }

    /// Higher is more specific: a pattern without wildcards beats any glob,
    /// then the one with more literal characters wins.
    pub fn specificity(&self) -> (bool, usize) {
        let wild = |c: char| matches!(c, '*' | '?' | '[' | ']' | '{' | '}');
        let exact = !self.pattern.chars().any(wild);
        let literal = self.pattern.chars().filter(|c| !wild(*c)).count();
        (exact, literal)
    }
}

/// Generations of policy sets: each set built gets its own, so a model
/// can remember which policy of which set governs it.
static NEXT_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// All policies, ordered most specific first.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    policies: Vec<Policy>,
    /// Unique to this set (its clones share it); 0 for the empty default.
    generation: u64,
}

impl PolicySet {
    /// Orders `policies` by specificity; ties keep their configuration order.
    pub fn new(mut policies: Vec<Policy>) -> Self {
        policies.sort_by_key(|p| std::cmp::Reverse(p.specificity()));
        PolicySet {
            policies,
            generation: NEXT_GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Identifies this set of policies among all built in the process.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The index of the policy [`PolicySet::for_lineage`] finds.
    pub fn index_for(&self, lineage: &str) -> Option<usize> {
        self.policies.iter().position(|p| p.matches(lineage))
    }

    pub fn get(&self, index: usize) -> Option<&Policy> {
        self.policies.get(index)
    }

    /// The most specific policy matching `lineage` (`project/name`), if any.
    /// A policy with `match = "*"` acts as the default.
    pub fn for_lineage(&self, lineage: &str) -> Option<&Policy> {
        self.policies.iter().find(|p| p.matches(lineage))
    }

    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(pattern: &str) -> Policy {
        Policy::new(pattern, Vec::new(), 0).expect("valid glob")
    }

    #[test]
    fn most_specific_policy_wins_and_star_is_the_default() {
        let set = PolicySet::new(vec![
            policy("*"),
            policy("fraud/*"),
            policy("fraud/scorer"),
            policy("fraud/score*"),
        ]);
        assert_eq!(
            set.for_lineage("fraud/scorer").map(|p| &*p.pattern),
            Some("fraud/scorer")
        );
        assert_eq!(
            set.for_lineage("fraud/scorer2").map(|p| &*p.pattern),
            Some("fraud/score*")
        );
        assert_eq!(
            set.for_lineage("fraud/other").map(|p| &*p.pattern),
            Some("fraud/*")
        );
        assert_eq!(set.for_lineage("ads/ctr").map(|p| &*p.pattern), Some("*"));
    }

    #[test]
    fn without_a_default_unmatched_models_have_no_policy() {
        let set = PolicySet::new(vec![policy("fraud/*")]);
        assert!(set.for_lineage("ads/ctr").is_none());
    }
}
