//! The kafka sink and source against a real Kafka-protocol broker (tansu, memory storage). What
//! the sink wrote is read back by an independent client (rdkafka, partitions assigned by hand);
//! what the source delivers was written by an independent producer. The fault test pauses the
//! broker in the middle of 10,000 confirmed records and checks every record's fate.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::kafka::*;
use common::*;
use futures_util::{SinkExt, StreamExt};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Prints the proxy's logs when the test fails: what the broker clients said.
struct LogsOnPanic<'a>(&'a Proxy);

impl Drop for LogsOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("framegate's logs:\n{}", self.0.logs());
        }
    }
}

#[tokio::test]
async fn the_sink_writes_every_record_with_its_key_headers_and_order() {
    let tansu = peers::tansu();
    let brokers = brokers(tansu.port);
    create_topics(&brokers, &["orders", "keyed"]).await;
    let config = format!(
        r#"{head}
[sinks.kafka]
type = "kafka"
brokers = "{brokers}"
topic = "{{meta.query.topic}}"
max_retries = 0

[sinks.keyed]
type = "kafka"
brokers = "{brokers}"
topic = "keyed"
key = "{{meta.query.user}}"

[routes.in]
path = "/in"
sinks = ["kafka"]

[routes.probe]
path = "/probe"
filters = [{{ module = "probe" }}]
sinks = ["kafka", "keyed"]
"#,
        head = head("")
    );
    let proxy = Proxy::start(&config, &["probe"], &[]);

    // Confirmed results carry TOPIC:PARTITION:OFFSET, and the record's key and headers travel.
    let mut probe = proxy.connect("/probe?topic=orders&user=alice").await;
    send_text(&mut probe, "emit kafka first").await;
    let ticket = next_text(&mut probe).await.replace("ok ", "");
    assert_eq!(
        next_text(&mut probe).await,
        format!("result {ticket} ok orders:0:0 ctx:first")
    );

    let mut ws = proxy.connect("/in?topic=orders").await;
    let sent: Vec<String> = (0..50).map(|i| format!("{{\"order\":{i}}}")).collect();
    for message in &sent {
        send_text(&mut ws, message).await;
    }
    // The key template wins over the record's own key.
    send_text(&mut probe, "emit keyed hello").await;
    let ticket = next_text(&mut probe).await.replace("ok ", "");
    assert_eq!(
        next_text(&mut probe).await,
        format!("result {ticket} ok keyed:0:0 ctx:hello")
    );

    eventually("the broker has every record", || async {
        proxy
            .metric("framegate_sink_records_total{sink=\"kafka\",outcome=\"delivered\"}")
            .await
            == 51.0
    })
    .await;
    let orders = read_topic(&brokers, "orders").await;
    assert_eq!(text(orders[0].payload()), "first");
    assert_eq!(text(orders[0].key()), "k");
    assert_eq!(header(&orders[0], "h").as_deref(), Some("v"));
    let payloads: Vec<String> = orders[1..].iter().map(|m| text(m.payload())).collect();
    assert_eq!(payloads, sent);
    assert!(orders[1..].iter().all(|m| m.key().is_none() && m.headers().is_none()));

    let keyed = read_topic(&brokers, "keyed").await;
    assert_eq!(keyed.len(), 1);
    assert_eq!(text(keyed[0].key()), "alice");
    assert_eq!(text(keyed[0].payload()), "hello");
    assert_eq!(header(&keyed[0], "h").as_deref(), Some("v"));

    // A record whose topic cannot be filled fails at once (no retries), with the reason, and is counted.
    let mut untagged = proxy.connect("/probe").await;
    send_text(&mut untagged, "emit kafka lost").await;
    let ticket = next_text(&mut untagged).await.replace("ok ", "");
    let result = next_text(&mut untagged).await;
    assert!(
        result.starts_with(&format!("result {ticket} failed refused: "))
            && result.contains("the record has no metadata \"query.topic\""),
        "{result}"
    );
    assert_eq!(
        proxy
            .metric("framegate_sink_records_total{sink=\"kafka\",outcome=\"failed\"}")
            .await,
        1.0
    );
    // The marker of the first reading is there too.
    assert_eq!(read_topic(&brokers, "orders").await.len(), 52);
}

