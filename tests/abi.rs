//! The filter ABI end to end, through the `probe` filter (filters/probe) that turns text
//! commands into ABI calls and answers what the host said: metadata, emit and results, timers,
//! subscriptions, close, reject, replace, custom metrics; and the C filter built by clang.

mod common;

use common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const FILTERS: &[&str] = &["probe", "upper", "echo"];

fn config() -> String {
    format!(
        r#"{head}
[sinks.out]
type = "file"
path = "out.jsonl"
fsync = "always"

[sinks.broken]
type = "file"
path = "framegate.toml/cannot.jsonl"
max_retries = 1
retry_backoff_ms = 10
dead_letter = "dlq"

[sinks.dlq]
type = "file"
path = "dlq.jsonl"

[sinks.quick]
type = "file"
path = "quick.jsonl"
delivery = "fire_and_forget"

[sinks.log]
type = "file"
path = "log.jsonl"

[sinks.news]
type = "bus"
topic = "news"

[routes.probe]
path = "/probe/{{room}}"
filters = [{{ module = "probe" }}]
sinks = ["out", "broken", "quick", "log"]

[routes.publish]
path = "/publish"
sinks = ["news"]

[routes.upper]
path = "/upper"
filters = [{{ module = "upper" }}, {{ module = "echo" }}]
"#,
        head = head("")
    )
}

