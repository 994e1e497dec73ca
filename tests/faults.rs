//! Broker faults: JetStream is killed (SIGKILL) in the middle of a stream of 10,000 confirmed
//! records and started again on the same store. Afterwards every record acknowledged to the
//! client is in the stream exactly once, as sent; every other record was reported failed;
//! nothing is unaccounted for (the order across a retry is printed: not kept yet). Then Hydra with explicit acks through a JetStream and a
//! Redis outage: every request answered once, none acked and lost, none answered failed that
//! the broker stored, none stored twice.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

const RECORDS: usize = 10_000;

#[tokio::test(flavor = "multi_thread")]
async fn jetstream_outage_loses_no_acknowledged_record() {
    let nats = peers::nats();
    let url = format!("nats://127.0.0.1:{}", nats.port);
    let mut running = Some(nats);
    create_stream(&url, "FAULT", "fault.>").await;

    let config = format!(
        r#"{head}
[sinks.js]
type = "jetstream"
url = "{url}"
subject = "fault.records"
timeout_ms = 2000
max_retries = 8
retry_backoff_ms = 100

[routes.probe]
path = "/probe"
filters = [{{ module = "probe" }}]
sinks = ["js"]
"#,
        head = head("")
    );
    let proxy = Proxy::start(&config, &["probe"], &[]);
    let (mut to_proxy, mut from_proxy) = proxy.connect("/probe").await.split();
    let sender = tokio::spawn(async move {
        for i in 0..RECORDS {
            to_proxy.send(Message::text(format!("emit js r{i:05}"))).await.unwrap();
        }
        to_proxy
    });

    // Each record's outcome, by payload: the JetStream sequence it got, or why it failed.
    let mut outcomes: HashMap<String, Result<u64, String>> = HashMap::new();
    let mut broker = None;
    let mut longest_silence = Duration::ZERO;
    while outcomes.len() < RECORDS {
        let waiting = std::time::Instant::now();
        let message = tokio::time::timeout(Duration::from_secs(90), from_proxy.next())
            .await
            .unwrap_or_else(|_| panic!("an answer in time ({} results so far)", outcomes.len()))
            .unwrap()
            .unwrap();
        longest_silence = longest_silence.max(waiting.elapsed());
        if !message.is_text() {
            continue; // the proxy's pings
        }
        let text = message.into_text().unwrap();
        let Some(result) = text.strip_prefix("result ") else {
            assert!(text.starts_with("ok "), "{text}");
            continue;
        };
        let (head, context) = result.rsplit_once(' ').unwrap();
        let payload = context.strip_prefix("ctx:").unwrap().to_string();
        let mut words = head.splitn(3, ' ');
        let (_ticket, status, detail) = (words.next(), words.next().unwrap(), words.next().unwrap_or(""));
        let outcome = match status {
            "ok" => Ok(detail.strip_prefix("FAULT:").unwrap().parse().unwrap()),
            _ => Err(detail.to_string()),
        };
        assert!(
            outcomes.insert(payload, outcome).is_none(),
            "two results for one record"
        );
        // A quarter in, three quarters still to come: the broker dies mid-stream.
        if outcomes.len() == RECORDS / 4 {
            broker = Some(outage(running.take().unwrap()));
        }
    }
    let _nats = broker.expect("the broker was stopped").join().unwrap();
    let _writer = sender.await.unwrap();

    let mut stored: Vec<(u64, String)> = Vec::new();
    for (sequence, message) in stream_messages(&url, "FAULT").await {
        assert_eq!(message.headers.get("key").map(|v| v.as_str()), Some("k"));
        stored.push((sequence, String::from_utf8(message.payload.to_vec()).unwrap()));
    }
    let acked = outcomes.values().filter(|o| o.is_ok()).count();
    let failed = outcomes.values().filter(|o| o.is_err()).count();
    println!(
        "jetstream fault: sent {RECORDS} / acked {acked} / failed {failed} / found in broker {} / retried {} / \
         longest silence {longest_silence:?}",
        stored.len(),
        proxy
            .metric("framegate_sink_records_total{sink=\"js\",outcome=\"retried\"}")
            .await
    );
    assert_eq!(acked + failed, RECORDS);

    let mut seen = HashMap::new();
    for (sequence, payload) in &stored {
        assert!(
            seen.insert(payload.clone(), *sequence).is_none(),
            "{payload} stored twice"
        );
    }
    for (payload, outcome) in &outcomes {
        if let Ok(sequence) = outcome {
            assert_eq!(seen.get(payload), Some(sequence), "acked {payload} is at its sequence");
        }
    }
    // The order is not kept across a retry of part of a batch (docs/connectors.md, "Order"): the
    // records stored after a later one are counted, not asserted, until that is fixed.
    let after_a_later_one = stored.windows(2).filter(|w| w[0].1 > w[1].1).count();
    println!("jetstream fault: {after_a_later_one} records stored right after a later one");
}

