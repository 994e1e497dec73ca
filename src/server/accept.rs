//! Accepting connections when accept fails: out of file descriptors (EMFILE, ENFILE) or
//! buffers (ENOBUFS, ENOMEM) the listener pauses, from 10 ms doubling to 1 s, instead of
//! retrying at once (the waiting connection keeps the socket readable, so a retry at once spins
//! a core), and reports at most one log line a second, with the count of failures.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const FIRST_PAUSE: Duration = Duration::from_millis(10);
const LONGEST_PAUSE: Duration = Duration::from_secs(1);
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// The pause after failed accepts and what is still to report of them.
#[derive(Debug, Default)]
struct Backoff {
    next_pause: Option<Duration>,
    unreported: u64,
    reported: Option<Instant>,
}

impl Backoff {
    /// How long to pause after this failure, and whether to log now (with the count to log).
    fn failed(&mut self, now: Instant) -> (Duration, Option<u64>) {
        let pause = self.next_pause.unwrap_or(FIRST_PAUSE);
        self.next_pause = Some((pause * 2).min(LONGEST_PAUSE));
        self.unreported += 1;
        let report = self
            .reported
            .is_none_or(|at| now.saturating_duration_since(at) >= REPORT_EVERY);
        if !report {
            return (pause, None);
        }
        self.reported = Some(now);
        (pause, Some(std::mem::take(&mut self.unreported)))
    }

    fn accepted(&mut self) {
        self.next_pause = None;
    }
}

/// Errors of one connection that went away before it was accepted: the next accept may work.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionRefused
    )
}

/// A listener that pauses after failed accepts; `name` says which in its log lines.
pub struct Acceptor {
    listener: TcpListener,
    name: &'static str,
    backoff: Backoff,
    errors: Counter,
}

impl Acceptor {
    pub fn new(listener: TcpListener, name: &'static str, errors: Counter) -> Acceptor {
        Acceptor {
            listener,
            name,
            backoff: Backoff::default(),
            errors,
        }
    }

    /// The next connection; `None` once `shutdown` is cancelled.
    pub async fn next(&mut self, shutdown: &CancellationToken) -> Option<(TcpStream, SocketAddr)> {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return None,
                accepted = self.listener.accept() => accepted,
            };
            let error = match accepted {
                Ok(accepted) => {
                    self.backoff.accepted();
                    return Some(accepted);
                }
                Err(error) if is_connection_error(&error) => continue,
                Err(error) => error,
            };
            self.errors.inc();
            let (pause, report) = self.backoff.failed(Instant::now());
            if let Some(failures) = report {
                tracing::warn!(
                    listener = self.name,
                    failures,
                    "accept failed: {error} ({failures} times since the last report); pausing accepts up to {LONGEST_PAUSE:?}"
                );
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_to_a_second_and_reports_once_a_second() {
        let mut backoff = Backoff::default();
        let start = Instant::now();
        assert_eq!(backoff.failed(start), (FIRST_PAUSE, Some(1)));
        let mut at = start;
        let mut pauses = Vec::new();
        let mut reports = Vec::new();
        for _ in 0..10 {
            let (pause, report) = backoff.failed(at);
            at += pause;
            pauses.push(pause.as_millis());
            reports.extend(report);
        }
        assert_eq!(pauses, [20, 40, 80, 160, 320, 640, 1000, 1000, 1000, 1000]);
        // Reported once a second at most, each report with the failures since the last one.
        assert_eq!(reports, [7, 1, 1, 1]);
        backoff.accepted();
        assert_eq!(backoff.failed(at).0, FIRST_PAUSE);
    }
}
