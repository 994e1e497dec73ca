//! What the listener answers before and at the upgrade: 404, 426, 503, the 101, and the
//! message size limit once upgraded. Also the admin endpoints.

mod common;

use common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

fn config() -> String {
    format!(
        r#"{head}
[routes.echo]
path = "/echo/{{room}}"
filters = [{{ module = "echo" }}]
max_message_size = 1024
"#,
        head = head("max_connections = 2")
    )
}

#[tokio::test]
async fn answers_before_and_at_the_upgrade() {
    let proxy = Proxy::start(&config(), &["echo"], &[]);

    let (status, body) = upgrade_status(proxy.ws, "/nowhere").await;
    assert_eq!((status, body.as_str()), (404, "no route for /nowhere\n"));
    let (status, _) = upgrade_status(proxy.ws, "/echo").await;
    assert_eq!(status, 404, "the capture needs a segment");

    let (status, body) = http_get(proxy.ws, "/echo/a").await;
    assert_eq!((status, body.as_str()), (426, "this route speaks WebSocket\n"));

    let mut first = proxy.connect("/echo/a").await;
    let _second = proxy.connect("/echo/b").await;
    let (status, body) = upgrade_status(proxy.ws, "/echo/c").await;
    assert_eq!((status, body.as_str()), (503, "too many connections\n"));
    // Refused at accept, before its request (and so its route) is read.
    assert_eq!(
        proxy
            .metric("framegate_edge_refused_total{reason=\"max_connections\"}")
            .await,
        1.0
    );

    // At the limit a message passes; one byte more closes the connection with 1009.
    let fits = "x".repeat(1024);
    send_text(&mut first, &fits).await;
    assert_eq!(next_text(&mut first).await, fits);
    first.send(Message::text("y".repeat(1025))).await.unwrap();
    assert_eq!(closed_with(&mut first).await, (1009, "message too big".to_string()));
    drop(first);

    // The place it held is free again.
    eventually("the closed connection's place is free", || async {
        proxy.metric("framegate_connections_active{route=\"echo\"}").await == 1.0
    })
    .await;
    let mut third = proxy.connect("/echo/c").await;
    send_text(&mut third, "hi").await;
    assert_eq!(next_text(&mut third).await, "hi");
}

#[tokio::test]
async fn admin_endpoints() {
    let proxy = Proxy::start(&config(), &["echo"], &[]);
    assert_eq!(http_get(proxy.admin, "/healthz").await, (200, "ok\n".to_string()));
    assert_eq!(http_get(proxy.admin, "/readyz").await, (200, "ready\n".to_string()));
    let (status, filters) = http_get(proxy.admin, "/filters").await;
    assert_eq!(status, 200);
    let filters: serde_json::Value = serde_json::from_str(&filters).unwrap();
    assert_eq!(filters[0]["name"], "echo");
    assert_eq!(filters[0]["version_hash"].as_str().unwrap().len(), 16);
    assert!(filters[0]["last_reload_error"].is_null());

    let mut ws = proxy.connect("/echo/a").await;
    send_text(&mut ws, "12345").await;
    next_text(&mut ws).await;
    let (_, metrics) = http_get(proxy.admin, "/metrics").await;
    for series in [
        "framegate_connections_total{route=\"echo\"} 1",
        "framegate_messages_total{route=\"echo\",dir=\"in\"} 1",
        "framegate_messages_total{route=\"echo\",dir=\"out\"} 1",
        "framegate_bytes_total{route=\"echo\",dir=\"in\"} 5",
        "framegate_filter_call_seconds_count{filter=\"echo\"}",
    ] {
        assert!(metrics.contains(series), "missing {series} in\n{metrics}");
    }
    assert_eq!(http_get(proxy.admin, "/nope").await.0, 404);
}

#[tokio::test]
async fn runtime_tasks_count_the_sessions_and_fall_back_when_they_end() {
    let config = config().replace("max_connections = 2", "max_connections = 100");
    let proxy = Proxy::start(&config, &["echo"], &[]);
    let before = proxy.metric("framegate_runtime_tasks").await;
    assert!(before > 0.0, "the proxy's own tasks are counted");
    let mut clients = Vec::new();
    for i in 0..20 {
        let mut ws = proxy.connect(&format!("/echo/{i}")).await;
        send_text(&mut ws, "hi").await;
        assert_eq!(next_text(&mut ws).await, "hi");
        clients.push(ws);
    }
    let open = proxy.metric("framegate_runtime_tasks").await;
    assert!(open >= before + 20.0, "20 sessions: {before} tasks, then {open}");
    drop(clients);
    eventually("the sessions' tasks end", || async {
        proxy.metric("framegate_runtime_tasks").await <= before
    })
    .await;
}
