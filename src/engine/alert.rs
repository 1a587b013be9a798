//! Alert logic between a detector's verdicts and a request: N-of-M
//! confirmation, hysteresis before a rule counts as recovered, cooldown,
//! and composite rules over several rules.

use serde::Serialize;

use crate::detect::Level;

/// Longest confirmation history (M of N-of-M).
pub const MAX_CONFIRM_WINDOWS: u32 = 64;

/// How a rule turns verdicts into an alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlertSpec {
    /// Drift verdicts needed among the last `of` windows (`n <= of`).
    pub confirm: u32,
    pub of: u32,
    /// Windows without a drift verdict before an alarm counts as recovered.
    /// `None`: no hysteresis, so a rule that stays in drift may fire again
    /// once confirmed anew (after its cooldown); `Some(k)`: it fires once
    /// per episode, and the episode ends after `k` calm windows.
    pub recover_after: Option<u32>,
    /// Event-time quiet period after the rule fires.
    pub cooldown_ms: i64,
}

impl AlertSpec {
    /// `confirm` consecutive drift windows, no hysteresis, no cooldown.
    pub fn consecutive(confirm: u32) -> Self {
        AlertSpec {
            confirm,
            of: confirm,
            recover_after: None,
            cooldown_ms: 0,
        }
    }
}

/// A rule's alarm state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AlertState {
    /// Drift verdicts of the last windows, newest in bit 0.
    pub recent: u64,
    /// Confirmed and not yet recovered.
    pub active: bool,
    /// Windows without drift since the alarm's last drift verdict.
    pub calm: u32,
    /// Event time before which the rule may not fire again.
    pub cooldown_until: Option<i64>,
    /// The rule fired in this episode (hysteresis blocks a second request).
    pub fired_in_episode: bool,
}

impl AlertState {
    /// Drift verdicts among the last `spec.of` windows.
    pub fn drift_count(&self, spec: &AlertSpec) -> u32 {
        (self.recent & mask(spec.of)).count_ones()
    }

    /// Records the verdict of a window ending at `window_end`; true when the
    /// rule is ready to fire (confirmed, not cooling down, and not already
    /// fired in this episode when there is hysteresis).
    pub fn observe(&mut self, spec: &AlertSpec, level: Level, window_end: i64) -> bool {
        let drift = level == Level::Drift;
        self.recent = ((self.recent << 1) | u64::from(drift)) & mask(spec.of);
        let confirmed = drift && self.drift_count(spec) >= spec.confirm;
        if drift {
            self.calm = 0;
        } else if self.active {
            self.calm = self.calm.saturating_add(1);
            if self.calm >= spec.recover_after.unwrap_or(1).max(1) {
                self.active = false;
                self.fired_in_episode = false;
            }
        }
        if confirmed {
            self.active = true;
        }
        let cooled = self.cooldown_until.is_none_or(|until| window_end >= until);
        let blocked = spec.recover_after.is_some() && self.fired_in_episode;
        confirmed && cooled && !blocked
    }

    /// The rule fired at `window_end`: the confirmation starts over and the
    /// cooldown runs.
    pub fn fired(&mut self, spec: &AlertSpec, window_end: i64) {
        self.recent = 0;
        self.fired_in_episode = true;
        self.cooldown_until = Some(window_end.saturating_add(spec.cooldown_ms));
    }
}

fn mask(of: u32) -> u64 {
    if of >= 64 {
        u64::MAX
    } else {
        (1u64 << of) - 1
    }
}

/// How a composite rule combines its members' alarms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Combine {
    /// At least one member in alarm.
    Any,
    /// Every member in alarm at once.
    All,
}

impl Combine {
    pub fn as_str(self) -> &'static str {
        match self {
            Combine::Any => "any",
            Combine::All => "all",
        }
    }

    /// Members in alarm needed, out of `members`.
    pub fn required(self, members: usize) -> usize {
        match self {
            Combine::Any => 1,
            Combine::All => members,
        }
    }
}

/// A composite rule's state: whether it fired while its condition has
/// held, and its cooldown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CompositeState {
    /// Id of the composite definition this state belongs to.
    pub id: u64,
    pub fired_while_holding: bool,
    pub cooldown_until: Option<i64>,
}

impl CompositeState {
    /// Records whether the condition holds at event time `at`; true when it
    /// holds, has not fired since it began to hold, and the cooldown is
    /// over. A composite that could not fire (a request already in flight)
    /// stays ready, as a rule does.
    pub fn observe(&mut self, holds: bool, at: i64) -> bool {
        if !holds {
            self.fired_while_holding = false;
            return false;
        }
        !self.fired_while_holding && self.cooldown_until.is_none_or(|until| at >= until)
    }

    pub fn fired(&mut self, cooldown_ms: i64, at: i64) {
        self.fired_while_holding = true;
        self.cooldown_until = Some(at.saturating_add(cooldown_ms));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Level::{Drift, Stable, Warning};

    fn run(spec: &AlertSpec, levels: &[Level]) -> Vec<usize> {
        let mut state = AlertState::default();
        let mut fired = Vec::new();
        for (i, level) in levels.iter().enumerate() {
            if state.observe(spec, *level, i as i64) {
                state.fired(spec, i as i64);
                fired.push(i);
            }
        }
        fired
    }

    #[test]
    fn n_of_m_needs_n_drifts_within_the_last_m_windows() {
        let spec = AlertSpec {
            confirm: 3,
            of: 5,
            ..AlertSpec::consecutive(3)
        };
        // Drifts at 0, 2, 4: three within five windows -> fires at 4.
        assert_eq!(run(&spec, &[Drift, Stable, Drift, Warning, Drift]), vec![4]);
        // Drifts at 0, 3, 6: never three within five.
        assert_eq!(
            run(
                &spec,
                &[Drift, Stable, Stable, Drift, Stable, Stable, Drift]
            ),
            Vec::<usize>::new()
        );
    }

    #[test]
    fn without_hysteresis_a_persistent_drift_fires_again_once_reconfirmed() {
        let spec = AlertSpec::consecutive(2);
        assert_eq!(run(&spec, &[Drift; 6]), vec![1, 3, 5]);
    }

    #[test]
    fn hysteresis_fires_once_per_episode_until_recovered() {
        let spec = AlertSpec {
            recover_after: Some(2),
            ..AlertSpec::consecutive(1)
        };
        // One calm window is not a recovery; two are.
        let levels = [Drift, Drift, Stable, Drift, Stable, Stable, Drift];
        assert_eq!(run(&spec, &levels), vec![0, 6]);
    }

    #[test]
    fn cooldown_defers_firing_in_event_time() {
        let spec = AlertSpec {
            cooldown_ms: 3,
            ..AlertSpec::consecutive(1)
        };
        assert_eq!(run(&spec, &[Drift; 7]), vec![0, 3, 6]);
    }

    #[test]
    fn composite_fires_once_while_its_condition_holds() {
        let mut c = CompositeState::default();
        let mut fired = Vec::new();
        for (i, holds) in [false, true, true, false, true, true].iter().enumerate() {
            let at = i as i64;
            // The first chance (at 1) is not taken: a request is in flight.
            if c.observe(*holds, at) && at != 1 {
                c.fired(0, at);
                fired.push(at);
            }
        }
        assert_eq!(fired, vec![2, 4]);
    }
}
