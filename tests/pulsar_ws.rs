//! The `pulsar-ws` filter (Apache Pulsar's WebSocket API) on the shipped config/pulsar.toml in
//! front of pulsar-lite: the seed's Python (websocket-client) and Node.js (ws) producers and
//! consumers, and Rust clients, get Pulsar's answers in their exact shapes; what WebSocket producers wrote is read
//! back by independent pulsar-rs and Apache pulsar-client consumers (payload, key, properties, the
//! answer's messageId), and what they wrote reaches WebSocket consumers;
//! what an independent producer wrote is pushed to WebSocket consumers and readers; acks hold
//! across a reconnect; bad input gets Pulsar's errors, and a producer's connection stays usable.

mod common;

use std::collections::{BTreeMap, HashSet};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::*;
use futures_util::StreamExt;
use pulsar::consumer::InitialPosition;
use pulsar::{Consumer, ConsumerOptions, Producer, Pulsar, SubType, TokioExecutor};
use serde_json::Value;

fn topic(name: &str) -> String {
    format!("persistent://public/default/{name}")
}

/// config/pulsar.toml with ephemeral ports and the test's broker.
fn start(broker: u16) -> Proxy {
    start_with(broker, "")
}

/// The same with `sink` lines added to the sink's options.
fn start_with(broker: u16, sink: &str) -> Proxy {
    let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/pulsar.toml")).unwrap();
    let config = shipped
        .replace("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:0\"")
        .replace("admin = \"127.0.0.1:9090\"", "admin = \"127.0.0.1:0\"")
        .replace("dir = \"target/filters\"", "dir = \"filters\"")
        .replace("pulsar://127.0.0.1:6650", &format!("pulsar://127.0.0.1:{broker}"))
        .replace("send_timeout_ms = 5000", &format!("send_timeout_ms = 5000\n{sink}"));
    assert_ne!(config, shipped);
    Proxy::start(&config, &["pulsar-ws"], &[])
}

async fn client(port: u16) -> Pulsar<TokioExecutor> {
    Pulsar::builder(format!("pulsar://127.0.0.1:{port}"), TokioExecutor)
        .build()
        .await
        .unwrap()
}

async fn consumer(pulsar: &Pulsar<TokioExecutor>, name: &str) -> Consumer<Vec<u8>, TokioExecutor> {
    pulsar
        .consumer()
        .with_topic(topic(name))
        .with_subscription("check")
        .with_subscription_type(SubType::Exclusive)
        .with_options(ConsumerOptions::default().with_initial_position(InitialPosition::Earliest))
        .build()
        .await
        .unwrap()
}

/// The next message the consumer had not seen (pulsar-lite now and then dispatches one twice).
async fn next_distinct(
    consumer: &mut Consumer<Vec<u8>, TokioExecutor>,
    seen: &mut HashSet<String>,
) -> pulsar::consumer::Message<Vec<u8>> {
    loop {
        let message = tokio::time::timeout(PATIENCE, consumer.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if seen.insert(framegate::connectors::pulsar::id::encode(message.message_id())) {
            consumer.ack(&message).await.unwrap();
            return message;
        }
    }
}

/// A message's properties, sorted: Pulsar's properties are a map, kept in no order.
fn properties(message: &pulsar::consumer::Message<Vec<u8>>) -> Vec<(String, String)> {
    let mut properties: Vec<(String, String)> = message
        .metadata()
        .properties
        .iter()
        .map(|p| (p.key.clone(), p.value.clone()))
        .collect();
    properties.sort();
    properties
}

/// Sends `payload` with key `k` and property `h`, as an independent producer.
async fn produce(producer: &mut Producer<TokioExecutor>, payload: &str) -> String {
    let receipt = producer
        .create_message()
        .with_content(payload.as_bytes().to_vec())
        .with_key("k")
        .with_property("h", format!("v-{payload}"))
        .send_non_blocking()
        .await
        .unwrap()
        .await
        .unwrap();
    framegate::connectors::pulsar::id::encode(&receipt.message_id.unwrap())
}

async fn python(args: &[&str]) -> Vec<String> {
    let args = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || run_client("python3", "pulsar_ws_sample.py", args))
        .await
        .unwrap()
}

/// The Node.js samples need `ws` in tests/node/node_modules (scripts/test installs it).
async fn node(args: &[&str]) -> Vec<String> {
    let args = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || run_client("node", "node/pulsar_ws_sample.js", args))
        .await
        .unwrap()
}

