//! The `amqp` sink and source against a real RabbitMQ node: records sent by a WebSocket client
//! are read back by an independent lapin consumer (payload, routing, headers, order) with the
//! delivery tag in the confirmed result; messages published by an independent client reach a
//! subscribed WebSocket client, and those it did not ack come again after it reconnects.

mod common;

use common::*;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

const MESSAGES: usize = 50;

/// Sinks and a source on the node at `url`; the sink `down` points at `closed`, where no broker is.
fn config(url: &str, closed: u16) -> String {
    format!(
        r#"{head}
[sinks.rabbit]
type = "amqp"
url = "{url}"
exchange = "amq.topic"
routing_key = "orders.{{meta.query.topic}}"
declare_queue = "orders"
bind_key = "orders.#"
max_retries = 0

[sinks.direct]
type = "amqp"
url = "{url}"
routing_key = "{{meta.query.topic}}"
max_retries = 0

[sinks.anyx]
type = "amqp"
url = "{url}"
exchange = "{{meta.query.x}}"
routing_key = "orders.any"
max_retries = 0

[sinks.long]
type = "amqp"
url = "{url}"
routing_key = "{{meta.query.topic}}"

[sinks.down]
type = "amqp"
url = "amqp://127.0.0.1:{closed}/%2f"
routing_key = "q"
max_retries = 0

[sources.rabbit]
type = "amqp"
url = "{url}"

[routes.in]
path = "/in"
sinks = ["rabbit"]

[routes.probe]
path = "/probe"
filters = [{{ module = "probe" }}]
sinks = ["rabbit", "direct", "anyx", "long", "down"]
"#,
        head = head("")
    )
}

async fn channel(url: &str) -> (Connection, Channel) {
    let connection = Connection::connect(url, ConnectionProperties::default()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    (connection, channel)
}

async fn declare(channel: &Channel, queue: &str) {
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare(queue.into(), durable, FieldTable::default())
        .await
        .unwrap();
}

fn header(delivery: &lapin::message::Delivery, name: &str) -> Option<String> {
    match delivery.properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(value) => Some(String::from_utf8_lossy(value.as_bytes()).into_owned()),
        other => panic!("header {name}: {other:?}"),
    }
}

