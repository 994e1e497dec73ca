//! Broker sources against real brokers (nats-server with JetStream, redis-server): messages
//! published by an independent client reach a WebSocket client subscribed through a filter,
//! with their key and headers; acked ones are not delivered again to the next connection,
//! unacked ones are.

mod common;

use common::*;

fn config(nats: u16, redis: u16) -> String {
    format!(
        r#"{head}
[sources.js]
type = "jetstream"
url = "nats://127.0.0.1:{nats}"

[sources.rs]
type = "redis"
url = "redis://127.0.0.1:{redis}"

[routes.probe]
path = "/probe"
filters = [{{ module = "probe" }}]
"#,
        head = head("")
    )
}

/// Subscribes with the probe; returns the subscription id.
async fn subscribe(ws: &mut Ws, source: &str, spec: &str) -> String {
    send_text(ws, &format!("sub {source} {spec}")).await;
    let answer = next_text(ws).await;
    answer
        .strip_prefix("ok ")
        .unwrap_or_else(|| panic!("{answer}"))
        .to_string()
}

/// The next delivery: (message id, the rest of the tag, payload).
async fn delivery(ws: &mut Ws, sub: &str) -> (String, String, String) {
    let text = next_text(ws).await;
    let rest = text
        .strip_prefix(&format!("[sub {sub} msg "))
        .unwrap_or_else(|| panic!("not a delivery of {sub}: {text}"));
    let (tag, payload) = rest.split_once("] ").unwrap();
    let (id, attrs) = tag.split_once(' ').unwrap_or((tag, ""));
    (id.to_string(), attrs.to_string(), payload.to_string())
}

async fn ack(ws: &mut Ws, sub: &str, id: &str) {
    send_text(ws, &format!("ack {sub} {id}")).await;
    assert_eq!(next_text(ws).await, "ok ");
}

