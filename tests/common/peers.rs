//! Brokers for the connector tests, started on 127.0.0.1 ports of their own in a temp folder
//! and killed when dropped. scripts/test installs them (Debian's nats-server, redis-server; pulsar-lite
//! from PyPI).

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Peer {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(program: &str, args: impl FnOnce(u16, &std::path::Path) -> Vec<String>) -> Peer {
    start_on(program, free_port(), args)
}

fn start_on(program: &str, port: u16, args: impl FnOnce(u16, &std::path::Path) -> Vec<String>) -> Peer {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(program)
        .args(args(port, dir.path()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} is not installed ({e}): scripts/test installs it"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(child.try_wait().unwrap().is_none(), "{program} exited at start");
        assert!(Instant::now() < deadline, "{program} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    Peer { child, port, _dir: dir }
}

/// nats-server with JetStream.
pub fn nats() -> Peer {
    start("nats-server", |port, dir| {
        [
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-js",
            "-sd",
            &dir.display().to_string(),
        ]
        .map(String::from)
        .to_vec()
    })
}

/// redis-server without persistence.
pub fn redis() -> Peer {
    start("redis-server", |port, dir| {
        [
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--dir",
            &dir.display().to_string(),
        ]
        .map(String::from)
        .to_vec()
    })
}

/// pulsar-lite, a broker of the Pulsar binary protocol (`pip install pulsar-lite`: the binary
/// ships inside the Python package), with its metrics port off.
pub fn pulsar() -> Peer {
    pulsar_on(free_port())
}

/// pulsar-lite on a port chosen before (a broker that comes up after framegate).
pub fn pulsar_on(port: u16) -> Peer {
    let found = Command::new("python3")
        .args([
            "-c",
            "import importlib.resources as r; print(r.files('pulsar_lite') / 'bin' / 'pulsar-lite')",
        ])
        .output()
        .expect("python3 runs");
    assert!(
        found.status.success(),
        "pulsar-lite is not installed (pip install pulsar-lite; scripts/test does it): {}",
        String::from_utf8_lossy(&found.stderr)
    );
    let binary = String::from_utf8(found.stdout).unwrap().trim().to_string();
    start_on(&binary, port, |port, dir| {
        let config = dir.join("pulsar-lite.toml");
        std::fs::write(&config, "[metrics]\nenabled = false\n").unwrap();
        [
            "--config".to_string(),
            config.display().to_string(),
            "--addr".to_string(),
            format!("127.0.0.1:{port}"),
            "--db-path".to_string(),
            dir.join("db").display().to_string(),
            "--log-level".to_string(),
            "warn".to_string(),
        ]
        .to_vec()
    })
}
