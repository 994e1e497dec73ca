//! The load generator: N WebSocket connections, each keeping a window of messages in flight
//! to an echoing server, counting answers and their round-trip times during a measured span.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Clone)]
pub struct Load {
    pub url: String,
    pub connections: usize,
    pub size: usize,
    /// Messages each connection keeps in flight (1: strict ping-pong).
    pub window: usize,
    pub warmup: Duration,
    pub measure: Duration,
}

pub struct Outcome {
    pub messages: u64,
    pub sent: u64,
    pub received: u64,
    /// Messages never answered (the connection waited 10 s for them).
    pub lost: u64,
    pub elapsed: Duration,
    /// Round trips, in nanoseconds.
    pub rtt: Histogram<u64>,
}

impl Outcome {
    /// Answered messages a second over the measured span.
    pub fn rate(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }

    /// A round-trip quantile, in microseconds.
    pub fn quantile_us(&self, quantile: f64) -> f64 {
        self.rtt.value_at_quantile(quantile) as f64 / 1_000.0
    }
}

struct Totals {
    messages: u64,
    sent: u64,
    received: u64,
    lost: u64,
    rtt: Histogram<u64>,
}

pub async fn run(load: &Load) -> anyhow::Result<Outcome> {
    let mut streams = Vec::with_capacity(load.connections);
    for _ in 0..load.connections {
        let (ws, _) = tokio_tungstenite::connect_async(&load.url).await?;
        streams.push(ws);
    }
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let payload = Bytes::from(vec![b'x'; load.size]);
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|ws| {
            let (measuring, stop, payload, window) = (measuring.clone(), stop.clone(), payload.clone(), load.window);
            tokio::spawn(async move { drive(ws, payload, window, measuring, stop).await })
        })
        .collect();
    tokio::time::sleep(load.warmup).await;
    measuring.store(true, Ordering::SeqCst);
    let started = Instant::now();
    tokio::time::sleep(load.measure).await;
    measuring.store(false, Ordering::SeqCst);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let mut outcome = Outcome {
        messages: 0,
        sent: 0,
        received: 0,
        lost: 0,
        elapsed,
        rtt: Histogram::new(3)?,
    };
    for task in tasks {
        let totals = task.await??;
        outcome.messages += totals.messages;
        outcome.sent += totals.sent;
        outcome.received += totals.received;
        outcome.lost += totals.lost;
        outcome.rtt.add(&totals.rtt)?;
    }
    Ok(outcome)
}

pub(crate) type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One connection: refill the window, flush once, read an answer, repeat; then drain.
async fn drive(
    mut ws: Ws,
    payload: Bytes,
    window: usize,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Totals> {
    let mut in_flight = std::collections::VecDeque::with_capacity(window);
    let mut totals = Totals {
        messages: 0,
        sent: 0,
        received: 0,
        lost: 0,
        rtt: Histogram::new(3)?,
    };
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        if !stopping {
            while in_flight.len() < window {
                ws.feed(Message::Binary(payload.clone())).await?;
                in_flight.push_back(Instant::now());
                totals.sent += 1;
            }
            ws.flush().await?;
        }
        if in_flight.is_empty() {
            break;
        }
        let Ok(answer) = tokio::time::timeout(Duration::from_secs(10), ws.next()).await else {
            totals.lost += in_flight.len() as u64;
            break;
        };
        match answer {
            Some(Ok(Message::Binary(_) | Message::Text(_))) => {}
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => anyhow::bail!("connection closed"),
        }
        let sent_at = in_flight.pop_front().expect("an answer for a message in flight");
        totals.received += 1;
        if measuring.load(Ordering::Relaxed) {
            totals.messages += 1;
            totals.rtt.record(sent_at.elapsed().as_nanos() as u64)?;
        }
    }
    let _ = ws.close(None).await;
    Ok(totals)
}
