//! The `mqtt` sink and source against a real mosquitto: records sent by a WebSocket client are
//! read back by an independent rumqttc subscriber (topic, payload, order, retain) with the
//! packet id in the confirmed result; messages published by an independent client reach a
//! subscribed WebSocket client, and with a persistent session those it did not ack come again
//! after it reconnects.

mod common;

use std::time::Duration;

use common::*;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use tokio::sync::mpsc;

const MESSAGES: usize = 50;

fn config(port: u16) -> String {
    format!(
        r#"{head}
[sinks.mq]
type = "mqtt"
url = "mqtt://127.0.0.1:{port}"
topic = "sensors/{{meta.query.topic}}/temp"
max_retries = 0

[sinks.last]
type = "mqtt"
url = "mqtt://127.0.0.1:{port}"
topic = "last/{{meta.query.topic}}"
retain = true

[sinks.q0]
type = "mqtt"
url = "mqtt://127.0.0.1:{port}"
topic = "sensors/{{meta.query.topic}}/q0"
qos = 0

[sources.mq]
type = "mqtt"
url = "mqtt://127.0.0.1:{port}"

[routes.in]
path = "/in"
sinks = ["mq"]

[routes.probe]
path = "/probe"
filters = [{{ module = "probe" }}]
sinks = ["mq", "last", "q0"]
"#,
        head = head("")
    )
}

/// An independent client, subscribed to `filter` (QoS 1) before this returns: what it receives.
async fn subscriber(port: u16, id: &str, filter: &str) -> (AsyncClient, mpsc::UnboundedReceiver<Publish>) {
    let (client, mut events) = AsyncClient::new(MqttOptions::new(id, "127.0.0.1", port), 64);
    client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let (subscribed, on_suback) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut subscribed = Some(subscribed);
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(subscribed) = subscribed.take() {
                        let _ = subscribed.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    if tx.send(publish).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("test subscriber: {e}"),
            }
        }
    });
    tokio::time::timeout(PATIENCE, on_suback).await.unwrap().unwrap();
    (client, rx)
}

/// An independent publisher; each publish waits for the broker's PUBACK.
struct Publisher {
    client: AsyncClient,
    acked: mpsc::UnboundedReceiver<()>,
}

impl Publisher {
    fn new(port: u16) -> Publisher {
        let (client, mut events) = AsyncClient::new(MqttOptions::new("test-publisher", "127.0.0.1", port), 64);
        let (tx, acked) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        if tx.send(()).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => panic!("test publisher: {e}"),
                }
            }
        });
        Publisher { client, acked }
    }

    async fn publish(&mut self, topic: &str, payload: &str) {
        (self.client)
            .publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec())
            .await
            .unwrap();
        tokio::time::timeout(PATIENCE, self.acked.recv())
            .await
            .unwrap()
            .unwrap();
    }
}

async fn received(rx: &mut mpsc::UnboundedReceiver<Publish>) -> Publish {
    tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .expect("a message in time")
        .unwrap()
}