fn field(text: &str, name: &str) -> String {
    let value: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    value[name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .to_string()
}

/// A pushed message must be exactly Pulsar's shape; its id and publishTime are checked apart.
fn assert_pushed(text: &str, payload: &str, properties: &str, key: Option<&str>) -> String {
    assert_pushed_again(text, payload, properties, key, 0)
}

/// The same for a message the broker sent `redeliveries` times before.
fn assert_pushed_again(text: &str, payload: &str, properties: &str, key: Option<&str>, redeliveries: u32) -> String {
    let id = field(text, "messageId");
    let time = field(text, "publishTime");
    assert!(
        time.len() == 24 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
        "{time}"
    );
    let key = key.map_or(String::new(), |k| format!(",\"key\":\"{k}\""));
    assert_eq!(
        text,
        format!(
            r#"{{"messageId":"{id}","payload":"{}","properties":{properties},"publishTime":"{time}","redeliveryCount":{redeliveries}{key}}}"#,
            STANDARD.encode(payload)
        )
    );
    id
}

#[tokio::test]
async fn producers_answer_after_the_broker_and_an_independent_consumer_reads_it() {
    let broker = peers::pulsar();
    let pulsar = client(broker.port).await;
    let mut check = consumer(&pulsar, "seed").await;
    let proxy = start(broker.port);

    // The seed's Python producer: context 5 comes back as "5", with the broker's message id.
    let replies = python(&["produce", &proxy.url("/ws/v2/producer/persistent/public/default/seed")]).await;
    let id = field(&replies[0], "messageId");
    assert_eq!(
        replies,
        [format!(r#"{{"result":"ok","messageId":"{id}","context":"5"}}"#)]
    );

    // A Rust client with a key, on the same connection several messages in order.
    let mut ws = proxy.connect("/ws/v2/producer/persistent/public/default/seed").await;
    let mut ids = vec![id];
    for i in 0..3 {
        let message = format!(
            r#"{{"payload":"{}","key":"k{i}","properties":{{"n":"{i}"}},"context":"c{i}"}}"#,
            STANDARD.encode(format!("m{i}"))
        );
        send_text(&mut ws, &message).await;
        let reply = next_text(&mut ws).await;
        let id = field(&reply, "messageId");
        assert_eq!(
            reply,
            format!(r#"{{"result":"ok","messageId":"{id}","context":"c{i}"}}"#)
        );
        ids.push(id);
    }

    let mut seen = HashSet::new();
    let message = next_distinct(&mut check, &mut seen).await;
    assert_eq!(message.payload.data, b"Hello World");
    assert_eq!(message.key(), None);
    assert_eq!(
        properties(&message),
        [("key1", "value1"), ("key2", "value2")].map(|(k, v)| (k.to_string(), v.to_string()))
    );
    assert_eq!(framegate::connectors::pulsar::id::encode(message.message_id()), ids[0]);
    for i in 0..3 {
        let message = next_distinct(&mut check, &mut seen).await;
        assert_eq!(message.payload.data, format!("m{i}").as_bytes());
        assert_eq!(message.key(), Some(format!("k{i}")));
        assert_eq!(properties(&message), [("n".to_string(), i.to_string())]);
        assert_eq!(
            framegate::connectors::pulsar::id::encode(message.message_id()),
            ids[i + 1]
        );
    }
}

#[tokio::test]
async fn consumers_get_what_an_independent_producer_wrote_and_acks_hold_across_a_reconnect() {
    let broker = peers::pulsar();
    let pulsar = client(broker.port).await;
    let mut producer = pulsar.producer().with_topic(topic("feed")).build().await.unwrap();
    let mut written = Vec::new();
    for i in 0..4 {
        written.push(produce(&mut producer, &format!("m{i}")).await);
    }
    let proxy = start(broker.port);

    // The seed's Python consumer reads and acks all four on its own subscription.
    let url = proxy.url("/ws/v2/consumer/persistent/public/default/feed/py?subscriptionInitialPosition=Earliest");
    let lines = python(&["consume", &url, "4"]).await;
    let mut read = BTreeMap::new();
    for pair in lines.chunks(2) {
        let payload = &pair[1];
        let id = assert_pushed(&pair[0], payload, &format!(r#"{{"h":"v-{payload}"}}"#), Some("k"));
        read.insert(id, payload.clone());
    }
    let expected: BTreeMap<String, String> = written
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), format!("m{i}")))
        .collect();
    assert_eq!(read, expected, "each message once, with the producer's id");

    // A Rust client acks two of them on a subscription of its own, and comes back.
    let path = "/ws/v2/consumer/persistent/public/default/feed/rs?subscriptionInitialPosition=Earliest";
    let mut ws = proxy.connect(path).await;
    let mut seen = HashSet::new();
    while seen.len() < 4 {
        let text = next_text(&mut ws).await;
        let id = field(&text, "messageId");
        if seen.insert(id.clone()) && (id == written[0] || id == written[2]) {
            send_text(&mut ws, &format!(r#"{{"messageId":"{id}"}}"#)).await;
        }
    }
    eventually("the Python client's four acks and two more are carried out", || async {
        proxy
            .metric("framegate_source_messages_total{source=\"pulsar\",event=\"acked\"}")
            .await
            == 6.0
    })
    .await;
    ws.close(None).await.unwrap();
    drop(ws);

    let mut ws = proxy.connect(path).await;
    let mut again = HashSet::new();
    while again.len() < 2 {
        again.insert(field(&next_text(&mut ws).await, "messageId"));
    }
    assert_eq!(again, HashSet::from([written[1].clone(), written[3].clone()]));
    let new = produce(&mut producer, "m4").await;
    loop {
        let text = next_text(&mut ws).await;
        let id = field(&text, "messageId");
        if id == new {
            assert_pushed(&text, "m4", r#"{"h":"v-m4"}"#, Some("k"));
            break;
        }
        assert!(again.contains(&id), "an acked message came back: {text}");
    }

    // isEndOfTopic is answered; bad JSON closes the session with Pulsar's code 3.
    send_text(&mut ws, r#"{"type":"isEndOfTopic"}"#).await;
    loop {
        let text = next_text(&mut ws).await;
        if !text.contains("messageId") {
            assert_eq!(text, r#"{"endOfTopic":false}"#);
            break;
        }
    }
    send_text(&mut ws, "{not json").await;
    let (code, reason) = closed_with(&mut ws).await;
    assert_eq!(code, 4003);
    assert!(reason.starts_with("Failed to de-serialize from JSON"), "{reason}");
}

#[tokio::test]
async fn readers_start_where_asked() {
    let broker = peers::pulsar();
    let pulsar = client(broker.port).await;
    let mut producer = pulsar.producer().with_topic(topic("log")).build().await.unwrap();
    let mut written = Vec::new();
    for i in 0..3 {
        written.push(produce(&mut producer, &format!("m{i}")).await);
    }
    let proxy = start(broker.port);

    let mut ws = proxy
        .connect("/ws/v2/reader/persistent/public/default/log?messageId=earliest&readerName=r1")
        .await;
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let text = next_text(&mut ws).await;
        let id = field(&text, "messageId");
        if !seen.contains(&id) {
            let payload = format!("m{}", seen.len());
            assert_pushed(&text, &payload, &format!(r#"{{"h":"v-{payload}"}}"#), Some("k"));
            send_text(&mut ws, &format!(r#"{{"messageId":"{id}"}}"#)).await;
            seen.push(id);
        }
    }
    assert_eq!(seen, written);

    // From a message id: pulsar-lite positions the reader at it (docs/connectors.md).
    let mut ws = proxy
        .connect(&format!(
            "/ws/v2/reader/persistent/public/default/log?messageId={}",
            urlencode(&written[1])
        ))
        .await;
    assert_eq!(field(&next_text(&mut ws).await, "messageId"), written[1]);
}

fn urlencode(text: &str) -> String {
    text.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D")
}

#[tokio::test]
async fn bad_input_gets_pulsars_errors_and_the_producer_stays_usable() {
    let broker = peers::pulsar();
    let pulsar = client(broker.port).await;
    let mut check = consumer(&pulsar, "bad").await;
    let proxy = start(broker.port);
    let path = "/ws/v2/producer/persistent/public/default/bad";
    let mut ws = proxy.connect(path).await;

    send_text(&mut ws, "{not json").await;
    assert_eq!(
        next_text(&mut ws).await,
        r#"{"result":"send-error:3","errorMsg":"Failed to de-serialize from JSON"}"#
    );
    send_text(&mut ws, r#"{"payload":"not base64!","context":"x"}"#).await;
    let reply = next_text(&mut ws).await;
    assert!(
        reply.starts_with(r#"{"result":"send-error:7","errorMsg":"Invalid Base64 message-payload error="#)
            && reply.ends_with(r#"","context":"x"}"#),
        "{reply}"
    );
    send_text(&mut ws, r#"{"properties":{"a":"b"},"context":"y"}"#).await;
    assert_eq!(
        field(&next_text(&mut ws).await, "result"),
        "send-error:7",
        "a message without payload"
    );
    send_text(
        &mut ws,
        &format!(r#"{{"payload":"{}","context":"z"}}"#, STANDARD.encode("fine")),
    )
    .await;
    let reply = next_text(&mut ws).await;
    let id = field(&reply, "messageId");
    assert_eq!(reply, format!(r#"{{"result":"ok","messageId":"{id}","context":"z"}}"#));
    let mut seen = HashSet::new();
    let message = next_distinct(&mut check, &mut seen).await;
    assert_eq!(
        message.payload.data, b"fine",
        "only the good message reached the broker"
    );

    // Bad query parameters are refused at the upgrade with Pulsar's 400.
    for bad in [
        format!("{path}?compressionType=BROTLI"),
        format!("{path}?sendTimeoutMillis=soon"),
        "/ws/v2/consumer/persistent/public/default/bad/s?subscriptionType=Everyone".to_string(),
        "/ws/v2/consumer/persistent/public/default/bad/s?receiverQueueSize=-1".to_string(),
        "/ws/v2/reader/persistent/public/default/bad?messageId=somewhere!".to_string(),
    ] {
        let (status, body) = upgrade_status(proxy.ws, &bad).await;
        assert_eq!(status, 400, "{bad}");
        assert!(body.starts_with("Invalid query params: "), "{bad}: {body}");
    }
}

#[tokio::test]
async fn v1_paths_nacks_and_a_taken_exclusive_subscription() {
    let broker = peers::pulsar();
    let proxy = start(broker.port);

    // The seed's v1 form: property/cluster/namespace/topic, both ways.
    let mut producer = proxy
        .connect("/ws/producer/persistent/public/standalone/default/v1")
        .await;
    send_text(&mut producer, &format!(r#"{{"payload":"{}"}}"#, STANDARD.encode("old"))).await;
    let reply = next_text(&mut producer).await;
    let id = field(&reply, "messageId");
    assert_eq!(reply, format!(r#"{{"result":"ok","messageId":"{id}"}}"#));
    let path = "/ws/consumer/persistent/public/standalone/default/v1/s?subscriptionInitialPosition=Earliest";
    let mut first = proxy.connect(path).await;
    let text = next_text(&mut first).await;
    assert_eq!(assert_pushed(&text, "old", "{}", None), id);

    // A second consumer on the taken exclusive subscription: the session closes with code 2.
    let mut second = proxy.connect(path).await;
    let (code, reason) = closed_with(&mut second).await;
    assert_eq!(code, 4002);
    assert!(reason.starts_with("Failed to subscribe: "), "{reason}");

    // On a shared subscription a nacked message comes again, with its id.
    let shared = "/ws/consumer/persistent/public/standalone/default/v1/sh?subscriptionType=Shared&subscriptionInitialPosition=Earliest";
    let mut ws = proxy.connect(shared).await;
    assert_eq!(field(&next_text(&mut ws).await, "messageId"), id);
    send_text(
        &mut ws,
        &format!(r#"{{"type":"negativeAcknowledge","messageId":"{id}"}}"#),
    )
    .await;
    eventually("the nack is carried out", || async {
        proxy
            .metric("framegate_source_messages_total{source=\"pulsar\",event=\"nacked\"}")
            .await
            == 1.0
    })
    .await;
    assert_eq!(field(&next_text(&mut ws).await, "messageId"), id);
    drop(first);
}

#[tokio::test]
async fn receiver_queue_size_bounds_the_unacked_messages() {
    let broker = peers::pulsar();
    let pulsar = client(broker.port).await;
    let mut producer = pulsar.producer().with_topic(topic("flow")).build().await.unwrap();
    for i in 0..15 {
        produce(&mut producer, &format!("m{i}")).await;
    }
    let proxy = start(broker.port);
    let path =
        "/ws/v2/consumer/persistent/public/default/flow/s?subscriptionInitialPosition=Earliest&receiverQueueSize=10";
    let mut ws = proxy.connect(path).await;
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(field(&next_text(&mut ws).await, "messageId"));
    }
    // The source has the 11th in hand: were it not held, it would reach the client before the
    // answer to a later frame (deliveries go first).
    eventually("the source read past the window", || async {
        proxy
            .metric("framegate_source_messages_total{source=\"pulsar\",event=\"delivered\"}")
            .await
            > 10.0
    })
    .await;
    send_text(&mut ws, r#"{"type":"isEndOfTopic"}"#).await;
    assert_eq!(
        next_text(&mut ws).await,
        r#"{"endOfTopic":false}"#,
        "exactly 10 in flight"
    );

    // Each ack makes room for one more.
    send_text(&mut ws, &format!(r#"{{"messageId":"{}"}}"#, ids[0])).await;
    let eleventh = next_text(&mut ws).await;
    assert!(!ids.contains(&field(&eleventh, "messageId")), "{eleventh}");
    send_text(&mut ws, r#"{"type":"isEndOfTopic"}"#).await;
    assert_eq!(
        next_text(&mut ws).await,
        r#"{"endOfTopic":false}"#,
        "one more, no further"
    );
}

#[tokio::test]
async fn shared_consumers_split_the_messages_and_unacked_ones_come_back_after_the_ack_timeout() {
    let broker = peers::pulsar();
    let pulsar = client(broker.port).await;
    let mut producer = pulsar.producer().with_topic(topic("jobs")).build().await.unwrap();
    let proxy = start(broker.port);
    let path = "/ws/v2/consumer/persistent/public/default/jobs/workers?subscriptionType=Shared&subscriptionInitialPosition=Earliest";
    let mut one = proxy.connect(path).await;
    let mut two = proxy.connect(path).await;
    // Both consumers are on the subscription once a message reaches each.
    let mut written = BTreeMap::new();
    let (mut got_one, mut got_two) = (HashSet::new(), HashSet::new());
    while got_one.is_empty() || got_two.is_empty() {
        let payload = format!("m{}", written.len());
        written.insert(produce(&mut producer, &payload).await, payload);
        for (ws, got) in [(&mut one, &mut got_one), (&mut two, &mut got_two)] {
            while let Ok(Some(Ok(message))) =
                tokio::time::timeout(std::time::Duration::from_millis(200), ws.next()).await
            {
                if let Ok(text) = message.to_text() {
                    let id = field(text, "messageId");
                    send_text(ws, &format!(r#"{{"messageId":"{id}"}}"#)).await;
                    got.insert(id);
                }
            }
        }
        assert!(written.len() < 50, "the messages are not split");
    }
    assert!(got_one.is_disjoint(&got_two), "each message to one consumer");
    assert_eq!(
        &got_one | &got_two,
        written.keys().cloned().collect(),
        "and every message to one of them"
    );

    // Not acked within ackTimeoutMillis: the same message again, with redeliveryCount 1 (on a
    // shared subscription: pulsar-lite answers redelivery requests there, see
    // docs/connectors.md). A copy pulsar-lite dispatched twice still says 0 and is passed over.
    let path = "/ws/v2/consumer/persistent/public/default/jobs/slow?subscriptionType=Shared&subscriptionInitialPosition=Earliest&ackTimeoutMillis=1000";
    let mut slow = proxy.connect(path).await;
    let text = next_text(&mut slow).await;
    let first = field(&text, "messageId");
    let payload = &written[&first];
    assert_pushed(&text, payload, &format!(r#"{{"h":"v-{payload}"}}"#), Some("k"));
    loop {
        let text = next_text(&mut slow).await;
        let value: Value = serde_json::from_str(&text).unwrap();
        if field(&text, "messageId") == first && value["redeliveryCount"] != 0 {
            assert_pushed_again(&text, payload, &format!(r#"{{"h":"v-{payload}"}}"#), Some("k"), 1);
            break;
        }
    }
}

#[tokio::test]
async fn the_seed_nodejs_producer_and_consumer() {
    let broker = peers::pulsar();
    let proxy = start(broker.port);
    let replies = node(&["produce", &proxy.url("/ws/v2/producer/persistent/public/default/node")]).await;
    let id = field(&replies[0], "messageId");
    assert_eq!(
        replies,
        [format!(r#"{{"result":"ok","messageId":"{id}","context":"1"}}"#)]
    );
    let path = "/ws/v2/consumer/persistent/public/default/node/js?subscriptionInitialPosition=Earliest";
    let lines = node(&["consume", &proxy.url(path), "1"]).await;
    let pushed = assert_pushed(&lines[0], "Hello World", r#"{"key1":"value1","key2":"value2"}"#, None);
    assert_eq!(pushed, id);

    // The sample acked what it got: the next consumer of its subscription starts after it.
    let replies = node(&["produce", &proxy.url("/ws/v2/producer/persistent/public/default/node")]).await;
    let second = field(&replies[0], "messageId");
    let mut ws = proxy.connect(path).await;
    assert_eq!(
        field(&next_text(&mut ws).await, "messageId"),
        second,
        "the acked message came again"
    );
}

/// A nack is held for negativeAckRedeliveryDelay before the broker sends the message again, as
/// Pulsar's consumer holds it; a frame of an unknown type without a messageId is Pulsar's error 3.
#[tokio::test]
async fn a_nack_redelivers_after_the_negative_ack_delay_and_unknown_frames_are_refused() {
    let broker = peers::pulsar();
    let pulsar = client(broker.port).await;
    let mut producer = pulsar.producer().with_topic(topic("nackdelay")).build().await.unwrap();
    let proxy = start(broker.port);
    let path = "/ws/v2/consumer/persistent/public/default/nackdelay/s?subscriptionType=Shared&subscriptionInitialPosition=Earliest&negativeAckRedeliveryDelay=2000";
    let mut ws = proxy.connect(path).await;
    let id = produce(&mut producer, "again later").await;
    assert_eq!(field(&next_text(&mut ws).await, "messageId"), id);
    send_text(
        &mut ws,
        &format!(r#"{{"type":"negativeAcknowledge","messageId":"{id}"}}"#),
    )
    .await;
    let early = tokio::time::timeout(std::time::Duration::from_millis(1000), ws.next()).await;
    assert!(early.is_err(), "sent again before the delay: {early:?}");
    assert_eq!(
        proxy
            .metric("framegate_source_messages_total{source=\"pulsar\",event=\"nacked\"}")
            .await,
        0.0,
        "the nack went to the broker before the delay"
    );
    assert_eq!(field(&next_text(&mut ws).await, "messageId"), id);

    send_text(&mut ws, r#"{"type":"rewind"}"#).await;
    let (code, reason) = closed_with(&mut ws).await;
    assert_eq!(code, 4003);
    assert!(reason.starts_with("Failed to de-serialize from JSON"), "{reason}");
}

/// After maxRedeliverCount redeliveries (here by the ack timeout) a message goes to the dead-letter
/// topic, by default `{topic}-{subscription}-DLQ`, as Pulsar names it.
#[tokio::test]
async fn unacked_messages_end_in_the_dead_letter_topic() {
    let broker = peers::pulsar();
    let pulsar = client(broker.port).await;
    let mut dlq = consumer(&pulsar, "dl-s-DLQ").await;
    let mut producer = pulsar.producer().with_topic(topic("dl")).build().await.unwrap();
    let proxy = start(broker.port);
    let path = "/ws/v2/consumer/persistent/public/default/dl/s?subscriptionType=Shared&subscriptionInitialPosition=Earliest&ackTimeoutMillis=1000&maxRedeliverCount=1";
    let mut ws = proxy.connect(path).await;
    let id = produce(&mut producer, "poison").await;
    assert_eq!(field(&next_text(&mut ws).await, "messageId"), id);
    let mut seen = HashSet::new();
    let message = next_distinct(&mut dlq, &mut seen).await;
    assert_eq!(message.payload.data, b"poison");

    // deadLetterTopic names another one.
    let mut named = consumer(&pulsar, "poisoned").await;
    let path = format!(
        "/ws/v2/consumer/persistent/public/default/dl/t?subscriptionType=Shared&subscriptionInitialPosition=Earliest&ackTimeoutMillis=1000&maxRedeliverCount=1&deadLetterTopic={}",
        urlencode(&topic("poisoned"))
    );
    let mut ws = proxy.connect(&path).await;
    assert_eq!(field(&next_text(&mut ws).await, "messageId"), id);
    let message = next_distinct(&mut named, &mut HashSet::new()).await;
    assert_eq!(message.payload.data, b"poison");
}

#[tokio::test]
async fn a_broker_failure_is_send_error_8_and_the_producer_recovers() {
    let port = peers::free_port();
    let proxy = start_with(port, "max_retries = 0");
    let mut ws = proxy.connect("/ws/v2/producer/persistent/public/default/late").await;
    let message = |context: &str| format!(r#"{{"payload":"{}","context":"{context}"}}"#, STANDARD.encode("late"));
    send_text(&mut ws, &message("down")).await;
    let reply = next_text(&mut ws).await;
    assert!(
        reply.starts_with(r#"{"result":"send-error:8","errorMsg":""#) && reply.ends_with(r#"","context":"down"}"#),
        "{reply}"
    );

    let _broker = peers::pulsar_on(port);
    let mut sent = 0;
    loop {
        sent += 1;
        send_text(&mut ws, &message("up")).await;
        let reply = next_text(&mut ws).await;
        if field(&reply, "result") == "ok" {
            break;
        }
        assert!(sent < 20, "the sink never reached the broker: {reply}");
    }
}

#[tokio::test]
async fn pull_mode_delivers_only_what_was_permitted() {
    let broker = peers::pulsar();
    let pulsar = client(broker.port).await;
    let mut producer = pulsar.producer().with_topic(topic("pull")).build().await.unwrap();
    for i in 0..5 {
        produce(&mut producer, &format!("m{i}")).await;
    }
    let proxy = start(broker.port);
    let path = "/ws/v2/consumer/persistent/public/default/pull/s?subscriptionInitialPosition=Earliest&pullMode=true";
    let mut ws = proxy.connect(path).await;
    // As in receiver_queue_size_bounds_the_unacked_messages: a delivery not held would come
    // before the answer to a later frame.
    eventually("the source read a message", || async {
        proxy
            .metric("framegate_source_messages_total{source=\"pulsar\",event=\"delivered\"}")
            .await
            > 0.0
    })
    .await;
    send_text(&mut ws, r#"{"type":"isEndOfTopic"}"#).await;
    assert_eq!(
        next_text(&mut ws).await,
        r#"{"endOfTopic":false}"#,
        "nothing before a permit"
    );

    send_text(&mut ws, r#"{"type":"permit","permitMessages":2}"#).await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        ids.push(field(&next_text(&mut ws).await, "messageId"));
    }
    // Acks give no permits in pull mode.
    for id in &ids {
        send_text(&mut ws, &format!(r#"{{"messageId":"{id}"}}"#)).await;
    }
    eventually("the acks are carried out", || async {
        proxy
            .metric("framegate_source_messages_total{source=\"pulsar\",event=\"acked\"}")
            .await
            == 2.0
    })
    .await;
    send_text(&mut ws, r#"{"type":"isEndOfTopic"}"#).await;
    assert_eq!(next_text(&mut ws).await, r#"{"endOfTopic":false}"#, "two, no more");
    send_text(&mut ws, r#"{"type":"permit","permitMessages":1}"#).await;
    let third = field(&next_text(&mut ws).await, "messageId");
    assert!(!ids.contains(&third));

    // A permit without permitMessages is bad JSON for Pulsar: code 3.
    send_text(&mut ws, r#"{"type":"permit"}"#).await;
    assert_eq!(closed_with(&mut ws).await.0, 4003);
}

#[tokio::test]
async fn an_event_time_is_pushed_as_pulsar_writes_it() {
    let broker = peers::pulsar();
    let pulsar = client(broker.port).await;
    let mut producer = pulsar.producer().with_topic(topic("events")).build().await.unwrap();
    producer
        .create_message()
        .with_content(b"e".to_vec())
        .event_time(1_472_575_557_785)
        .send_non_blocking()
        .await
        .unwrap()
        .await
        .unwrap();
    let proxy = start(broker.port);
    let mut ws = proxy
        .connect("/ws/v2/reader/persistent/public/default/events?messageId=earliest")
        .await;
    let text = next_text(&mut ws).await;
    let id = field(&text, "messageId");
    let time = field(&text, "publishTime");
    assert_eq!(
        text,
        format!(
            r#"{{"messageId":"{id}","payload":"ZQ==","properties":{{}},"publishTime":"{time}","redeliveryCount":0,"eventTime":"2016-08-30T16:45:57.785Z"}}"#
        )
    );
}

async fn pulsar_client(args: Vec<String>) -> Vec<Value> {
    tokio::task::spawn_blocking(move || run_client("python3", "pulsar_client_check.py", args))
        .await
        .unwrap()
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Apache's own client (the `pulsar-client` package) on both sides of framegate: it reads what
/// WebSocket producers wrote, and WebSocket consumers get what it wrote, ids included.
#[tokio::test]
async fn the_pulsar_client_package_reads_what_websocket_producers_wrote_and_writes_what_consumers_get() {
    let broker = peers::pulsar();
    let proxy = start(broker.port);
    let url = format!("pulsar://127.0.0.1:{}", broker.port);

    let mut ws = proxy.connect("/ws/v2/producer/persistent/public/default/to-py").await;
    let mut written = Vec::new();
    for i in 0..3 {
        let message = format!(
            r#"{{"payload":"{}","key":"k{i}","properties":{{"n":"{i}"}},"context":"c{i}"}}"#,
            STANDARD.encode(format!("ws{i}"))
        );
        send_text(&mut ws, &message).await;
        let reply = next_text(&mut ws).await;
        written.push(serde_json::json!({
            "messageId": field(&reply, "messageId"),
            "payload": format!("ws{i}"),
            "properties": { "n": i.to_string() },
            "key": format!("k{i}"),
        }));
    }
    let read = pulsar_client(["read", &url, &topic("to-py"), "check", "3"].map(String::from).to_vec()).await;
    assert_eq!(read, written, "payload, properties, key and id, in order");

    let ids = pulsar_client(["write", &url, &topic("from-py"), "3"].map(String::from).to_vec()).await;
    let mut ws = proxy
        .connect("/ws/v2/consumer/persistent/public/default/from-py/ws?subscriptionInitialPosition=Earliest")
        .await;
    let mut seen = HashSet::new();
    while seen.len() < 3 {
        let text = next_text(&mut ws).await;
        let id = field(&text, "messageId");
        if !seen.insert(id.clone()) {
            continue;
        }
        let i = ids
            .iter()
            .position(|w| w["messageId"] == id.as_str())
            .expect("an id the client was given");
        assert_pushed(
            &text,
            &format!("py{i}"),
            &format!(r#"{{"n":"{i}"}}"#),
            Some(&format!("pk{i}")),
        );
        send_text(&mut ws, &format!(r#"{{"messageId":"{id}"}}"#)).await;
    }
}

/// Reads what `ws` is pushed until it is quiet for a moment, acking each message; returns the
/// (messageId, key, payload) of each, the copies pulsar-lite now and then dispatches twice left out.
async fn drain(ws: &mut Ws, seen: &mut HashSet<String>) -> Vec<(String, String, String)> {
    let mut got = Vec::new();
    while let Ok(Some(Ok(message))) = tokio::time::timeout(std::time::Duration::from_millis(300), ws.next()).await {
        let Ok(text) = message.to_text() else { continue };
        let id = field(text, "messageId");
        send_text(ws, &format!(r#"{{"messageId":"{id}"}}"#)).await;
        if seen.insert(id.clone()) {
            let payload = String::from_utf8(STANDARD.decode(field(text, "payload")).unwrap()).unwrap();
            got.push((id, field(text, "key"), payload));
        }
    }
    got
}

async fn produce_keyed(producer: &mut Producer<TokioExecutor>, key: &str, payload: &str) {
    producer
        .create_message()
        .with_content(payload.as_bytes().to_vec())
        .with_key(key)
        .send_non_blocking()
        .await
        .unwrap()
        .await
        .unwrap();
}

/// Key_Shared: two consumers split the keys, each key's messages all to one of them, in order.
/// Failover: one consumer gets everything; when it leaves, the standby takes over.
#[tokio::test]
async fn key_shared_keeps_each_key_on_one_consumer_and_failover_has_a_standby() {
    const KEYS: usize = 16;
    let broker = peers::pulsar();
    let pulsar = client(broker.port).await;
    let mut producer = pulsar.producer().with_topic(topic("keyed")).build().await.unwrap();
    let proxy = start(broker.port);
    let path = "/ws/v2/consumer/persistent/public/default/keyed/ks?subscriptionType=Key_Shared&subscriptionInitialPosition=Earliest";
    let mut one = proxy.connect(path).await;
    let mut two = proxy.connect(path).await;
    let (mut seen, mut got_one, mut got_two) = (HashSet::new(), Vec::new(), Vec::new());
    let mut sent = 0;
    // Until both are on the subscription (a message reaches each), then four more of every key.
    while got_one.is_empty() || got_two.is_empty() {
        assert!(sent < 20 * KEYS, "the keys are not split");
        for k in 0..KEYS {
            produce_keyed(&mut producer, &format!("k{k}"), &format!("{sent}")).await;
            sent += 1;
        }
        got_one.extend(drain(&mut one, &mut seen).await);
        got_two.extend(drain(&mut two, &mut seen).await);
    }
    for _ in 0..4 {
        for k in 0..KEYS {
            produce_keyed(&mut producer, &format!("k{k}"), &format!("{sent}")).await;
            sent += 1;
        }
    }
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while got_one.len() + got_two.len() < sent && tokio::time::Instant::now() < deadline {
        got_one.extend(drain(&mut one, &mut seen).await);
        got_two.extend(drain(&mut two, &mut seen).await);
    }
    assert_eq!(got_one.len() + got_two.len(), sent, "every message, once");
    let keys = |got: &[(String, String, String)]| got.iter().map(|m| m.1.clone()).collect::<HashSet<_>>();
    // Keys seen before both consumers were on may have moved once; the last 4 rounds did not.
    let late = |got: &[(String, String, String)]| {
        (got.iter())
            .filter(|m| m.2.parse::<usize>().unwrap() >= sent - 4 * KEYS)
            .map(|m| m.1.clone())
            .collect::<HashSet<_>>()
    };
    assert!(late(&got_one).is_disjoint(&late(&got_two)), "a key on both consumers");
    assert!(!keys(&got_one).is_empty() && !keys(&got_two).is_empty());
    for got in [&got_one, &got_two] {
        for key in late(got) {
            let numbers: Vec<usize> = (got.iter().filter(|m| m.1 == key))
                .map(|m| m.2.parse().unwrap())
                .collect();
            assert!(numbers.is_sorted(), "{key} out of order: {numbers:?}");
        }
    }

    // Failover: while both consumers are there one of them, the active one, gets every message;
    // when it leaves, the standby takes over. (Which one is active is the broker's choice, and
    // may change as the second joins, so the backlog may come to either.)
    let path = "/ws/v2/consumer/persistent/public/default/keyed/fo?subscriptionType=Failover&subscriptionInitialPosition=Earliest";
    let mut consumers = [proxy.connect(path).await, proxy.connect(path).await];
    let mut seen = HashSet::new();
    let mut received = [Vec::new(), Vec::new()];
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while received[0].len() + received[1].len() < sent && tokio::time::Instant::now() < deadline {
        for (ws, got) in consumers.iter_mut().zip(&mut received) {
            got.extend(drain(ws, &mut seen).await);
        }
    }
    assert_eq!(received[0].len() + received[1].len(), sent, "the backlog, once");
    for k in 0..KEYS {
        produce_keyed(&mut producer, &format!("k{k}"), &format!("both {k}")).await;
    }
    let mut received = [Vec::new(), Vec::new()];
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while received[0].len() + received[1].len() < KEYS && tokio::time::Instant::now() < deadline {
        for (ws, got) in consumers.iter_mut().zip(&mut received) {
            got.extend(drain(ws, &mut seen).await);
        }
    }
    let active = usize::from(received[0].is_empty());
    assert_eq!(received[active].len(), KEYS, "every message to the active consumer");
    assert!(
        received[1 - active].is_empty(),
        "the standby got some while the active was there"
    );
    let [a, b] = consumers;
    let (mut active, mut standby) = if active == 0 { (a, b) } else { (b, a) };
    active.close(None).await.unwrap();
    drop(active);
    for k in 0..KEYS {
        produce_keyed(&mut producer, &format!("k{k}"), &format!("after {k}")).await;
    }
    let mut taken_over = Vec::new();
    drain_until(&mut taken_over, KEYS, &mut standby, &mut seen).await;
    let payloads: Vec<String> = taken_over.into_iter().map(|m| m.2).collect();
    assert_eq!(payloads, (0..KEYS).map(|k| format!("after {k}")).collect::<Vec<_>>());
}

/// Drains `ws` into `got` until it holds `count` messages, or fails after a while.
async fn drain_until(got: &mut Vec<(String, String, String)>, count: usize, ws: &mut Ws, seen: &mut HashSet<String>) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while got.len() < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {count}: {got:?}",
            got.len()
        );
        got.extend(drain(ws, seen).await);
    }
}