/// What became of each of `RECORDS` Hydra requests with explicit acks, pipelined by one client
/// while the broker behind the route is killed (SIGKILL) and started again two seconds later.
async fn hydra_through_an_outage(
    broker: &str,
    peer: peers::Peer,
    sink: &str,
    stored: impl AsyncFnOnce() -> Vec<String>,
) {
    const RECORDS: usize = 3_000;
    let config = format!(
        r#"{head}
{sink}
max_retries = 30
retry_backoff_ms = 100
retry_backoff_max_ms = 500

[routes.hydra]
path = "/ws-ingest"
emit_sinks = ["out"]
filters = [{{ module = "hydra", timeout_ms = 1000, config = {{ ingest_timeout_ms = 30000, ingestors = {{ main = {{ sink = "out" }} }} }} }}]
"#,
        head = head("")
    );
    let proxy = Proxy::start(&config, &["hydra"], &[]);
    let mut ws = proxy.connect("/ws-ingest").await;
    assert!(ask(&mut ws, "-c SET hydra-ack = explicit").await.contains("200"));
    let (mut to_proxy, mut from_proxy) = ws.split();
    let sender = tokio::spawn(async move {
        for i in 0..RECORDS {
            let request = format!("-i r{i:05} {{\"n\":\"r{i:05}\"}}");
            to_proxy.send(Message::text(request)).await.unwrap();
        }
        to_proxy
    });

    // Each request's answer, by request id: its code.
    let mut answers: HashMap<String, u64> = HashMap::new();
    let mut running = Some(peer);
    let mut restarted = None;
    while answers.len() < RECORDS {
        let message = tokio::time::timeout(Duration::from_secs(60), from_proxy.next())
            .await
            .expect("an answer in time")
            .unwrap()
            .unwrap();
        if !message.is_text() {
            continue; // the proxy's pings
        }
        let text = message.to_text().unwrap();
        let reply: serde_json::Value = serde_json::from_str(text).unwrap_or_else(|e| {
            let cut: Vec<String> = proxy
                .logs()
                .lines()
                .filter(|l| l.contains("cut off"))
                .map(String::from)
                .collect();
            panic!("{e}: {text}: {cut:?}")
        });
        let id = reply["requestId"].as_str().unwrap().to_string();
        let code = reply["status"]["code"].as_u64().unwrap();
        assert!(answers.insert(id.clone(), code).is_none(), "{id} answered twice");
        if answers.len() == RECORDS / 4 {
            restarted = Some(outage(running.take().unwrap()));
        }
    }
    let _peer = restarted.expect("the broker was stopped").join().unwrap();
    let _writer = sender.await.unwrap();

    let stored = stored().await;
    let mut copies: HashMap<String, usize> = HashMap::new();
    for payload in &stored {
        let value: serde_json::Value =
            serde_json::from_str(payload).unwrap_or_else(|e| panic!("{e}: stored {payload:?}"));
        *copies.entry(value["n"].as_str().unwrap().to_string()).or_default() += 1;
    }
    let acked = answers.values().filter(|&&code| code == 200).count();
    let failed = RECORDS - acked;
    let acked_and_lost = (answers.iter())
        .filter(|(id, code)| **code == 200 && !copies.contains_key(*id))
        .count();
    let failed_but_stored = (answers.iter())
        .filter(|(id, code)| **code != 200 && copies.contains_key(*id))
        .count();
    let stored_twice = copies.values().filter(|&&n| n > 1).count();
    println!(
        "hydra through a {broker} outage: sent {RECORDS} / answered {} / acked {acked} / failed {failed} / \
         stored {} / acked and lost {acked_and_lost} / failed but stored {failed_but_stored} / stored twice {stored_twice} / \
         retried {}",
        answers.len(),
        stored.len(),
        proxy
            .metric("framegate_sink_records_total{sink=\"out\",outcome=\"retried\"}")
            .await
    );
    assert_eq!(answers.len(), RECORDS);
    assert_eq!(acked_and_lost, 0, "acked and lost");
    assert_eq!(failed_but_stored, 0, "answered failed, yet stored");
    assert_eq!(stored_twice, 0, "stored twice");
    for (id, n) in &copies {
        assert!(answers.contains_key(id), "{id} stored, never sent ({n})");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hydra_answers_tell_the_truth_through_a_jetstream_outage() {
    let nats = peers::nats();
    let url = format!("nats://127.0.0.1:{}", nats.port);
    create_stream(&url, "HYDRA", "hydra.>").await;
    let sink =
        format!("[sinks.out]\ntype = \"jetstream\"\nurl = \"{url}\"\nsubject = \"hydra.records\"\ntimeout_ms = 2000");
    hydra_through_an_outage("JetStream", nats, &sink, async || {
        let messages = stream_messages(&url, "HYDRA").await;
        (messages.into_iter())
            .map(|(_, message)| String::from_utf8(message.payload.to_vec()).unwrap())
            .collect()
    })
    .await;
}

/// The broker goes away without a word (SIGKILL), and comes back two seconds later.
fn outage(mut peer: peers::Peer) -> std::thread::JoinHandle<peers::Peer> {
    peer.kill();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        peer.restart();
        peer
    })
}

