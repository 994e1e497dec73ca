//! The `query` filter (NSDb's live queries at `/ws-stream`, records in at `/ws-insert`) end to
//! end: the seed's examples by a Python websocket-client script on the default config, byte for
//! byte; refusals at the upgrade; 200 random queries over 20,000 random records checked against
//! a reference evaluator written in Python (tests/query_reference.py); pacing by refresh_period
//! against timestamps only the client knows; aggregations re-pushed as the window changes; the
//! retained window's count and age.

mod common;

use std::time::{Duration, Instant};

use common::nsdb::{ask, subscription};
use common::*;
use serde_json::{Value, json};

/// One proxy starts at a time: the debug build compiles query.wasm (400 KiB) slowly.
static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A proxy with `/ws-stream` and `/ws-insert` on the bus, the filter's config extended by `extra`.
/// The deadline is raised from 50 ms: the tests run a debug build beside other tests, and a
/// call preempted that long is not the filter's doing.
fn start(extra: &str) -> Proxy {
    let config = format!(
        "{head}\n[sinks.nsdb]\ntype = \"bus\"\ntopic = \"nsdb\"\n\n\
         [routes.stream]\npath = \"/ws-stream\"\n\
         filters = [{{ module = \"query\", timeout_ms = 500, config = {{ mode = \"stream\"{extra} }} }}]\n\
         max_meta_keys = 16384\nmax_meta_bytes = 67108864\n\n\
         [routes.insert]\npath = \"/ws-insert\"\nsinks = [\"nsdb\"]\n\
         filters = [{{ module = \"query\", timeout_ms = 500, config = {{ mode = \"insert\", sink = \"nsdb\"{extra} }} }}]\n",
        head = head("")
    );
    let _one = STARTING.lock().unwrap_or_else(|e| e.into_inner());
    Proxy::start(&config, &["query"], &[])
}

async fn insert(ws: &mut Ws, metric: &str, bits: &[Value]) {
    let bodies: Vec<Value> = bits
        .iter()
        .map(|bit| json!({"db": "db", "namespace": "ns", "metric": metric, "bit": bit}))
        .collect();
    let n = bodies.len();
    let reply = ask(ws, &Value::Array(bodies)).await;
    assert_eq!(reply, json!({ "inserted": n }));
}

