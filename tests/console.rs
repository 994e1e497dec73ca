//! The console on the admin listener: its snapshot and tap over plain HTTP, the admin token in
//! front of it, and the page itself in real Chromium (tests/console_browser.js, Playwright),
//! following connections, a hot swap, a broker going down and the tap.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use common::{PATIENCE, Proxy, eventually, head, http_request, peers, send_text, shipped_config};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

const TOKEN: &str = "console-secret";

/// A GET on the admin listener with an `Authorization` header: (status, lowercased head, body).
async fn admin_get(addr: SocketAddr, path: &str, authorization: &str) -> (u16, String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{authorization}\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.split_whitespace().nth(1).unwrap().parse().unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    (status, head.to_lowercase(), body.to_string())
}

fn bearer() -> String {
    format!("Authorization: Bearer {TOKEN}\r\n")
}

async fn snapshot(proxy: &Proxy) -> Value {
    let (status, _, body) = admin_get(proxy.admin, "/console/snapshot", &bearer()).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn route<'a>(snapshot: &'a Value, name: &str) -> &'a Value {
    snapshot["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no route {name} in {snapshot}"))
}

fn echo_config() -> String {
    format!(
        "{}\n[routes.echo]\npath = \"/echo\"\nfilters = [{{ module = \"echo\" }}]\n",
        head(&format!("admin_token = \"{TOKEN}\""))
    )
}

#[tokio::test]
async fn the_admin_token_guards_the_console_and_a_browser_may_give_it_as_a_password() {
    let proxy = Proxy::start(&echo_config(), &["echo"], &[]);
    for path in [
        "/console",
        "/console/snapshot",
        "/console/events",
        "/console/tap?route=echo",
    ] {
        let (status, head, _) = admin_get(proxy.admin, path, "").await;
        assert_eq!(status, 401, "{path}");
        assert!(
            head.contains("www-authenticate: basic realm=\"framegate admin\""),
            "{head}"
        );
    }
    // Elsewhere on the listener, the challenge stays a bearer one.
    let (status, head, _) = admin_get(proxy.admin, "/metrics", "").await;
    assert_eq!(status, 401);
    assert!(head.contains("www-authenticate: bearer"), "{head}");
    let wrong = format!("Authorization: Basic {}\r\n", base64("operator:guess"));
    assert_eq!(admin_get(proxy.admin, "/console", &wrong).await.0, 401);

    let basic = format!("Authorization: Basic {}\r\n", base64(&format!("operator:{TOKEN}")));
    let (status, head, page) = admin_get(proxy.admin, "/console", &basic).await;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(page.contains("/console/console.js"), "{page}");
    assert_eq!(admin_get(proxy.admin, "/metrics", &basic).await.0, 200);
    let (status, _, script) = admin_get(proxy.admin, "/console/console.js", &bearer()).await;
    assert_eq!((status, script.contains("EventSource")), (200, true));
    let (status, head, _) = admin_get(proxy.admin, "/", &bearer()).await;
    assert_eq!(status, 302);
    assert!(head.contains("location: /console"), "{head}");
    assert_eq!(admin_get(proxy.admin, "/console/tap", &bearer()).await.0, 400);
    assert_eq!(
        admin_get(proxy.admin, "/console/tap?route=nope", &bearer()).await.0,
        404
    );
}