async fn create_stream(url: &str, name: &str, subjects: &str) {
    let admin = async_nats::connect(url).await.unwrap();
    async_nats::jetstream::new(admin)
        .create_stream(async_nats::jetstream::stream::Config {
            name: name.into(),
            subjects: vec![subjects.into()],
            ..Default::default()
        })
        .await
        .unwrap();
}

/// Every message of a JetStream stream, with its sequence, oldest first.
async fn stream_messages(url: &str, name: &str) -> Vec<(u64, async_nats::jetstream::message::StreamMessage)> {
    let client = async_nats::connect(url).await.unwrap();
    let stream = async_nats::jetstream::new(client).get_stream(name).await.unwrap();
    let last = stream.get_info().await.unwrap().state.last_sequence;
    let mut messages = Vec::new();
    for sequence in 1..=last {
        if let Ok(message) = stream.get_raw_message(sequence).await {
            messages.push((sequence, message));
        }
    }
    messages
}

#[tokio::test(flavor = "multi_thread")]
async fn hydra_answers_tell_the_truth_through_a_redis_outage() {
    let redis = peers::redis_durable();
    let port = redis.port;
    let sink = format!(
        "[sinks.out]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:{port}\"\nstream = \"hydra\"\ntimeout_ms = 2000\n\
         dedupe_window_ms = 600000"
    );
    hydra_through_an_outage("Redis", redis, &sink, async || {
        peers::redis_payloads(port, "hydra").await
    })
    .await;
}