#[tokio::test]
async fn a_broker_down_at_start_fails_records_until_it_comes() {
    let port = peers::free_port();
    let config = format!(
        r#"{head}
[sinks.kafka]
type = "kafka"
brokers = "{brokers}"
topic = "{{meta.query.topic}}"
timeout_ms = 1000
max_retries = 0

[routes.probe]
path = "/probe"
filters = [{{ module = "probe" }}]
sinks = ["kafka"]
"#,
        head = head(""),
        brokers = brokers(port)
    );
    let proxy = Proxy::start(&config, &["probe"], &[]);
    let mut probe = proxy.connect("/probe?topic=early").await;
    send_text(&mut probe, "emit kafka early").await;
    let ticket = next_text(&mut probe).await.replace("ok ", "");
    let result = next_text(&mut probe).await;
    assert!(
        result.starts_with(&format!(
            "result {ticket} failed kafka 127.0.0.1:{port} topic \"early\""
        )),
        "{result}"
    );
    let (status, body) = http_get(proxy.admin, "/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("sinks.kafka: down"), "{body}");

    // The broker comes: the same sink reaches it without a restart, once librdkafka's reconnect
    // backoff has run out. (A topic of its own: the producer asks for "early" again, and tansu
    // makes topics of several partitions when asked.)
    let tansu = peers::tansu_on(port);
    create_topics(&brokers(tansu.port), &["later"]).await;
    let mut probe = proxy.connect("/probe?topic=later").await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let (payload, id) = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sink never reached the broker"
        );
        let payload = format!("late{ticket}");
        send_text(&mut probe, &format!("emit kafka {payload}")).await;
        let ticket = next_text(&mut probe).await.replace("ok ", "");
        let result = next_text(&mut probe).await;
        if let Some(id) = result
            .strip_prefix(&format!("result {ticket} ok "))
            .and_then(|r| r.strip_suffix(&format!(" ctx:{payload}")))
        {
            break (payload, id.to_string());
        }
    };
    eventually("ready again", || async {
        http_get(proxy.admin, "/readyz").await.0 == 200
    })
    .await;
    let stored = read_topic(&brokers(tansu.port), "later").await;
    let at: i64 = id.strip_prefix("later:0:").unwrap().parse().unwrap();
    let record = stored.iter().find(|m| m.offset() == at).unwrap();
    assert_eq!(text(record.payload()), payload);
}

fn source_config(brokers: &str) -> String {
    format!(
        r#"{head}
[sources.events]
type = "kafka"
brokers = "{brokers}"
properties = {{ "session.timeout.ms" = "6000" }}

[routes.probe]
path = "/probe"
filters = [{{ module = "probe" }}]
"#,
        head = head("")
    )
}

const SUBSCRIBE: &str = r#"sub events {"topic": "feed", "group": "readers", "start": "earliest"}"#;
const SHOW: &str = "/probe?manual=1&show=key,header.h,topic,partition,offset,redelivery_count";

async fn subscribe(ws: &mut Ws) -> String {
    send_text(ws, SUBSCRIBE).await;
    next_text(ws).await.strip_prefix("ok ").expect("subscribed").to_string()
}

fn delivery(sub: &str, offset: i64, redeliveries: u32) -> String {
    format!(
        "[sub {sub} msg 0:{offset} key=k{offset} header.h=v{offset} topic=feed partition=0 offset={offset} \
         redelivery_count={redeliveries}] m{offset}"
    )
}