#[tokio::test]
async fn the_seed_examples_by_python_on_the_default_config() {
    let proxy = {
        let _one = STARTING.lock().unwrap_or_else(|e| e.into_inner());
        start_default()
    };
    let base = format!("ws://{}", proxy.ws);
    let lines = tokio::task::spawn_blocking(move || run_client("python3", "query_seed.py", vec![base]))
        .await
        .unwrap();
    let quid = |line: usize| -> String {
        let (_, frame) = lines[line].split_once(' ').unwrap();
        serde_json::from_str::<Value>(frame).unwrap()["quid"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (q1, q2, q3, q4) = (quid(2), quid(4), quid(5), quid(22));
    assert_eq!(quid(3), q1, "the same query on another socket shares the quid");
    let all = [&q1, &q2, &q3, &q4];
    assert!(
        all.iter().all(|q| q.len() == 36 && q.matches('-').count() == 4),
        "{all:?}"
    );
    assert_eq!(std::collections::HashSet::from(all).len(), 4);

    let key1 = r#"{"timestamp":100000,"value":1,"dimensions":{"key":"Key1"},"tags":{}}"#;
    let key1_15 = r#"{"timestamp":100000,"value":15.0,"dimensions":{"key":"Key1"},"tags":{}}"#;
    let person = r#"{"timestamp":5000,"value":3,"dimensions":{"dimName1":"value","dimName2":1},"tags":{}}"#;
    let head = r#""db":"db","namespace":"namespace""#;
    let expected = [
        r#"insert {"inserted":1}"#.to_string(),
        r#"insert {"inserted":1}"#.to_string(),
        format!(
            r#"subscribed {{{head},"metric":"metric","queryString":"select * from metric limit 1","quid":"{q1}","records":[{key1}]}}"#
        ),
        format!(
            r#"subscribed {{{head},"metric":"metric","queryString":"SELECT * FROM metric LIMIT 1","quid":"{q1}","records":[{key1}]}}"#
        ),
        format!(
            r#"subscribed {{{head},"metric":"people","queryString":"select * from people limit 100","quid":"{q2}","records":[]}}"#
        ),
        format!(
            r#"subscribed {{{head},"metric":"people","queryString":"select * from people limit 100","quid":"{q3}","records":[]}}"#
        ),
        r#"insert {"inserted":1}"#.to_string(),
        format!(r#"push {{"quid":"{q1}","metric":"metric","records":[{key1_15}]}}"#),
        format!(r#"push {{"quid":"{q1}","metric":"metric","records":[{key1_15}]}}"#),
        r#"insert {"inserted":1}"#.to_string(),
        format!(r#"push {{"quid":"{q2}","metric":"people","records":[{person}]}}"#),
        format!(r#"push {{"quid":"{q3}","metric":"people","records":[{person}]}}"#),
        r#"insert {"inserted":1}"#.to_string(),
        r#"insert {"inserted":1}"#.to_string(),
        format!(
            r#"push {{"quid":"{q2}","metric":"people","records":[{{"timestamp":6000,"value":5,"dimensions":{{"dimName1":"value","dimName2":2}},"tags":{{}}}}]}}"#
        ),
        format!(
            r#"failed {{{head},"metric":"metric","queryString":"select * from metric where","reason":"parse error at position 26: expected a condition, found the end of the query"}}"#
        ),
        format!(
            r#"failed {{{head},"metric":"metric","queryString":"delete from metric where key = Key1","reason":"not a select statement"}}"#
        ),
        r#"invalid {"error":"invalid message sent"}"#.to_string(),
        r#"invalid {"error":"invalid message sent"}"#.to_string(),
        format!(r#"unsubscribed {{"quid":"{q1}","unsubscribed":true}}"#),
        format!(r#"unknown {{"error":"no subscription {q1} on this connection"}}"#),
        r#"insert {"inserted":1}"#.to_string(),
        format!(
            r#"subscribed {{{head},"metric":"metric","queryString":"select * from metric where key = Key2","quid":"{q4}","records":[{{"timestamp":100000,"value":2,"dimensions":{{"key":"Key2"}},"tags":{{}}}}]}}"#
        ),
        r#"insert {"inserted":1}"#.to_string(),
        format!(
            r#"push {{"quid":"{q4}","metric":"metric","records":[{{"timestamp":100002,"value":7,"dimensions":{{"key":"Key2"}},"tags":{{}}}}]}}"#
        ),
        "refused 400 publish period of 50 milliseconds cannot be used, must be greater or equal to 100".to_string(),
    ];
    for (i, (got, want)) in lines.iter().zip(&expected).enumerate() {
        assert_eq!(got, want, "line {i}");
    }
    assert_eq!(lines.len(), expected.len(), "{lines:#?}");
}

#[tokio::test]
async fn the_upgrade_checks_refresh_period_and_retention_size() {
    let proxy = start(", min_refresh_period_ms = 250");
    assert_eq!(
        upgrade_status(proxy.ws, "/ws-stream?refresh_period=249").await,
        (
            400,
            "publish period of 249 milliseconds cannot be used, must be greater or equal to 250".into()
        )
    );
    assert_eq!(
        upgrade_status(proxy.ws, "/ws-stream?refresh_period=soon").await,
        (400, "refresh_period \"soon\" is not a number of milliseconds".into())
    );
    assert_eq!(
        upgrade_status(proxy.ws, "/ws-stream?retention_size=0").await,
        (400, "retention_size \"0\" is not a number of records above 0".into())
    );
    assert_eq!(upgrade_status(proxy.ws, "/ws-stream?refresh_period=250").await.0, 101);
    assert_eq!(upgrade_status(proxy.ws, "/ws-stream").await.0, 101);
}

#[tokio::test]
async fn two_hundred_random_queries_match_a_reference_evaluator() {
    let proxy = start("");
    let base = format!("ws://{}", proxy.ws);
    let lines = tokio::task::spawn_blocking(move || {
        let args = vec![base, "--queries=200".into(), "--records=20000".into()];
        run_client("python3", "query_reference.py", args)
    })
    .await
    .unwrap();
    let summary = lines.last().unwrap();
    assert!(summary.starts_with("ok "), "{lines:#?}");
    // Nothing was dropped on the way, by the bus or by the pacing.
    assert_eq!(proxy.metric("framegate_bus_dropped_total{topic=\"nsdb\"}").await, 0.0);
    assert_eq!(
        proxy
            .metric("framegate_filter_custom_total{filter=\"query\",name=\"records_dropped\"}")
            .await,
        0.0
    );
}

/// With refresh_period 500 and 100 inserts a second, every push comes at least 500 ms after the
/// newest record of the push before it was stamped (by this client's clock, before it was
/// sent: the server cannot have had it sooner), and the pushes carry every record once, in order.
#[tokio::test]
async fn pushes_are_paced_by_refresh_period_and_carry_everything_in_order() {
    let proxy = start("");
    let mut stream = proxy.connect("/ws-stream?refresh_period=500&retention_size=1000").await;
    let answer = ask(
        &mut stream,
        &subscription("paced", "select * from paced where kind = tick"),
    )
    .await;
    assert_eq!(answer["records"], json!([]));
    let quid = answer["quid"].as_str().unwrap().to_string();

    let clock = Instant::now();
    let mut inserter = proxy.connect("/ws-insert").await;
    const RECORDS: i64 = 300;
    let writer = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(10));
        for i in 0..RECORDS {
            every.tick().await;
            let stamp = clock.elapsed().as_millis() as i64;
            let kind = if i % 10 == 9 { "tock" } else { "tick" };
            let bit = json!({"timestamp": stamp, "value": i, "dimensions": {"kind": kind}});
            insert(&mut inserter, "paced", &[bit]).await;
        }
    });
    let expected: Vec<i64> = (0..RECORDS).filter(|i| i % 10 != 9).collect();
    let mut pushes: Vec<(i64, Vec<Value>)> = Vec::new();
    while pushes.iter().map(|(_, r)| r.len()).sum::<usize>() < expected.len() {
        let push: Value = serde_json::from_str(&next_text(&mut stream).await).unwrap();
        let received = clock.elapsed().as_millis() as i64;
        assert_eq!(push["quid"], quid.as_str());
        assert_eq!(push["metric"], "paced");
        pushes.push((received, push["records"].as_array().unwrap().clone()));
    }
    writer.await.unwrap();
    let values: Vec<i64> = pushes
        .iter()
        .flat_map(|(_, records)| records.iter().map(|r| r["value"].as_i64().unwrap()))
        .collect();
    assert_eq!(values, expected, "every matching record once, in order");
    assert!(pushes.len() >= 4, "{} pushes", pushes.len());
    for pair in pushes.windows(2) {
        let newest_before = pair[0]
            .1
            .iter()
            .map(|r| r["timestamp"].as_i64().unwrap())
            .max()
            .unwrap();
        assert!(
            pair[1].0 - newest_before >= 500,
            "a push at {} ms, 500 ms after {newest_before} ms not yet passed",
            pair[1].0
        );
    }
}

#[tokio::test]
async fn aggregations_answer_over_the_window_and_are_pushed_when_it_changes() {
    let proxy = start("");
    let mut inserter = proxy.connect("/ws-insert").await;
    let bit = |t: i64, v: Value, city: &str| json!({"timestamp": t, "value": v, "dimensions": {"city": city}});
    insert(
        &mut inserter,
        "sales",
        &[
            bit(1, json!(5), "Rome"),
            bit(2, json!(2.5), "Paris"),
            bit(3, json!(1), "Rome"),
        ],
    )
    .await;
    let mut stream = proxy.connect("/ws-stream?refresh_period=100").await;
    let by_city = ask(
        &mut stream,
        &subscription(
            "sales",
            "select city, sum(value) from sales group by city order by value desc",
        ),
    )
    .await;
    assert_eq!(
        by_city["records"],
        json!([
            {"timestamp": 0, "value": 6, "dimensions": {}, "tags": {"city": "Rome"}},
            {"timestamp": 0, "value": 2.5, "dimensions": {}, "tags": {"city": "Paris"}},
        ])
    );
    let counted = ask(
        &mut stream,
        &subscription("sales", "select count(*) from sales where city = Rome"),
    )
    .await;
    assert_eq!(
        counted["records"],
        json!([{"timestamp": 0, "value": 2, "dimensions": {}, "tags": {}}])
    );
    let limited = ask(
        &mut stream,
        &subscription("sales", "select * from sales order by value limit 2"),
    )
    .await;
    assert_eq!(
        limited["records"],
        json!([
            {"timestamp": 3, "value": 1, "dimensions": {"city": "Rome"}, "tags": {}},
            {"timestamp": 2, "value": 2.5, "dimensions": {"city": "Paris"}, "tags": {}},
        ])
    );
    let limited_quid = limited["quid"].as_str().unwrap();

    // A record in Paris changes the sums (pushed at the next refresh) but not the Rome count
    // (not pushed again); the plain query pushes it as it is, order and limit aside.
    insert(&mut inserter, "sales", &[bit(4, json!(10), "Paris")]).await;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let push: Value = serde_json::from_str(&next_text(&mut stream).await).unwrap();
        assert_ne!(
            push["quid"], counted["quid"],
            "an unchanged aggregation is not pushed: {push}"
        );
        seen.push(push);
    }
    seen.sort_by_key(|p| p["quid"] != limited_quid);
    assert_eq!(
        seen[0]["records"],
        json!([{"timestamp": 4, "value": 10, "dimensions": {"city": "Paris"}, "tags": {}}])
    );
    assert_eq!(seen[1]["quid"], by_city["quid"]);
    assert_eq!(
        seen[1]["records"],
        json!([
            {"timestamp": 0, "value": 12.5, "dimensions": {}, "tags": {"city": "Paris"}},
            {"timestamp": 0, "value": 6, "dimensions": {}, "tags": {"city": "Rome"}},
        ])
    );
    // A Rome record: now the count changes.
    insert(&mut inserter, "sales", &[bit(5, json!(1), "Rome")]).await;
    let mut count = None;
    while count.is_none() {
        let push: Value = serde_json::from_str(&next_text(&mut stream).await).unwrap();
        if push["quid"] == counted["quid"] {
            count = Some(push["records"].clone());
        }
    }
    assert_eq!(
        count.unwrap(),
        json!([{"timestamp": 0, "value": 3, "dimensions": {}, "tags": {}}])
    );
}

#[tokio::test]
async fn the_window_keeps_the_last_records_of_each_metric_up_to_their_age() {
    let proxy = start(", retention = { count = 3, max_age_ms = 1500 }");
    let mut inserter = proxy.connect("/ws-insert").await;
    let bits: Vec<Value> = (1..=5).map(|i| json!({"timestamp": i, "value": i})).collect();
    insert(&mut inserter, "kept", &bits).await;
    insert(&mut inserter, "other", &bits[..1]).await;
    let mut stream = proxy.connect("/ws-stream").await;
    let answer = ask(&mut stream, &subscription("kept", "select * from kept")).await;
    let values: Vec<i64> = answer["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["value"].as_i64().unwrap())
        .collect();
    assert_eq!(values, [3, 4, 5], "the last 3");
    let other = ask(&mut stream, &subscription("other", "select * from other")).await;
    assert_eq!(other["records"].as_array().unwrap().len(), 1, "per metric");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let later = ask(&mut stream, &subscription("kept", "select * from kept where value > 0")).await;
    assert_eq!(later["records"], json!([]), "past max_age_ms");
}

/// The values of the next `n` records pushed for `quid` (passing over other quids), sorted.
async fn values_for(ws: &mut Ws, quid: &Value, n: usize) -> Vec<i64> {
    let mut values = Vec::new();
    while values.len() < n {
        let push = push_for(ws, quid).await;
        values.extend(
            push["records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["value"].as_i64().unwrap()),
        );
    }
    values.sort_unstable();
    values
}

/// The next push for `quid`, passing over the others'.
async fn push_for(ws: &mut Ws, quid: &Value) -> Value {
    loop {
        let push: Value = serde_json::from_str(&next_text(ws).await).unwrap();
        if push["quid"] == *quid {
            return push;
        }
    }
}

/// Three instances of the shipped cluster config and nats-server: a record inserted at any
/// instance reaches the matching subscribers of all three; with B killed, A and C carry on.
#[tokio::test]
async fn three_instances_share_records_over_nats() {
    let nats = peers::nats();
    let url = format!("nats://127.0.0.1:{}", nats.port);
    let config = shipped_config("query-cluster.toml", &[("nats://127.0.0.1:4222", &url)]);
    let start = || {
        let _one = STARTING.lock().unwrap_or_else(|e| e.into_inner());
        Proxy::start(&config, &["query"], &[])
    };
    let (a, b, c) = (start(), start(), start());
    let mut streams = Vec::new();
    let (mut live, mut ready) = (Value::Null, Value::Null);
    for proxy in [&a, &b, &c] {
        let mut ws = proxy.connect("/ws-stream").await;
        live = ask(
            &mut ws,
            &subscription("metric", "select * from metric where key = live"),
        )
        .await["quid"]
            .clone();
        ready = ask(&mut ws, &subscription("ready", "select * from ready")).await["quid"].clone();
        streams.push(ws);
    }
    // Each connection's NATS subscription starts with it: insert at A until all three see one.
    let mut inserter = a.connect("/ws-insert").await;
    let mut waiting: Vec<usize> = vec![0, 1, 2];
    for attempt in 0.. {
        assert!(attempt < 100, "instances {waiting:?} never got a record from A");
        insert(&mut inserter, "ready", &[json!({"value": attempt})]).await;
        let mut still = Vec::new();
        for i in waiting {
            if tokio::time::timeout(Duration::from_millis(200), push_for(&mut streams[i], &ready))
                .await
                .is_err()
            {
                still.push(i);
            }
        }
        waiting = still;
        if waiting.is_empty() {
            break;
        }
    }

    let bit = |value: i64| json!({"timestamp": value, "value": value, "dimensions": {"key": "live"}});
    insert(&mut inserter, "metric", &[bit(1)]).await;
    let pushed = push_for(&mut streams[1], &live).await;
    assert_eq!(
        pushed,
        json!({"quid": live, "metric": "metric", "records": [
            {"timestamp": 1, "value": 1, "dimensions": {"key": "live"}, "tags": {}}]}),
        "the record inserted at A, at B"
    );
    let mut at_b = b.connect("/ws-insert").await;
    insert(
        &mut at_b,
        "metric",
        &[bit(2), json!({"value": 0, "dimensions": {"key": "dead"}})],
    )
    .await;
    assert_eq!(values_for(&mut streams[0], &live, 2).await, [1, 2]);
    assert_eq!(values_for(&mut streams[1], &live, 1).await, [2]);
    assert_eq!(values_for(&mut streams[2], &live, 2).await, [1, 2]);

    drop((at_b, b));
    let mut at_c = c.connect("/ws-insert").await;
    insert(&mut inserter, "metric", &[bit(3)]).await;
    insert(&mut at_c, "metric", &[bit(4)]).await;
    for i in [0, 2] {
        assert_eq!(values_for(&mut streams[i], &live, 2).await, [3, 4], "instance {i}");
    }
}

/// The shipped Kafka config: JSON records an independent producer writes to the topic reach a
/// matching subscriber as NSDb records, and only those that match.
#[tokio::test]
async fn records_written_to_kafka_reach_a_matching_subscriber() {
    use rdkafka::ClientConfig;
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let tansu = peers::tansu();
    let brokers = common::kafka::brokers(tansu.port);
    common::kafka::create_topics(&brokers, &["orders"]).await;
    let proxy = {
        let _one = STARTING.lock().unwrap_or_else(|e| e.into_inner());
        let brokers = format!("brokers = \"{brokers}\"");
        let config = shipped_config("query-kafka.toml", &[("brokers = \"127.0.0.1:9092\"", &brokers)]);
        Proxy::start(&config, &["query"], &[])
    };
    let mut ws = proxy.connect("/ws-stream").await;
    // The config maps the topic's records to metric orders of db shop, namespace eu.
    let shop = |query: &str| json!({"db": "shop", "namespace": "eu", "metric": "orders", "queryString": query});
    let wanted = ask(&mut ws, &shop("select * from orders where country = IT and value > 10")).await;
    assert_eq!(wanted["records"], json!([]));
    let probe = ask(&mut ws, &shop("select * from orders where country = probe")).await["quid"].clone();
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
    let write = |record: Value| {
        let producer = producer.clone();
        async move {
            let payload = record.to_string();
            producer
                .send(FutureRecord::<(), _>::to("orders").payload(&payload), PATIENCE)
                .await
                .unwrap();
        }
    };
    // The connection's consumer starts at the latest offset once it joined its group: write
    // probes until one comes through.
    for attempt in 0.. {
        assert!(
            attempt < 120,
            "the subscriber never got a record from Kafka:\n{}",
            proxy.logs()
        );
        write(json!({"ts": attempt, "amount": 0, "country": "probe"})).await;
        if tokio::time::timeout(Duration::from_millis(500), push_for(&mut ws, &probe))
            .await
            .is_ok()
        {
            break;
        }
    }
    for record in [
        json!({"ts": 1, "amount": 12.5, "country": "IT", "status": "paid"}),
        json!({"ts": 2, "amount": 5, "country": "IT"}),
        json!({"ts": 3, "amount": 20, "country": "FR"}),
        json!({"ts": 4, "amount": 11, "country": "IT", "items": 3}),
    ] {
        write(record).await;
    }
    let mut records = Vec::new();
    while records.len() < 2 {
        let push = push_for(&mut ws, &wanted["quid"]).await;
        assert_eq!(push["metric"], "orders");
        records.extend(push["records"].as_array().unwrap().iter().cloned());
    }
    assert_eq!(
        records,
        [
            json!({"timestamp": 1, "value": 12.5, "dimensions": {"country": "IT", "status": "paid"}, "tags": {}}),
            json!({"timestamp": 4, "value": 11, "dimensions": {"country": "IT", "items": 3}, "tags": {}}),
        ]
    );
}

/// query.wasm with a custom section appended: the same filter, another module version.
fn another_version() -> Vec<u8> {
    let mut wasm = std::fs::read(built_filters().join("query.wasm")).unwrap();
    let name = b"framegate-test";
    let body: Vec<u8> = [&[name.len() as u8][..], name, b"v2"].concat();
    wasm.push(0); // a custom section...
    wasm.push(body.len() as u8); // ...this long (one LEB128 byte)
    wasm.extend(body);
    wasm
}

/// Subscriptions are the connection's metadata: a new module version swapped in under a live
/// connection (with no parsed query cached) carries on with the same quids, the retained window
/// (the module's store) intact.
#[tokio::test]
async fn a_hot_swap_keeps_subscriptions_and_the_window() {
    let proxy = start("");
    let mut inserter = proxy.connect("/ws-insert").await;
    insert(&mut inserter, "swap", &[json!({"timestamp": 1, "value": 1})]).await;
    let mut stream = proxy.connect("/ws-stream").await;
    let answer = ask(&mut stream, &subscription("swap", "select * from swap where value > 0")).await;
    assert_eq!(answer["records"].as_array().unwrap().len(), 1);
    let quid = answer["quid"].clone();

    proxy.replace_file("filters/query.wasm", &another_version());
    let reloads = "framegate_filter_reloads_total{filter=\"query\"}";
    eventually("the new version swapped in", || async {
        proxy.metric(reloads).await == 1.0
    })
    .await;

    insert(
        &mut inserter,
        "swap",
        &[
            json!({"timestamp": 2, "value": 2}),
            json!({"timestamp": 3, "value": -3}),
        ],
    )
    .await;
    let push = push_for(&mut stream, &quid).await;
    assert_eq!(
        push["records"],
        json!([{"timestamp": 2, "value": 2, "dimensions": {}, "tags": {}}])
    );
    let again = ask(&mut stream, &subscription("swap", "select * from swap where value > 0")).await;
    assert_eq!(again["quid"], quid);
    assert_eq!(again["records"].as_array().unwrap().len(), 2, "{again}");
    let mut other = proxy.connect("/ws-stream").await;
    let all = ask(&mut other, &subscription("swap", "select count(*) from swap")).await;
    assert_eq!(
        all["records"],
        json!([{"timestamp": 0, "value": 3, "dimensions": {}, "tags": {}}])
    );
}
