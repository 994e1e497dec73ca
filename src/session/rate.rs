//! Per-connection rate limits on what a client sends (`rate_limit` of a route): token buckets
//! for messages and payload bytes, and the answer when a message finds them empty: read the
//! connection no further until they refill (TCP then slows the client), or close it with 1008.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::{RateAction, RateLimitConfig};

/// A token bucket: `rate` tokens a second, holding at most `burst`. A take larger than what is
/// left is granted on credit, and the bucket then owes: the debt is the wait before the next.
#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket.
    fn new(rate: u64, burst: u64, now: Instant) -> TokenBucket {
        TokenBucket {
            rate: rate as f64,
            burst: burst as f64,
            tokens: burst as f64,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now;
    }

    /// Whether `n` tokens are there now; takes them if so.
    fn try_take(&mut self, n: u64, now: Instant) -> bool {
        self.refill(now);
        // A take larger than the bucket passes when the bucket is full, or it never would.
        let n = (n as f64).min(self.burst);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// Takes `n` tokens, on credit if needed; the wait until the bucket is out of debt.
    fn take(&mut self, n: u64, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// What a message that came in calls for.
#[derive(Debug, PartialEq, Eq)]
pub enum Charge {
    /// Within the limits.
    Within,
    /// Handle it, then read nothing more for this long.
    Pause(Duration),
    /// Over the limit: close with 1008 and this reason (the message is not handled).
    Close(&'static str),
}

/// One connection's buckets.
#[derive(Debug)]
pub struct RateLimit {
    messages: Option<TokenBucket>,
    bytes: Option<TokenBucket>,
    action: RateAction,
}

impl RateLimit {
    pub fn new(config: &RateLimitConfig, now: Instant) -> RateLimit {
        let bucket = |rate: Option<std::num::NonZeroU64>, burst: Option<std::num::NonZeroU64>| {
            rate.map(|rate| TokenBucket::new(rate.get(), burst.unwrap_or(rate).get(), now))
        };
        RateLimit {
            messages: bucket(config.messages_per_s, config.messages_burst),
            bytes: bucket(config.bytes_per_s, config.bytes_burst),
            action: config.action,
        }
    }

    /// Counts a message of `len` payload bytes against the buckets.
    pub fn charge(&mut self, len: usize, now: Instant) -> Charge {
        let len = len as u64;
        match self.action {
            RateAction::Close => {
                if let Some(messages) = &mut self.messages
                    && !messages.try_take(1, now)
                {
                    return Charge::Close("message rate over the limit");
                }
                if let Some(bytes) = &mut self.bytes
                    && !bytes.try_take(len, now)
                {
                    return Charge::Close("byte rate over the limit");
                }
                Charge::Within
            }
            RateAction::Slow => {
                let waits = [(&mut self.messages, 1), (&mut self.bytes, len)];
                let wait = waits
                    .into_iter()
                    .filter_map(|(bucket, n)| bucket.as_mut().map(|b| b.take(n, now)))
                    .max()
                    .unwrap_or_default();
                if wait.is_zero() {
                    Charge::Within
                } else {
                    Charge::Pause(wait)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU64;

    use super::*;

    /// Buckets of (rate, burst) for messages and bytes.
    fn limit(messages: Option<(u64, u64)>, bytes: Option<(u64, u64)>, action: RateAction) -> RateLimit {
        let config = RateLimitConfig {
            messages_per_s: messages.and_then(|(rate, _)| NonZeroU64::new(rate)),
            messages_burst: messages.and_then(|(_, burst)| NonZeroU64::new(burst)),
            bytes_per_s: bytes.and_then(|(rate, _)| NonZeroU64::new(rate)),
            bytes_burst: bytes.and_then(|(_, burst)| NonZeroU64::new(burst)),
            action,
        };
        RateLimit::new(&config, Instant::now())
    }

    #[tokio::test(start_paused = true)]
    async fn slow_lets_the_burst_through_then_paces_at_the_rate() {
        let mut rate = limit(Some((10, 5)), None, RateAction::Slow);
        for _ in 0..5 {
            assert_eq!(rate.charge(100, Instant::now()), Charge::Within);
        }
        assert_eq!(
            rate.charge(100, Instant::now()),
            Charge::Pause(Duration::from_millis(100))
        );
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(
            rate.charge(100, Instant::now()),
            Charge::Pause(Duration::from_millis(100)),
            "one token came back and went at once"
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        for _ in 0..5 {
            assert_eq!(
                rate.charge(100, Instant::now()),
                Charge::Within,
                "refilled to the burst, no more"
            );
        }
        assert!(matches!(rate.charge(100, Instant::now()), Charge::Pause(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn slow_paces_bytes_and_waits_out_a_message_larger_than_the_burst() {
        let mut rate = limit(None, Some((1000, 1000)), RateAction::Slow);
        assert_eq!(
            rate.charge(3000, Instant::now()),
            Charge::Pause(Duration::from_secs(2)),
            "let through on credit; the debt is the pause"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            rate.charge(500, Instant::now()),
            Charge::Pause(Duration::from_millis(500))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn close_names_the_bucket_that_ran_dry() {
        let mut rate = limit(Some((2, 2)), Some((1000, 1000)), RateAction::Close);
        assert_eq!(rate.charge(1, Instant::now()), Charge::Within);
        assert_eq!(rate.charge(1, Instant::now()), Charge::Within);
        assert_eq!(
            rate.charge(1, Instant::now()),
            Charge::Close("message rate over the limit")
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(rate.charge(600, Instant::now()), Charge::Within);
        assert_eq!(
            rate.charge(600, Instant::now()),
            Charge::Close("byte rate over the limit")
        );

        // A message larger than the byte burst passes a full bucket (it could never pass otherwise).
        let mut rate = limit(None, Some((100, 100)), RateAction::Close);
        assert_eq!(rate.charge(5000, Instant::now()), Charge::Within);
        assert_eq!(
            rate.charge(1, Instant::now()),
            Charge::Close("byte rate over the limit")
        );
    }
}
