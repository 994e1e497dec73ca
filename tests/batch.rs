//! A filter that exports `fg_on_messages` gets the messages read together in one call, and each
//! fares as it would one by one: its own answer, verdict and metadata, in order; a failure is the
//! failing message's (the ones before it stand, the ones after it go on); nothing runs after a
//! close.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

fn proxy() -> Proxy {
    let config = format!(
        "{head}\n[sinks.out]\ntype = \"file\"\npath = \"out.jsonl\"\nfsync = \"always\"\nmeta = [\"kind\"]\n\n\
         [routes.batch]\npath = \"/batch\"\nfilters = [{{ module = \"batcher\" }}]\nsinks = [\"out\"]\n\n\
         [routes.open]\npath = \"/open\"\nfilters = [{{ module = \"batcher\", on_error = \"fail_open\" }}]\n",
        head = head("")
    );
    Proxy::start(&config, &[], &[("batcher.wat", include_bytes!("wat/batcher.wat"))])
}

const CALLS: &str = "framegate_filter_call_seconds_count{filter=\"batcher\"}";
const TRAPS: &str = "framegate_filter_failures_total{filter=\"batcher\",kind=\"trap\"}";
const SEEN: &str = "framegate_filter_custom_total{filter=\"batcher\",name=\"seen\"}";

/// Sends `messages` in one write, so the proxy reads them together.
async fn burst(ws: &mut Ws, messages: &[&str]) {
    for message in messages {
        ws.feed(Message::text(*message)).await.unwrap();
    }
    ws.flush().await.unwrap();
}

async fn answers(ws: &mut Ws, count: usize) -> Vec<String> {
    let mut answers = Vec::new();
    for _ in 0..count {
        answers.push(next_text(ws).await);
    }
    answers
}

#[tokio::test]
async fn a_burst_is_one_call_and_every_message_its_own_answer() {
    let proxy = proxy();
    let mut client = proxy.connect("/batch").await;
    let sent: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    burst(&mut client, &sent.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let expected: Vec<String> = sent.iter().map(|m| format!("b:{m}")).collect();
    assert_eq!(answers(&mut client, 20).await, expected);
    assert_eq!(proxy.metric(CALLS).await, 1.0, "20 messages read at once, one call");
    assert_eq!(proxy.metric(SEEN).await, 20.0);
}

/// With `fail_closed` (the default), a trap on the third message closes the connection as it
/// would one by one: the two before it are answered, the failing one's answer is dropped.
#[tokio::test]
async fn a_failure_in_a_batch_is_the_failing_messages() {
    let proxy = proxy();
    let mut client = proxy.connect("/batch").await;
    burst(&mut client, &["0", "1", "t2", "3"]).await;
    assert_eq!(answers(&mut client, 2).await, ["b:0", "b:1"]);
    assert_eq!(
        closed_with(&mut client).await,
        (1011, "filter batcher failed".to_string())
    );
    assert_eq!(proxy.metric(TRAPS).await, 1.0);
    // The messages before the failure are not run again (their `metric` counted once), and
    // nothing after it runs.
    assert_eq!(proxy.metric(SEEN).await, 3.0);
}

/// With `fail_open`, the failing message goes on unfiltered and the rest run one by one.
#[tokio::test]
async fn after_a_failure_fail_open_goes_on_with_the_rest() {
    let proxy = proxy();
    let mut client = proxy.connect("/open").await;
    burst(&mut client, &["0", "1", "t2", "3"]).await;
    assert_eq!(answers(&mut client, 3).await, ["b:0", "b:1", "m:3"]);
    assert_eq!(proxy.metric(TRAPS).await, 1.0);
    assert_eq!(
        proxy.metric(SEEN).await,
        4.0,
        "each message seen once, the failing one included"
    );
    // The connection goes on, batching again.
    burst(&mut client, &["4", "5"]).await;
    assert_eq!(answers(&mut client, 2).await, ["b:4", "b:5"]);
}

/// Each message's record carries the metadata as that message left it, not as the batch did.
#[tokio::test]
async fn each_record_carries_its_own_messages_metadata() {
    let proxy = proxy();
    let mut client = proxy.connect("/batch").await;
    burst(&mut client, &["ka", "kb", "kc"]).await;
    let kinds = || {
        let lines = proxy.json_lines("out.jsonl");
        lines
            .iter()
            .map(|line| line["meta"]["kind"].as_str().unwrap_or("").to_string())
            .collect::<Vec<_>>()
    };
    eventually("three records", || async { kinds().len() == 3 }).await;
    assert_eq!(kinds(), ["ka", "kb", "kc"]);
    assert_eq!(proxy.metric(CALLS).await, 1.0, "read at once, one call");
}

#[tokio::test]
async fn a_batch_that_returns_early_leaves_the_rest_to_fg_on_message() {
    let proxy = proxy();
    let mut client = proxy.connect("/batch").await;
    burst(&mut client, &["0", "e1", "2", "3"]).await;
    assert_eq!(answers(&mut client, 4).await, ["b:0", "b:e1", "m:2", "m:3"]);
}

#[tokio::test]
async fn a_close_in_a_batch_runs_nothing_after_it() {
    let proxy = proxy();
    let mut client = proxy.connect("/batch").await;
    burst(&mut client, &["0", "1", "c2", "3"]).await;
    assert_eq!(answers(&mut client, 2).await, ["b:0", "b:1"]);
    match next_message(&mut client).await {
        Message::Close(Some(frame)) => assert_eq!((u16::from(frame.code), frame.reason.as_str()), (4000, "bye")),
        other => panic!("expected the close frame next, got {other:?}"),
    }
    assert_eq!(proxy.metric(SEEN).await, 3.0, "nothing runs after the close");
}

/// An upstream that answers every ten messages with the ten, in one write.
async fn upstream_answering_tens() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let mut got = Vec::new();
        while let Some(Ok(message)) = ws.next().await {
            if message.is_text() {
                got.push(message);
            }
            if got.len() == 10 {
                for message in got.drain(..) {
                    ws.feed(message).await.unwrap();
                }
                ws.flush().await.unwrap();
            }
        }
    });
    addr
}

/// Messages from an upstream read together go through one call too, each with its own `msg.*`.
#[tokio::test]
async fn an_upstreams_burst_is_one_call_with_each_messages_metadata() {
    let addr = upstream_answering_tens().await;
    let config = format!(
        "{head}\n[sinks.up]\ntype = \"ws\"\nurl = \"ws://{addr}/\"\n\
         [routes.up]\npath = \"/up\"\nfilters = [{{ module = \"batcher\" }}]\nsinks = [\"up\"]\n",
        head = head("")
    );
    let proxy = Proxy::start(&config, &[], &[("batcher.wat", include_bytes!("wat/batcher.wat"))]);
    let mut client = proxy.connect("/up").await;
    let sent: Vec<String> = (0..10).map(|i| format!("u{i}")).collect();
    burst(&mut client, &sent.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let expected: Vec<String> = sent.iter().enumerate().map(|(i, m)| format!("{}:{m}", i + 1)).collect();
    assert_eq!(answers(&mut client, 10).await, expected);
    assert_eq!(proxy.metric(CALLS).await, 2.0, "one call each way");
}
