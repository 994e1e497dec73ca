//! Broker sinks against real brokers (nats-server with JetStream, redis-server): records sent
//! by a WebSocket client are read back by an independent client, in order, with their subject
//! or stream from the template and the key and headers from the sink's templates; confirmed
//! results carry the broker's own id. A broker down at start, or gone later, shows in /readyz
//! while records wait; a frozen broker slows the client feeding it (backpressure), losing nothing.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

const MESSAGES: usize = 50;

fn config(nats: u16, redis: u16) -> String {
    format!(
        r#"{head}
[sinks.core]
type = "nats"
url = "nats://127.0.0.1:{nats}"
subject = "events.{{meta.query.topic}}"
key = "{{meta.query.user}}"
headers = {{ x-team = "{{meta.query.team}}" }}
max_retries = 0

[sinks.js]
type = "jetstream"
url = "nats://127.0.0.1:{nats}"
subject = "js.{{meta.query.topic}}"

[sinks.js_unconfirmed]
type = "jetstream"
url = "nats://127.0.0.1:{nats}"
subject = "js.{{meta.query.topic}}"
delivery = "fire_and_forget"

[sinks.rs]
type = "redis"
url = "redis://127.0.0.1:{redis}"
stream = "s:{{meta.query.topic}}"
maxlen = 1000
headers = {{ x-team = "{{meta.query.team}}" }}

[routes.in]
path = "/in"
sinks = ["core", "js", "rs"]

[routes.probe]
path = "/probe"
filters = [{{ module = "probe" }}]
sinks = ["js", "js_unconfirmed", "rs"]
"#,
        head = head("")
    )
}

