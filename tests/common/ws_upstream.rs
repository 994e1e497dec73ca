//! tests/ws_upstream.py (Python `websockets`, which compresses when a client offers
//! permessage-deflate) as a test's upstream server: started on a port of its own, killed when
//! dropped; its log tells what it saw.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::PATIENCE;
use super::peers::free_port;

pub struct PythonUpstream {
    child: Child,
    pub port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl PythonUpstream {
    /// Starts the server with `args` (beside its port and log) and waits until it listens.
    pub fn start(args: &[&str]) -> PythonUpstream {
        let dir = tempfile::tempdir().unwrap();
        let (port, log) = (free_port(), dir.path().join("upstream.jsonl"));
        let child = Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ws_upstream.py"))
            .args(["--port", &port.to_string(), "--log", log.to_str().unwrap()])
            .args(args)
            .spawn()
            .expect("python3 runs tests/ws_upstream.py (scripts/test installs websockets)");
        let upstream = PythonUpstream {
            child,
            port,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + PATIENCE;
        while upstream.events("listening").is_empty() {
            assert!(Instant::now() < deadline, "the upstream server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        upstream
    }

    /// The events of one kind its log has so far (`open`, `recv`, `sent`...).
    pub fn events(&self, event: &str) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["event"] == event)
            .collect()
    }

    /// The `Sec-WebSocket-Extensions` offer of its first connection.
    pub fn offer(&self) -> Option<String> {
        self.events("open")[0]["headers"]["sec-websocket-extensions"]
            .as_str()
            .map(String::from)
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }
}

impl Drop for PythonUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
