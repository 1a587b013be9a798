//! Where the shell's work stands: one phase for the whole shell and one
//! per assigned partition, each with its transitions in one place.
//!
//! The consumer loop, the rebalance callbacks and the commit all move the
//! shell between these phases; none of them sets a flag of its own. A
//! transition the table does not allow is a bug: the shell then fails
//! rather than commit work it can no longer vouch for.

/// The shell's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    /// Nothing uncommitted is in a transaction (always so at-least-once):
    /// records are applied; exactly-once, the first output opens one.
    #[default]
    Idle,
    /// Exactly-once: a transaction is open and holds every output since
    /// the last commit.
    InTransaction,
    /// The open transaction was aborted: the records it held are read
    /// again, so none is applied until every partition is restored from
    /// the changelog and sought back to its committed offset.
    Rewinding,
    /// Processed work can no longer be made durable (a failed delivery, a
    /// fenced producer, a panic under the lock): nothing more is applied or
    /// committed, and the pipeline exits non-zero.
    Failed,
}

/// What happens to the shell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// A transaction is opened (exactly-once).
    Begin,
    /// The open transaction committed (or, at-least-once, offsets stored).
    Commit,
    /// The open transaction was aborted.
    Abort,
    /// Every partition was handed back for restore and rewound.
    Rewound,
    /// Work can no longer be made durable.
    Fail,
}

impl Phase {
    /// The phase after `transition`, or `None` when the transition is not
    /// allowed from this phase.
    pub fn after(self, transition: Transition) -> Option<Phase> {
        use Phase::*;
        use Transition::*;
        match (self, transition) {
            (_, Fail) => Some(Failed),
            (Failed, _) => Some(Failed),
            (Idle, Begin) => Some(InTransaction),
            (Idle | InTransaction, Commit) => Some(Idle),
            (InTransaction, Abort) => Some(Rewinding),
            (Rewinding, Rewound) => Some(Idle),
            (InTransaction, Begin)
            | (Rewinding, Begin | Commit | Abort)
            | (Idle, Abort | Rewound)
            | (InTransaction, Rewound) => None,
        }
    }

    /// Records may be applied: their outputs can still become durable.
    pub fn applies_records(self) -> bool {
        matches!(self, Phase::Idle | Phase::InTransaction)
    }

    /// A transaction is open.
    pub fn in_transaction(self) -> bool {
        self == Phase::InTransaction
    }
}

/// An assigned partition's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotPhase {
    /// Paused until its state is read back from the changelog.
    /// `refetch_from` is the first offset polled meanwhile: librdkafka may
    /// fetch a partition before the pause on assignment takes effect, and
    /// those records are read again once the state is back.
    Restoring { refetch_from: Option<i64> },
    /// Its records are applied.
    Running,
}

impl SlotPhase {
    /// Sets a record polled while restoring aside: the partition will be
    /// sought back to the first such offset. No effect once running.
    pub fn set_aside(&mut self, offset: i64) {
        if let SlotPhase::Restoring { refetch_from } = self {
            *refetch_from = Some(refetch_from.map_or(offset, |o| o.min(offset)));
        }
    }

    /// The state is back: the partition runs; returns the offset to seek
    /// back to, if records were set aside meanwhile.
    pub fn restored(&mut self) -> Option<i64> {
        match std::mem::replace(self, SlotPhase::Running) {
            SlotPhase::Restoring { refetch_from } => refetch_from,
            SlotPhase::Running => None,
        }
    }

    pub fn is_restoring(self) -> bool {
        matches!(self, SlotPhase::Restoring { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::Transition::*;
    use super::*;

    const ALL_PHASES: [Phase; 4] = [
        Phase::Idle,
        Phase::InTransaction,
        Phase::Rewinding,
        Phase::Failed,
    ];
    const ALL_TRANSITIONS: [Transition; 5] = [Begin, Commit, Abort, Rewound, Fail];

    #[test]
    fn a_transaction_opens_commits_or_aborts_into_a_rewind() {
        let open = Phase::Idle.after(Begin).unwrap();
        assert_eq!(open, Phase::InTransaction);
        assert_eq!(open.after(Commit), Some(Phase::Idle));
        let rewinding = open.after(Abort).unwrap();
        assert_eq!(rewinding, Phase::Rewinding);
        assert!(!rewinding.applies_records());
        assert_eq!(rewinding.after(Rewound), Some(Phase::Idle));
    }

    #[test]
    fn failed_is_final_and_reachable_from_everywhere() {
        for phase in ALL_PHASES {
            assert_eq!(phase.after(Fail), Some(Phase::Failed));
        }
        for transition in ALL_TRANSITIONS {
            assert_eq!(Phase::Failed.after(transition), Some(Phase::Failed));
        }
        assert!(!Phase::Failed.applies_records());
    }

    #[test]
    fn nothing_is_begun_or_committed_while_rewinding() {
        for transition in [Begin, Commit, Abort] {
            assert_eq!(Phase::Rewinding.after(transition), None, "{transition:?}");
        }
        assert_eq!(Phase::InTransaction.after(Begin), None);
        assert_eq!(Phase::Idle.after(Abort), None);
        assert_eq!(Phase::Idle.after(Rewound), None);
        // At-least-once stores offsets from Idle.
        assert_eq!(Phase::Idle.after(Commit), Some(Phase::Idle));
    }

    #[test]
    fn a_restoring_slot_remembers_the_first_record_set_aside() {
        let mut phase = SlotPhase::Restoring { refetch_from: None };
        phase.set_aside(40);
        phase.set_aside(12);
        phase.set_aside(30);
        assert!(phase.is_restoring());
        assert_eq!(phase.restored(), Some(12));
        assert_eq!(phase, SlotPhase::Running);
        phase.set_aside(7);
        assert_eq!(phase.restored(), None);
    }
}
