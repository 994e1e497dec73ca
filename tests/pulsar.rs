//! The `pulsar` sink and source against a real broker of the Pulsar protocol (pulsar-lite),
//! with an independent pulsar-rs client on the other side: records sent by WebSocket clients
//! are read back with their payload, partition key, properties and order, and a confirmed
//! result's id is the message id the consumer saw; messages an independent producer sends reach
//! subscribed WebSocket clients, acked ones stay acked over a reconnect and unacked ones come
//! back, a shared subscription splits the messages, an exclusive one refuses a second consumer.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};

use common::*;
use futures_util::StreamExt;
use pulsar::consumer::{InitialPosition, Message};
use pulsar::{Consumer, ConsumerOptions, Producer, Pulsar, SubType, TokioExecutor};

const MESSAGES: usize = 50;

fn topic(name: &str) -> String {
    format!("persistent://public/default/{name}")
}

fn config(port: u16) -> String {
    format!(
        r#"{head}
[sinks.pl]
type = "pulsar"
url = "pulsar://127.0.0.1:{port}"
topic = "persistent://public/default/{{meta.query.topic}}"
send_timeout_ms = 5000

[sinks.batched]
type = "pulsar"
url = "pulsar://127.0.0.1:{port}"
topic = "persistent://public/default/batched"
batching = true
compression = "zlib"

[sources.pl]
type = "pulsar"
url = "pulsar://127.0.0.1:{port}"
timeout_ms = 3000

[routes.in]
path = "/in"
sinks = ["pl"]

[routes.probe]
path = "/probe"
# A generous deadline: the machine running the tests may be busy.
filters = [{{ module = "probe", timeout_ms = 1000 }}]
sinks = ["pl", "batched"]
"#,
        head = head("")
    )
}

async fn client(port: u16) -> Pulsar<TokioExecutor> {
    Pulsar::builder(format!("pulsar://127.0.0.1:{port}"), TokioExecutor)
        .build()
        .await
        .unwrap()
}

async fn open_producer(client: &Pulsar<TokioExecutor>, name: &str) -> Producer<TokioExecutor> {
    client.producer().with_topic(topic(name)).build().await.unwrap()
}

/// Sends `payload` with key `key` and property `h`, and waits for the broker's receipt.
async fn produce(producer: &mut Producer<TokioExecutor>, payload: &str, key: &str) {
    producer
        .create_message()
        .with_content(payload.as_bytes().to_vec())
        .with_key(key)
        .with_property("h", format!("v-{payload}"))
        .send_non_blocking()
        .await
        .unwrap()
        .await
        .unwrap();
}

