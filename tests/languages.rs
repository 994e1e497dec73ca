//! The `stamp` example filter (guest-sdk/examples/stamp/), built by scripts/build-examples in
//! Rust, C, Zig and AssemblyScript, does the same live in the proxy in each language: it reads
//! the `user` query parameter, replaces the client's text messages with "[USER] TEXT" (what the
//! route's sink writes), emits them to sink `audit` keyed by the user, and answers the client
//! from `fg_on_result` with the record's outcome, delivered or failed with its detail.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// A route running `stamp-LANG`, its messages to `stamped.jsonl`, what it emits to sink `audit`
/// (a file that cannot be written when `audit_fails`: a directory stands in its way).
fn config(lang: &str, audit_fails: bool) -> String {
    let audit = if audit_fails {
        "path = \"framegate.toml/cannot.jsonl\"\nmax_retries = 1\nretry_backoff_ms = 10"
    } else {
        "path = \"audit.jsonl\"\nfsync = \"always\""
    };
    format!(
        r#"{head}
[sinks.stamped]
type = "file"
path = "stamped.jsonl"
fsync = "always"

[sinks.audit]
type = "file"
{audit}

[routes.stamp]
path = "/stamp"
filters = [{{ module = "stamp-{lang}" }}]
sinks = ["stamped"]
emit_sinks = ["audit"]
"#,
        head = head("")
    )
}

async fn answer(proxy: &Proxy, ws: &mut Ws) -> String {
    match tokio::time::timeout(PATIENCE, ws.next()).await {
        Ok(Some(Ok(Message::Text(text)))) => text.to_string(),
        other => panic!(
            "expected a text answer, got {other:?}; the proxy's log:\n{}",
            proxy.logs()
        ),
    }
}

/// The live round trip of `stamp-LANG`: both users, a binary message passing unchanged, the
/// sink's records, and a failed delivery's detail.
async fn round_trip(lang: &str) {
    let module = format!("stamp-{lang}");
    let proxy = Proxy::start(&config(lang, false), &[&module], &[]);
    let mut ada = proxy.connect("/stamp?user=ada").await;
    ada.send(Message::text("hello")).await.unwrap();
    assert_eq!(answer(&proxy, &mut ada).await, "delivered: [ada] hello");
    ada.send(Message::binary(vec![0u8, 1, 2])).await.unwrap();
    ada.send(Message::text("second")).await.unwrap();
    assert_eq!(
        answer(&proxy, &mut ada).await,
        "delivered: [ada] second",
        "a binary message is not emitted, so not answered"
    );
    let mut nobody = proxy.connect("/stamp").await;
    nobody.send(Message::text("héllo wörld")).await.unwrap();
    assert_eq!(answer(&proxy, &mut nobody).await, "delivered: [anonymous] héllo wörld");

    eventually("four records in stamped.jsonl", || async {
        proxy.json_lines("stamped.jsonl").len() == 4
    })
    .await;
    let stamped: Vec<(String, String)> = proxy
        .json_lines("stamped.jsonl")
        .iter()
        .map(|r| {
            (
                r["opcode"].as_str().unwrap().into(),
                r["payload"].as_str().unwrap().into(),
            )
        })
        .collect();
    let text = |payload: &str| ("text".to_string(), payload.to_string());
    assert_eq!(
        stamped,
        [
            text("[ada] hello"),
            ("binary".into(), "AAEC".into()),
            text("[ada] second"),
            text("[anonymous] héllo wörld"),
        ]
    );
    let audit: Vec<(String, String)> = proxy
        .json_lines("audit.jsonl")
        .iter()
        .map(|r| (r["key"].as_str().unwrap().into(), r["payload"].as_str().unwrap().into()))
        .collect();
    let keyed = |key: &str, payload: &str| (key.to_string(), payload.to_string());
    assert_eq!(
        audit,
        [
            keyed("ada", "[ada] hello"),
            keyed("ada", "[ada] second"),
            keyed("anonymous", "[anonymous] héllo wörld"),
        ]
    );
    drop(proxy);

    let proxy = Proxy::start(&config(lang, true), &[&module], &[]);
    let mut ada = proxy.connect("/stamp?user=ada").await;
    ada.send(Message::text("hello")).await.unwrap();
    let failed = answer(&proxy, &mut ada).await;
    assert!(
        failed.starts_with("failed: [ada] hello (") && failed.ends_with(')') && failed.len() > 24,
        "the failure with the sink's detail: {failed}"
    );
    eventually("the stamped message written all the same", || async {
        proxy.json_lines("stamped.jsonl").len() == 1
    })
    .await;
}

#[tokio::test]
async fn rust() {
    round_trip("rust").await;
}

#[tokio::test]
async fn c() {
    round_trip("c").await;
}

#[tokio::test]
async fn zig() {
    round_trip("zig").await;
}

#[tokio::test]
async fn assemblyscript() {
    round_trip("as").await;
}