#[tokio::test]
async fn metadata_from_the_request_and_from_filters() {
    let proxy = Proxy::start(&config(), FILTERS, &[]);
    let mut request = proxy.url("/probe/r1?a=1&b=x%20y").into_client_request().unwrap();
    request.headers_mut().insert("X-Team", "blue".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();

    assert_eq!(ask(&mut ws, "meta path.room").await, "r1");
    assert_eq!(ask(&mut ws, "meta query.b").await, "x y");
    assert_eq!(ask(&mut ws, "meta header.x-team").await, "blue");
    assert_eq!(ask(&mut ws, "meta route").await, "probe");
    assert_eq!(ask(&mut ws, "meta path").await, "/probe/r1");
    assert!(ask(&mut ws, "meta peer").await.starts_with("127.0.0.1:"));
    assert!(ask(&mut ws, "meta conn.id").await.parse::<u64>().is_ok());
    assert_eq!(ask(&mut ws, "meta nothing").await, "<none>");
    assert_eq!(ask(&mut ws, "keys path.").await, "path.room");
    assert_eq!(ask(&mut ws, "keys query.").await, "query.a,query.b");
    assert_eq!(ask(&mut ws, "keys nothing.").await, "");

    assert_eq!(ask(&mut ws, "set color deep red").await, "ok ");
    assert_eq!(ask(&mut ws, "meta color").await, "deep red");
    assert_eq!(ask(&mut ws, "keys col").await, "color");
    assert_eq!(ask(&mut ws, "set path.room elsewhere").await, "err NotAllowed");
    assert_eq!(ask(&mut ws, "meta path.room").await, "r1");
    assert_eq!(ask(&mut ws, "del color").await, "ok ");
    assert_eq!(ask(&mut ws, "meta color").await, "<none>");
    assert_eq!(ask(&mut ws, "bad-utf8").await, "err BadArgument");
    assert_eq!(ask(&mut ws, "what").await, "unknown command \"what\"");

    assert_eq!(ask(&mut ws, "count hits").await, "ok");
    assert_eq!(ask(&mut ws, "count hits").await, "ok");
    assert_eq!(
        proxy
            .metric("framegate_filter_custom_total{filter=\"probe\",name=\"hits\"}")
            .await,
        2.0
    );
}

#[tokio::test]
async fn emitted_records_come_back_as_results() {
    let proxy = Proxy::start(&config(), FILTERS, &[]);
    let mut ws = proxy.connect("/probe/r").await;

    let ticket = ask(&mut ws, "emit out hello").await;
    let ticket: u64 = ticket.strip_prefix("ok ").unwrap().parse().unwrap();
    assert_eq!(next_text(&mut ws).await, format!("result {ticket} ok  ctx:hello"));
    let out = proxy.json_lines("out.jsonl");
    assert_eq!(out.len(), 1, "confirmed means written: {out:?}");
    assert_eq!(out[0]["payload"], "hello");
    assert_eq!(out[0]["key"], "k");
    assert_eq!(out[0]["headers"]["h"], "v");
    assert_eq!(out[0]["route"], "probe");

    let ticket = ask(&mut ws, "emit broken lost").await;
    let ticket: u64 = ticket.strip_prefix("ok ").unwrap().parse().unwrap();
    let result = next_text(&mut ws).await;
    assert!(
        result.starts_with(&format!(
            "result {ticket} failed cannot write framegate.toml/cannot.jsonl"
        )),
        "{result}"
    );
    assert!(result.ends_with(" ctx:lost"), "{result}");
    eventually("the failed record in the dead letter sink", || async {
        proxy.json_lines("dlq.jsonl").len() == 1
    })
    .await;
    let dead = &proxy.json_lines("dlq.jsonl")[0];
    assert_eq!(dead["payload"], "lost");
    assert_eq!(dead["headers"]["framegate-sink"], "broken");
    assert!(
        dead["headers"]["framegate-error"]
            .as_str()
            .unwrap()
            .starts_with("cannot write")
    );
    assert_eq!(
        proxy
            .metric("framegate_sink_records_total{sink=\"broken\",outcome=\"failed\"}")
            .await,
        1.0
    );
    assert_eq!(
        proxy
            .metric("framegate_sink_records_total{sink=\"broken\",outcome=\"retried\"}")
            .await,
        1.0
    );

    // fire_and_forget: the result comes when the record is queued.
    let ticket = ask(&mut ws, "emit quick fast").await;
    let ticket: u64 = ticket.strip_prefix("ok ").unwrap().parse().unwrap();
    assert_eq!(next_text(&mut ws).await, format!("result {ticket} ok  ctx:fast"));
    assert_eq!(ask(&mut ws, "emit nosuch x").await, "err UnknownTarget");

    // A message replaced by the chain reaches every sink of the route.
    send_text(&mut ws, "replace REPLACED").await;
    eventually("the replaced message in out.jsonl", || async {
        proxy.json_lines("out.jsonl").iter().any(|r| r["payload"] == "REPLACED")
    })
    .await;

    // fg_on_close may still emit: the probe logs the close code.
    ws.close(None).await.unwrap();
    eventually("the close logged", || async {
        proxy
            .json_lines("log.jsonl")
            .iter()
            .any(|r| r["payload"] == "closed 1005")
    })
    .await;
}

#[tokio::test]
async fn the_shared_store_is_one_for_every_connection_of_the_module() {
    let proxy = Proxy::start(&config(), FILTERS, &[]);
    let (mut a, mut b) = (proxy.connect("/probe/a").await, proxy.connect("/probe/b").await);
    assert_eq!(ask(&mut a, "sget k.1").await, "<none>");
    assert_eq!(ask(&mut a, "sset k.2 two words").await, "ok ");
    assert_eq!(ask(&mut a, "sset k.1 one").await, "ok ");
    assert_eq!(ask(&mut a, "sset other x").await, "ok ");
    // Another connection (another instance, maybe) sees it at once.
    assert_eq!(ask(&mut b, "sget k.2").await, "two words");
    assert_eq!(ask(&mut b, "skeys k.").await, "k.1,k.2");
    assert_eq!(ask(&mut b, "sdel k.1").await, "ok ");
    assert_eq!(ask(&mut a, "skeys ").await, "k.2,other");
    // Counters: atomic adds, never below 0, only on decimal values.
    assert_eq!(ask(&mut a, "sadd n 5").await, "ok 5");
    assert_eq!(ask(&mut b, "sadd n 2").await, "ok 7");
    assert_eq!(ask(&mut b, "sget n").await, "7");
    assert_eq!(ask(&mut a, "sadd n -8").await, "err BadArgument");
    assert_eq!(ask(&mut a, "sadd other 1").await, "err BadArgument");
    assert_eq!(ask(&mut a, "sget n").await, "7");
    // It outlives connections.
    drop((a, b));
    let mut c = proxy.connect("/probe/c").await;
    assert_eq!(ask(&mut c, "sget k.2").await, "two words");
}

#[tokio::test]
async fn timers_fire_once_and_cancelled_ones_never() {
    let proxy = Proxy::start(&config(), FILTERS, &[]);
    let mut ws = proxy.connect("/probe/r").await;
    let cancelled = ask(&mut ws, "timer 150").await.replace("ok ", "");
    let kept = ask(&mut ws, "timer 300").await.replace("ok ", "");
    assert_eq!(ask(&mut ws, &format!("cancel {cancelled}")).await, "ok ");
    assert_eq!(next_text(&mut ws).await, format!("fired {kept}"));
    assert_eq!(ask(&mut ws, "timer 10").await.replace("ok ", "").len(), kept.len());
}

#[tokio::test]
async fn held_deliveries_wait_until_resumed() {
    let proxy = Proxy::start(&config(), FILTERS, &[]);
    let mut held = proxy.connect("/probe/r?sub=news").await;
    let mut free = proxy.connect("/probe/r?sub=news").await;
    assert_eq!(ask(&mut held, "hold 1").await, "ok ");
    assert_eq!(ask(&mut free, "meta route").await, "probe", "both subscribed");
    let mut publisher = proxy.connect("/publish").await;
    for i in 1..=2 {
        send_text(&mut publisher, &format!("headline {i}")).await;
    }
    for i in 1..=2 {
        assert!(next_text(&mut free).await.ends_with(&format!("msg {i}] headline {i}")));
    }
    assert_eq!(ask(&mut held, "meta route").await, "probe", "nothing while held");
    assert_eq!(ask(&mut held, "hold 0").await, "ok ");
    for i in 1..=2 {
        assert!(next_text(&mut held).await.ends_with(&format!("msg {i}] headline {i}")));
    }
}

#[tokio::test]
async fn bus_subscriptions_reach_the_client_through_the_chain() {
    let proxy = Proxy::start(&config(), FILTERS, &[]);
    let mut subscriber = proxy.connect("/probe/r").await;
    let sub = ask(&mut subscriber, "sub bus news").await.replace("ok ", "");
    let mut at_open = proxy.connect("/probe/r?sub=news").await;
    assert_eq!(
        ask(&mut at_open, "meta route").await,
        "probe",
        "the open hook ran and its effects applied"
    );
    assert_eq!(ask(&mut subscriber, "sub nosuch x").await, "err UnknownTarget");

    let mut publisher = proxy.connect("/publish").await;
    for i in 1..=3 {
        send_text(&mut publisher, &format!("headline {i}")).await;
    }
    for i in 1..=3 {
        assert_eq!(
            next_text(&mut subscriber).await,
            format!("[sub {sub} msg {i}] headline {i}")
        );
        assert!(
            next_text(&mut at_open)
                .await
                .ends_with(&format!("msg {i}] headline {i}"))
        );
    }
    assert_eq!(ask(&mut subscriber, &format!("unsub {sub}")).await, "ok ");
    send_text(&mut publisher, "headline 4").await;
    assert!(next_text(&mut at_open).await.ends_with("headline 4"));
    assert_eq!(
        ask(&mut subscriber, "meta route").await,
        "probe",
        "nothing after unsubscribing"
    );
}

#[tokio::test]
async fn filters_close_reject_and_fail() {
    let proxy = Proxy::start(&config(), FILTERS, &[]);
    let (status, body) = upgrade_status(proxy.ws, "/probe/r?reject=401").await;
    assert_eq!((status, body.as_str()), (401, "rejected by probe"));

    let mut ws = proxy.connect("/probe/r").await;
    send_text(&mut ws, "close 4001 see you").await;
    assert_eq!(closed_with(&mut ws).await, (4001, "see you".to_string()));

    let mut ws = proxy.connect("/probe/r").await;
    send_text(&mut ws, "panic").await;
    assert_eq!(closed_with(&mut ws).await, (1011, "filter probe failed".to_string()));
}

#[tokio::test]
async fn a_filter_written_in_c() {
    let proxy = Proxy::start(&config(), FILTERS, &[]);
    let mut ws = proxy.connect("/upper").await;
    assert_eq!(ask(&mut ws, "hello, C filter").await, "HELLO, C FILTER");
    let big = "abc".repeat(50_000);
    assert_eq!(
        ask(&mut ws, &big).await,
        big.to_uppercase(),
        "larger than its initial memory"
    );
    ws.send(Message::binary(b"abc".to_vec())).await.unwrap();
    assert_eq!(
        next_message(&mut ws).await,
        Message::binary(b"abc".to_vec()),
        "binary passes unchanged"
    );
}

#[tokio::test]
async fn the_default_config_publishes_and_subscribes_on_the_bus() {
    let proxy = start_default();
    let mut readers = [proxy.connect("/news").await, proxy.connect("/news").await];
    let mut publisher = proxy.connect("/publish").await;
    // A subscription starts just after the upgrade, and the bus keeps nothing for subscribers to
    // come: the news is published until both readers are surely subscribed.
    let publishing = async {
        loop {
            send_text(&mut publisher, "extra!").await;
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    let reading = async {
        for reader in &mut readers {
            assert_eq!(next_text(reader).await, "extra!");
        }
    };
    tokio::select! {
        () = publishing => unreachable!("publishing goes on until both have read"),
        () = reading => {}
    }
    let mut ingest = proxy.connect("/ingest").await;
    send_text(&mut ingest, "{\"n\":1}").await;
    eventually("the ingested line", || async {
        std::fs::read_to_string(proxy.dir.path().join("target/framegate-ingest.jsonl"))
            .is_ok_and(|t| t.contains("\"payload\":\"{\\\"n\\\":1}\""))
    })
    .await;
}
