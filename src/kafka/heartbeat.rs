//! The pipeline loop's heartbeat: each turn of the loop (and each poll of a
//! restore) records the time, and `/healthz` fails once it is too old, so
//! that a liveness probe restarts an instance whose loop hangs instead of
//! leaving it holding its partitions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// When the loop last turned.
#[derive(Debug)]
pub struct Heartbeat {
    origin: Instant,
    /// Milliseconds from `origin` to the latest beat.
    last_ms: AtomicU64,
}

impl Heartbeat {
    /// A heartbeat that beats now.
    pub fn new() -> Self {
        Heartbeat {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    /// Records a turn of the loop.
    pub fn beat(&self) {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Time since the latest beat.
    pub fn age(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.origin.elapsed().saturating_sub(last)
    }
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_grows_until_the_next_beat() {
        let heartbeat = Heartbeat::new();
        std::thread::sleep(Duration::from_millis(30));
        assert!(heartbeat.age() >= Duration::from_millis(30));
        heartbeat.beat();
        assert!(heartbeat.age() < Duration::from_millis(30));
    }
}
