//! A connection's life and the proxy's: keepalive pings, the idle timeout, and a graceful
//! shutdown that closes clients with 1001 and flushes the sinks.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn pings_keep_alive_and_silence_times_out() {
    let config = format!(
        "{}\n[routes.pinged]\npath = \"/pinged\"\nping_interval_ms = 100\n\
         [routes.quiet]\npath = \"/quiet\"\nping_interval_ms = 0\nidle_timeout_ms = 300\n",
        head("")
    );
    let proxy = Proxy::start(&config, &[], &[]);

    let mut pinged = proxy.connect("/pinged").await;
    let first = tokio::time::timeout(PATIENCE, pinged.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(first, Message::Ping(_)), "expected a ping, got {first:?}");

    let mut quiet = proxy.connect("/quiet").await;
    let started = std::time::Instant::now();
    assert_eq!(closed_with(&mut quiet).await, (1001, "idle timeout".to_string()));
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[tokio::test]
async fn shutdown_closes_clients_and_flushes_sinks() {
    let config = format!(
        "{}\n[sinks.out]\ntype = \"file\"\npath = \"out/records.jsonl\"\nfsync = \"never\"\n\
         [routes.in]\npath = \"/in\"\nsinks = [\"out\"]\n",
        head("")
    );
    let mut proxy = Proxy::start(&config, &[], &[]);
    let mut clients = Vec::new();
    for c in 0..3 {
        let mut ws = proxy.connect("/in").await;
        for i in 0..100 {
            send_text(&mut ws, &format!("{{\"client\":{c},\"i\":{i}}}")).await;
        }
        clients.push(ws);
    }
    eventually("every message read", || async {
        proxy.metric("framegate_messages_total{route=\"in\",dir=\"in\"}").await == 300.0
    })
    .await;

    let status = tokio::task::spawn_blocking(move || {
        let status = proxy.terminate();
        (status, proxy)
    });
    for ws in &mut clients {
        assert_eq!(closed_with(ws).await, (1001, "server shutting down".to_string()));
    }
    let (status, proxy) = status.await.unwrap();
    assert!(status.success(), "exit status {status}");
    let lines = std::fs::read_to_string(proxy.dir.path().join("out/records.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = lines.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records.len(), 300);
    for c in 0..3 {
        let sent: Vec<String> = records
            .iter()
            .map(|r| r["payload"].as_str().unwrap().to_string())
            .filter(|p| p.starts_with(&format!("{{\"client\":{c},")))
            .collect();
        let expected: Vec<String> = (0..100).map(|i| format!("{{\"client\":{c},\"i\":{i}}}")).collect();
        assert_eq!(sent, expected, "client {c}'s records, in order");
    }
}

#[tokio::test]
async fn a_client_that_never_reads_is_slowed_down_not_buffered() {
    use futures_util::SinkExt;
    let config = format!(
        "{}\n[routes.echo]\npath = \"/echo\"\nfilters = [{{ module = \"echo\" }}]\n",
        head("")
    );
    let proxy = Proxy::start(&config, &["echo"], &[]);
    let mut ws = proxy.connect("/echo").await;
    let chunk = "x".repeat(64 << 10);
    const TRIES: u32 = 4_000; // 256 MiB, were nothing pushing back
    let mut sent = 0;
    while sent < TRIES {
        match tokio::time::timeout(Duration::from_secs(2), ws.send(Message::text(chunk.clone()))).await {
            Ok(result) => result.unwrap(),
            Err(_) => break, // the proxy stopped reading: backpressure
        }
        sent += 1;
    }
    assert!(
        sent < TRIES,
        "the proxy read {sent} messages from a client that reads none"
    );
    let read = proxy
        .metric("framegate_messages_total{route=\"echo\",dir=\"in\"}")
        .await;
    assert!(
        read < f64::from(sent),
        "read {read} of {sent}: some wait in TCP buffers"
    );
    let rss = proxy.rss_kib();
    assert!(
        rss < 150 << 10,
        "resident memory {rss} KiB after {read} messages of 64 KiB"
    );
    eprintln!("sent {sent}, proxy read {read}, resident {rss} KiB");
}

#[test]
fn logs_are_json_on_request() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("framegate.toml"), head("")).unwrap();
    let proxy = Proxy::spawn(dir, &["--log-format", "json", "run", "framegate.toml"]);
    let logs = proxy.logs();
    let line = logs.lines().find(|l| l.contains("framegate listening")).unwrap();
    let record: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(record["level"], "INFO");
    assert!(
        record["fields"]["message"]
            .as_str()
            .unwrap()
            .starts_with("framegate listening ws=127.0.0.1:")
    );
}
