//! Broker faults: JetStream is killed (SIGKILL) in the middle of a stream of 10,000 confirmed
//! records and started again on the same store. Afterwards every record acknowledged to the
//! client is in the stream exactly once, as sent and in order; every other record was reported
//! failed; nothing is unaccounted for.

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
    let admin = async_nats::connect(&url).await.unwrap();
    async_nats::jetstream::new(admin)
        .create_stream(async_nats::jetstream::stream::Config {
            name: "FAULT".into(),
            subjects: vec!["fault.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();

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
    while outcomes.len() < RECORDS {
        let message = tokio::time::timeout(PATIENCE, from_proxy.next())
            .await
            .expect("an answer in time")
            .unwrap()
            .unwrap();
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
            // The broker goes away without a word, and comes back two seconds later.
            let mut nats = running.take().unwrap();
            nats.kill();
            broker = Some(std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(2));
                nats.restart();
                nats
            }));
        }
    }
    let _nats = broker.expect("the broker was stopped").join().unwrap();
    let _writer = sender.await.unwrap();

    let client = async_nats::connect(&url).await.unwrap();
    let stream = async_nats::jetstream::new(client).get_stream("FAULT").await.unwrap();
    let last = stream.get_info().await.unwrap().state.last_sequence;
    let mut stored: Vec<(u64, String)> = Vec::new();
    for sequence in 1..=last {
        if let Ok(message) = stream.get_raw_message(sequence).await {
            assert_eq!(message.headers.get("key").map(|v| v.as_str()), Some("k"));
            stored.push((sequence, String::from_utf8(message.payload.to_vec()).unwrap()));
        }
    }
    let acked = outcomes.values().filter(|o| o.is_ok()).count();
    let failed = outcomes.values().filter(|o| o.is_err()).count();
    println!(
        "jetstream fault: sent {RECORDS} / acked {acked} / failed {failed} / found in broker {} / retried {}",
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
    // One key, one order: the stream holds the records in the order they were sent.
    let payloads: Vec<&String> = stored.iter().map(|(_, p)| p).collect();
    assert!(payloads.is_sorted(), "records out of order");
}
