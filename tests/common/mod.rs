//! What the integration tests share: the real `framegate` binary started on ephemeral ports in
//! its own folder, WebSocket and HTTP clients, and the bundled filters built by
//! scripts/build-filters.
#![allow(dead_code)] // each test file uses its own part of this

pub mod kafka;
pub mod nsdb;
pub mod peers;
pub mod wiretap;
pub mod ws_upstream;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long any single wait of a test may take before it fails.
pub const PATIENCE: Duration = Duration::from_secs(20);
/// How long a proxy may take to start: it compiles its filters first, and a debug build of
/// wasmtime compiles a large module (hydra.wasm, 200 KiB) in seconds, more on a busy machine.
pub const STARTUP: Duration = Duration::from_secs(60);

/// The folder scripts/build-filters writes the bundled filters to.
pub fn built_filters() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/filters")
}

/// Runs `framegate run` on the embedded default config, with the bundled filters where that
/// config looks for them, on ephemeral ports.
pub fn start_default() -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let filters = dir.path().join("target/filters");
    std::fs::create_dir_all(&filters).unwrap();
    for name in ["echo", "subscribe", "hydra", "query"] {
        let file = format!("{name}.wasm");
        std::fs::copy(built_filters().join(&file), filters.join(&file))
            .unwrap_or_else(|e| panic!("target/filters/{file}: {e}: run scripts/build-filters"));
    }
    Proxy::spawn(dir, &["run", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
}

/// Runs a client program (`python3`, `node`) on a script in tests/ and returns the lines it
/// printed; fails the test, with its output, if it fails.
pub fn run_client(program: &str, script: &str, args: Vec<String>) -> Vec<String> {
    let script = format!("{}/tests/{script}", env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(program).arg(script).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "the {program} client failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

/// config/NAME as shipped, on ephemeral ports (its `listen` and `admin` lines) with the filters
/// in the test folder's `filters/`, and each `(from, to)` of `also` replaced (each must occur).
pub fn shipped_config(name: &str, also: &[(&str, &str)]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config").join(name);
    let shipped = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut config: String = shipped
        .lines()
        .map(|line| match line.split_once(" = ") {
            Some(("listen", _)) => "listen = \"127.0.0.1:0\"".to_string(),
            Some(("admin", _)) => "admin = \"127.0.0.1:0\"".to_string(),
            Some(("dir", "\"target/filters\"")) => "dir = \"filters\"".to_string(),
            _ => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    for (from, to) in also {
        assert!(config.contains(from), "config/{name} has no {from:?}");
        config = config.replace(from, to);
    }
    config
}

/// A running proxy, stopped (SIGTERM, then kill) when dropped.
pub struct Proxy {
    child: Child,
    pub ws: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    logs: Arc<Mutex<Vec<String>>>,
}

/// The head every test config starts with: ephemeral ports, filters in `filters/`, and
/// `server` lines of the test's own.
pub fn head(server: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nshutdown_grace_ms = 3000\n{server}\n\
         [filters]\ndir = \"filters\"\n"
    )
}

impl Proxy {
    /// Starts `framegate run framegate.toml` in a fresh folder holding `filters` (bundled
    /// module names) and `extra` files (name, contents) in its `filters/` folder.
    pub fn start(config: &str, filters: &[&str], extra: &[(&str, &[u8])]) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let filter_dir = dir.path().join("filters");
        std::fs::create_dir_all(&filter_dir).unwrap();
        for name in filters {
            let from = built_filters().join(format!("{name}.wasm"));
            std::fs::copy(&from, filter_dir.join(format!("{name}.wasm")))
                .unwrap_or_else(|e| panic!("{} is missing ({e}): run scripts/build-filters", from.display()));
        }
        for (name, bytes) in extra {
            let file = filter_dir.join(name);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, bytes).unwrap();
        }
        std::fs::write(dir.path().join("framegate.toml"), config).unwrap();
        Self::spawn(dir, &["run", "framegate.toml"])
    }

    /// Starts `framegate ARGS` in `dir` and waits for it to listen.
    pub fn spawn(dir: tempfile::TempDir, args: &[&str]) -> Proxy {
        let mut child = Command::new(env!("CARGO_BIN_EXE_framegate"))
            .args(args)
            .current_dir(dir.path())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let keep = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // Kept before it is announced: a test may look for the line as soon as it starts.
                let listening = line.split("framegate listening ").nth(1).map(str::to_string);
                keep.lock().unwrap().push(line);
                if let Some(rest) = listening {
                    let _ = tx.send(rest);
                }
            }
        });
        let Ok(listening) = rx.recv_timeout(STARTUP) else {
            let _ = child.kill();
            panic!("framegate did not start:\n{}", logs.lock().unwrap().join("\n"));
        };
        let field = |name: &str| -> SocketAddr {
            let value = listening
                .split_whitespace()
                .find_map(|f| f.strip_prefix(&format!("{name}=")))
                .unwrap();
            value.parse().unwrap()
        };
        Proxy {
            ws: field("ws"),
            admin: field("admin"),
            child,
            dir,
            logs,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.ws)
    }

    pub async fn connect(&self, path: &str) -> Ws {
        let (ws, _) = tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(self.url(path)))
            .await
            .expect("connect timed out")
            .unwrap_or_else(|e| panic!("connect {path}: {e}"));
        ws
    }

    /// The JSON lines of a file in the proxy's folder (a file sink's records); none if absent.
    pub fn json_lines(&self, file: &str) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join(file))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    pub fn filter_dir(&self) -> PathBuf {
        self.dir.path().join("filters")
    }

    /// Replaces a file the way an editor or a build does: write aside, then rename.
    pub fn replace_file(&self, relative: &str, bytes: &[u8]) {
        let target = self.dir.path().join(relative);
        let aside = target.with_extension("tmp");
        std::fs::write(&aside, bytes).unwrap();
        std::fs::rename(&aside, &target).unwrap();
    }

    /// A metric's value from /metrics (0 when absent), `series` as printed, labels included.
    pub async fn metric(&self, series: &str) -> f64 {
        let (_, body) = http_get(self.admin, "/metrics").await;
        body.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    }

    /// The proxy's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The proxy's resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "framegate did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A plain HTTP/1.1 GET: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// Sends a raw HTTP request and reads the whole answer: (status, body).
