//! The listener's guards, tried the way a hostile client would: many connections from one
//! address, slow and huge request heads, connection floods, upgrades from foreign pages, forged
//! X-Forwarded-For and PROXY headers, and a proxy out of file descriptors. Other loopback
//! addresses (127.0.0.2, ...) stand for other clients.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use futures_util::future::join_all;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// An echo route whose filter calls may take long: a thousand opening at once on a busy machine
/// must not see the default 50 ms deadline (500) instead of the guard under test.
fn config(server: &str, route: &str) -> String {
    format!(
        "{head}\n[routes.echo]\npath = \"/echo\"\nfilters = [{{ module = \"echo\", timeout_ms = 5000 }}]\n{route}\n",
        head = head(server)
    )
}

fn start(server: &str) -> Proxy {
    Proxy::start(&config(server, ""), &["echo"], &[])
}

/// With a `/probe` route too, whose filter answers `meta peer` with the connection's peer.
fn start_with_probe(server: &str) -> Proxy {
    let route = "[routes.probe]\npath = \"/probe\"\nfilters = [{ module = \"probe\" }]\n";
    Proxy::start(&config(server, route), &["echo", "probe"], &[])
}

/// The test process opens a thousand sockets or more: make sure it may.
fn allow_open_files(wanted: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < wanted {
            limit.rlim_cur = wanted.min(limit.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
    assert!(limit.rlim_cur >= wanted, "this test needs {wanted} open files");
}

/// A TCP connection to `to` from the loopback address `from`.
async fn tcp_from(from: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from.parse().unwrap(), 0))?;
    socket.connect(to).await
}

/// A WebSocket client from `from`, with extra request headers.
async fn ws_from(proxy: &Proxy, from: &str, path: &str, headers: &[(&str, &str)]) -> Result<Ws, WsError> {
    let mut request = proxy.url(path).into_client_request()?;
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let stream = tcp_from(from, proxy.ws).await?;
    let (ws, _) = tokio::time::timeout(
        PATIENCE,
        tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream)),
    )
    .await
    .expect("the upgrade timed out")?;
    Ok(ws)
}

/// The HTTP status of a refused WebSocket client.
fn refused_status(result: Result<Ws, WsError>) -> u16 {
    match result {
        Err(WsError::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("expected an HTTP refusal, got an upgrade"),
    }
}

async fn echoes(ws: &mut Ws, text: &str) {
    send_text(ws, text).await;
    assert_eq!(next_text(ws).await, text);
}

/// Sends raw bytes and reads the answer's head and body: (status line, body). A 101 has no body.
async fn exchange(stream: &mut TcpStream, request: &[u8]) -> (String, String) {
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0; 4096];
    let read = async {
        loop {
            let text = String::from_utf8_lossy(&answer).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(str::to_string)
                    })
                    .map_or(0, |n| n.trim().parse().unwrap());
                if body.len() >= length {
                    let status = head.lines().next().unwrap_or_default().to_string();
                    return (status, body.to_string());
                }
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return (String::from_utf8_lossy(&answer).into_owned(), String::new()),
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(PATIENCE, read).await.expect("no answer in time")
}

/// An upgrade request by hand, with `lines` (each ending in CRLF) added to the usual ones.
fn upgrade_request(path: &str, version: &str, lines: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/{version}\r\nHost: test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\n{lines}\r\n"
    )
    .into_bytes()
}

fn with_key(lines: &str) -> String {
    format!("Sec-WebSocket-Key: {KEY}\r\n{lines}")
}

async fn raw_upgrade(proxy: &Proxy, from: &str, request: &[u8]) -> (String, String) {
    let mut stream = tcp_from(from, proxy.ws).await.unwrap();
    exchange(&mut stream, request).await
}