#[tokio::test]
async fn nats_jetstream_and_redis_get_every_record_in_order() {
    let (nats, redis) = (peers::nats(), peers::redis());
    let nats_url = format!("nats://127.0.0.1:{}", nats.port);
    let client = async_nats::connect(&nats_url).await.unwrap();
    let jetstream = async_nats::jetstream::new(client.clone());
    let stream = jetstream
        .create_stream(async_nats::jetstream::stream::Config {
            name: "EVENTS".into(),
            subjects: vec!["js.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let mut core = client.subscribe("events.>").await.unwrap();
    client.flush().await.unwrap();

    let proxy = Proxy::start(&config(nats.port, redis.port), &["probe"], &[]);
    let mut ws = proxy.connect("/in?topic=orders&user=alice&team=blue").await;
    let sent: Vec<String> = (0..MESSAGES).map(|i| format!("{{\"order\":{i}}}")).collect();
    for message in &sent {
        send_text(&mut ws, message).await;
    }

    for expected in &sent {
        let message = tokio::time::timeout(PATIENCE, core.next()).await.unwrap().unwrap();
        assert_eq!(message.subject.as_str(), "events.orders");
        assert_eq!(std::str::from_utf8(&message.payload).unwrap(), expected);
        // The sink's key and header templates, filled from the connection's query.
        let headers = message.headers.as_ref().expect("headers");
        assert_eq!(headers.get("key").map(|v| v.as_str()), Some("alice"));
        assert_eq!(headers.get("x-team").map(|v| v.as_str()), Some("blue"));
    }

    eventually("JetStream has every record", || {
        let mut stream = stream.clone();
        async move { stream.info().await.unwrap().state.messages == MESSAGES as u64 }
    })
    .await;
    for (i, expected) in sent.iter().enumerate() {
        let stored = stream.get_raw_message(i as u64 + 1).await.unwrap();
        assert_eq!(stored.subject.as_str(), "js.orders");
        assert_eq!(std::str::from_utf8(&stored.payload).unwrap(), expected);
    }

    let entries = peers::redis_entries(redis.port, "s:orders").await;
    assert_eq!(peers::redis_payloads(redis.port, "s:orders").await, sent);
    assert!(
        entries
            .iter()
            .all(|e| e.get::<String>("h:x-team").as_deref() == Some("blue"))
    );

    // Confirmed results carry the broker's id of the record, and the key and headers travel.
    let mut probe = proxy.connect("/probe?topic=orders&team=blue").await;
    send_text(&mut probe, "emit js hello").await;
    let ticket = next_text(&mut probe).await.replace("ok ", "");
    assert_eq!(
        next_text(&mut probe).await,
        format!("result {ticket} ok EVENTS:{} ctx:hello", MESSAGES + 1)
    );
    let stored = stream.get_raw_message(MESSAGES as u64 + 1).await.unwrap();
    assert_eq!(stored.headers.get("key").map(|v| v.as_str()), Some("k"));
    assert_eq!(stored.headers.get("h").map(|v| v.as_str()), Some("v"));

    send_text(&mut probe, "emit rs hi").await;
    let ticket = next_text(&mut probe).await.replace("ok ", "");
    let result = next_text(&mut probe).await;
    let id = result
        .strip_prefix(&format!("result {ticket} ok "))
        .and_then(|r| r.strip_suffix(" ctx:hi"))
        .unwrap_or_else(|| panic!("{result}"));
    assert!(id.contains('-'), "a Redis entry id, got {id:?}");

    // fire_and_forget: the result comes once the record is handed to the client, with no id,
    // and the record still reaches the stream.
    send_text(&mut probe, "emit js_unconfirmed quick").await;
    let ticket = next_text(&mut probe).await.replace("ok ", "");
    assert_eq!(next_text(&mut probe).await, format!("result {ticket} ok  ctx:quick"));
    eventually("the unconfirmed record is in the stream", || async {
        (stream.get_raw_message(MESSAGES as u64 + 2).await).is_ok_and(|m| &m.payload[..] == b"quick")
    })
    .await;

    // A record whose subject cannot be filled fails, with the reason, and is counted.
    let mut untagged = proxy.connect("/in").await;
    send_text(&mut untagged, "no topic").await;
    eventually("the record without a topic failed", || async {
        proxy
            .metric("framegate_sink_records_total{sink=\"core\",outcome=\"failed\"}")
            .await
            == 1.0
    })
    .await;
    // The log line may come a moment after the count.
    eventually("the reason logged", || async {
        proxy.logs().contains("the record has no metadata \"query.topic\"")
    })
    .await;
    // Final: the sinks that would retry a broker's failure do not retry it, nor wait.
    eventually("the redis sink failed it at once", || async {
        proxy
            .metric("framegate_sink_records_total{sink=\"rs\",outcome=\"failed\"}")
            .await
            == 1.0
    })
    .await;
    assert_eq!(
        proxy
            .metric("framegate_sink_records_total{sink=\"rs\",outcome=\"retried\"}")
            .await,
        0.0
    );
}

#[tokio::test]
async fn a_broker_down_at_start_holds_records_until_it_comes() {
    let port = peers::free_port();
    let config = format!(
        r#"{head}
[sinks.rs]
type = "redis"
url = "redis://127.0.0.1:{port}"
stream = "late"

[routes.in]
path = "/in"
sinks = ["rs"]
"#,
        head = head("")
    );
    let proxy = Proxy::start(&config, &[], &[]);
    assert_eq!(http_get(proxy.admin, "/readyz").await.0, 200);
    let mut ws = proxy.connect("/in").await;
    let sent: Vec<String> = (0..5).map(|i| format!("record {i}")).collect();
    for message in &sent {
        send_text(&mut ws, message).await;
    }

    // Nothing listens: /readyz and the metrics say which sink is down and why.
    eventually("the sink is reported down", || async {
        let (status, body) = http_get(proxy.admin, "/readyz").await;
        status == 503 && body.starts_with("sinks.rs: down: redis ")
    })
    .await;
    assert_eq!(proxy.metric("framegate_peer_up{part=\"sinks.rs\"}").await, 0.0);

    // The broker comes: the waiting records go in, in order, and the sink is up again.
    let mut redis = peers::redis_at(port);
    eventually("the records reached redis", || async {
        peers::redis_entries(redis.port, "late").await.len() == 5
    })
    .await;
    assert_eq!(peers::redis_payloads(redis.port, "late").await, sent);
    assert_eq!(http_get(proxy.admin, "/readyz").await, (200, "ready\n".to_string()));
    assert_eq!(proxy.metric("framegate_peer_up{part=\"sinks.rs\"}").await, 1.0);
    assert_eq!(
        proxy
            .metric("framegate_sink_records_total{sink=\"rs\",outcome=\"failed\"}")
            .await,
        0.0
    );

    // Later the broker goes away: /readyz says so while records wait; back, they go in.
    redis.kill();
    send_text(&mut ws, "while it was gone").await;
    eventually("the sink is reported down again", || async {
        let (status, body) = http_get(proxy.admin, "/readyz").await;
        status == 503 && body.starts_with("sinks.rs: down: redis ")
    })
    .await;
    redis.restart();
    eventually("the waiting record reached the new redis", || async {
        peers::redis_payloads(redis.port, "late").await == ["while it was gone"]
    })
    .await;
    eventually("ready again", || async {
        http_get(proxy.admin, "/readyz").await == (200, "ready\n".to_string())
    })
    .await;
}

/// Backpressure: a broker that stops answering fills its sink's small queue, and then the
/// connection feeding it is not read: the client is slowed down by TCP, nothing piles up in
/// framegate, and once the broker answers again every record goes in, once, in order.
#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_broker_slows_the_client_feeding_it_and_loses_nothing() {
    const RECORDS: usize = 2_000;
    let redis = peers::redis();
    let config = format!(
        r#"{head}
[sinks.rs]
type = "redis"
url = "redis://127.0.0.1:{port}"
stream = "held"
queue = 4
timeout_ms = 60000

[routes.in]
path = "/in"
sinks = ["rs"]
"#,
        head = head(""),
        port = redis.port
    );
    let proxy = Proxy::start(&config, &[], &[]);
    let client = redis::Client::open(format!("redis://127.0.0.1:{}", redis.port)).unwrap();
    let conn = client.get_multiplexed_async_connection().await.unwrap();
    let rss_at_start = proxy.rss_kib();

    redis.pause();
    let (mut to_proxy, _from_proxy) = proxy.connect("/in").await.split();
    let written = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = written.clone();
    let writer = tokio::spawn(async move {
        let pad = "x".repeat(10_000);
        for i in 0..RECORDS {
            to_proxy.send(Message::text(format!("{i:05} {pad}"))).await.unwrap();
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        to_proxy
    });
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let read = proxy.metric("framegate_messages_total{route=\"in\",dir=\"in\"}").await;
    let sent = written.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        read < 100.0,
        "framegate read {read} records while its sink could take none"
    );
    assert!(sent < RECORDS, "the client was not slowed down: it wrote all {sent}");
    let rss = proxy.rss_kib();
    assert!(
        rss < rss_at_start + 16 * 1024,
        "{rss} KiB against {rss_at_start} KiB at start"
    );

    redis.resume();
    let _writer = tokio::time::timeout(PATIENCE * 3, writer).await.unwrap().unwrap();
    eventually("every record reached redis", || {
        let mut conn = conn.clone();
        async move {
            redis::cmd("XLEN")
                .arg("held")
                .query_async::<usize>(&mut conn)
                .await
                .unwrap()
                == RECORDS
        }
    })
    .await;
    let numbers: Vec<usize> = (peers::redis_payloads(redis.port, "held").await.iter())
        .map(|payload| payload[..5].parse().unwrap())
        .collect();
    assert_eq!(numbers, (0..RECORDS).collect::<Vec<_>>(), "once each, in order");
    println!("backpressure: read {read} of {RECORDS} while frozen, client wrote {sent}");
}
