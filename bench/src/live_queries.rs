//! Live queries (the `query` filter, docs/filters/query.md): 1,000 subscriptions over 100
//! distinct queries while one client inserts at a fixed rate through `/ws-insert`; every record
//! carries the microsecond it was sent, so each push gives its records' delivery latency. Two
//! layouts of the same subscriptions: 100 connections holding 10 queries each (an insert costs
//! one call per connection, its queries matched together) and 1,000 connections holding one
//! (a call per subscription). An instance parses a delivery and matches each distinct query once
//! for every connection it serves; the baseline row turns that off (`share_matches = false`),
//! so that each connection parses and matches alone. Each row is the repetition with the
//! median inserts/s.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;
use crate::parties::{self, Party};

/// The routes of the default config, with the filter's deadline for a loaded machine;
/// `share_matches = false` for the baseline where each connection parses and matches alone.
pub fn routes(share_matches: bool) -> String {
    format!(
        "[sinks.nsdb]\ntype = \"bus\"\ntopic = \"nsdb\"\n\
         [routes.stream]\npath = \"/ws-stream\"\n\
         filters = [{{ module = \"query\", timeout_ms = 1000, config = {{ mode = \"stream\", share_matches = {share_matches} }} }}]\n\
         [routes.insert]\npath = \"/ws-insert\"\nsinks = [\"nsdb\"]\n\
         filters = [{{ module = \"query\", timeout_ms = 1000, config = {{ mode = \"insert\", sink = \"nsdb\" }} }}]\n"
    )
}

const QUERIES: usize = 100;
const SUBSCRIPTIONS: usize = 1_000;
/// Records per insert message.
const BATCH: usize = 100;

#[derive(Debug, Clone, Serialize)]
pub struct LiveQueries {
    pub layout: String,
    pub connections: usize,
    pub offered_inserts_per_s: f64,
    pub inserts_per_s: f64,
    /// Records pushed to subscribers per second (each record matches one query: 10 subscribers).
    pub deliveries_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub cpu_us_per_insert: f64,
}

fn now_us(start: Instant) -> u64 {
    start.elapsed().as_micros() as u64
}