fn base64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[tokio::test]
async fn the_snapshot_counts_connections_closes_and_the_tap_shows_messages_with_secrets_hidden() {
    let proxy = Proxy::start(&echo_config(), &["echo"], &[]);
    let before = snapshot(&proxy).await;
    let echo = route(&before, "echo");
    assert_eq!(echo["path"], "/echo");
    assert_eq!(echo["connections"], 0);
    assert_eq!(echo["tap_watchers"], 0);
    let version = &echo["filters"][0]["version_hash"];
    assert!(version.as_str().is_some_and(|v| !v.is_empty()), "{echo}");
    let filter = before["filters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "echo")
        .unwrap();
    assert_eq!(&filter["version_hash"], version);

    // Watch the tap over plain HTTP: server-sent events.
    let mut tap = tokio::net::TcpStream::connect(proxy.admin).await.unwrap();
    let request = format!("GET /console/tap?route=echo HTTP/1.1\r\nHost: test\r\n{}\r\n", bearer());
    tap.write_all(request.as_bytes()).await.unwrap();
    let mut seen = String::new();
    read_until(&mut tap, &mut seen, "event: watching").await;
    assert!(seen.contains("content-type: text/event-stream"), "{seen}");
    assert_eq!(route(&snapshot(&proxy).await, "echo")["tap_watchers"], 1);

    let mut request = proxy.url("/echo?room=7").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", "Bearer hunter2".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    send_text(&mut ws, "watched message").await;
    read_until(&mut tap, &mut seen, "\"dir\":\"out\"").await;
    let events: Vec<Value> = seen
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter(|data| *data != "{}")
        .map(|data| serde_json::from_str(data).unwrap())
        .collect();
    assert_eq!(events.len(), 2, "{seen}");
    assert_eq!(
        (&events[0]["dir"], &events[0]["size"], &events[0]["preview"]),
        (&"in".into(), &15.into(), &"watched message".into())
    );
    assert_eq!(events[1]["dir"], "out");
    let meta: Vec<(String, String)> = serde_json::from_value(events[0]["meta"].clone()).unwrap();
    assert!(
        meta.contains(&("header.authorization".into(), "[redacted]".into())),
        "{meta:?}"
    );
    assert!(meta.contains(&("query.room".into(), "7".into())), "{meta:?}");
    assert!(!seen.contains("hunter2"), "{seen}");

    // The watcher goes: the tap stops (nobody watches), the route does not notice.
    drop(tap);
    eventually("the tap has no watcher", || async {
        route(&snapshot(&proxy).await, "echo")["tap_watchers"] == 0
    })
    .await;

    let during = snapshot(&proxy).await;
    assert_eq!(route(&during, "echo")["connections"], 1);
    assert_eq!(route(&during, "echo")["messages_in"], 1);
    ws.close(Some(CloseFrame {
        code: 4001.into(),
        reason: "bye".into(),
    }))
    .await
    .unwrap();
    eventually("the close is counted by its code", || async {
        let echo = route(&snapshot(&proxy).await, "echo").clone();
        echo["connections"] == 0 && echo["closes"]["4001"] == 1.0
    })
    .await;
}

/// Reads an event stream until `what` came.
async fn read_until(stream: &mut tokio::net::TcpStream, seen: &mut String, what: &str) {
    let mut buffer = [0; 4096];
    while !seen.contains(what) {
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut buffer))
            .await
            .unwrap_or_else(|_| panic!("no {what} in {seen}"))
            .unwrap();
        assert!(n > 0, "the stream ended before {what}: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
    }
}

/// echo.wasm with one more custom section: another version of the same filter.
fn another_echo() -> Vec<u8> {
    let mut module = std::fs::read(common::built_filters().join("echo.wasm")).unwrap();
    module.extend_from_slice(&[0, 6, 4, b's', b'w', b'a', b'p', b'2']);
    module
}

/// The default config as shipped, with the admin token and a Redis sink behind `/orders`.
fn default_with_redis(port: u16) -> String {
    shipped_config(
        "default.toml",
        &[(
            "[server.limits]",
            &format!("admin_token = \"{TOKEN}\"\n\n[server.limits]"),
        )],
    ) + &format!(
        "\n[sinks.orders]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:{port}\"\nstream = \"orders\"\nmax_retries = 0\n\n\
         [routes.orders]\npath = \"/orders\"\nsinks = [\"orders\"]\n"
    )
}