#[tokio::test]
async fn the_source_commits_below_the_first_unacked_message() {
    let tansu = peers::tansu();
    let brokers = brokers(tansu.port);
    create_topics(&brokers, &["feed"]).await;
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
    for i in 0..6 {
        let headers = OwnedHeaders::new().insert(Header {
            key: "h",
            value: Some(&format!("v{i}")),
        });
        producer
            .send(
                FutureRecord::to("feed")
                    .key(&format!("k{i}"))
                    .payload(&format!("m{i}"))
                    .headers(headers),
                PATIENCE,
            )
            .await
            .unwrap();
    }
    let proxy = Proxy::start(&source_config(&brokers), &["probe"], &[]);
    let _logs = LogsOnPanic(&proxy);

    let mut ws = proxy.connect(SHOW).await;
    let sub = subscribe(&mut ws).await;
    for offset in 0..6 {
        assert_eq!(next_text(&mut ws).await, delivery(&sub, offset, 0));
    }
    // 2 stays unacked: the group may not go past it, even though 3 was acked.
    for id in ["0:0", "0:1", "0:3"] {
        send_text(&mut ws, &format!("ack {sub} {id}")).await;
        assert_eq!(next_text(&mut ws).await, "ok ");
    }
    eventually("the acks are carried out", || async {
        proxy
            .metric("framegate_source_messages_total{source=\"events\",event=\"acked\"}")
            .await
            == 3.0
    })
    .await;
    let group: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "readers")
        .create()
        .unwrap();
    let mut partition = TopicPartitionList::new();
    partition.add_partition("feed", 0);
    eventually("the group committed offset 2", || async {
        let committed = group.committed_offsets(partition.clone(), PATIENCE).unwrap();
        committed.find_partition("feed", 0).unwrap().offset() == Offset::Offset(2)
    })
    .await;
    let members = || {
        let groups = group.fetch_group_list(Some("readers"), PATIENCE).unwrap();
        groups.groups().iter().map(|g| g.members().len()).sum::<usize>()
    };
    assert_eq!(members(), 1);
    ws.close(None).await.unwrap();
    drop(ws);
    // The closed connection's consumer is gone from the group before the next one joins.
    eventually("the consumer left the group", || async { members() == 0 }).await;

    // The next member of the group starts at the first unacked message; a nack hands it over again.
    let mut ws = proxy.connect(SHOW).await;
    let sub = subscribe(&mut ws).await;
    for offset in 2..6 {
        assert_eq!(next_text(&mut ws).await, delivery(&sub, offset, 0));
    }
    send_text(&mut ws, &format!("nack {sub} 0:2")).await;
    assert_eq!(next_text(&mut ws).await, "ok ");
    assert_eq!(next_text(&mut ws).await, delivery(&sub, 2, 1));
    for offset in 2..6 {
        send_text(&mut ws, &format!("ack {sub} 0:{offset}")).await;
        assert_eq!(next_text(&mut ws).await, "ok ");
    }
    eventually("the group committed everything", || async {
        let committed = group.committed_offsets(partition.clone(), PATIENCE).unwrap();
        committed.find_partition("feed", 0).unwrap().offset() == Offset::Offset(6)
    })
    .await;
    assert_eq!(
        proxy
            .metric("framegate_source_messages_total{source=\"events\",event=\"nacked\"}")
            .await,
        1.0
    );

    // A spec may tune the consumer, not reach beyond it: it may come from a client.
    send_text(
        &mut ws,
        r#"sub events {"topic": "feed", "properties": {"plugin.library.paths": "/tmp/x.so"}}"#,
    )
    .await;
    let refused = next_text(&mut ws).await.strip_prefix("ok ").unwrap().to_string();
    let result = next_text(&mut ws).await;
    assert!(
        result.starts_with(&format!(
            "result {refused} failed kafka spec property \"plugin.library.paths\" is not one a subscription may set"
        )),
        "{result}"
    );

    // With max_unacked, reading waits for acks: the next message comes only after one.
    let mut ws = proxy.connect(SHOW).await;
    send_text(
        &mut ws,
        r#"sub events {"topic": "feed", "group": "few", "start": "earliest", "max_unacked": 2}"#,
    )
    .await;
    let sub = next_text(&mut ws).await.strip_prefix("ok ").unwrap().to_string();
    assert_eq!(next_text(&mut ws).await, delivery(&sub, 0, 0));
    assert_eq!(next_text(&mut ws).await, delivery(&sub, 1, 0));
    send_text(&mut ws, &format!("ack {sub} 0:0")).await;
    assert_eq!(next_text(&mut ws).await, "ok ");
    assert_eq!(next_text(&mut ws).await, delivery(&sub, 2, 0));
}

const RECORDS: usize = 10_000;

