//! The `hydra` filter (Hydra's ingestion socket) end to end: the seed's sample interaction by a
//! Python websocket-client script and by Rust clients, byte for byte; request ids; broadcast and
//! one ingestor by path; refusals at the upgrade; bad input answered with precise errors on a
//! connection that stays usable; `hydra-ack = explicit` against real brokers (nats-server,
//! redis-server), stopped and back; the shipped config/hydra-kafka.toml in front of tansu;
//! metadata across a hot swap. Records are read back from the
//! file and the brokers with their payload, key and headers.

mod common;

use common::*;
use futures_util::SinkExt;
use rdkafka::message::Message as _;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SAMPLE: &str = r#"{"name":"test","value":"test"}"#;

/// One proxy starts at a time: the debug build compiles hydra.wasm (200 KiB) slowly, and several
/// compiling at once on a small machine would outlast the start's patience.
static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn start(config: &str) -> Proxy {
    let _one = STARTING.lock().unwrap_or_else(|e| e.into_inner());
    Proxy::start(config, &["hydra"], &[])
}

fn filter(ingestors: &str, extra: &str) -> String {
    format!("filters = [{{ module = \"hydra\", config = {{ ingestors = {{ {ingestors} }}{extra} }} }}]")
}

/// `/ws-ingest` and `/ws-ingest/{ingestor}` over `sinks`, with `ingestors` as the filter wants them.
fn routes(sinks: &str, ingestors: &str, extra: &str) -> String {
    let filter = filter(ingestors, extra);
    format!(
        "[routes.hydra]\npath = \"/ws-ingest\"\nsinks = [{sinks}]\n{filter}\n\n\
         [routes.hydra_one]\npath = \"/ws-ingest/{{ingestor}}\"\nsinks = [{sinks}]\n{filter}\n"
    )
}

/// `redis_ingestor` alone, to a Redis sink `rs` with `sink` options added, answering explicit
/// acks however long the broker takes.
fn patient_redis_ingestor(port: u16, sink: &str) -> String {
    format!(
        "{}\n[sinks.rs]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:{port}\"\n{sink}\n\n{}",
        head(""),
        routes(
            "\"rs\"",
            "redis_ingestor = { sink = \"rs\" }",
            ", ingest_timeout_ms = 600000"
        )
    )
}

/// A proxy with `file_ingestor` writing to hydra.jsonl in its folder.
fn file_proxy(extra: &str) -> Proxy {
    let config = format!(
        "{}\n[sinks.hydra_file]\ntype = \"file\"\npath = \"hydra.jsonl\"\n\n{}",
        head(""),
        routes("\"hydra_file\"", "file_ingestor = { sink = \"hydra_file\" }", extra)
    );
    start(&config)
}

/// The request id of an ingest answer, and the answer with the id replaced by `ID`.
fn split_id(reply: &str) -> (String, String) {
    let start = reply
        .find("\"requestId\":\"")
        .unwrap_or_else(|| panic!("no requestId in {reply}"))
        + 13;
    let end = start + reply[start..].find('"').unwrap();
    (
        reply[start..end].to_string(),
        format!("{}ID{}", &reply[..start], &reply[end..]),
    )
}

fn ok_reply(ingestors: &[&str]) -> String {
    let listed: Vec<String> = ingestors
        .iter()
        .map(|i| format!("\"{i}\":{{\"code\":200,\"message\":\"OK\"}}"))
        .collect();
    format!(
        "{{\"requestId\":\"ID\",\"status\":{{\"code\":200,\"message\":\"OK\"}},\"ingestors\":{{{}}}}}",
        listed.join(",")
    )
}

/// The reason phrase Hydra's top-level status gives a code.
fn reason(code: u16) -> &'static str {
    match code {
        400 => "Bad Request",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        503 => "Service Unavailable",
        _ => panic!("no reason phrase for {code} in these tests"),
    }
}

/// One ingestor failed with `code` and `message`; the top level has the code's reason phrase.
fn failed_reply(ingestor: &str, code: u16, message: &str) -> String {
    let message = serde_json::to_string(message).unwrap();
    let top = reason(code);
    format!(
        "{{\"requestId\":\"ID\",\"status\":{{\"code\":{code},\"message\":\"{top}\"}},\"ingestors\":{{\"{ingestor}\":{{\"code\":{code},\"message\":{message}}}}}}}"
    )
}

