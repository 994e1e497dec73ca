//! A histogram every worker thread observes at once without meeting the others: each thread adds
//! to a stripe of its own (its own cache lines), a scrape adds the stripes up. The filter call
//! time is observed on every call; a lock or a shared counter there costs more than the call.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Stripes per histogram: more than the worker threads of most machines; threads beyond share.
const STRIPES: usize = 16;
/// Upper bounds in nanoseconds: 1 us, 4 us, ... 4^10 us (about a second), then +Inf.
const BOUNDS: usize = 11;

/// One thread's counts, on cache lines of their own: threads with different stripes never share
/// a line.
#[repr(align(128))]
#[derive(Debug, Default)]
struct Stripe {
    /// Observations per bucket (not cumulative), the last one past every bound.
    counts: [AtomicU64; BOUNDS + 1],
    sum_nanos: AtomicU64,
}

/// Call times from 1 microsecond to about a second, in exponential buckets (factor 4).
#[derive(Clone, Debug, Default)]
pub struct CallHistogram {
    stripes: Arc<[Stripe; STRIPES]>,
}

fn bound_nanos(bucket: usize) -> u64 {
    1_000 << (2 * bucket)
}

/// The stripe of the calling thread, fixed at its first observation.
fn stripe_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    STRIPE.with(|stripe| *stripe)
}

impl CallHistogram {
    pub fn observe(&self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let bucket = (0..BOUNDS).find(|&b| nanos <= bound_nanos(b)).unwrap_or(BOUNDS);
        let stripe = &self.stripes[stripe_index()];
        stripe.counts[bucket].fetch_add(1, Ordering::Relaxed);
        stripe.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Sum in seconds, count, and each bucket's upper bound (seconds) with its own count.
    fn totals(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut buckets: Vec<(f64, u64)> = (0..BOUNDS)
            .map(|b| (bound_nanos(b) as f64 / 1e9, 0))
            .chain(std::iter::once((f64::MAX, 0)))
            .collect();
        let mut sum_nanos = 0u64;
        for stripe in self.stripes.iter() {
            for (bucket, count) in buckets.iter_mut().zip(&stripe.counts) {
                bucket.1 += count.load(Ordering::Relaxed);
            }
            sum_nanos = sum_nanos.wrapping_add(stripe.sum_nanos.load(Ordering::Relaxed));
        }
        let count = buckets.iter().map(|(_, n)| n).sum();
        (sum_nanos as f64 / 1e9, count, buckets)
    }
}

impl TypedMetric for CallHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for CallHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.totals();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_count_each_call_once_wherever_it_was_observed() {
        let histogram = CallHistogram::default();
        histogram.observe(Duration::from_nanos(500)); // <= 1 us
        histogram.observe(Duration::from_micros(1)); // <= 1 us: bounds are inclusive
        histogram.observe(Duration::from_micros(3)); // <= 4 us
        let other = histogram.clone();
        std::thread::spawn(move || other.observe(Duration::from_secs(5))) // past every bound
            .join()
            .unwrap();
        let (sum, count, buckets) = histogram.totals();
        assert_eq!(count, 4);
        assert!((sum - 5.0000045).abs() < 1e-9, "{sum}");
        assert_eq!(buckets.len(), BOUNDS + 1);
        assert_eq!(buckets[0], (1e-6, 2));
        assert_eq!(buckets[1], (4e-6, 1));
        assert_eq!(buckets[BOUNDS], (f64::MAX, 1));
        assert!((buckets[BOUNDS - 1].0 - 1.048576).abs() < 1e-12);
    }
}
