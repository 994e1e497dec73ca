//! The circuit breaker of one module: after `failures` failed calls within `window`, the module
//! is not called for `open_for`; its routes answer as their `on_error` says meanwhile. After that
//! the next calls go through again (half open): a success closes the breaker, a failure opens it
//! for another period.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

/// When a breaker opens, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Failures within `window` that open the breaker; 0 never opens it.
    pub failures: u32,
    pub window: Duration,
    pub open_for: Duration,
}

/// What `/filters` shows of a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    /// The open period is over: calls go through, and the next outcome decides.
    HalfOpen,
}

/// A change a call's outcome made, for the caller to log and count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Opened,
    Closed,
}

#[derive(Debug)]
pub struct Breaker {
    settings: BreakerSettings,
    origin: Instant,
    /// Milliseconds after `origin` until which calls are refused; 0 while closed. Read on
    /// every call, so it is an atomic and not behind the lock.
    open_until_ms: AtomicU64,
    /// When the recent failures were, oldest first (at most `failures` of them).
    recent: Mutex<VecDeque<Instant>>,
    trips: AtomicU64,
}

impl Breaker {
    pub fn new(settings: BreakerSettings) -> Breaker {
        Breaker {
            settings,
            origin: Instant::now(),
            open_until_ms: AtomicU64::new(0),
            recent: Mutex::default(),
            trips: AtomicU64::new(0),
        }
    }

    fn ms(&self, at: Instant) -> u64 {
        // Never 0: 0 means closed.
        (at.saturating_duration_since(self.origin).as_millis() as u64).max(1)
    }

    /// Closed: every call goes ahead, and a success changes nothing (no clock needed to say so).
    pub fn closed(&self) -> bool {
        self.open_until_ms.load(Ordering::Relaxed) == 0
    }

    /// Whether a call may go ahead at `now`.
    pub fn admits(&self, now: Instant) -> bool {
        let until = self.open_until_ms.load(Ordering::Relaxed);
        until == 0 || self.ms(now) >= until
    }

    pub fn state(&self, now: Instant) -> BreakerState {
        match self.open_until_ms.load(Ordering::Relaxed) {
            0 => BreakerState::Closed,
            until if self.ms(now) < until => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }

    /// How many times the breaker opened.
    pub fn trips(&self) -> u64 {
        self.trips.load(Ordering::Relaxed)
    }

    /// A call succeeded at `now`: a half-open breaker closes (an open one stays open: the call
    /// began before it opened).
    pub fn succeeded(&self, now: Instant) -> Option<Transition> {
        if self.state(now) != BreakerState::HalfOpen {
            return None;
        }
        let mut recent = self.recent.lock().unwrap();
        recent.clear();
        (self.open_until_ms.swap(0, Ordering::Relaxed) != 0).then_some(Transition::Closed)
    }

    /// A call failed at `now`: the breaker opens when that makes `failures` within the window,
    /// or at once when it was half open.
    pub fn failed(&self, now: Instant) -> Option<Transition> {
        if self.settings.failures == 0 {
            return None;
        }
        let mut recent = self.recent.lock().unwrap();
        let half_open = self.state(now) == BreakerState::HalfOpen;
        recent.push_back(now);
        while recent.len() > self.settings.failures as usize
            || recent
                .front()
                .is_some_and(|first| now.saturating_duration_since(*first) > self.settings.window)
        {
            recent.pop_front();
        }
        if !half_open && recent.len() < self.settings.failures as usize {
            return None;
        }
        recent.clear();
        self.open_until_ms
            .store(self.ms(now + self.settings.open_for), Ordering::Relaxed);
        self.trips.fetch_add(1, Ordering::Relaxed);
        Some(Transition::Opened)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(failures: u32) -> Breaker {
        Breaker::new(BreakerSettings {
            failures,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(5),
        })
    }

    #[test]
    fn opens_after_the_failures_within_the_window_and_refuses_calls_while_open() {
        let breaker = breaker(3);
        let start = Instant::now();
        assert_eq!(breaker.failed(start), None);
        assert_eq!(breaker.failed(start + Duration::from_secs(1)), None);
        assert!(breaker.admits(start + Duration::from_secs(1)));
        let third = start + Duration::from_secs(2);
        assert_eq!(breaker.failed(third), Some(Transition::Opened));
        assert_eq!(breaker.state(third), BreakerState::Open);
        assert!(!breaker.admits(third + Duration::from_secs(4)));
        assert_eq!(breaker.trips(), 1);
    }

    #[test]
    fn failures_older_than_the_window_do_not_count() {
        let breaker = breaker(2);
        let start = Instant::now();
        assert_eq!(breaker.failed(start), None);
        assert_eq!(breaker.failed(start + Duration::from_secs(11)), None);
        assert_eq!(
            breaker.failed(start + Duration::from_secs(12)),
            Some(Transition::Opened)
        );
    }

    #[test]
    fn after_the_open_period_a_success_closes_and_a_failure_opens_again() {
        let breaker = breaker(1);
        let start = Instant::now();
        assert_eq!(breaker.failed(start), Some(Transition::Opened));
        let later = start + Duration::from_secs(6);
        assert_eq!(breaker.state(later), BreakerState::HalfOpen);
        assert!(breaker.admits(later));
        assert_eq!(breaker.failed(later), Some(Transition::Opened));
        assert!(!breaker.admits(later + Duration::from_secs(1)));
        assert_eq!(breaker.succeeded(later + Duration::from_secs(1)), None, "still open");
        let after = later + Duration::from_secs(6);
        assert_eq!(breaker.succeeded(after), Some(Transition::Closed));
        assert_eq!(breaker.state(after), BreakerState::Closed);
        assert_eq!(breaker.succeeded(after), None);
        assert_eq!(breaker.trips(), 2);
    }

    #[test]
    fn a_success_in_between_does_not_reset_the_count_of_a_closed_breaker() {
        // Sporadic failures of a mostly healthy filter still add up within the window.
        let breaker = breaker(2);
        let start = Instant::now();
        assert_eq!(breaker.failed(start), None);
        assert_eq!(breaker.succeeded(start), None);
        assert_eq!(breaker.failed(start + Duration::from_secs(1)), Some(Transition::Opened));
    }

    #[test]
    fn zero_failures_never_opens() {
        let breaker = breaker(0);
        for _ in 0..100 {
            assert_eq!(breaker.failed(Instant::now()), None);
        }
        assert!(breaker.admits(Instant::now()));
    }
}
