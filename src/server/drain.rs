//! Graceful shutdown as the listeners and connections see it: the phases a shutdown walks
//! through (draining, listener closed, connections told to go, sinks flushing), the tokens each
//! phase cancels, and the spread of the 1001 closes over time.

use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Connections are told to go in this many waves: enough to spread their reconnects, few
/// enough that a connection needs no timer of its own.
const WAVES: usize = 16;

/// Where a shutdown stands, as `framegate_shutdown_phase` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i64)]
pub enum Phase {
    Serving = 0,
    /// `/readyz` answers 503 "draining"; the listener still accepts.
    Draining = 1,
    /// The listener is closed; live connections go on.
    ListenerClosed = 2,
    /// Connections are being closed with 1001, in waves.
    Closing = 3,
    /// Every connection is gone or given up on; the sinks flush their queues.
    Flushing = 4,
}

/// The timing of a shutdown (`[server]`, docs/configuration.md).
#[derive(Debug, Clone, Copy)]
pub struct DrainTimes {
    /// `drain_delay_ms`: draining, still accepting.
    pub delay: Duration,
    /// `drain_period_ms`: listener closed, connections served on.
    pub period: Duration,
    /// `close_spread_ms`: the 1001 closes spread over this long.
    pub spread: Duration,
}

pub struct Drain {
    /// Cancelled first: `/readyz` turns 503.
    draining: CancellationToken,
    /// Cancelled when the WebSocket listener is to close.
    listener: CancellationToken,
    /// Each connection holds one: cancelled, the connection finishes what it owes and closes with 1001.
    waves: Vec<CancellationToken>,
    phase: Gauge,
}

impl Drain {
    /// Waves are children of `shutdown`: cancelling it tells every connection left at once.
    pub fn new(shutdown: &CancellationToken, phase: Gauge) -> Drain {
        Drain {
            draining: CancellationToken::new(),
            listener: CancellationToken::new(),
            waves: (0..WAVES).map(|_| shutdown.child_token()).collect(),
            phase,
        }
    }

    /// Whether a shutdown has begun: `/readyz` then answers 503.
    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    /// Cancelled when the WebSocket listener must stop accepting.
    pub fn listener(&self) -> &CancellationToken {
        &self.listener
    }

    /// The token telling connection `conn` to go.
    pub fn wave_of(&self, conn: u64) -> CancellationToken {
        self.waves[(conn % WAVES as u64) as usize].clone()
    }

    fn enter(&self, phase: Phase) {
        tracing::info!("shutdown: {phase:?}");
        self.phase.set(phase as i64);
    }

    /// Walks the phases up to telling every connection to go: draining for `delay`, the listener
    /// closed for `period`, then a wave of 1001s every `spread / WAVES`.
    pub async fn run(&self, times: DrainTimes) {
        self.enter(Phase::Draining);
        self.draining.cancel();
        tokio::time::sleep(times.delay).await;
        self.enter(Phase::ListenerClosed);
        self.listener.cancel();
        tokio::time::sleep(times.period).await;
        self.enter(Phase::Closing);
        let start = Instant::now();
        for (n, wave) in self.waves.iter().enumerate() {
            tokio::time::sleep_until(start + times.spread.mul_f64(n as f64 / WAVES as f64)).await;
            wave.cancel();
        }
    }

    /// The last phase: connections are done (or given up on), sinks flush.
    pub fn flushing(&self) {
        self.enter(Phase::Flushing);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn phases_come_in_order_and_waves_spread_over_the_spread() {
        let shutdown = CancellationToken::new();
        let drain = Drain::new(&shutdown, Gauge::default());
        let conns: Vec<CancellationToken> = (0..WAVES as u64 * 2).map(|c| drain.wave_of(c)).collect();
        let times = DrainTimes {
            delay: Duration::from_secs(5),
            period: Duration::from_secs(10),
            spread: Duration::from_secs(16),
        };
        let start = Instant::now();
        let running = async {
            drain.run(times).await;
            Instant::now() - start
        };
        tokio::pin!(running);
        let at = |s: u64| tokio::time::sleep_until(start + Duration::from_millis(s));
        tokio::select! { _ = &mut running => panic!("ended early"), () = at(1) => {} }
        assert!(drain.is_draining() && !drain.listener().is_cancelled());
        tokio::select! { _ = &mut running => panic!("ended early"), () = at(5_001) => {} }
        assert!(drain.listener().is_cancelled());
        assert!(
            conns.iter().all(|c| !c.is_cancelled()),
            "no connection is told to go before the period ends"
        );
        tokio::select! { _ = &mut running => panic!("ended early"), () = at(15_001) => {} }
        assert_eq!(conns.iter().filter(|c| c.is_cancelled()).count(), 2, "the first wave");
        tokio::select! { _ = &mut running => panic!("ended early"), () = at(23_001) => {} }
        assert_eq!(
            conns.iter().filter(|c| c.is_cancelled()).count(),
            2 * 9,
            "half the waves at half the spread"
        );
        let took = running.await;
        assert_eq!(
            took,
            Duration::from_secs(5 + 10 + 15),
            "the last wave at 15/16 of the spread"
        );
        assert!(conns.iter().all(CancellationToken::is_cancelled));
        assert!(!shutdown.is_cancelled(), "waves do not cancel their parent");
    }
}