#[tokio::test]
async fn jetstream_consumer_redelivers_only_what_was_not_acked() {
    let (nats, redis) = (peers::nats(), peers::redis());
    let client = async_nats::connect(format!("nats://127.0.0.1:{}", nats.port))
        .await
        .unwrap();
    let jetstream = async_nats::jetstream::new(client);
    jetstream
        .create_stream(async_nats::jetstream::stream::Config {
            name: "ORDERS".into(),
            subjects: vec!["orders.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    for i in 1..=6 {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("key", format!("k{i}").as_str());
        headers.insert("h", "v");
        jetstream
            .publish_with_headers("orders.new", headers, format!("order {i}").into())
            .await
            .unwrap()
            .await
            .unwrap();
    }

    let proxy = Proxy::start(&config(nats.port, redis.port), &["probe"], &[]);
    let spec = r#"{"subject":"orders.>","durable":"edge","ack_wait_ms":3000}"#;
    let mut ws = proxy
        .connect("/probe?manual=1&show=key,header.h,topic,redelivery_count")
        .await;
    let sub = subscribe(&mut ws, "js", spec).await;
    for i in 1..=6 {
        let (id, attrs, payload) = delivery(&mut ws, &sub).await;
        assert_eq!(id, i.to_string(), "the stream sequence");
        assert_eq!(payload, format!("order {i}"));
        assert_eq!(
            attrs,
            format!("key=k{i} header.h=v topic=orders.new redelivery_count=0")
        );
    }
    for id in ["1", "2", "3"] {
        ack(&mut ws, &sub, id).await;
    }
    ws.close(None).await.unwrap();

    // The next connection on the same durable consumer gets 4, 5 and 6 again (after the
    // consumer's ack wait, long enough for a busy machine to ack 1 to 3), then new ones.
    let mut again = proxy.connect("/probe?manual=1&show=redelivery_count").await;
    let sub = subscribe(&mut again, "js", spec).await;
    let mut redelivered = Vec::new();
    for _ in 4..=6 {
        let (id, attrs, _) = delivery(&mut again, &sub).await;
        assert_ne!(attrs, "redelivery_count=0");
        redelivered.push(id);
    }
    redelivered.sort();
    assert_eq!(redelivered, ["4", "5", "6"]);
    for id in &redelivered {
        ack(&mut again, &sub, id).await;
    }
    jetstream
        .publish("orders.new", "order 7".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let (id, _, payload) = delivery(&mut again, &sub).await;
    assert_eq!((id.as_str(), payload.as_str()), ("7", "order 7"));
    assert_eq!(
        proxy
            .metric("framegate_source_messages_total{source=\"js\",event=\"acked\"}")
            .await,
        6.0
    );

    // A subject no stream holds: the subscription fails and the filter hears why.
    send_text(&mut again, "sub js nowhere.at.all").await;
    let failed = next_text(&mut again).await.replace("ok ", "");
    let result = next_text(&mut again).await;
    assert!(
        result.starts_with(&format!(
            "result {failed} failed no JetStream stream holds subject \"nowhere.at.all\""
        )),
        "{result}"
    );
}

#[tokio::test]
async fn redis_consumer_group_redelivers_only_what_was_not_acked() {
    let (nats, redis) = (peers::nats(), peers::redis());
    let redis_client = redis::Client::open(format!("redis://127.0.0.1:{}", redis.port)).unwrap();
    let mut conn = redis_client.get_multiplexed_async_connection().await.unwrap();
    let xadd = |i: usize| {
        let mut command = redis::cmd("XADD");
        command
            .arg("orders")
            .arg("*")
            .arg("payload")
            .arg(format!("order {i}"))
            .arg("key")
            .arg(format!("k{i}"))
            .arg("h:h")
            .arg("v");
        command
    };
    let mut ids = Vec::new();
    for i in 1..=6 {
        ids.push(xadd(i).query_async::<String>(&mut conn).await.unwrap());
    }

    let proxy = Proxy::start(&config(nats.port, redis.port), &["probe"], &[]);
    let spec = r#"{"stream":"orders","group":"edge","consumer":"c1","start":"all"}"#;
    let mut ws = proxy.connect("/probe?manual=1&show=key,header.h,topic").await;
    let sub = subscribe(&mut ws, "rs", spec).await;
    for (i, expected) in ids.iter().enumerate() {
        let (id, attrs, payload) = delivery(&mut ws, &sub).await;
        assert_eq!(&id, expected, "the entry id");
        assert_eq!(payload, format!("order {}", i + 1));
        assert_eq!(attrs, format!("key=k{} header.h=v topic=orders", i + 1));
    }
    for id in &ids[..3] {
        ack(&mut ws, &sub, id).await;
    }
    ws.close(None).await.unwrap();
    eventually("redis has the first three acked", || {
        let mut conn = conn.clone();
        async move {
            let pending: redis::streams::StreamPendingReply = redis::cmd("XPENDING")
                .arg("orders")
                .arg("edge")
                .query_async(&mut conn)
                .await
                .unwrap();
            pending.count() == 3
        }
    })
    .await;

    // The same consumer's next connection gets its three pending entries, then new ones.
    let mut again = proxy.connect("/probe?manual=1").await;
    let sub = subscribe(&mut again, "rs", spec).await;
    for expected in &ids[3..] {
        let (id, _, _) = delivery(&mut again, &sub).await;
        assert_eq!(&id, expected);
    }
    for id in &ids[3..] {
        ack(&mut again, &sub, id).await;
    }
    let seventh: String = xadd(7).query_async(&mut conn).await.unwrap();
    let (id, _, payload) = delivery(&mut again, &sub).await;
    assert_eq!((id.clone(), payload.as_str()), (seventh, "order 7"));

    // A nack hands the entry over again.
    send_text(&mut again, &format!("nack {sub} {id}")).await;
    assert_eq!(next_text(&mut again).await, "ok ");
    let (redelivered, _, payload) = delivery(&mut again, &sub).await;
    assert_eq!((redelivered, payload.as_str()), (id, "order 7"));
}