#[tokio::test]
async fn the_sink_publishes_every_record_in_order_with_pubacks() {
    let mosquitto = peers::mosquitto();
    let (_reader, mut rx) = subscriber(mosquitto.port, "test-reader", "sensors/#").await;

    let proxy = Proxy::start(&config(mosquitto.port), &["probe"], &[]);
    let mut ws = proxy.connect("/in?topic=kitchen").await;
    let sent: Vec<String> = (0..MESSAGES).map(|i| format!("{{\"t\":{i}}}")).collect();
    for message in &sent {
        send_text(&mut ws, message).await;
    }
    for expected in &sent {
        let publish = received(&mut rx).await;
        assert_eq!(publish.topic, "sensors/kitchen/temp");
        assert_eq!(std::str::from_utf8(&publish.payload).unwrap(), expected);
        assert_eq!(publish.qos, QoS::AtLeastOnce);
    }

    // The confirmed result carries the packet id: the sink's 51st QoS 1 publish.
    let mut probe = proxy.connect("/probe?topic=hall").await;
    assert_eq!(
        emit(&mut probe, "mq", "hello").await,
        format!("ok {} ctx:hello", MESSAGES + 1)
    );
    let publish = received(&mut rx).await;
    assert_eq!(
        (publish.topic.as_str(), &publish.payload[..]),
        ("sensors/hall/temp", &b"hello"[..])
    );

    // A retained message reaches a subscriber that comes later.
    assert_eq!(emit(&mut probe, "last", "21.5").await, "ok 1 ctx:21.5");
    let (_late, mut late) = subscriber(mosquitto.port, "test-late", "last/#").await;
    let publish = received(&mut late).await;
    assert_eq!(
        (publish.topic.as_str(), &publish.payload[..]),
        ("last/hall", &b"21.5"[..])
    );
    assert!(publish.retain);

    // A record whose topic cannot be filled fails, with the reason; nothing is published.
    let mut untagged = proxy.connect("/probe").await;
    assert_eq!(
        emit(&mut untagged, "mq", "x").await,
        "failed refused: \"sensors/{meta.query.topic}/temp\": the record has no metadata \"query.topic\" ctx:x"
    );
    // A topic with a wildcard is refused at once (no retries): no broker could take it.
    let mut wild = proxy.connect("/probe?topic=%2B").await;
    let result = emit(&mut wild, "mq", "y").await;
    assert_eq!(
        result,
        "failed refused: mqtt topic \"sensors/+/temp\": empty, or with a wildcard (+ #) ctx:y"
    );
    assert_eq!(
        emit(&mut probe, "mq", "after").await,
        format!("ok {} ctx:after", MESSAGES + 2)
    );
    let publish = received(&mut rx).await;
    assert_eq!(&publish.payload[..], b"after", "nothing was published in between");

    // QoS 0: done once written, no packet id.
    assert_eq!(emit(&mut probe, "q0", "zero").await, "ok  ctx:zero");
    let publish = received(&mut rx).await;
    assert_eq!(
        (publish.topic.as_str(), &publish.payload[..]),
        ("sensors/hall/q0", &b"zero"[..])
    );
    assert_eq!(publish.qos, QoS::AtMostOnce);
}

const SPEC: &str = r#"sub mq {"filter": "alerts/+", "client_id": "fg-alerts", "clean_session": false}"#;

/// A delivery tagged by the probe: (message id, the rest of the tag and payload).
fn parse(line: &str, sub: &str) -> (String, String) {
    let rest = line
        .strip_prefix(&format!("[sub {sub} msg "))
        .unwrap_or_else(|| panic!("{line}"));
    let (id, rest) = rest.split_once(' ').unwrap();
    (id.to_string(), rest.to_string())
}

fn tag(payload: &str, redelivered: u8) -> String {
    format!("topic=alerts/x redelivery_count={redelivered}] {payload}")
}

/// Reads deliveries, acking each, up to and including the one with `last` as payload; the
/// answers to the acks are read too. What came, tag and payload.
async fn ack_until(ws: &mut Ws, sub: &str, last: &str) -> Vec<String> {
    let (mut seen, mut answers) = (Vec::<String>::new(), 0);
    while seen.last().is_none_or(|l| !l.ends_with(&format!("] {last}"))) {
        let line = next_text(ws).await;
        if line == "ok " {
            answers += 1;
        } else {
            let (id, rest) = parse(&line, sub);
            send_text(ws, &format!("ack {sub} {id}")).await;
            seen.push(rest);
        }
    }
    for _ in answers..seen.len() {
        assert_eq!(next_text(ws).await, "ok ");
    }
    seen
}