fn is_generated(id: &str) -> bool {
    id.len() == 8 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The records the file sink wrote, as JSON.
fn file_records(proxy: &Proxy) -> Vec<serde_json::Value> {
    std::fs::read_to_string(proxy.dir.path().join("hydra.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn run_sample(url: &str, headers: &[&str], messages: &[impl ToString]) -> Vec<String> {
    let mut args = vec![url.to_string()];
    for header in headers {
        args.extend(["--header".to_string(), header.to_string()]);
    }
    args.push("--".into());
    args.extend(messages.iter().map(ToString::to_string));
    run_client("python3", "hydra_sample.py", args)
}

/// The seed's sample run by Python at `url` (three `-c SET`s spelt `set_word`, a payload, the
/// same with `-i 122`), every reply checked for `ingestor`.
async fn seed_sample(url: String, set_word: &str, ingestor: &str) {
    let messages = [
        format!("-c {set_word} hydra-kafka-topic = test-topic"),
        format!("-c {set_word} hydra-ack = explicit"),
        format!("-c {set_word} hydra-record-key = {{$.name}}"),
        SAMPLE.to_string(),
        format!("-i 122 {SAMPLE}"),
    ];
    let replies = tokio::task::spawn_blocking(move || run_sample(&url, &[], &messages))
        .await
        .unwrap();
    assert_eq!(
        replies[0],
        r#"{"status":200,"message":"OK[HYDRA-KAFKA-TOPIC=test-topic]"}"#
    );
    assert_eq!(replies[1], r#"{"status":200,"message":"OK[HYDRA-ACK=explicit]"}"#);
    assert_eq!(
        replies[2],
        r#"{"status":200,"message":"OK[HYDRA-RECORD-KEY={$.name}]"}"#
    );
    let (id, reply) = split_id(&replies[3]);
    assert!(is_generated(&id), "{id}");
    assert_eq!(reply, ok_reply(&[ingestor]));
    assert_eq!(
        replies[4],
        format!(
            r#"{{"requestId":"122","status":{{"code":200,"message":"OK"}},"ingestors":{{"{ingestor}":{{"code":200,"message":"OK"}}}}}}"#
        )
    );
}

#[tokio::test]
async fn the_seed_sample_by_python_on_the_default_config() {
    let proxy = {
        let _one = STARTING.lock().unwrap_or_else(|e| e.into_inner());
        start_default()
    };
    seed_sample(proxy.url("/ws-ingest/file_ingestor"), "set", "file_ingestor").await;

    // The same with the metadata as headers at the upgrade.
    let url = proxy.url("/ws-ingest");
    let replies = tokio::task::spawn_blocking(move || {
        run_sample(
            &url,
            &["hydra-ack: explicit", "hydra-record-key: {$.value}", "hydra-trace: t-1"],
            &["-c SET", SAMPLE],
        )
    })
    .await
    .unwrap();
    assert_eq!(
        replies[0],
        r#"{"status":200,"message":"HYDRA-ACK -> explicit;HYDRA-RECORD-KEY -> {$.value};HYDRA-TRACE -> t-1"}"#
    );
    assert_eq!(split_id(&replies[1]).1, ok_reply(&["file_ingestor"]));

    // The default config's file: confirmed records, with the key from the path into the payload.
    let file = proxy.dir.path().join("target/framegate-hydra.jsonl");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    for line in &lines {
        assert_eq!(line["payload"], SAMPLE);
    }
    assert_eq!(lines[0]["key"], "test");
    assert_eq!(lines[1]["key"], "test");
    assert_eq!(lines[2]["key"], "test");
    assert_eq!(
        lines[0]["headers"],
        serde_json::json!({"hydra-kafka-topic": "test-topic"})
    );
    assert_eq!(lines[2]["headers"], serde_json::json!({"hydra-trace": "t-1"}));
}

#[tokio::test]
async fn commands_ids_and_bad_input() {
    let proxy = file_proxy(", max_payload_bytes = 1000");
    assert_eq!(
        upgrade_status(proxy.ws, "/ws-ingest/nope").await,
        (
            404,
            r#"{"status":404,"message":"Ingestor nope not found."}"#.to_string()
        )
    );
    let mut ws = proxy.connect("/ws-ingest").await;

    assert_eq!(
        ask(&mut ws, "-c SET hydra-kafka-topic = test.Topic").await,
        r#"{"status":200,"message":"OK[HYDRA-KAFKA-TOPIC=test.Topic]"}"#
    );
    assert_eq!(
        ask(&mut ws, "-c SET hydra-ack=explicit").await,
        r#"{"status":200,"message":"OK[HYDRA-ACK=explicit]"}"#
    );
    let listing = r#"{"status":200,"message":"HYDRA-KAFKA-TOPIC -> test.Topic;HYDRA-ACK -> explicit"}"#;
    assert_eq!(ask(&mut ws, "-c SET").await, listing);
    assert_eq!(
        ask(&mut ws, "-c WHAT").await,
        r#"{"status":400,"message":"BAD_REQUEST:Not a valid message. Use 'HELP' for help."}"#
    );
    assert_eq!(
        ask(&mut ws, "-c SET hydra-ack").await,
        r#"{"status":400,"message":"BAD_REQUEST:Not a valid message. Use 'HELP' for help."}"#
    );
    let help = ask(&mut ws, "-c help").await;
    assert!(
        help.starts_with(r#"{"status":200,"message":"Commands: '-c SET name = value' sets request metadata"#),
        "{help}"
    );

    // Invalid values: 400 with the reason, and the metadata as it was.
    for (command, reason) in [
        (
            "-c SET hydra-ack = sometimes",
            "BAD REQUEST[hydra-ack=sometimes] is not a valid ack strategy.",
        ),
        (
            "-c SET hydra-validation = loose",
            "BAD REQUEST[hydra-validation=loose] is not a valid validation: use strict or relaxed.",
        ),
        (
            "-c SET hydra-ingest-timeout = soon",
            "BAD REQUEST[hydra-ingest-timeout=soon] is not a valid timeout: milliseconds from 1 to 600000.",
        ),
        (
            "-c SET hydra-kafka-topic = a topic",
            "BAD REQUEST[hydra-kafka-topic=a topic] is not a valid Kafka topic name.",
        ),
        (
            "-c SET hydra-response-format = xml",
            "BAD REQUEST[hydra-response-format=xml] is not a valid response format: use simple or detailed.",
        ),
        (
            "-c SET hydra-record-key = {$.a",
            "BAD REQUEST[hydra-record-key={$.a] is not a valid record key: use a literal or a path such as {$.user.id}.",
        ),
        (
            "-c SET hydra-ingestor = nope",
            "BAD REQUEST[hydra-ingestor=nope] is not a configured ingestor.",
        ),
        ("-c SET route = x", "BAD REQUEST[route=x] is not a hydra-* name."),
    ] {
        let expected = format!(
            "{{\"status\":400,\"message\":{}}}",
            serde_json::to_string(reason).unwrap()
        );
        assert_eq!(ask(&mut ws, command).await, expected, "{command}");
    }
    assert_eq!(ask(&mut ws, "-c SET").await, listing);
    assert_eq!(
        ask(&mut ws, "-c SET hydra-rabbit-exchange = ex").await,
        r#"{"status":200,"message":"OK[HYDRA-RABBIT-EXCHANGE=ex]"}"#
    );
    assert_eq!(
        ask(&mut ws, "-c SET hydra-rabbit-queue = q").await,
        r#"{"status":400,"message":"BAD REQUEST[hydra-rabbit-queue=q] A single parameter for exchange or queue is required."}"#
    );
    // An empty value removes a name.
    assert_eq!(
        ask(&mut ws, "-c SET hydra-rabbit-exchange =").await,
        r#"{"status":200,"message":"OK[HYDRA-RABBIT-EXCHANGE=]"}"#
    );
    assert_eq!(ask(&mut ws, "-c SET").await, listing);

    // Payloads: generated ids are 8 alphanumerics, never twice on a connection; -i ids as given.
    let mut ids = std::collections::HashSet::new();
    for _ in 0..20 {
        let (id, reply) = split_id(&ask(&mut ws, SAMPLE).await);
        assert_eq!(reply, ok_reply(&["file_ingestor"]));
        assert!(is_generated(&id), "{id}");
        assert!(ids.insert(id.clone()), "{id} twice");
    }
    assert_eq!(
        split_id(&ask(&mut ws, &format!("-i my_id_7 {SAMPLE}")).await).0,
        "my_id_7"
    );

    // Strict validation (the default): JSON objects only.
    let (_, reply) = split_id(&ask(&mut ws, "-i 1 not json").await);
    assert_eq!(
        reply,
        failed_reply("file_ingestor", 400, "Invalid JSON: expected ident at line 1 column 2.")
    );
    let (_, reply) = split_id(&ask(&mut ws, "[1,2]").await);
    assert_eq!(
        reply,
        failed_reply("file_ingestor", 400, "The payload must be a JSON object.")
    );
    // Multi-line JSON is one payload (Hydra itself refuses it).
    let pretty = "{\n  \"name\": \"multi\",\n  \"value\": \"line\"\n}";
    assert_eq!(split_id(&ask(&mut ws, pretty).await).1, ok_reply(&["file_ingestor"]));

    // Binary frames: 400, the connection and its metadata stay.
    ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(
        next_text(&mut ws).await,
        r#"{"status":400,"message":"Binary messages are not supported."}"#
    );
    assert_eq!(ask(&mut ws, "-c SET").await, listing);

    // Over the filter's limit: 413, and the connection stays usable.
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(2000));
    assert_eq!(
        split_id(&ask(&mut ws, &big).await).1,
        failed_reply(
            "file_ingestor",
            413,
            "Payload of 2010 bytes is over the limit of 1000 bytes."
        )
    );
    assert_eq!(split_id(&ask(&mut ws, SAMPLE).await).1, ok_reply(&["file_ingestor"]));

    // Relaxed validation takes any text; a record key, client id and unknown names travel.
    for command in [
        "-c SET hydra-validation = relaxed",
        "-c SET hydra-record-key = fixed-key",
        "-c SET hydra-client-id = client-9",
        "-c SET Hydra-Custom = custom value",
    ] {
        assert!(ask(&mut ws, command).await.starts_with(r#"{"status":200"#), "{command}");
    }
    assert_eq!(
        split_id(&ask(&mut ws, "plain text").await).1,
        ok_reply(&["file_ingestor"])
    );
    let detailed = ask(&mut ws, "-c SET hydra-response-format = detailed").await;
    assert!(detailed.contains("OK[HYDRA-RESPONSE-FORMAT=detailed]"));
    let (_, reply) = split_id(&ask(&mut ws, "timed").await);
    assert!(
        reply.starts_with(r#"{"requestId":"ID","status":{"code":200,"message":"OK"},"ingestors":{"file_ingestor":{"code":200,"message":"OK","durationMs":"#),
        "{reply}"
    );

    // What the file holds: only the accepted payloads, each once, with key and headers.
    let records = file_records(&proxy);
    let payloads: Vec<&str> = records.iter().map(|r| r["payload"].as_str().unwrap()).collect();
    let mut expected = vec![SAMPLE; 21];
    expected.extend([pretty, SAMPLE, "plain text", "timed"]);
    assert_eq!(payloads, expected);
    assert_eq!(records[0]["key"], serde_json::Value::Null);
    assert_eq!(
        records[0]["headers"],
        serde_json::json!({"hydra-kafka-topic": "test.Topic"})
    );
    let last = &records[records.len() - 1];
    assert_eq!(last["key"], "fixed-key");
    assert_eq!(
        last["headers"],
        serde_json::json!({"hydra-client-id": "client-9", "hydra-custom": "custom value", "hydra-kafka-topic": "test.Topic"})
    );
}

/// With `replies = "current"`, current Hydra's shapes: refusals at the upgrade in that form too.
#[tokio::test]
async fn current_hydra_replies_and_refusals_at_the_upgrade() {
    let proxy = file_proxy(", replies = \"current\"");
    assert_eq!(
        upgrade_status(proxy.ws, "/ws-ingest/nope").await,
        (
            404,
            r#"{"message":"Ingestor nope not found.","status":404}"#.to_string()
        )
    );
    let mut request = proxy.url("/ws-ingest").into_client_request().unwrap();
    request.headers_mut().insert("hydra-ack", "maybe".parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 400);
            assert_eq!(
                response.body().as_deref(),
                Some(&br#"{"message":"BAD REQUEST[hydra-ack=maybe] is not a valid ack strategy.","status":400}"#[..])
            );
        }
        other => panic!("expected a 400 refusal, got {other:?}"),
    }
    let mut ws = proxy.connect("/ws-ingest/file_ingestor").await;
    assert_eq!(
        ask(&mut ws, "-c SET hydra-ack = explicit").await,
        r#"{"message":"OK[HYDRA-ACK=explicit]","status":200}"#
    );
    assert_eq!(
        ask(&mut ws, &format!("-i 5 {SAMPLE}")).await,
        r#"{"correlationId":"5","ingestors":{"file_ingestor":{"code":200,"message":"OK"}}}"#
    );
    assert_eq!(file_records(&proxy).len(), 1);
}

/// JetStream and Redis ingestors that need a topic, behind `/ws-ingest` and `/ws-ingest/{ingestor}`.
fn broker_config(nats: u16, redis: u16) -> String {
    format!(
        r#"{head}
[sinks.js]
type = "jetstream"
url = "nats://127.0.0.1:{nats}"
subject = "hydra.{{meta.hydra-kafka-topic}}"

[sinks.rs]
type = "redis"
url = "redis://127.0.0.1:{redis}"
stream = "hydra:{{meta.hydra-kafka-topic}}"
retry_backoff_ms = 50
retry_backoff_max_ms = 200

# Fails at once when Redis is down: 503.
[sinks.rs_fast]
type = "redis"
url = "redis://127.0.0.1:{redis}"
stream = "fast:{{meta.hydra-kafka-topic}}"
max_retries = 0

{routes}
[routes.fast]
path = "/fast"
sinks = ["rs_fast"]
{fast}

[routes.broadcast_fast]
path = "/ws-ingest-fast"
sinks = ["js", "rs_fast"]
{broadcast_fast}
"#,
        head = head(""),
        routes = routes(
            "\"js\", \"rs\"",
            "js_ingestor = { sink = \"js\", requires = [\"hydra-kafka-topic\"] }, \
             redis_ingestor = { sink = \"rs\", requires = [\"hydra-kafka-topic\"] }",
            ""
        ),
        fast = filter("redis_ingestor = { sink = \"rs_fast\" }", ""),
        broadcast_fast = filter(
            "js_ingestor = { sink = \"js\" }, redis_ingestor = { sink = \"rs_fast\" }",
            ""
        ),
    )
}

/// A JetStream stream `HYDRA` over `hydra.>`, where the `js` sink's records land.
async fn hydra_stream(nats: u16) -> async_nats::jetstream::stream::Stream {
    let client = async_nats::connect(format!("nats://127.0.0.1:{nats}")).await.unwrap();
    async_nats::jetstream::new(client)
        .create_stream(async_nats::jetstream::stream::Config {
            name: "HYDRA".into(),
            subjects: vec!["hydra.>".into()],
            ..Default::default()
        })
        .await
        .unwrap()
}

/// The payloads of a JetStream stream's messages `from..=to`.
async fn stream_payloads(stream: &async_nats::jetstream::stream::Stream, from: u64, to: u64) -> Vec<String> {
    let mut payloads = Vec::new();
    for seq in from..=to {
        let message = stream.get_raw_message(seq).await.unwrap();
        payloads.push(String::from_utf8(message.payload.to_vec()).unwrap());
    }
    payloads
}

#[tokio::test]
async fn broadcast_to_two_brokers_and_one_ingestor_by_path() {
    let (nats, redis) = (peers::nats(), peers::redis());
    let stream = hydra_stream(nats.port).await;
    let proxy = start(&broker_config(nats.port, redis.port));

    let mut ws = proxy.connect("/ws-ingest").await;
    // No topic: no ingestor joins, and the answer says why.
    assert_eq!(
        split_id(&ask(&mut ws, SAMPLE).await).1,
        r#"{"requestId":"ID","status":{"code":404,"message":"No ingestor joined the request: js_ingestor needs hydra-kafka-topic; redis_ingestor needs hydra-kafka-topic."},"ingestors":{}}"#
    );
    for command in [
        "-c SET hydra-kafka-topic = orders",
        "-c SET hydra-ack = explicit",
        "-c SET hydra-record-key = {$.user.id}",
        "-c SET hydra-trace = abc",
    ] {
        assert!(ask(&mut ws, command).await.starts_with(r#"{"status":200"#), "{command}");
    }
    let payload = r#"{"user":{"id":"u-7"},"n":1}"#;
    assert_eq!(
        split_id(&ask(&mut ws, payload).await).1,
        ok_reply(&["js_ingestor", "redis_ingestor"])
    );
    // Confirmed means stored: both brokers have it already.
    let stored = stream.get_raw_message(1).await.unwrap();
    assert_eq!(stored.subject.as_str(), "hydra.orders");
    assert_eq!(std::str::from_utf8(&stored.payload).unwrap(), payload);
    assert_eq!(stored.headers.get("key").map(|v| v.as_str()), Some("u-7"));
    assert_eq!(stored.headers.get("hydra-trace").map(|v| v.as_str()), Some("abc"));
    let entries = peers::redis_entries(redis.port, "hydra:orders").await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].get::<String>("payload").as_deref(), Some(payload));
    assert_eq!(entries[0].get::<String>("key").as_deref(), Some("u-7"));
    assert_eq!(entries[0].get::<String>("h:hydra-trace").as_deref(), Some("abc"));

    // One ingestor by path; the headers at the upgrade instead of SET.
    let mut request = proxy.url("/ws-ingest/redis_ingestor").into_client_request().unwrap();
    for (name, value) in [("hydra-kafka-topic", "orders"), ("hydra-ack", "explicit")] {
        request.headers_mut().insert(name, value.parse().unwrap());
    }
    let (mut one, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(
        split_id(&ask(&mut one, "-i 9 {\"n\":2}").await).1,
        ok_reply(&["redis_ingestor"])
    );
    assert_eq!(peers::redis_entries(redis.port, "hydra:orders").await.len(), 2);
    assert_eq!(stream.clone().info().await.unwrap().state.messages, 1);
}

/// Sends payloads until one is answered OK by `ingestor` (its broker is back); that payload.
async fn until_ok(ws: &mut Ws, ingestor: &str) -> String {
    let deadline = std::time::Instant::now() + PATIENCE;
    for n in 0.. {
        let payload = format!("{{\"up\":{n}}}");
        let (_, reply) = split_id(&ask(ws, &payload).await);
        if reply == ok_reply(&[ingestor]) {
            return payload;
        }
        assert!(!reply.contains("\"code\":200"), "a failed request answered OK: {reply}");
        assert!(std::time::Instant::now() < deadline, "no OK in time: {reply}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    unreachable!()
}

#[tokio::test]
async fn explicit_acks_fail_while_the_broker_is_down_and_resume() {
    let mut redis = peers::redis();
    let proxy = start(&broker_config(peers::free_port(), redis.port));
    let mut slow = proxy.connect("/ws-ingest/redis_ingestor").await;
    let mut fast = proxy.connect("/fast").await;
    for ws in [&mut slow, &mut fast] {
        for command in [
            "-c SET hydra-kafka-topic = t",
            "-c SET hydra-ack = explicit",
            "-c SET hydra-ingest-timeout = 700",
        ] {
            assert!(ask(ws, command).await.starts_with(r#"{"status":200"#), "{command}");
        }
        assert_eq!(split_id(&ask(ws, SAMPLE).await).1, ok_reply(&["redis_ingestor"]));
    }

    redis.kill();
    // Retrying past the timeout: 408. No retries: 503 with the sink's reason. Never OK.
    assert_eq!(
        split_id(&ask(&mut slow, "{\"down\":1}").await).1,
        failed_reply("redis_ingestor", 408, "Request Timeout")
    );
    let reply = ask(&mut fast, "{\"down\":2}").await;
    assert!(
        reply.contains(r#""status":{"code":503,"message":"#) && reply.contains("redis"),
        "{reply}"
    );

    redis.restart();
    let fast_ok = until_ok(&mut fast, "redis_ingestor").await;
    let slow_ok = until_ok(&mut slow, "redis_ingestor").await;
    // A record answered 408 may still land (the sink kept retrying); one answered OK always did.
    let stored: Vec<String> = peers::redis_entries(redis.port, "hydra:t")
        .await
        .iter()
        .filter_map(|e| e.get::<String>("payload"))
        .collect();
    assert!(stored.contains(&slow_ok), "{stored:?}");
    let fast_stored: Vec<String> = peers::redis_entries(redis.port, "fast:t")
        .await
        .iter()
        .filter_map(|e| e.get::<String>("payload"))
        .collect();
    assert!(!fast_stored.contains(&"{\"down\":2}".to_string()), "{fast_stored:?}");
    assert!(fast_stored.contains(&fast_ok), "{fast_stored:?}");
}

#[tokio::test]
async fn metadata_survives_a_hot_swap() {
    let proxy = file_proxy("");
    let mut ws = proxy.connect("/ws-ingest").await;
    for command in [
        "-c SET hydra-kafka-topic = kept",
        "-c SET hydra-ack = explicit",
        "-c SET hydra-record-key = {$.name}",
    ] {
        assert!(ask(&mut ws, command).await.starts_with(r#"{"status":200"#), "{command}");
    }
    let before = split_id(&ask(&mut ws, SAMPLE).await).0;

    let reloads = "framegate_filter_reloads_total{filter=\"hydra\"}";
    let swapped = proxy.metric(reloads).await;
    // The same module plus a custom section: another version (an identical file is no change).
    let mut module = std::fs::read(built_filters().join("hydra.wasm")).unwrap();
    module.extend_from_slice(&[0, 6, 4, b's', b'w', b'a', b'p', b'2']);
    proxy.replace_file("filters/hydra.wasm", &module);
    // Compiling the new version takes a while in a debug build: a patience of its own.
    let deadline = std::time::Instant::now() + STARTUP;
    while proxy.metric(reloads).await <= swapped {
        assert!(std::time::Instant::now() < deadline, "the new version never came");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    assert_eq!(
        ask(&mut ws, "-c SET").await,
        r#"{"status":200,"message":"HYDRA-KAFKA-TOPIC -> kept;HYDRA-ACK -> explicit;HYDRA-RECORD-KEY -> {$.name}"}"#
    );
    let (after, reply) = split_id(&ask(&mut ws, SAMPLE).await);
    assert_eq!(reply, ok_reply(&["file_ingestor"]));
    assert_ne!(before, after, "the request count survived too");
    let records = file_records(&proxy);
    assert_eq!(records.len(), 2);
    assert_eq!(records[1]["key"], "test");
}

#[tokio::test]
async fn a_request_waiting_for_its_broker_is_answered_across_a_hot_swap() {
    let mut redis = peers::redis();
    let proxy = start(&patient_redis_ingestor(
        redis.port,
        "stream = \"swap\"\nmax_retries = 100000\nretry_backoff_ms = 50\nretry_backoff_max_ms = 100",
    ));
    let mut ws = proxy.connect("/ws-ingest").await;
    assert!(
        ask(&mut ws, "-c SET hydra-ack = explicit")
            .await
            .starts_with(r#"{"status":200"#)
    );
    redis.kill();
    send_text(&mut ws, &format!("-i waiting {SAMPLE}")).await;

    // The broker is down: the request waits (its state in the connection's metadata) while a
    // new version of the filter comes in; that version answers it once Redis is back.
    let reloads = "framegate_filter_reloads_total{filter=\"hydra\"}";
    let mut module = std::fs::read(built_filters().join("hydra.wasm")).unwrap();
    module.extend_from_slice(&[0, 6, 4, b's', b'w', b'a', b'p', b'3']);
    proxy.replace_file("filters/hydra.wasm", &module);
    let deadline = std::time::Instant::now() + STARTUP;
    while proxy.metric(reloads).await < 1.0 {
        assert!(std::time::Instant::now() < deadline, "the new version never came");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    redis.restart();
    assert_eq!(
        next_text(&mut ws).await,
        r#"{"requestId":"waiting","status":{"code":200,"message":"OK"},"ingestors":{"redis_ingestor":{"code":200,"message":"OK"}}}"#
    );
    let entries = peers::redis_entries(redis.port, "swap").await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].get::<String>("payload").as_deref(), Some(SAMPLE));
}

/// The shipped config/hydra-kafka.toml, on ports of the test's own, in front of `brokers`.
fn shipped_kafka_config(brokers: &str) -> String {
    shipped_config(
        "hydra-kafka.toml",
        &[("brokers = \"127.0.0.1:9092\"", &format!("brokers = \"{brokers}\""))],
    )
}

#[tokio::test]
async fn the_seed_sample_by_python_in_front_of_kafka() {
    let tansu = peers::tansu();
    let brokers = kafka::brokers(tansu.port);
    kafka::create_topics(&brokers, &["test-topic"]).await;
    let proxy = start(&shipped_kafka_config(&brokers));

    seed_sample(proxy.url("/ws-ingest"), "SET", "kafka_ingestor").await;

    // The same with the metadata as headers at the upgrade, to the one ingestor by path.
    let url = proxy.url("/ws-ingest/kafka_ingestor");
    let replies = tokio::task::spawn_blocking(move || {
        run_sample(
            &url,
            &[
                "hydra-kafka-topic: test-topic",
                "hydra-ack: explicit",
                "hydra-record-key: other",
            ],
            &[SAMPLE],
        )
    })
    .await
    .unwrap();
    assert_eq!(split_id(&replies[0]).1, ok_reply(&["kafka_ingestor"]));

    // An independent Kafka client finds the three records, with their keys, in order.
    let records = kafka::read_topic(&brokers, "test-topic").await;
    let read: Vec<(String, String)> = records
        .iter()
        .map(|r| (kafka::text(r.key()), kafka::text(r.payload())))
        .collect();
    assert_eq!(
        read,
        [("test", SAMPLE), ("test", SAMPLE), ("other", SAMPLE)].map(|(k, p)| (k.to_string(), p.to_string()))
    );
    assert_eq!(
        kafka::header(&records[0], "hydra-kafka-topic").as_deref(),
        Some("test-topic")
    );
}

/// `hydra-ack = none` (or `noack`) answers once the record is queued: with Redis frozen, a
/// payload under none is answered while the ones sent before it under `explicit` and
/// `replicated` (an alias) still wait for the broker, which answers them when it carries on.
#[tokio::test]
async fn acks_none_answer_once_queued_while_explicit_and_replicated_wait_for_the_broker() {
    let redis = peers::redis();
    // The sink waits for Redis as long as it takes: no retry, no record twice.
    let proxy = start(&patient_redis_ingestor(
        redis.port,
        "stream = \"acks\"\ntimeout_ms = 600000",
    ));
    let mut ws = proxy.connect("/ws-ingest").await;
    let set_ack = async |ws: &mut Ws, ack: &str| {
        assert_eq!(
            ask(ws, &format!("-c SET hydra-ack = {ack}")).await,
            format!("{{\"status\":200,\"message\":\"OK[HYDRA-ACK={ack}]\"}}")
        );
    };
    let ok_for = |id: &str| ok_reply(&["redis_ingestor"]).replace("\"ID\"", &format!("\"{id}\""));
    let payload = |id: &str| format!("{{\"ack\":\"{id}\"}}");
    set_ack(&mut ws, "explicit").await;
    assert_eq!(ask(&mut ws, &format!("-i up {}", payload("up"))).await, ok_for("up"));

    redis.pause();
    for ack in ["explicit", "replicated"] {
        set_ack(&mut ws, ack).await;
        send_text(&mut ws, &format!("-i {ack} {}", payload(ack))).await;
    }
    // The next answers are these, not the waiting ones: nothing reached Redis yet.
    for ack in ["none", "noack"] {
        set_ack(&mut ws, ack).await;
        assert_eq!(ask(&mut ws, &format!("-i {ack} {}", payload(ack))).await, ok_for(ack));
    }

    redis.resume();
    assert_eq!(next_text(&mut ws).await, ok_for("explicit"));
    assert_eq!(next_text(&mut ws).await, ok_for("replicated"));
    // Every record once, in the order sent: the ones answered early were queued, not dropped.
    let expected: Vec<String> = ["up", "explicit", "replicated", "none", "noack"].map(payload).to_vec();
    eventually("the records queued under none reach Redis", || async {
        peers::redis_payloads(redis.port, "acks").await == expected
    })
    .await;
}

/// A broadcast on `/ws-ingest` with JetStream up and Redis down: one answer listing both
/// outcomes, its top-level status Hydra's (the failing code with its reason phrase).
#[tokio::test]
async fn a_broadcast_with_one_broker_down_lists_both_outcomes_and_is_not_ok() {
    let (nats, mut redis) = (peers::nats(), peers::redis());
    let stream = hydra_stream(nats.port).await;
    let proxy = start(&broker_config(nats.port, redis.port));
    // Redis retried past the timeout (408), and not retried at all (503).
    let mut slow = proxy.connect("/ws-ingest").await;
    let mut fast = proxy.connect("/ws-ingest-fast").await;
    for ws in [&mut slow, &mut fast] {
        for command in [
            "-c SET hydra-kafka-topic = split",
            "-c SET hydra-ack = explicit",
            "-c SET hydra-ingest-timeout = 700",
        ] {
            assert!(ask(ws, command).await.starts_with(r#"{"status":200"#), "{command}");
        }
        assert_eq!(
            split_id(&ask(ws, SAMPLE).await).1,
            ok_reply(&["js_ingestor", "redis_ingestor"])
        );
    }

    redis.kill();
    assert_eq!(
        ask(&mut slow, r#"-i slow {"down":"slow"}"#).await,
        r#"{"requestId":"slow","status":{"code":408,"message":"Request Timeout"},"ingestors":{"js_ingestor":{"code":200,"message":"OK"},"redis_ingestor":{"code":408,"message":"Request Timeout"}}}"#
    );
    let reply: serde_json::Value = serde_json::from_str(&ask(&mut fast, r#"-i fast {"down":"fast"}"#).await).unwrap();
    let why = reply["ingestors"]["redis_ingestor"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(why.starts_with("redis "), "the sink's reason: {reply}");
    assert_eq!(
        reply,
        serde_json::json!({
            "requestId": "fast",
            "status": {"code": 503, "message": "Service Unavailable"},
            "ingestors": {
                "js_ingestor": {"code": 200, "message": "OK"},
                "redis_ingestor": {"code": 503, "message": why},
            },
        })
    );
    // JetStream took every record, the ones Redis missed too.
    assert_eq!(
        stream_payloads(&stream, 3, 4).await,
        [r#"{"down":"slow"}"#, r#"{"down":"fast"}"#]
    );
    assert_eq!(stream.clone().info().await.unwrap().state.messages, 4);
}

/// A lapin channel of the test's own on the RabbitMQ node.
async fn rabbit_channel(url: &str) -> (lapin::Connection, lapin::Channel) {
    let connection = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    (connection, channel)
}

/// The message at the head of `queue`, taken (acknowledged) by the test's own client.
async fn rabbit_get(channel: &lapin::Channel, queue: &str) -> lapin::message::Delivery {
    let got = channel
        .basic_get(queue.into(), lapin::options::BasicGetOptions { no_ack: true })
        .await
        .unwrap();
    got.unwrap_or_else(|| panic!("queue {queue} is empty")).delivery
}

fn rabbit_header(delivery: &lapin::message::Delivery, name: &str) -> Option<String> {
    match delivery.properties.headers().as_ref()?.inner().get(name)? {
        lapin::types::AMQPValue::LongString(value) => Some(String::from_utf8_lossy(value.as_bytes()).into_owned()),
        other => panic!("header {name}: {other:?}"),
    }
}

/// The shipped config/hydra-brokers.toml in front of nats-server, redis-server and RabbitMQ: a
/// payload on `/ws-ingest` goes to JetStream, Redis, a RabbitMQ queue and the file, each read
/// back by a client of its own; `rabbit_ingestor` sends to the exchange or the queue the client
/// named, and does not join without one.
#[tokio::test]
async fn the_shipped_broker_config_broadcasts_to_jetstream_redis_rabbitmq_and_a_file() {
    let (nats, redis, rabbit) = (peers::nats(), peers::redis(), peers::rabbitmq());
    let stream = hydra_stream(nats.port).await;
    let (_connection, reader) = rabbit_channel(&rabbit.url()).await;
    reader
        .queue_declare("hydra-orders".into(), Default::default(), Default::default())
        .await
        .unwrap();
    // A fanout exchange, which takes the empty routing key, with a queue of its own.
    reader
        .exchange_declare(
            "hydra-events".into(),
            lapin::ExchangeKind::Fanout,
            Default::default(),
            Default::default(),
        )
        .await
        .unwrap();
    reader
        .queue_declare("hydra-events-copy".into(), Default::default(), Default::default())
        .await
        .unwrap();
    reader
        .queue_bind(
            "hydra-events-copy".into(),
            "hydra-events".into(),
            "".into(),
            Default::default(),
            Default::default(),
        )
        .await
        .unwrap();
    let proxy = start(&shipped_config(
        "hydra-brokers.toml",
        &[
            ("nats://127.0.0.1:4222", &format!("nats://127.0.0.1:{}", nats.port)),
            ("redis://127.0.0.1:6379", &format!("redis://127.0.0.1:{}", redis.port)),
            ("amqp://127.0.0.1:5672/%2f", &rabbit.url()),
        ],
    ));

    let mut ws = proxy.connect("/ws-ingest").await;
    for command in [
        "-c SET hydra-kafka-topic = orders",
        "-c SET hydra-ack = explicit",
        "-c SET hydra-record-key = {$.id}",
        "-c SET hydra-rabbit-queue = hydra-orders",
    ] {
        assert!(ask(&mut ws, command).await.starts_with(r#"{"status":200"#), "{command}");
    }
    let payload = r#"{"id":"o-1","total":5}"#;
    assert_eq!(
        split_id(&ask(&mut ws, payload).await).1,
        ok_reply(&[
            "file_ingestor",
            "jetstream_ingestor",
            "rabbit_ingestor",
            "redis_ingestor"
        ])
    );
    // Confirmed means stored, in each of them.
    let delivery = rabbit_get(&reader, "hydra-orders").await;
    assert_eq!(
        (delivery.exchange.as_str(), delivery.routing_key.as_str()),
        ("", "hydra-orders")
    );
    assert_eq!(std::str::from_utf8(&delivery.data).unwrap(), payload);
    assert_eq!(rabbit_header(&delivery, "key").as_deref(), Some("o-1"));
    assert_eq!(
        rabbit_header(&delivery, "hydra-rabbit-queue").as_deref(),
        Some("hydra-orders")
    );
    assert_eq!(rabbit_header(&delivery, "hydra-kafka-topic").as_deref(), Some("orders"));
    let stored = stream.get_raw_message(1).await.unwrap();
    assert_eq!(
        (stored.subject.as_str(), &stored.payload[..]),
        ("hydra.orders", payload.as_bytes())
    );
    assert_eq!(peers::redis_payloads(redis.port, "hydra:orders").await, [payload]);
    let file = std::fs::read_to_string(proxy.dir.path().join("target/framegate-hydra.jsonl")).unwrap();
    let line: serde_json::Value = serde_json::from_str(file.trim()).unwrap();
    assert_eq!(
        (line["payload"].as_str(), line["key"].as_str()),
        (Some(payload), Some("o-1"))
    );

    // The one ingestor by path: nothing to send to yet, then an exchange.
    let mut one = proxy.connect("/ws-ingest/rabbit_ingestor").await;
    assert_eq!(
        split_id(&ask(&mut one, SAMPLE).await).1,
        r#"{"requestId":"ID","status":{"code":404,"message":"No ingestor joined the request: rabbit_ingestor needs hydra-rabbit-exchange or hydra-rabbit-queue."},"ingestors":{}}"#
    );
    for command in [
        "-c SET hydra-ack = explicit",
        "-c SET hydra-rabbit-exchange = hydra-events",
    ] {
        assert!(
            ask(&mut one, command).await.starts_with(r#"{"status":200"#),
            "{command}"
        );
    }
    assert_eq!(
        ask(&mut one, &format!("-i to_exchange {SAMPLE}")).await,
        r#"{"requestId":"to_exchange","status":{"code":200,"message":"OK"},"ingestors":{"rabbit_ingestor":{"code":200,"message":"OK"}}}"#
    );
    let delivery = rabbit_get(&reader, "hydra-events-copy").await;
    assert_eq!(
        (delivery.exchange.as_str(), delivery.routing_key.as_str()),
        ("hydra-events", "")
    );
    assert_eq!(std::str::from_utf8(&delivery.data).unwrap(), SAMPLE);
    // Nothing else went anywhere: the queue's record was taken, the others are one each.
    assert_eq!(
        reader
            .basic_get("hydra-orders".into(), lapin::options::BasicGetOptions { no_ack: true })
            .await
            .unwrap()
            .map(|m| m.delivery.data),
        None
    );
    assert_eq!(stream.clone().info().await.unwrap().state.messages, 1);
}

/// `framegate check` passes the shipped Hydra configs as they are, and runs the filter's own
/// check of its config: an ingestor with two kinds of sink is named.
#[test]
fn the_shipped_hydra_configs_pass_check() {
    let check = |file: &str, text: &str| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("target/filters")).unwrap();
        std::fs::copy(
            built_filters().join("hydra.wasm"),
            dir.path().join("target/filters/hydra.wasm"),
        )
        .unwrap();
        std::fs::write(dir.path().join(file), text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_framegate"))
            .args(["check", file])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    };
    for file in ["hydra-kafka.toml", "hydra-brokers.toml"] {
        let text = std::fs::read_to_string(format!("{}/config/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let (ok, out, err) = check(file, &text);
        assert_eq!((ok, out), (true, format!("{file}: ok\n")), "{err}");
    }
    let brokers = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/hydra-brokers.toml")).unwrap();
    let broken = brokers.replace(
        "rabbit_ingestor = { sink_by",
        "rabbit_ingestor = { sink = \"file\", sink_by",
    );
    let (ok, _, err) = check("hydra-brokers.toml", &broken);
    assert!(
        !ok && err.contains("ingestors.rabbit_ingestor: give it either sink"),
        "{err}"
    );
}

/// `hydra-ack = explicit` through the shipped config/hydra-kafka.toml while tansu is frozen
/// (its memory storage would forget everything if killed): 408 or 503, never OK; once it
/// carries on, OKs resume, and every record answered OK is in the topic once.
#[tokio::test]
async fn explicit_acks_fail_while_kafka_is_paused_and_resume() {
    let tansu = peers::tansu();
    let brokers = kafka::brokers(tansu.port);
    kafka::create_topics(&brokers, &["outage"]).await;
    let proxy = start(&shipped_kafka_config(&brokers));
    let mut ws = proxy.connect("/ws-ingest/kafka_ingestor").await;
    for command in ["-c SET hydra-kafka-topic = outage", "-c SET hydra-ack = explicit"] {
        assert!(ask(&mut ws, command).await.starts_with(r#"{"status":200"#), "{command}");
    }
    assert_eq!(
        split_id(&ask(&mut ws, r#"{"n":"before"}"#).await).1,
        ok_reply(&["kafka_ingestor"])
    );

    tansu.pause();
    let reply: serde_json::Value = serde_json::from_str(&ask(&mut ws, r#"-i paused {"n":"paused"}"#).await).unwrap();
    let code = reply["status"]["code"].as_u64().unwrap() as u16;
    assert!(code == 408 || code == 503, "{reply}");
    assert_eq!(reply["status"]["message"], reason(code), "{reply}");
    assert_eq!(reply["ingestors"]["kafka_ingestor"]["code"], code, "{reply}");

    tansu.resume();
    let after = until_ok(&mut ws, "kafka_ingestor").await;
    let payloads: Vec<String> = kafka::read_topic(&brokers, "outage")
        .await
        .iter()
        .map(|r| kafka::text(r.payload()))
        .collect();
    for ok in [r#"{"n":"before"}"#, after.as_str()] {
        assert_eq!(payloads.iter().filter(|p| *p == ok).count(), 1, "{ok} in {payloads:?}");
    }
}

#[tokio::test]
async fn metadata_past_the_routes_limit_is_refused_in_hydras_own_shape() {
    // /ws-ingest with the default limits (256 KiB), /small with 6 keys and 2 KiB.
    let filter = filter("file_ingestor = { sink = \"hydra_file\" }", "");
    let config = format!(
        "{}\n[sinks.hydra_file]\ntype = \"file\"\npath = \"hydra.jsonl\"\n\n\
         [routes.hydra]\npath = \"/ws-ingest\"\nsinks = [\"hydra_file\"]\n{filter}\n\n\
         [routes.small]\npath = \"/small\"\nsinks = [\"hydra_file\"]\nmax_meta_keys = 6\nmax_meta_bytes = 2048\n{filter}\n",
        head("")
    );
    let proxy = start(&config);
    let full = r#"{"status":400,"message":"BAD REQUEST[NAME] could not be stored: this connection's metadata is full (the route's max_meta_keys or max_meta_bytes)."}"#;
    let refused = |name: &str| full.replace("NAME", name);

    // The issue's attack, scaled down: 100 KB values pile up to the default limit, no further.
    let mut ws = proxy.connect("/ws-ingest").await;
    let big = "v".repeat(100_000);
    for i in 0..2 {
        let answer = ask(&mut ws, &format!("-c SET hydra-big{i}={big}")).await;
        assert!(answer.starts_with(r#"{"status":200,"message":"OK[HYDRA-BIG"#), "{i}");
    }
    for i in 2..30 {
        assert_eq!(
            ask(&mut ws, &format!("-c SET hydra-big{i}={big}")).await,
            refused(&format!("hydra-big{i}"))
        );
    }
    // Still usable: a smaller value replaces a big one, and payloads go through.
    assert_eq!(
        ask(&mut ws, "-c SET hydra-big0=small").await,
        r#"{"status":200,"message":"OK[HYDRA-BIG0=small]"}"#
    );
    assert_eq!(split_id(&ask(&mut ws, SAMPLE).await).1, ok_reply(&["file_ingestor"]));

    // The key count: the filter's own bookkeeping (the list of names, the request counter)
    // counts too.
    let mut small = proxy.connect("/small").await;
    let mut set = 0;
    for i in 0..10 {
        let answer = ask(&mut small, &format!("-c SET hydra-k{i}=v")).await;
        if answer == refused(&format!("hydra-k{i}")) {
            break;
        }
        assert_eq!(answer, format!(r#"{{"status":200,"message":"OK[HYDRA-K{i}=v]"}}"#));
        set += 1;
    }
    assert_eq!(set, 5, "hydra.order and five names make six keys");
    assert_eq!(
        ask(&mut small, "-c SET").await,
        r#"{"status":200,"message":"HYDRA-K0 -> v;HYDRA-K1 -> v;HYDRA-K2 -> v;HYDRA-K3 -> v;HYDRA-K4 -> v"}"#,
        "the refused name is not listed"
    );
    // With no room left for its request counter, a payload is answered, not dropped.
    let answer = ask(&mut small, SAMPLE).await;
    assert!(
        answer.contains(r#""status":{"code":503,"message":"Too much in flight: this connection's metadata is full."}"#),
        "{answer}"
    );
    assert_eq!(
        ask(&mut small, "-c SET hydra-k0=").await,
        r#"{"status":200,"message":"OK[HYDRA-K0=]"}"#
    );
    assert_eq!(split_id(&ask(&mut small, SAMPLE).await).1, ok_reply(&["file_ingestor"]));

    let metric = "framegate_filter_meta_refused_total{filter=\"hydra\"}";
    assert!(proxy.metric(metric).await >= 30.0, "counted");
    // The records carry what was kept: the small value and one of 100 KB, nothing refused.
    eventually("both records are written", || async { file_records(&proxy).len() == 2 }).await;
    let headers = file_records(&proxy)[0]["headers"].clone();
    assert_eq!(headers["hydra-big0"], "small");
    assert_eq!(headers["hydra-big1"].as_str().map(str::len), Some(100_000));
    assert!(
        headers.get("hydra-big2").is_none(),
        "{}",
        headers.as_object().unwrap().len()
    );
}