/// The next message a test consumer gets, past redeliveries of messages it already had:
/// pulsar-lite now and then dispatches a message twice to one consumer (at least once, as the
/// protocol allows). What is checked is what the broker holds: each message once, in order.
async fn next_distinct(
    consumer: &mut Consumer<Vec<u8>, TokioExecutor>,
    seen: &mut HashSet<String>,
) -> Message<Vec<u8>> {
    loop {
        let message = tokio::time::timeout(PATIENCE, consumer.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if seen.insert(framegate::connectors::pulsar::id::encode(message.message_id())) {
            return message;
        }
    }
}

/// The next text of a connection, past deliveries of message ids it already had (see
/// `next_distinct`).
async fn next_new(ws: &mut Ws, seen: &mut HashSet<String>) -> String {
    loop {
        let text = next_text(ws).await;
        if !text.starts_with("[sub ") || seen.insert(delivery(&text).0) {
            return text;
        }
    }
}

/// A delivery tagged by the probe, `[sub S msg ID ...] payload`: (id, the rest after the id).
fn delivery(text: &str) -> (String, String) {
    let rest = text
        .split_once(" msg ")
        .unwrap_or_else(|| panic!("not a delivery: {text}"))
        .1;
    let (id, rest) = rest.split_once(' ').unwrap_or_else(|| panic!("not a delivery: {text}"));
    (id.trim_end_matches(']').to_string(), rest.to_string())
}

#[tokio::test]
async fn sink_messages_reach_an_independent_consumer_with_key_properties_and_ids() {
    let broker = peers::pulsar();
    let pulsar = client(broker.port).await;
    let mut consumer: Consumer<Vec<u8>, TokioExecutor> = pulsar
        .consumer()
        .with_topic(topic("orders"))
        .with_subscription("check")
        .with_subscription_type(SubType::Exclusive)
        .with_options(ConsumerOptions::default().with_initial_position(InitialPosition::Earliest))
        .build()
        .await
        .unwrap();

    let proxy = Proxy::start(&config(broker.port), &["probe"], &[]);
    let mut ws = proxy.connect("/in?topic=orders").await;
    let sent: Vec<String> = (0..MESSAGES).map(|i| format!("{{\"order\":{i}}}")).collect();
    for message in &sent {
        send_text(&mut ws, message).await;
    }
    // The probe's record comes last: after the others are in.
    eventually("the first records are confirmed", || async {
        proxy
            .metric("framegate_sink_records_total{sink=\"pl\",outcome=\"delivered\"}")
            .await
            == MESSAGES as f64
    })
    .await;
    let mut probe = proxy.connect("/probe?topic=orders").await;
    let ticket = ask(&mut probe, "emit pl hello").await.replace("ok ", "");
    let result = next_text(&mut probe).await;
    let id = result
        .strip_prefix(&format!("result {ticket} ok "))
        .and_then(|r| r.strip_suffix(" ctx:hello"))
        .unwrap_or_else(|| panic!("{result}"))
        .to_string();

    let mut seen = HashSet::new();
    for expected in &sent {
        let message = next_distinct(&mut consumer, &mut seen).await;
        assert_eq!(std::str::from_utf8(&message.payload.data).unwrap(), expected);
        assert_eq!(message.key(), None);
        assert!(message.metadata().properties.is_empty());
        consumer.ack(&message).await.unwrap();
    }
    let message = next_distinct(&mut consumer, &mut seen).await;
    assert_eq!(message.payload.data, b"hello");
    assert_eq!(message.key().as_deref(), Some("k"));
    let properties: Vec<(&str, &str)> = message
        .metadata()
        .properties
        .iter()
        .map(|p| (p.key.as_str(), p.value.as_str()))
        .collect();
    assert_eq!(properties, [("h", "v")]);
    // The result id is the message id, in the encoding of Pulsar's WebSocket API.
    assert_eq!(id, framegate::connectors::pulsar::id::encode(message.message_id()));
    let decoded = framegate::connectors::pulsar::id::decode(&id).unwrap();
    assert_eq!(
        (decoded.ledger_id, decoded.entry_id),
        (message.message_id().ledger_id, message.message_id().entry_id)
    );
    assert_eq!(
        proxy
            .metric("framegate_sink_records_total{sink=\"pl\",outcome=\"delivered\"}")
            .await,
        (MESSAGES + 1) as f64
    );

    // Batched and compressed: the id carries the batch index; the consumer unpacks it.
    let mut batched: Consumer<Vec<u8>, TokioExecutor> = pulsar
        .consumer()
        .with_topic(topic("batched"))
        .with_subscription("check")
        .with_subscription_type(SubType::Exclusive)
        .with_options(ConsumerOptions::default().with_initial_position(InitialPosition::Earliest))
        .build()
        .await
        .unwrap();
    let ticket = ask(&mut probe, "emit batched packed").await.replace("ok ", "");
    let result = next_text(&mut probe).await;
    let id = result
        .strip_prefix(&format!("result {ticket} ok "))
        .and_then(|r| r.strip_suffix(" ctx:packed"))
        .unwrap_or_else(|| panic!("{result}"));
    assert_eq!(
        framegate::connectors::pulsar::id::decode(id).unwrap().batch_index,
        Some(0)
    );
    let message = tokio::time::timeout(PATIENCE, batched.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(message.payload.data, b"packed");
    assert_eq!(message.key().as_deref(), Some("k"));
    // The source names that message with the same id.
    let spec = format!(r#"{{"topic":"{}","start":"earliest"}}"#, topic("batched"));
    assert!(ask(&mut probe, &format!("sub pl {spec}")).await.starts_with("ok "));
    assert_eq!(
        delivery(&next_text(&mut probe).await),
        (id.to_string(), "packed".to_string())
    );
}

#[tokio::test]
async fn a_broker_down_at_start_fails_records_until_it_comes_up() {
    let port = peers::free_port();
    let proxy = Proxy::start(
        &config(port).replace("[sinks.pl]", "[sinks.pl]\nmax_retries = 0"),
        &["probe"],
        &[],
    );
    let mut probe = proxy.connect("/probe?topic=late").await;
    let ticket = ask(&mut probe, "emit pl early").await.replace("ok ", "");
    let result = next_text(&mut probe).await;
    let expected = format!("result {ticket} failed pulsar pulsar://127.0.0.1:{port}: ");
    assert!(result.starts_with(&expected), "{result}");
    assert_eq!(proxy.metric("framegate_peer_up{part=\"sinks.pl\"}").await, 0.0);

    // The broker comes up: the next record connects, and the sink is up again.
    let broker = peers::pulsar_on(port);
    let ticket = ask(&mut probe, "emit pl late").await.replace("ok ", "");
    let result = next_text(&mut probe).await;
    assert!(result.starts_with(&format!("result {ticket} ok ")), "{result}");
    assert_eq!(proxy.metric("framegate_peer_up{part=\"sinks.pl\"}").await, 1.0);
    let pulsar = client(broker.port).await;
    let mut reader = pulsar
        .reader()
        .with_topic(topic("late"))
        .with_options(ConsumerOptions::default().with_initial_position(InitialPosition::Earliest))
        .into_reader::<Vec<u8>>()
        .await
        .unwrap();
    let message = tokio::time::timeout(PATIENCE, reader.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        message.payload.data, b"late",
        "the failed record is not there, the later one is"
    );
}

#[tokio::test]
async fn source_acks_survive_a_reconnect_and_unacked_messages_come_back() {
    let broker = peers::pulsar();
    let pulsar = client(broker.port).await;
    let mut producer = open_producer(&pulsar, "feed").await;
    for i in 0..6 {
        produce(&mut producer, &format!("m{i}"), &format!("k{i}")).await;
    }
    let proxy = Proxy::start(&config(broker.port), &["probe"], &[]);
    let spec = format!(
        r#"{{"topic":"{}","subscription":"s1","start":"earliest"}}"#,
        topic("feed")
    );

    let mut first = proxy.connect("/probe?manual=1&show=key,header.h").await;
    let mut seen = HashSet::new();
    let sub = ask(&mut first, &format!("sub pl {spec}")).await.replace("ok ", "");
    let mut ids = Vec::new();
    for i in 0..6 {
        let text = next_new(&mut first, &mut seen).await;
        assert!(text.starts_with(&format!("[sub {sub} msg ")), "{text}");
        let (id, rest) = delivery(&text);
        assert_eq!(rest, format!("key=k{i} header.h=v-m{i}] m{i}"));
        ids.push(id);
    }
    for id in ids.iter().step_by(2) {
        send_text(&mut first, &format!("ack {sub} {id}")).await;
        assert_eq!(next_new(&mut first, &mut seen).await, "ok ");
    }
    eventually("three acks carried out", || async {
        proxy
            .metric("framegate_source_messages_total{source=\"pl\",event=\"acked\"}")
            .await
            == 3.0
    })
    .await;
    first.close(None).await.unwrap();
    drop(first);

    // The same subscription again: only the unacked messages, then what is new.
    let mut second = proxy.connect("/probe?manual=1").await;
    let mut seen = HashSet::new();
    let sub = ask(&mut second, &format!("sub pl {spec}")).await.replace("ok ", "");
    let mut again = Vec::new();
    for _ in 0..3 {
        again.push(delivery(&next_new(&mut second, &mut seen).await));
    }
    for (id, _) in &again {
        send_text(&mut second, &format!("ack {sub} {id}")).await;
        assert_eq!(next_new(&mut second, &mut seen).await, "ok ");
    }
    let mut again: Vec<String> = again.into_iter().map(|(_, payload)| payload).collect();
    again.sort();
    assert_eq!(again, ["m1", "m3", "m5"]);
    produce(&mut producer, "m6", "k6").await;
    let (_, payload) = delivery(&next_new(&mut second, &mut seen).await);
    assert_eq!(payload, "m6", "nothing acked came back before the new message");

    // On a shared subscription, a nacked message comes again, with its id.
    let mut sharing = proxy.connect("/probe?manual=1").await;
    let mut seen = HashSet::new();
    let spec = format!(
        r#"{{"topic":"{}","subscription":"s4","type":"shared","start":"earliest"}}"#,
        topic("feed")
    );
    let sub = ask(&mut sharing, &format!("sub pl {spec}")).await.replace("ok ", "");
    let (m0, payload) = delivery(&next_new(&mut sharing, &mut seen).await);
    assert_eq!(payload, "m0");
    seen.clear();
    send_text(&mut sharing, &format!("nack {sub} {m0}")).await;
    let mut again = None;
    while again.is_none() {
        let text = next_new(&mut sharing, &mut seen).await;
        if text.starts_with("[sub ") && delivery(&text).0 == m0 {
            again = Some(delivery(&text).1);
        }
    }
    assert_eq!(again.as_deref(), Some("m0"));
    assert_eq!(
        proxy
            .metric("framegate_source_messages_total{source=\"pl\",event=\"nacked\"}")
            .await,
        1.0
    );

    // A reader from a message id the source handed out reads from there, whatever was acked.
    let mut reader = proxy.connect("/probe").await;
    let mut seen = HashSet::new();
    let spec = format!(
        r#"{{"topic":"{}","reader":true,"start_message_id":"{}"}}"#,
        topic("feed"),
        ids[2]
    );
    assert!(ask(&mut reader, &format!("sub pl {spec}")).await.starts_with("ok "));
    let (id, payload) = delivery(&next_new(&mut reader, &mut seen).await);
    assert_eq!(
        (id.as_str(), payload.as_str()),
        (ids[2].as_str(), "m2"),
        "a reader starts at its message"
    );
    let (_, payload) = delivery(&next_new(&mut reader, &mut seen).await);
    assert_eq!(payload, "m3");
}

/// Collects what a connection receives, in the background (each message id once, see
/// `next_distinct`).
fn collect(mut ws: Ws) -> Arc<Mutex<Vec<String>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let into = seen.clone();
    tokio::spawn(async move {
        let mut seen = HashSet::new();
        while let Some(Ok(message)) = ws.next().await {
            if let Ok(text) = message.into_text() {
                let (id, payload) = delivery(&text);
                if seen.insert(id) {
                    into.lock().unwrap().push(payload);
                }
            }
        }
    });
    seen
}

#[tokio::test]
async fn a_shared_subscription_splits_and_an_exclusive_one_refuses_a_second_consumer() {
    let broker = peers::pulsar();
    let pulsar = client(broker.port).await;
    let proxy = Proxy::start(&config(broker.port), &["probe"], &[]);

    let shared = format!(
        r#"{{"topic":"{}","subscription":"s2","type":"shared","start":"earliest"}}"#,
        topic("split")
    );
    let mut receivers = Vec::new();
    for _ in 0..2 {
        let mut ws = proxy.connect("/probe").await;
        assert!(ask(&mut ws, &format!("sub pl {shared}")).await.starts_with("ok "));
        receivers.push(collect(ws));
    }
    let mut producer = open_producer(&pulsar, "split").await;
    // Produce until both have a message: then both are surely attached.
    let mut produced = 0;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while receivers.iter().any(|r| r.lock().unwrap().is_empty()) {
        assert!(tokio::time::Instant::now() < deadline, "a shared consumer got nothing");
        produce(&mut producer, &format!("p{produced}"), "k").await;
        produced += 1;
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    for _ in 0..20 {
        produce(&mut producer, &format!("p{produced}"), "k").await;
        produced += 1;
    }
    let total = || receivers.iter().map(|r| r.lock().unwrap().len()).sum::<usize>();
    eventually("every message reached one of them", || async { total() == produced }).await;
    let all: Vec<String> = receivers.iter().flat_map(|r| r.lock().unwrap().clone()).collect();
    let distinct: BTreeSet<&String> = all.iter().collect();
    assert_eq!(distinct.len(), all.len(), "no message went to both: {all:?}");

    // Exclusive: the first consumer holds it; the second is refused and the filter hears why.
    let exclusive = format!(
        r#"{{"topic":"{}","subscription":"s3","type":"exclusive","start":"earliest"}}"#,
        topic("solo")
    );
    let mut holder = proxy.connect("/probe").await;
    let mut held = HashSet::new();
    assert!(
        ask(&mut holder, &format!("sub pl {exclusive}"))
            .await
            .starts_with("ok ")
    );
    let mut solo = open_producer(&pulsar, "solo").await;
    // Once a message arrives, the first consumer is surely attached.
    produce(&mut solo, "first", "k").await;
    let (_, payload) = delivery(&next_new(&mut holder, &mut held).await);
    assert_eq!(payload, "first");
    let mut second = proxy.connect("/probe").await;
    let sub = ask(&mut second, &format!("sub pl {exclusive}"))
        .await
        .replace("ok ", "");
    let refused = next_text(&mut second).await;
    assert!(
        refused.starts_with(&format!("result {sub} failed pulsar subscription \"s3\"")),
        "{refused}"
    );
    // The holder keeps its subscription.
    produce(&mut solo, "second", "k").await;
    let (_, payload) = delivery(&next_new(&mut holder, &mut held).await);
    assert_eq!(payload, "second");
}