#[tokio::test]
async fn the_source_gets_unacked_messages_again_in_a_persistent_session() {
    let mosquitto = peers::mosquitto();
    let mut publisher = Publisher::new(mosquitto.port);
    let proxy = Proxy::start(&config(mosquitto.port), &["probe"], &[]);
    let show = "/probe?manual=1&show=topic,redelivery_count";
    let mut ws = proxy.connect(show).await;
    let sub = ask(&mut ws, SPEC).await.replace("ok ", "");

    // The subscription is made in the background: publish until one message comes through.
    let mut warmups = 0;
    loop {
        publisher.publish("alerts/x", "warmup").await;
        warmups += 1;
        if let Ok(line) = tokio::time::timeout(Duration::from_millis(200), next_text(&mut ws)).await {
            let (id, rest) = parse(&line, &sub);
            assert_eq!(rest, tag("warmup", 0));
            assert_eq!(ask(&mut ws, &format!("ack {sub} {id}")).await, "ok ");
            break;
        }
    }
    publisher.publish("alerts/x", "ready").await;
    let seen = ack_until(&mut ws, &sub, "ready").await;
    assert!(seen.iter().all(|s| s.ends_with("] warmup") || s.ends_with("] ready")));
    let mut acks = 1 + seen.len();
    assert!(acks <= warmups + 1);

    let first: Vec<String> = (0..6).map(|i| format!("a{i}")).collect();
    for payload in &first {
        publisher.publish("alerts/x", payload).await;
    }
    let mut ids = Vec::new();
    for payload in &first {
        let (id, rest) = parse(&next_text(&mut ws).await, &sub);
        assert_eq!(rest, tag(payload, 0));
        ids.push(id);
    }
    for id in &ids[..3] {
        assert_eq!(ask(&mut ws, &format!("ack {sub} {id}")).await, "ok ");
    }
    acks += 3;
    // MQTT has no nack: the message stays unacked, for the next session.
    assert_eq!(ask(&mut ws, &format!("nack {sub} {}", ids[3])).await, "ok ");
    eventually("the acks were sent", || async {
        proxy
            .metric("framegate_source_messages_total{source=\"mq\",event=\"acked\"}")
            .await
            == acks as f64
            && proxy
                .metric("framegate_source_messages_total{source=\"mq\",event=\"nacked\"}")
                .await
                == 1.0
    })
    .await;
    drop(ws);

    // Same client id, persistent session: the broker sends a3..a5 again, and only those.
    let mut ws = proxy.connect(show).await;
    let sub = ask(&mut ws, SPEC).await.replace("ok ", "");
    let seen = ack_until(&mut ws, &sub, "a5").await;
    assert_eq!(seen, [tag("a3", 1), tag("a4", 1), tag("a5", 1)]);
    publisher.publish("alerts/x", "end").await;
    assert_eq!(ack_until(&mut ws, &sub, "end").await, [tag("end", 0)]);

    // A subscription that cannot be made tells the filter why.
    let sub = ask(&mut ws, "sub mq alerts/#/bad").await.replace("ok ", "");
    assert_eq!(
        next_text(&mut ws).await,
        format!("result {sub} failed mqtt topic filter \"alerts/#/bad\": not a valid filter ")
    );
}

#[tokio::test]
async fn the_sink_waits_for_a_broker_that_comes_late() {
    let port = peers::free_port();
    let config = format!(
        "{head}\n[sinks.mq]\ntype = \"mqtt\"\nurl = \"mqtt://127.0.0.1:{port}\"\ntopic = \"t\"\n\
         max_retries = 0\n\n[routes.probe]\npath = \"/probe\"\nfilters = [{{ module = \"probe\" }}]\n\
         sinks = [\"mq\"]\n",
        head = head("")
    );
    let proxy = Proxy::start(&config, &["probe"], &[]);
    let mut probe = proxy.connect("/probe").await;
    let result = emit(&mut probe, "mq", "early").await;
    assert!(
        result.starts_with(&format!("failed mqtt mqtt://127.0.0.1:{port}: ")) && result.ends_with(" ctx:early"),
        "{result}"
    );
    let (status, body) = http_get(proxy.admin, "/readyz").await;
    assert_eq!(status, 503);
    assert!(
        body.starts_with(&format!("sinks.mq: down: mqtt mqtt://127.0.0.1:{port}: ")),
        "{body}"
    );

    // The sink connects by itself once the broker is there.
    let mosquitto = peers::mosquitto_on(port);
    let (_reader, mut rx) = subscriber(mosquitto.port, "test-reader", "t").await;
    assert_eq!(emit(&mut probe, "mq", "late").await, "ok 1 ctx:late");
    assert_eq!(&received(&mut rx).await.payload[..], b"late");
    assert_eq!(http_get(proxy.admin, "/readyz").await, (200, "ready\n".to_string()));
}
