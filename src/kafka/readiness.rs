//! The shell's readiness, published for the HTTP handlers: `/readyz` reads
//! it without taking the shell's lock, so a probe never waits behind the
//! pipeline, whatever the pipeline is doing.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// What the shell last published about its assignment.
#[derive(Debug, Default)]
pub struct Readiness {
    /// The first assignment (possibly empty) arrived.
    assigned_once: AtomicBool,
    /// Partitions assigned here.
    partitions: AtomicUsize,
    /// Of those, partitions whose state is still being restored.
    restoring: AtomicUsize,
}

impl Readiness {
    /// Publishes the shell's assignment as it stands.
    pub fn publish(&self, assigned_once: bool, partitions: usize, restoring: usize) {
        self.partitions.store(partitions, Ordering::Relaxed);
        self.restoring.store(restoring, Ordering::Relaxed);
        self.assigned_once.store(assigned_once, Ordering::Release);
    }

    /// Ready: the first assignment arrived and no partition is restoring.
    pub fn ready(&self) -> bool {
        self.assigned_once.load(Ordering::Acquire) && self.restoring() == 0
    }

    /// Partitions whose state is still being restored.
    pub fn restoring(&self) -> usize {
        self.restoring.load(Ordering::Relaxed)
    }

    /// Partitions assigned here.
    pub fn partitions(&self) -> usize {
        self.partitions.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::Readiness;

    #[test]
    fn ready_only_after_an_assignment_with_nothing_restoring() {
        let readiness = Readiness::default();
        assert!(!readiness.ready(), "no assignment yet");
        readiness.publish(true, 3, 2);
        assert!(!readiness.ready());
        assert_eq!((readiness.partitions(), readiness.restoring()), (3, 2));
        readiness.publish(true, 3, 0);
        assert!(readiness.ready());
        readiness.publish(true, 0, 0);
        assert!(readiness.ready(), "an empty assignment is ready");
    }
}