#[test]
fn the_console_follows_the_proxy_in_chromium() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut redis = peers::redis();
    let proxy = Proxy::start(
        &default_with_redis(redis.port),
        &["echo", "subscribe", "hydra", "query"],
        &[],
    );
    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let mut browser = Command::new("node")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/console_browser.js"))
        .args([
            format!("http://{}", proxy.admin),
            TOKEN.to_string(),
            shots.display().to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node is installed by scripts/test");
    let mut to_browser = browser.stdin.take().unwrap();
    let mut saw = Vec::new();
    let mut clients = Vec::new();
    for line in BufReader::new(browser.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let Some(act) = line.strip_prefix("ACT ") else {
            saw.push(line);
            continue;
        };
        match act {
            "connect" => runtime.block_on(async {
                for _ in 0..3 {
                    clients.push(proxy.connect("/echo").await);
                }
            }),
            "swap" => proxy.replace_file("filters/echo.wasm", &another_echo()),
            "broker-down" => runtime.block_on(async {
                let mut orders = proxy.connect("/orders").await;
                send_text(&mut orders, "before").await;
                eventually("the record reached redis", || async {
                    peers::redis_payloads(redis.port, "orders").await == ["before"]
                })
                .await;
                redis.kill();
                send_text(&mut orders, "while it is gone").await;
                clients.push(orders);
            }),
            "send-tap" => {}
            "traffic" => {
                let url = proxy.url("/echo");
                runtime.spawn(async move {
                    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
                    for i in 0..100 {
                        send_text(&mut ws, &format!("message {i}")).await;
                        tokio::time::sleep(std::time::Duration::from_millis(40)).await;
                    }
                });
            }
            other => panic!("the browser asked for {other}"),
        }
        writeln!(to_browser, "go").unwrap();
        if act == "send-tap" {
            runtime.block_on(send_text(&mut clients[0], "tapped by the console"));
        }
    }
    let status = browser.wait().unwrap();
    let saw = saw.join("\n");
    assert!(status.success(), "the browser test failed:\n{saw}");
    let value = |what: &str| -> Vec<String> {
        let line = saw
            .lines()
            .find_map(|l| l.strip_prefix(&format!("SAW {what} ")))
            .unwrap_or_else(|| panic!("no {what} in\n{saw}"));
        line.split(' ').map(String::from).collect()
    };

    // The default config's routes, and the one added.
    let routes = value("routes");
    for name in [
        "echo",
        "ingest",
        "publish",
        "news",
        "hydra",
        "hydra_ingestor",
        "ws_stream",
        "ws_insert",
        "orders",
    ] {
        assert!(routes.contains(&name.to_string()), "{name} missing from {routes:?}");
    }
    assert_eq!(value("connections"), ["0", "3"]);

    // The page shows the version the proxy runs after the swap, in the filters and the chain.
    let versions = value("version");
    let filters: Value = runtime.block_on(async {
        let (_, _, body) = admin_get(proxy.admin, "/filters", &bearer()).await;
        serde_json::from_str(&body).unwrap()
    });
    let running = filters
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "echo")
        .unwrap();
    assert_ne!(versions[0], versions[1]);
    assert_eq!(running["version_hash"], versions[1].as_str());
    assert!(versions[1].starts_with(&versions[2]), "{versions:?}");

    // Red, with the reason /readyz gives.
    let down = value("down");
    assert_eq!(down[0], "rgb(207,34,46)", "{down:?}");
    assert_eq!(down[1], "redis", "{down:?}");
    let readyz = runtime.block_on(http_request(
        proxy.admin,
        &format!(
            "GET /readyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{}\r\n",
            bearer()
        ),
    ));
    assert_eq!(readyz.0, 503);
    assert!(
        readyz
            .1
            .contains(&format!("sinks.orders: down: {}", down[1..].join(" "))),
        "{readyz:?}\n{down:?}"
    );

    let tap = value("tap");
    assert!(tap[0].parse::<u64>().unwrap() < 1000, "{tap:?}");
    assert_eq!(tap[1..].join(" "), "tapped by the console");
    assert!(value("tap-meta").join(" ").contains("route=echo"), "{saw}");
    assert_eq!(value("errors"), ["0"], "console errors:\n{saw}");
    assert!(shots.join("console.png").exists());
    drop(clients);
}