#[tokio::test]
async fn the_sink_publishes_every_record_in_order_with_confirms() {
    let rabbit = peers::rabbitmq();
    let url = rabbit.url();
    let (_connection, reader) = channel(&url).await;
    declare(&reader, "orders").await;
    reader
        .queue_bind(
            "orders".into(),
            "amq.topic".into(),
            "orders.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut consumer = reader
        .basic_consume(
            "orders".into(),
            "reader".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut next = async || {
        let delivery = tokio::time::timeout(PATIENCE, consumer.next())
            .await
            .expect("a message in time")
            .unwrap()
            .unwrap();
        delivery.ack(BasicAckOptions::default()).await.unwrap();
        delivery
    };

    let proxy = Proxy::start(&config(&url, peers::free_port()), &["probe"], &[]);
    let mut ws = proxy.connect("/in?topic=eu").await;
    let sent: Vec<String> = (0..MESSAGES).map(|i| format!("{{\"order\":{i}}}")).collect();
    for message in &sent {
        send_text(&mut ws, message).await;
    }
    for expected in &sent {
        let delivery = next().await;
        assert_eq!(delivery.exchange.as_str(), "amq.topic");
        assert_eq!(delivery.routing_key.as_str(), "orders.eu");
        assert_eq!(std::str::from_utf8(&delivery.data).unwrap(), expected);
        assert_eq!(*delivery.properties.delivery_mode(), Some(2), "persistent");
    }

    // The confirmed result carries the delivery tag: the 51st publish on the sink's channel.
    // The key and headers travel as AMQP headers.
    let mut probe = proxy.connect("/probe?topic=eu").await;
    assert_eq!(
        emit(&mut probe, "rabbit", "hello").await,
        format!("ok {} ctx:hello", MESSAGES + 1)
    );
    let delivery = next().await;
    assert_eq!(delivery.data, b"hello");
    assert_eq!(header(&delivery, "key").as_deref(), Some("k"));
    assert_eq!(header(&delivery, "h").as_deref(), Some("v"));

    // The default exchange routes by queue name; a message no queue takes fails its record.
    let mut to_queue = proxy.connect("/probe?topic=orders").await;
    assert_eq!(emit(&mut to_queue, "direct", "straight").await, "ok 1 ctx:straight");
    let delivery = next().await;
    assert_eq!((delivery.exchange.as_str(), &delivery.data[..]), ("", &b"straight"[..]));
    let mut nowhere = proxy.connect("/probe?topic=nowhere").await;
    let result = emit(&mut nowhere, "direct", "lost").await;
    assert!(
        result.starts_with("failed amqp: no queue took the message") && result.contains("NO_ROUTE"),
        "{result}"
    );

    // A record whose routing key cannot be filled fails, with the reason.
    let mut untagged = proxy.connect("/probe").await;
    assert_eq!(
        emit(&mut untagged, "rabbit", "x").await,
        "failed refused: \"orders.{meta.query.topic}\": the record has no metadata \"query.topic\" ctx:x"
    );

    // An unknown exchange closes the channel: the record fails, and the next batch opens a new
    // channel, whose delivery tags count from 1 again.
    let mut unknown = proxy.connect("/probe?x=nosuch").await;
    let result = emit(&mut unknown, "anyx", "lost").await;
    assert!(
        result.starts_with("failed amqp publish to exchange \"nosuch\", key \"orders.any\": ")
            && result.contains("NOT_FOUND"),
        "{result}"
    );
    assert_eq!(
        http_get(proxy.admin, "/readyz").await,
        (200, "ready\n".to_string()),
        "the broker is up"
    );
    let mut known = proxy.connect("/probe?x=amq.topic").await;
    assert_eq!(emit(&mut known, "anyx", "again").await, "ok 1 ctx:again");
    // The failed records never reached the queue: the next message there is this one.
    let delivery = next().await;
    assert_eq!(
        (delivery.routing_key.as_str(), &delivery.data[..]),
        ("orders.any", &b"again"[..])
    );

    // A routing key AMQP cannot carry (over 255 bytes) refuses its record at once: the sink's
    // retries (ten, about half a minute, on `long`) cannot help, and the broker is not down.
    let mut too_long = proxy.connect(&format!("/probe?topic={}", "k".repeat(300))).await;
    let result = emit(&mut too_long, "long", "x").await;
    assert!(result.starts_with("failed refused: amqp routing key: "), "{result}");
    assert_eq!(
        proxy
            .metric("framegate_sink_records_total{sink=\"long\",outcome=\"retried\"}")
            .await,
        0.0
    );
    assert_eq!(
        proxy
            .metric("framegate_sink_records_total{sink=\"long\",outcome=\"failed\"}")
            .await,
        1.0
    );
    assert_eq!(
        http_get(proxy.admin, "/readyz").await,
        (200, "ready\n".to_string()),
        "a refused record says nothing of the broker"
    );

    // A broker that cannot be reached fails the records with the reason, and shows in /readyz.
    let result = emit(&mut probe, "down", "x").await;
    assert!(result.starts_with("failed amqp amqp://127.0.0.1:"), "{result}");
    let (status, body) = http_get(proxy.admin, "/readyz").await;
    assert_eq!(status, 503);
    assert!(body.starts_with("sinks.down: down: amqp amqp://127.0.0.1:"), "{body}");
}

async fn publish(channel: &Channel, queue: &str, payload: &str, key: &str) {
    let mut headers = FieldTable::default();
    headers.insert("key".into(), AMQPValue::LongString(key.into()));
    headers.insert("h".into(), AMQPValue::LongString(format!("v-{payload}").into()));
    let confirm = channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            payload.as_bytes(),
            BasicProperties::default()
                .with_headers(headers)
                .with_timestamp(1_700_000_000),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack());
}

const SHOW: &str = "show=key,header.h,topic,redelivery_count,publish_time";

/// A delivery tagged by the probe: (message id, the rest of the tag and payload).
fn parse(line: &str, sub: &str) -> (String, String) {
    let rest = line
        .strip_prefix(&format!("[sub {sub} msg "))
        .unwrap_or_else(|| panic!("{line}"));
    let (id, rest) = rest.split_once(' ').unwrap();
    (id.to_string(), rest.to_string())
}

fn tag(payload: &str, redelivered: u8) -> String {
    format!(
        "key=k{payload} header.h=v-{payload} topic=inbox redelivery_count={redelivered} publish_time=1700000000000] {payload}"
    )
}

#[tokio::test]
async fn the_source_redelivers_what_was_not_acked() {
    let rabbit = peers::rabbitmq();
    let url = rabbit.url();
    let (_connection, writer) = channel(&url).await;
    writer.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    declare(&writer, "inbox").await;
    let first: Vec<String> = (0..6).map(|i| format!("m{i}")).collect();
    for payload in &first {
        publish(&writer, "inbox", payload, &format!("k{payload}")).await;
    }

    let proxy = Proxy::start(&config(&url, peers::free_port()), &["probe"], &[]);
    let mut ws = proxy.connect(&format!("/probe?manual=1&{SHOW}")).await;
    let sub = ask(&mut ws, "sub rabbit inbox").await.replace("ok ", "");
    let mut ids = Vec::new();
    for payload in &first {
        let (id, rest) = parse(&next_text(&mut ws).await, &sub);
        assert_eq!(rest, tag(payload, 0));
        ids.push(id);
    }
    assert_eq!(ids, ["1", "2", "3", "4", "5", "6"], "ids are delivery tags");
    for id in &ids[..3] {
        assert_eq!(ask(&mut ws, &format!("ack {sub} {id}")).await, "ok ");
    }
    // A nack hands the message out again at once, flagged redelivered.
    assert_eq!(ask(&mut ws, &format!("nack {sub} {}", ids[3])).await, "ok ");
    let (_, rest) = parse(&next_text(&mut ws).await, &sub);
    assert_eq!(rest, tag("m3", 1));
    eventually("the acks and the nack were carried out", || async {
        proxy
            .metric("framegate_source_messages_total{source=\"rabbit\",event=\"acked\"}")
            .await
            == 3.0
            && proxy
                .metric("framegate_source_messages_total{source=\"rabbit\",event=\"nacked\"}")
                .await
                == 1.0
    })
    .await;
    drop(ws);

    // The closed connection released the consumer: RabbitMQ requeued m3..m5, and only those.
    eventually("the consumer is gone and 3 messages are ready again", || async {
        let queue = writer
            .queue_declare(
                "inbox".into(),
                QueueDeclareOptions::default().passive(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        queue.consumer_count() == 0 && queue.message_count() == 3
    })
    .await;
    let mut ws = proxy.connect(&format!("/probe?manual=1&{SHOW}")).await;
    let sub = ask(&mut ws, "sub rabbit {\"queue\": \"inbox\", \"prefetch\": 10}")
        .await
        .replace("ok ", "");
    publish(&writer, "inbox", "end", "kend").await;
    let (mut seen, mut answers) = (Vec::new(), 0);
    while seen.last().is_none_or(|last: &String| !last.ends_with("] end")) {
        // Answers to the acks come between the deliveries.
        let line = next_text(&mut ws).await;
        if line == "ok " {
            answers += 1;
        } else {
            let (id, rest) = parse(&line, &sub);
            send_text(&mut ws, &format!("ack {sub} {id}")).await;
            seen.push(rest);
        }
    }
    for _ in answers..seen.len() {
        assert_eq!(next_text(&mut ws).await, "ok ");
    }
    assert_eq!(seen, [tag("m3", 1), tag("m4", 1), tag("m5", 1), tag("end", 0)]);

    // A subscription that cannot start tells the filter why.
    let sub = ask(&mut ws, "sub rabbit nosuch").await.replace("ok ", "");
    let result = next_text(&mut ws).await;
    assert!(
        result.starts_with(&format!("result {sub} failed amqp consume queue \"nosuch\""))
            && result.contains("NOT_FOUND"),
        "{result}"
    );
}
