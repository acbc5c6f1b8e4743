//! Replica lag in time, measured from WAL positions: how long ago the
//! primary first had WAL that the replica has not replayed yet. Unlike
//! `now() - pg_last_xact_replay_timestamp()` this stays at zero on an idle
//! primary, and unlike a byte distance it means the same on a busy and a
//! quiet cluster.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use pgkeel_core::Lsn;

/// The primary's WAL position over the last `window`, one sample per
/// change.
#[derive(Debug, Clone)]
pub(crate) struct LagTracker {
    samples: VecDeque<(Instant, Lsn)>,
    window: Duration,
}

impl LagTracker {
    /// A tracker that can tell lags up to at least `window`.
    pub fn new(window: Duration) -> Self {
        LagTracker {
            samples: VecDeque::new(),
            window,
        }
    }

    /// Records the primary's position `lsn` seen at `at`.
    pub fn record(&mut self, at: Instant, lsn: Lsn) {
        match self.samples.back() {
            Some(&(_, last)) if last == lsn => {}
            Some(&(_, last)) if last > lsn => {
                // A primary never goes back: this is another primary.
                self.samples.clear();
                self.samples.push_back((at, lsn));
            }
            _ => self.samples.push_back((at, lsn)),
        }
        // Keep one sample older than the window, so a replica stuck
        // before all of them is still known to be at least that far behind.
        while self.samples.len() > 1
            && self
                .samples
                .get(1)
                .is_some_and(|&(t, _)| at.saturating_duration_since(t) > self.window)
        {
            self.samples.pop_front();
        }
    }

    /// Forgets everything (the primary changed).
    pub fn clear(&mut self) {
        self.samples.clear();
    }

    /// How far behind a replica that has replayed up to `replayed` is at
    /// `now`: the age of the oldest primary position it lacks. Zero when it
    /// has everything the primary had at the last sample, or when nothing
    /// is known yet.
    pub fn lag(&self, replayed: Lsn, now: Instant) -> Duration {
        self.samples
            .iter()
            .find(|&&(_, lsn)| lsn > replayed)
            .map(|&(t, _)| now.saturating_duration_since(t))
            .unwrap_or(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn idle_primary_means_no_lag() {
        let t0 = Instant::now();
        let mut tr = LagTracker::new(secs(10));
        for i in 0..100 {
            tr.record(t0 + secs(i), Lsn(500));
        }
        assert_eq!(tr.lag(Lsn(500), t0 + secs(100)), Duration::ZERO);
    }

    #[test]
    fn lag_is_the_age_of_the_oldest_missing_position() {
        let t0 = Instant::now();
        let mut tr = LagTracker::new(secs(60));
        tr.record(t0, Lsn(100));
        tr.record(t0 + secs(1), Lsn(200));
        tr.record(t0 + secs(2), Lsn(300));
        let now = t0 + secs(5);
        assert_eq!(tr.lag(Lsn(300), now), Duration::ZERO);
        assert_eq!(tr.lag(Lsn(250), now), secs(3));
        assert_eq!(tr.lag(Lsn(200), now), secs(3));
        assert_eq!(tr.lag(Lsn(150), now), secs(4));
        assert_eq!(tr.lag(Lsn(0), now), secs(5));
    }

    #[test]
    fn old_samples_are_dropped_but_a_stuck_replica_stays_late() {
        let t0 = Instant::now();
        let mut tr = LagTracker::new(secs(5));
        for i in 0..1000u64 {
            tr.record(t0 + secs(i), Lsn(i + 1));
        }
        assert!(tr.samples.len() <= 7, "{}", tr.samples.len());
        let now = t0 + secs(1000);
        assert!(tr.lag(Lsn(0), now) > secs(5));
        assert_eq!(tr.lag(Lsn(1000), now), Duration::ZERO);
    }

    #[test]
    fn a_new_primary_restarts_the_history() {
        let t0 = Instant::now();
        let mut tr = LagTracker::new(secs(60));
        tr.record(t0, Lsn(1000));
        tr.record(t0 + secs(1), Lsn(10));
        assert_eq!(tr.lag(Lsn(10), t0 + secs(2)), Duration::ZERO);
        tr.clear();
        assert_eq!(tr.lag(Lsn(0), t0 + secs(3)), Duration::ZERO);
    }
}