/// Subscribes `queries` on one connection and counts what its pushes carry.
async fn subscriber(
    url: String,
    queries: Vec<usize>,
    start: Instant,
    subscribed: Arc<AtomicU64>,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<(u64, Histogram<u64>)> {
    let (mut ws, _): (Ws, _) = tokio_tungstenite::connect_async(&url).await?;
    for q in queries {
        let query = format!("select * from bench where k = {q}");
        let message = serde_json::json!({"db": "db", "namespace": "ns", "metric": "bench", "queryString": query});
        ws.send(Message::text(message.to_string())).await?;
        let answer = ws.next().await.ok_or_else(|| anyhow::anyhow!("closed"))??;
        anyhow::ensure!(answer.to_text()?.contains("\"quid\""), "subscription refused: {answer}");
    }
    subscribed.fetch_add(1, Ordering::SeqCst);
    let (mut delivered, mut latency) = (0u64, Histogram::new(3)?);
    while !stop.load(Ordering::Relaxed) {
        let Ok(frame) = tokio::time::timeout(Duration::from_millis(200), ws.next()).await else {
            continue;
        };
        let Some(Ok(Message::Text(text))) = frame else { continue };
        let received = now_us(start);
        if !measuring.load(Ordering::Relaxed) {
            continue;
        }
        let push: serde_json::Value = serde_json::from_str(&text)?;
        for record in push["records"].as_array().into_iter().flatten() {
            let sent = record["dimensions"]["sent_us"].as_u64().unwrap_or(received);
            delivered += 1;
            latency.record(received.saturating_sub(sent).max(1))?;
        }
    }
    Ok((delivered, latency))
}

/// One run: `connections` connections share the 1,000 subscriptions, `rate` inserts a second.
pub async fn run(
    party: &Party,
    connections: usize,
    rate: usize,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<LiveQueries> {
    let base = party.url.trim_end_matches('/').to_string();
    let start = Instant::now();
    let (measuring, stop) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let per_connection = SUBSCRIPTIONS / connections;
    let mut subscribers = Vec::new();
    let subscribed = Arc::new(AtomicU64::new(0));
    for c in 0..connections {
        // Subscription s is query s % 100: each query has 10 subscribers, on 10 connections.
        let queries = (0..per_connection)
            .map(|i| (c * per_connection + i) % QUERIES)
            .collect();
        let url = format!("{base}/ws-stream?retention_size=100000");
        subscribers.push(tokio::spawn(subscriber(
            url,
            queries,
            start,
            subscribed.clone(),
            measuring.clone(),
            stop.clone(),
        )));
    }
    // Every connection subscribes (each first answer reads the retained window, which earlier
    // runs filled) before the inserts begin.
    let deadline = Instant::now() + Duration::from_secs(120);
    while subscribed.load(Ordering::SeqCst) < connections as u64 {
        anyhow::ensure!(Instant::now() < deadline, "the subscriptions took over two minutes");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    settle(party).await;

    let inserted = Arc::new(AtomicU64::new(0));
    let inserter = {
        let (url, stop, measuring, inserted) = (
            format!("{base}/ws-insert"),
            stop.clone(),
            measuring.clone(),
            inserted.clone(),
        );
        tokio::spawn(async move {
            let (mut ws, _): (Ws, _) = tokio_tungstenite::connect_async(&url).await?;
            let mut every = tokio::time::interval(Duration::from_secs_f64(BATCH as f64 / rate as f64));
            // A late answer skips the ticks it missed: inserts/s is the rate that was sustained.
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                every.tick().await;
                let sent = now_us(start);
                let batch: Vec<serde_json::Value> = (0..BATCH)
                    .map(|i| {
                        n += 1;
                        serde_json::json!({"db": "db", "namespace": "ns", "metric": "bench",
                            "bit": {"value": i, "dimensions": {"k": (n as usize * 7919) % QUERIES, "sent_us": sent}}})
                    })
                    .collect();
                ws.send(Message::text(serde_json::Value::Array(batch).to_string()))
                    .await?;
                ws.next().await.ok_or_else(|| anyhow::anyhow!("closed"))??;
                if measuring.load(Ordering::Relaxed) {
                    inserted.fetch_add(BATCH as u64, Ordering::Relaxed);
                }
            }
            anyhow::Ok(())
        })
    };
    tokio::time::sleep(warmup).await;
    let cpu_before = parties::cpu_micros(party.pid());
    measuring.store(true, Ordering::SeqCst);
    let measured = Instant::now();
    tokio::time::sleep(measure).await;
    measuring.store(false, Ordering::SeqCst);
    let elapsed = measured.elapsed().as_secs_f64();
    let cpu = parties::cpu_micros(party.pid()) - cpu_before;
    stop.store(true, Ordering::SeqCst);
    inserter.await??;
    let (mut delivered, mut latency) = (0u64, Histogram::<u64>::new(3)?);
    for subscriber in subscribers {
        let (n, h) = subscriber.await??;
        delivered += n;
        latency.add(&h)?;
    }
    settle(party).await;
    let inserts = inserted.load(Ordering::Relaxed) as f64;
    let quantile = |q| latency.value_at_quantile(q) as f64 / 1_000.0;
    Ok(LiveQueries {
        layout: format!(
            "{SUBSCRIPTIONS} subscriptions on {connections} connections{}",
            party.name.strip_prefix("framegate live queries").unwrap_or_default()
        ),
        connections,
        offered_inserts_per_s: rate as f64,
        inserts_per_s: inserts / elapsed,
        deliveries_per_s: delivered as f64 / elapsed,
        p50_ms: quantile(0.5),
        p99_ms: quantile(0.99),
        cpu_us_per_insert: cpu as f64 / inserts.max(1.0),
    })
}

/// Waits (up to 20 s) until the party has worked off what it still held, so that the next run
/// does not pay for this one.
async fn settle(party: &Party) {
    for _ in 0..100 {
        let before = parties::cpu_micros(party.pid());
        tokio::time::sleep(Duration::from_millis(200)).await;
        if parties::cpu_micros(party.pid()) - before < 10_000 {
            return;
        }
    }
}

/// The run with the median inserts/s of repetitions of one layout.
pub fn median(mut runs: Vec<LiveQueries>) -> LiveQueries {
    runs.sort_by(|a, b| a.inserts_per_s.total_cmp(&b.inserts_per_s));
    runs.swap_remove(runs.len() / 2)
}

pub fn print(row: &LiveQueries) {
    println!(
        "{:<62} {:>10.0} {:>10.0} {:>12.0} {:>9.1} {:>9.1} {:>10.2}",
        row.layout,
        row.offered_inserts_per_s,
        row.inserts_per_s,
        row.deliveries_per_s,
        row.p50_ms,
        row.p99_ms,
        row.cpu_us_per_insert
    );
}

pub fn print_header() {
    println!(
        "\n{:<62} {:>10} {:>10} {:>12} {:>9} {:>9} {:>10}",
        "live queries", "offered/s", "inserts/s", "delivered/s", "p50 ms", "p99 ms", "cpu us/ins"
    );
}
