//! A filter that exports `fg_on_messages` gets every message a read brought in one call: each
//! message still gets its own answer and verdict, in order, and a batch that fails is run again
//! one message at a time, so nothing is lost, answered twice or counted as a failure.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

fn proxy() -> Proxy {
    let config = format!(
        "{head}\n[routes.batch]\npath = \"/batch\"\nfilters = [{{ module = \"batcher\" }}]\n",
        head = head("")
    );
    Proxy::start(&config, &[], &[("batcher.wat", include_bytes!("wat/batcher.wat"))])
}

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
    let calls = "framegate_filter_call_seconds_count{filter=\"batcher\"}";
    assert_eq!(proxy.metric(calls).await, 1.0, "20 messages read at once, one call");
}

#[tokio::test]
async fn a_batch_that_fails_runs_again_one_by_one() {
    let proxy = proxy();
    let mut client = proxy.connect("/batch").await;
    burst(&mut client, &["0", "1", "t2", "3"]).await;
    assert_eq!(answers(&mut client, 4).await, ["m:0", "m:1", "m:t2", "m:3"]);
    // The connection goes on, batching again.
    burst(&mut client, &["4", "5"]).await;
    assert_eq!(answers(&mut client, 2).await, ["b:4", "b:5"]);
    let trapped = "framegate_filter_failures_total{filter=\"batcher\",kind=\"trap\"}";
    assert_eq!(
        proxy.metric(trapped).await,
        0.0,
        "the batch's trap is not the filter's failure"
    );
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
    assert_eq!(closed_with(&mut client).await, (4000, "bye".to_string()));
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
    let calls = "framegate_filter_call_seconds_count{filter=\"batcher\"}";
    assert_eq!(proxy.metric(calls).await, 2.0, "one call each way");
}