#[tokio::test]
async fn one_address_is_capped_while_another_connects() {
    allow_open_files(4096);
    let proxy = start("limits = { max_connections_per_ip = 100, handshake_timeout_ms = 15000 }");
    let attempts = (0..1000).map(|_| ws_from(&proxy, "127.0.0.1", "/echo", &[]));
    let results = join_all(attempts).await;
    let mut held = Vec::new();
    let mut refused = 0;
    for result in results {
        match result {
            Ok(ws) => held.push(ws),
            Err(e) => {
                assert_eq!(refused_status(Err(e)), 429);
                refused += 1;
            }
        }
    }
    assert_eq!((held.len(), refused), (100, 900));
    assert_eq!(
        proxy
            .metric("framegate_edge_refused_total{reason=\"connections_per_ip\"}")
            .await,
        900.0
    );

    // Another address is not held back, and the held connections work.
    let mut other = ws_from(&proxy, "127.0.0.2", "/echo", &[]).await.unwrap();
    echoes(&mut other, "from elsewhere").await;
    echoes(&mut held[99], "still here").await;
    let (status, body) = upgrade_status(proxy.ws, "/echo").await;
    assert_eq!(
        (status, body.as_str()),
        (429, "too many connections from your address\n")
    );

    // Closed connections give their places back.
    held.truncate(50);
    eventually("closed connections are given back", || async {
        ws_from(&proxy, "127.0.0.1", "/echo", &[]).await.is_ok()
    })
    .await;
}

#[tokio::test]
async fn slow_heads_are_cut_at_the_deadline_while_others_connect() {
    allow_open_files(4096);
    let proxy = start("limits = { handshake_timeout_ms = 1000 }");
    let (started, address) = (tokio::time::Instant::now(), proxy.ws);
    // 500 sockets sending a request head a byte at a time, a byte every 300 ms, forever.
    let slow = (0..500).map(|_| async move {
        let mut stream = TcpStream::connect(address).await.unwrap();
        let head = b"GET /echo HTTP/1.1\r\nHost: test\r\nX-Slow: ";
        let mut sent = 0;
        let mut tick = tokio::time::interval(Duration::from_millis(300));
        let mut buffer = [0; 64];
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let byte = head.get(sent).copied().unwrap_or(b'a');
                    if stream.write_all(&[byte]).await.is_err() {
                        return started.elapsed();
                    }
                    sent += 1;
                }
                read = stream.read(&mut buffer) => match read {
                    Ok(0) | Err(_) => return started.elapsed(),
                    Ok(_) => {}
                },
            }
        }
    });
    let slow = tokio::spawn(tokio::time::timeout(Duration::from_secs(15), join_all(slow)));

    // Meanwhile a normal client keeps connecting.
    for i in 0..5 {
        let mut ws = proxy.connect("/echo").await;
        echoes(&mut ws, &format!("meanwhile {i}")).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cut = slow.await.unwrap().expect("every slow head is cut");
    let latest = cut.iter().max().unwrap();
    assert!(
        *latest < Duration::from_secs(10),
        "the last slow head was cut after {latest:?}"
    );
    eventually("no connection is left in its handshake", || async {
        proxy.metric("framegate_connections_handshaking").await == 0.0
    })
    .await;
    assert!(
        proxy
            .metric("framegate_edge_refused_total{reason=\"handshake_timeout\"}")
            .await
            >= 500.0
    );
    // Upgraded connections are not in their handshake, however long they stay.
    let mut ws = proxy.connect("/echo").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    echoes(&mut ws, "past the deadline").await;
    assert_eq!(proxy.metric("framegate_connections_handshaking").await, 0.0);
}