pub async fn http_request(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer))
        .await
        .expect("HTTP answer timed out")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.split_whitespace().nth(1).unwrap_or("0").parse().unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string();
    (status, body)
}

/// A WebSocket upgrade request by hand, for answers a client library would hide: (status, body).
pub async fn upgrade_status(addr: SocketAddr, path: &str) -> (u16, String) {
    let (status, _, body) = upgrade_with(addr, path, "").await;
    (status, body)
}

/// An upgrade request by hand with `extra` header lines (each ending in `\r\n`): the answer's
/// status, head (lowercased) and body.
pub async fn upgrade_with(addr: SocketAddr, path: &str, extra: &str) -> (u16, String, String) {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    );
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = vec![0; 4096];
    let n = tokio::time::timeout(PATIENCE, stream.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
    let status = answer.split_whitespace().nth(1).unwrap_or("0").parse().unwrap_or(0);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    (status, head.to_lowercase(), body.to_string())
}

/// The next data message, skipping pings and pongs (within PATIENCE in all).
pub async fn next_message(ws: &mut Ws) -> Message {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let message = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("no message in time")
            .expect("connection ended")
            .expect("read failed");
        if !matches!(message, Message::Ping(_) | Message::Pong(_)) {
            return message;
        }
    }
}

pub async fn next_text(ws: &mut Ws) -> String {
    match next_message(ws).await {
        Message::Text(text) => text.to_string(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

pub async fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
}

/// Sends one message and reads the answer (the probe filter answers each command).
pub async fn ask(ws: &mut Ws, command: &str) -> String {
    send_text(ws, command).await;
    next_text(ws).await
}

/// The result line of an `emit` by the probe filter: what follows `result TICKET `.
pub async fn emit(ws: &mut Ws, sink: &str, payload: &str) -> String {
    let ticket = ask(ws, &format!("emit {sink} {payload}")).await.replace("ok ", "");
    let result = next_text(ws).await;
    result
        .strip_prefix(&format!("result {ticket} "))
        .unwrap_or_else(|| panic!("{result}"))
        .to_string()
}

/// Reads until the server closes: the close frame it sent (code, reason).
pub async fn closed_with(ws: &mut Ws) -> (u16, String) {
    loop {
        match tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("no close in time")
        {
            Some(Ok(Message::Close(Some(CloseFrame { code, reason })))) => {
                return (code.into(), reason.to_string());
            }
            Some(Ok(Message::Close(None))) => return (1005, String::new()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("connection failed before a close frame: {e}"),
            None => panic!("connection ended without a close frame"),
        }
    }
}

/// Polls `check` until it holds or PATIENCE runs out.
pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_within(what, PATIENCE, check).await
}

/// Polls `check` until it holds or `patience` runs out.
pub async fn eventually_within<F, Fut>(what: &str, patience: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + patience;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