/// The issue's proof. tansu's memory storage forgets everything when killed, so the fault is a
/// hang: the broker is stopped (SIGSTOP) with records in flight, held, then let go (SIGCONT).
/// Afterwards every record confirmed to the client is in the broker exactly once and exactly
/// as sent, every other one was reported failed, and nothing is left without an answer.
#[tokio::test]
async fn a_paused_broker_loses_no_confirmed_record() {
    let tansu = peers::tansu();
    let brokers = brokers(tansu.port);
    create_topics(&brokers, &["fault"]).await;
    let config = format!(
        r#"{head}
[sinks.kafka]
type = "kafka"
brokers = "{brokers}"
topic = "fault"
timeout_ms = 2000
max_retries = 0

# 20,000 filter calls on a shared test machine: a slow one must not close the connection.
[routes.probe]
path = "/probe"
filters = [{{ module = "probe", timeout_ms = 2000 }}]
sinks = ["kafka"]
"#,
        head = head("")
    );
    let proxy = Proxy::start(&config, &["probe"], &[]);
    let _logs = LogsOnPanic(&proxy);
    let (mut write, mut read) = proxy.connect("/probe").await.split();
    // Half way through the sending, the broker stops for longer than `timeout_ms`.
    let tansu = std::sync::Arc::new(tansu);
    let fault = tansu.clone();
    let sender = tokio::spawn(async move {
        let mut pause = None;
        for i in 0..RECORDS {
            if i == RECORDS / 2 {
                fault.pause();
                let fault = fault.clone();
                pause = Some(tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    fault.resume();
                }));
            }
            write.send(WsMessage::text(format!("emit kafka r{i}"))).await.unwrap();
        }
        pause.unwrap().await.unwrap();
        write
    });

    // ctx:PAYLOAD -> the broker's id of it, or None when it failed.
    let mut results: HashMap<String, Option<String>> = HashMap::new();
    while results.len() < RECORDS {
        let message = tokio::time::timeout(PATIENCE, read.next())
            .await
            .expect("no answer in time")
            .unwrap()
            .unwrap();
        let WsMessage::Text(line) = message else { continue };
        let Some(rest) = line.strip_prefix("result ") else {
            assert!(line.starts_with("ok "), "{line}");
            continue;
        };
        let mut words = rest.split(' ');
        let (_ticket, verdict, detail) = (words.next(), words.next().unwrap(), words.next().unwrap());
        let payload = rest.rsplit_once(" ctx:").unwrap().1.to_string();
        let id = (verdict == "ok").then(|| detail.to_string());
        assert!(results.insert(payload, id).is_none(), "two results for one record");
    }
    let _write = sender.await.unwrap();

    let mut found: HashMap<String, Vec<String>> = HashMap::new();
    for message in read_topic(&brokers, "fault").await {
        found
            .entry(text(message.payload()))
            .or_default()
            .push(format!("fault:0:{}", message.offset()));
    }
    let acked: Vec<(&String, &String)> = results
        .iter()
        .filter_map(|(p, id)| id.as_ref().map(|id| (p, id)))
        .collect();
    let failed = results.len() - acked.len();
    let in_broker: usize = found.values().map(Vec::len).sum();
    println!(
        "sent {RECORDS} / acked {} / failed {failed} / found in broker {in_broker} ({} of the failed ones)",
        acked.len(),
        found.keys().filter(|p| results.get(*p) == Some(&None)).count()
    );
    assert_eq!(acked.len() + failed, RECORDS);
    assert!(
        failed > 0,
        "records sent to the paused broker outlive timeout_ms: they fail"
    );
    for (payload, id) in acked {
        assert_eq!(
            found.get(payload),
            Some(&vec![id.clone()]),
            "{payload} confirmed as {id} must be there exactly once"
        );
    }
    assert!(
        found.keys().all(|p| results.contains_key(p)),
        "only records that were sent"
    );
}

#[tokio::test]
async fn the_source_reports_its_broker_down_and_up() {
    let tansu = peers::tansu();
    let port = tansu.port;
    let config = format!(
        r#"{head}
[sources.events]
type = "kafka"
brokers = "{brokers}"
properties = {{ "statistics.interval.ms" = "500", "reconnect.backoff.max.ms" = "500" }}

[routes.probe]
path = "/probe"
filters = [{{ module = "probe" }}]
"#,
        head = head(""),
        brokers = brokers(port)
    );
    let proxy = Proxy::start(&config, &["probe"], &[]);
    let _logs = LogsOnPanic(&proxy);
    let mut ws = proxy.connect("/probe").await;
    send_text(&mut ws, "sub events feed").await;
    assert!(next_text(&mut ws).await.starts_with("ok "));
    let up = "framegate_peer_up{part=\"sources.events\"}";

    drop(tansu);
    eventually("the source is down", || async { proxy.metric(up).await == 0.0 }).await;
    let (status, body) = http_get(proxy.admin, "/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("sources.events: down: kafka 127.0.0.1:"), "{body}");

    // Back, with no message to read: the broker states say it.
    let _tansu = peers::tansu_on(port);
    eventually("the source is up and framegate ready", || async {
        proxy.metric(up).await == 1.0 && http_get(proxy.admin, "/readyz").await == (200, "ready\n".to_string())
    })
    .await;
}