#[tokio::test]
async fn a_silent_connection_is_cut_at_the_deadline_too() {
    let proxy = start("limits = { handshake_timeout_ms = 500 }");
    let mut silent = TcpStream::connect(proxy.ws).await.unwrap();
    let mut buffer = [0; 64];
    let read = tokio::time::timeout(PATIENCE, silent.read(&mut buffer))
        .await
        .expect("cut in time");
    assert!(matches!(read, Ok(0) | Err(_)), "closed without an answer: {read:?}");
    // A non-upgrade answer ends the connection too: it cannot idle past the deadline.
    let mut asked = TcpStream::connect(proxy.ws).await.unwrap();
    let (status, _) = exchange(&mut asked, b"GET /echo HTTP/1.1\r\nHost: test\r\n\r\n").await;
    assert_eq!(status, "HTTP/1.1 426 Upgrade Required");
    let read = tokio::time::timeout(PATIENCE, asked.read(&mut buffer))
        .await
        .expect("closed");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

#[tokio::test]
async fn a_head_over_the_cap_gets_431() {
    let proxy = start("limits = { max_head_bytes = 8192 }");
    let filler = |n: usize| format!("X-Filler: {}\r\n", "a".repeat(n));
    let (status, _) = raw_upgrade(
        &proxy,
        "127.0.0.1",
        &upgrade_request("/echo", "1.1", &with_key(&filler(6000))),
    )
    .await;
    assert_eq!(status, "HTTP/1.1 101 Switching Protocols");
    let (status, _) = raw_upgrade(
        &proxy,
        "127.0.0.1",
        &upgrade_request("/echo", "1.1", &with_key(&filler(10_000))),
    )
    .await;
    assert_eq!(status, "HTTP/1.1 431 Request Header Fields Too Large");
    eventually("the refusal is counted", || async {
        proxy
            .metric("framegate_edge_refused_total{reason=\"head_too_large\"}")
            .await
            == 1.0
    })
    .await;
}

#[tokio::test]
async fn new_connections_per_address_are_rate_limited() {
    let proxy = start("limits = { new_connections_per_ip_per_s = 0.5, new_connections_burst_per_ip = 5 }");
    // Five at once (the burst): silent sockets, as admission is at accept.
    let mut burst = Vec::new();
    for _ in 0..5 {
        burst.push(TcpStream::connect(proxy.ws).await.unwrap());
    }
    // Admitted (each is admitted in a task of its own, in no set order).
    eventually("the five are admitted", || async {
        proxy.metric("framegate_connections_handshaking").await == 5.0
    })
    .await;
    let (status, body) = upgrade_status(proxy.ws, "/echo").await;
    assert_eq!(
        (status, body.as_str()),
        (429, "too many new connections from your address\n")
    );
    let mut other = ws_from(&proxy, "127.0.0.2", "/echo", &[]).await.unwrap();
    echoes(&mut other, "another address").await;
    // The bucket refills at one every two seconds, whether or not the first five are still open.
    burst.clear();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let mut later = ws_from(&proxy, "127.0.0.1", "/echo", &[]).await.unwrap();
    echoes(&mut later, "later").await;
    assert_eq!(
        proxy
            .metric("framegate_edge_refused_total{reason=\"new_connections_per_ip\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn upgrades_in_progress_are_capped() {
    let proxy = start("limits = { max_upgrades_in_progress = 10, handshake_timeout_ms = 15000 }");
    // Upgraded connections are no longer in progress.
    let mut upgraded = Vec::new();
    for _ in 0..3 {
        upgraded.push(proxy.connect("/echo").await);
    }
    let mut silent = Vec::new();
    for _ in 0..10 {
        silent.push(TcpStream::connect(proxy.ws).await.unwrap());
    }
    eventually("ten connections in their handshake", || async {
        proxy.metric("framegate_connections_handshaking").await == 10.0
    })
    .await;
    let (status, body) = upgrade_status(proxy.ws, "/echo").await;
    assert_eq!((status, body.as_str()), (503, "too many upgrades in progress\n"));
    echoes(&mut upgraded[0], "unaffected").await;

    silent.clear();
    eventually("the silent connections are gone", || async {
        proxy.metric("framegate_connections_handshaking").await == 0.0
    })
    .await;
    let mut ws = proxy.connect("/echo").await;
    echoes(&mut ws, "in again").await;
    assert_eq!(
        proxy
            .metric("framegate_edge_refused_total{reason=\"upgrades_in_progress\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn bad_keys_and_http_1_0_are_refused() {
    let proxy = start("");
    for (key, why) in [
        ("Sec-WebSocket-Key: \r\n", "empty"),
        ("Sec-WebSocket-Key: abc\r\n", "not 16 bytes"),
        ("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZXh4\r\n", "18 bytes"),
        ("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZ!==\r\n", "not base64"),
    ] {
        let answer = raw_upgrade(&proxy, "127.0.0.1", &upgrade_request("/echo", "1.1", key)).await;
        assert_eq!(
            answer,
            (
                "HTTP/1.1 400 Bad Request".to_string(),
                "Sec-WebSocket-Key must be the base64 of 16 bytes\n".to_string()
            ),
            "{why}"
        );
    }
    let answer = raw_upgrade(&proxy, "127.0.0.1", &upgrade_request("/echo", "1.0", &with_key(""))).await;
    assert_eq!(
        answer,
        (
            "HTTP/1.0 400 Bad Request".to_string(),
            "WebSocket needs HTTP/1.1\n".to_string()
        )
    );
    let (status, _) = raw_upgrade(&proxy, "127.0.0.1", &upgrade_request("/echo", "1.1", &with_key(""))).await;
    assert_eq!(status, "HTTP/1.1 101 Switching Protocols");
    assert_eq!(
        proxy.metric("framegate_edge_refused_total{reason=\"bad_key\"}").await,
        4.0
    );
}

#[tokio::test]
async fn an_origin_from_elsewhere_gets_403() {
    let route = "[routes.app]\npath = \"/app\"\nfilters = [{ module = \"echo\" }]\n\
                 origins = [\"https://app.example.com\", \"https://*.example.com\"]\n";
    let proxy = Proxy::start(&config("", route), &["echo"], &[]);
    let origin = |o: &str| with_key(&format!("Origin: {o}\r\n"));
    for evil in [
        "https://evil.example.net",
        "https://example.com.evil.net",
        "null",
        "http://app.example.com",
    ] {
        let answer = raw_upgrade(&proxy, "127.0.0.1", &upgrade_request("/app", "1.1", &origin(evil))).await;
        assert_eq!(
            answer,
            ("HTTP/1.1 403 Forbidden".to_string(), "origin not allowed\n".to_string()),
            "{evil}"
        );
    }
    let mut allowed = ws_from(&proxy, "127.0.0.1", "/app", &[("origin", "https://a.b.example.com")])
        .await
        .unwrap();
    echoes(&mut allowed, "same site").await;
    let mut exact = ws_from(&proxy, "127.0.0.1", "/app", &[("origin", "https://app.example.com")])
        .await
        .unwrap();
    echoes(&mut exact, "exact").await;
    // No Origin: not a browser, so no page to hijack it.
    let mut no_origin = ws_from(&proxy, "127.0.0.1", "/app", &[]).await.unwrap();
    echoes(&mut no_origin, "no origin").await;
    // A route with no list takes any origin.
    let mut open = ws_from(&proxy, "127.0.0.1", "/echo", &[("origin", "https://evil.example.net")])
        .await
        .unwrap();
    echoes(&mut open, "anyone").await;
    assert_eq!(
        proxy
            .metric("framegate_upgrades_refused_total{route=\"app\",status=\"403\"}")
            .await,
        4.0
    );
}

async fn peer_of(ws: &mut Ws) -> String {
    send_text(ws, "meta peer").await;
    next_text(ws).await
}

#[tokio::test]
async fn x_forwarded_for_counts_only_from_a_trusted_proxy() {
    let proxy = start_with_probe(
        "limits = { max_connections_per_ip = 2 }\n\
         client_ip = { trusted_proxies = [\"127.0.0.2\"] }",
    );
    let forwarded = |ip: &'static str| [("x-forwarded-for", ip)];
    // From the trusted proxy, each named client has its own count, and is the peer.
    let mut first = ws_from(&proxy, "127.0.0.2", "/probe", &forwarded("203.0.113.7"))
        .await
        .unwrap();
    assert_eq!(peer_of(&mut first).await, "203.0.113.7:0");
    let _second = ws_from(&proxy, "127.0.0.2", "/probe", &forwarded("203.0.113.7"))
        .await
        .unwrap();
    assert_eq!(
        refused_status(ws_from(&proxy, "127.0.0.2", "/probe", &forwarded("203.0.113.7")).await),
        429
    );
    let mut third = ws_from(&proxy, "127.0.0.2", "/probe", &forwarded("1.1.1.1, 203.0.113.8"))
        .await
        .unwrap();
    assert_eq!(peer_of(&mut third).await, "203.0.113.8:0", "the hop the proxy saw");

    // From anyone else the header is ignored: the socket's address counts, and is the peer.
    let mut direct = ws_from(&proxy, "127.0.0.3", "/probe", &forwarded("203.0.113.9"))
        .await
        .unwrap();
    assert!(peer_of(&mut direct).await.starts_with("127.0.0.3:"));
    let _again = ws_from(&proxy, "127.0.0.3", "/probe", &forwarded("203.0.113.10"))
        .await
        .unwrap();
    assert_eq!(
        refused_status(ws_from(&proxy, "127.0.0.3", "/probe", &forwarded("203.0.113.11")).await),
        429
    );
}

fn proxy_header(source: &str, destination: SocketAddr) -> Vec<u8> {
    use ppp::v2::{Builder, Command, Protocol, Version};
    Builder::with_addresses(
        Version::Two | Command::Proxy,
        Protocol::Stream,
        (source.parse::<SocketAddr>().unwrap(), destination),
    )
    .build()
    .unwrap()
}

/// A WebSocket client from `from` that opens with a PROXY v2 header naming `source`.
async fn ws_proxied(proxy: &Proxy, from: &str, source: &str) -> Result<Ws, WsError> {
    let mut stream = tcp_from(from, proxy.ws).await.unwrap();
    stream.write_all(&proxy_header(source, proxy.ws)).await.unwrap();
    let request = proxy.url("/probe").into_client_request()?;
    let (ws, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream)).await?;
    Ok(ws)
}

#[tokio::test]
async fn a_proxy_v2_header_from_a_trusted_peer_names_the_client() {
    let proxy = start_with_probe(
        "limits = { max_connections_per_ip = 1 }\n\
         client_ip = { trusted_proxies = [\"127.0.0.2/32\"], proxy_protocol = true }",
    );
    let mut first = ws_proxied(&proxy, "127.0.0.2", "203.0.113.7:4711").await.unwrap();
    assert_eq!(peer_of(&mut first).await, "203.0.113.7:4711");
    assert_eq!(
        refused_status(ws_proxied(&proxy, "127.0.0.2", "203.0.113.7:4712").await),
        429
    );
    let mut other = ws_proxied(&proxy, "127.0.0.2", "203.0.113.8:4711").await.unwrap();
    assert_eq!(peer_of(&mut other).await, "203.0.113.8:4711");
    // X-Forwarded-For means nothing on a PROXY protocol connection.
    let mut stream = tcp_from("127.0.0.2", proxy.ws).await.unwrap();
    stream
        .write_all(&proxy_header("203.0.113.9:1", proxy.ws))
        .await
        .unwrap();
    let (status, _) = exchange(
        &mut stream,
        &upgrade_request("/probe", "1.1", &with_key("X-Forwarded-For: 203.0.113.7\r\n")),
    )
    .await;
    assert_eq!(status, "HTTP/1.1 101 Switching Protocols");

    // From a peer that is not trusted, a PROXY header is no HTTP.
    let (status, _) = raw_upgrade(&proxy, "127.0.0.3", &proxy_header("203.0.113.10:1", proxy.ws)).await;
    assert_eq!(status, "HTTP/1.1 400 Bad Request");
    // A trusted peer must send one.
    let (status, _) = raw_upgrade(&proxy, "127.0.0.2", &upgrade_request("/probe", "1.1", &with_key(""))).await;
    assert!(!status.contains("101"), "{status}");
    assert!(
        proxy
            .metric("framegate_edge_refused_total{reason=\"proxy_header\"}")
            .await
            >= 1.0
    );
}

/// The proxy's open file descriptors.
fn open_files(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count() as u64
}

/// Lowers the soft limit of open files of process `pid`.
fn limit_open_files(pid: u32, soft: u64) {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit reads the new limit and writes the old one, both structs passed here.
    unsafe {
        assert_eq!(
            libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old),
            0
        );
        let new = libc::rlimit {
            rlim_cur: soft,
            rlim_max: old.rlim_max,
        };
        assert_eq!(libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, &new, &mut old), 0);
    }
}

#[tokio::test]
async fn out_of_file_descriptors_the_listener_pauses_and_recovers() {
    let proxy = start("limits = { handshake_timeout_ms = 30000 }");
    let mut ws = proxy.connect("/echo").await;
    echoes(&mut ws, "before").await;
    let pid = proxy.pid();
    limit_open_files(pid, open_files(pid) + 10);
    // Silent connections use up the proxy's descriptors; the rest wait in the backlog.
    let mut hogs = Vec::new();
    for _ in 0..40 {
        hogs.push(TcpStream::connect(proxy.ws).await.unwrap());
    }
    let failing_since = std::time::Instant::now();
    eventually("accept fails", || async { proxy.logs().contains("accept failed") }).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let lines = proxy.logs().lines().filter(|l| l.contains("accept failed")).count();
    let seconds = failing_since.elapsed().as_secs() + 1;
    assert!(
        (1..=seconds as usize + 1).contains(&lines),
        "{lines} 'accept failed' lines in about {seconds} s"
    );
    // The upgraded connection is untouched.
    echoes(&mut ws, "during").await;

    hogs.clear();
    let mut after = proxy.connect("/echo").await;
    echoes(&mut after, "after").await;
    assert!(proxy.metric("framegate_accept_errors_total").await >= 1.0);
}
