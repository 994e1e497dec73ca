//! Brokers for the connector tests, started on 127.0.0.1 ports of their own in a temp folder
//! and killed when dropped. scripts/test installs them (Debian's nats-server, redis-server).

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Peer {
    child: Child,
    pub port: u16,
    program: String,
    args: Vec<String>,
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

fn start(program: &str, port: u16, args: impl FnOnce(u16, &std::path::Path) -> Vec<String>) -> Peer {
    let dir = tempfile::tempdir().unwrap();
    let args = args(port, dir.path());
    let child = spawn(program, &args, port);
    Peer {
        child,
        port,
        program: program.into(),
        args,
        _dir: dir,
    }
}

fn spawn(program: &str, args: &[String], port: u16) -> Child {
    let mut child = Command::new(program)
        .args(args)
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
    child
}

impl Peer {
    /// Kills the broker (SIGKILL: no goodbye to its clients).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the broker again on the same port and folder.
    pub fn restart(&mut self) {
        self.kill();
        self.child = spawn(&self.program, &self.args, self.port);
    }
}

/// nats-server with JetStream.
pub fn nats() -> Peer {
    start("nats-server", free_port(), |port, dir| {
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
    redis_at(free_port())
}

/// redis-server on a port chosen beforehand.
pub fn redis_at(port: u16) -> Peer {
    start("redis-server", port, |port, dir| {
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
