//! The `ws` source against a real upstream server (tests/ws_upstream.py, Python `websockets`):
//! reconnects across server restarts with the handshake's headers, cookies and sub-protocol and
//! the init messages every time, nothing duplicated and nothing lost but what was sent while
//! nobody was connected; wss with a CA of the test's own, a wrong CA named in the reason, mTLS,
//! and turned-off verification; a half-open upstream caught by the read-idle deadline; a slow
//! sink that pauses the source without loss; a reload that restarts a changed fed route on the
//! same queue while another route of the source sees every message; and config/taxi-rides.toml checking
//! 100,000 rows against the seed's schema.

mod common;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::peers::free_port;
use common::*;
use http_body_util::{BodyExt, Full};
use serde_json::Value;

/// The upstream server, started with `python3 tests/ws_upstream.py`; its log outlives restarts.
struct Upstream {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
    args: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Upstream {
    fn start(args: &[&str]) -> Upstream {
        let dir = tempfile::tempdir().unwrap();
        let mut upstream = Upstream {
            child: None,
            port: free_port(),
            log: dir.path().join("upstream.jsonl"),
            args: args.iter().map(|a| a.to_string()).collect(),
            _dir: dir,
        };
        upstream.restart();
        upstream
    }

    /// Starts the server (again) on its port, and waits until it listens.
    fn restart(&mut self) {
        let listening = self.count("listening");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ws_upstream.py");
        let child = Command::new("python3")
            .arg(script)
            .args(["--port", &self.port.to_string(), "--log", self.log.to_str().unwrap()])
            .args(&self.args)
            .spawn()
            .expect("python3 runs tests/ws_upstream.py (scripts/test installs websockets)");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + PATIENCE;
        while self.count("listening") == listening {
            assert!(
                std::time::Instant::now() < deadline,
                "the upstream server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM: the server closes its connections (1001) between two messages and exits.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            self.signal(&child, "-TERM");
            child.wait().unwrap();
        }
    }

    fn signal(&self, child: &Child, signal: &str) {
        Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
    }

    fn pause(&self) {
        self.signal(self.child.as_ref().unwrap(), "-STOP");
    }

    fn resume(&self) {
        self.signal(self.child.as_ref().unwrap(), "-CONT");
    }

    fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn count(&self, event: &str) -> usize {
        self.events().iter().filter(|e| e["event"] == event).count()
    }

    /// The numbers of one kind of event (`sent`, `unsent`), in order.
    fn numbers(&self, event: &str) -> Vec<u64> {
        self.events()
            .iter()
            .filter(|e| e["event"] == event)
            .map(|e| e["n"].as_u64().unwrap())
            .collect()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The `n` of each text message a file sink wrote (after a prefix the `tag` filter may have put).
fn numbers(proxy: &Proxy, file: &str) -> Vec<u64> {
    proxy
        .json_lines(file)
        .iter()
        .filter(|l| l["opcode"] == "text")
        .map(|l| {
            let text = l["payload"].as_str().unwrap();
            let payload: Value = serde_json::from_str(text.trim_start_matches("v2 ")).unwrap();
            payload["n"].as_u64().unwrap()
        })
        .collect()
}

/// A fed route writing the source's messages to a file with their metadata.
fn fed_route(source: &str, options: &str) -> String {
    format!(
        r#"
[sources.{source}]
type = "ws"
{options}

[sinks.{source}_file]
type = "file"
path = "{source}.jsonl"
fsync = "always"
meta = ["source.name", "source.generation", "source.seq", "source.received_at"]

[routes.{source}]
feed = "{source}"
sinks = ["{source}_file"]
"#
    )
}

async fn readyz(proxy: &Proxy) -> String {
    http_get(proxy.admin, "/readyz").await.1
}

#[tokio::test]
async fn reconnects_resend_the_handshake_and_init_messages_and_lose_only_what_nobody_heard() {
    let mut upstream = Upstream::start(&["--interval-ms", "10", "--hello"]);
    let options = format!(
        r#"url = "ws://127.0.0.1:{port}/ws?stream=numbers"
headers = {{ x-team = "blue" }}
cookies = [{{ name = "session", value = "abc" }}, {{ name = "lang", value = "en" }}]
subprotocols = ["numbers.v1"]
init_messages = ["subscribe numbers", {{ binary_base64 = "AAEC" }}]
retry_delay_ms = 100
retry_delay_max_ms = 800"#,
        port = upstream.port
    );
    let proxy = Proxy::start(&format!("{}{}", head(""), fed_route("feed", &options)), &[], &[]);
    let has = |n: usize| {
        let proxy = &proxy;
        move || async move { proxy.json_lines("feed.jsonl").len() >= n }
    };
    eventually("the first messages", has(30)).await;

    // Three outages; the second outlasts several backoff steps (100, 200, 400, 800 ms).
    for outage in [300, 3_000, 300] {
        upstream.stop();
        tokio::time::sleep(Duration::from_millis(outage)).await;
        if outage > 1_000 {
            let ready = readyz(&proxy).await;
            assert!(
                ready.contains(&format!(
                    "sources.feed: down: upstream ws://127.0.0.1:{port}/ws?stream=numbers: cannot connect to 127.0.0.1",
                    port = upstream.port
                )),
                "{ready}"
            );
        }
        let before = proxy.json_lines("feed.jsonl").len();
        upstream.restart();
        eventually("messages after the restart", has(before + 30)).await;
    }
    upstream.stop();
    let sent = upstream.numbers("sent");
    eventually("every message the server sent", || async {
        numbers(&proxy, "feed.jsonl").len() >= sent.len()
    })
    .await;

    let received = numbers(&proxy, "feed.jsonl");
    assert_eq!(received, sent, "every message sent arrives once, in order");
    let unsent = upstream.numbers("unsent");
    assert!(
        !unsent.is_empty(),
        "the server made numbers while framegate was reconnecting"
    );
    let mut all: Vec<u64> = sent.iter().chain(&unsent).copied().collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=all.len() as u64).collect::<Vec<_>>(),
        "the gaps are exactly the unsent numbers"
    );

    // Every connection: the same handshake, then the init messages, in order.
    let events = upstream.events();
    let opens: Vec<&Value> = events.iter().filter(|e| e["event"] == "open").collect();
    assert_eq!(opens.len(), 4);
    for open in &opens {
        assert_eq!(open["path"], "/ws?stream=numbers");
        assert_eq!(open["headers"]["cookie"], "session=abc; lang=en");
        assert_eq!(open["headers"]["x-team"], "blue");
        assert_eq!(open["headers"]["sec-websocket-protocol"], "numbers.v1");
        let received: Vec<&Value> = events
            .iter()
            .filter(|e| e["event"] == "recv" && e["conn"] == open["conn"])
            .collect();
        assert_eq!(received.len(), 2, "{received:?}");
        assert_eq!(received[0]["text"], "subscribe numbers");
        assert_eq!(received[1]["binary"], "AAEC");
    }

    // Metadata: the generation counts connections, the sequence restarts with each one, and
    // each connection starts with the server's binary greeting, passed on as binary.
    let mut expected = (1, 0);
    for line in proxy.json_lines("feed.jsonl") {
        let meta = &line["meta"];
        let first = meta["source.seq"] == "1";
        assert_eq!(line["opcode"] == "binary", first, "{line}");
        if first {
            assert_eq!(line["payload"], "AAFoZWxsbw==", "{line}");
        }
        assert_eq!(meta["source.name"], "feed");
        let generation: u64 = meta["source.generation"].as_str().unwrap().parse().unwrap();
        let seq: u64 = meta["source.seq"].as_str().unwrap().parse().unwrap();
        expected = if generation == expected.0 {
            (generation, expected.1 + 1)
        } else {
            (expected.0 + 1, 1)
        };
        assert_eq!((generation, seq), expected);
        assert!(meta["source.received_at"].as_str().unwrap().parse::<u64>().unwrap() > 1_700_000_000_000);
    }
    assert_eq!(expected.0, 4);
    let metric = |event: &str| format!("framegate_feed_total{{source=\"feed\",event=\"{event}\"}}");
    assert!(proxy.metric(&metric("reconnects")).await >= 3.0);
    assert_eq!(
        proxy.metric(&metric("messages")).await,
        (sent.len() + 4) as f64,
        "the numbers and four greetings"
    );
}

#[tokio::test]
async fn a_reload_restarts_a_changed_fed_route_and_every_route_of_a_source_gets_every_message() {
    let mut upstream = Upstream::start(&["--interval-ms", "5"]);
    let options = format!("url = \"ws://127.0.0.1:{}/\"", upstream.port);
    let config = format!(
        "{}{}\n[sinks.copy]\ntype = \"file\"\npath = \"copy.jsonl\"\nfsync = \"always\"\nmeta = [\"source.generation\"]\n\n\
         [routes.copy]\nfeed = \"feed\"\nsinks = [\"copy\"]\n",
        head(""),
        fed_route("feed", &options)
    );
    let proxy = Proxy::start(&config, &["tag"], &[]);
    let has = |file: &'static str, n: usize| {
        let proxy = &proxy;
        move || async move { proxy.json_lines(file).len() >= n }
    };
    eventually("the first messages", has("feed.jsonl", 50)).await;

    // The route gains a filter: its session starts again on the new config, on the same queue.
    let tagged = config.replace(
        "[routes.feed]\nfeed = \"feed\"\n",
        "[routes.feed]\nfeed = \"feed\"\nfilters = [{ module = \"tag\", config = { prefix = \"v2 \" } }]\n",
    );
    assert_ne!(tagged, config);
    proxy.replace_file("framegate.toml", tagged.as_bytes());
    eventually("the new config applies", || async {
        proxy
            .json_lines("feed.jsonl")
            .last()
            .is_some_and(|l| l["payload"].as_str().unwrap().starts_with("v2 "))
    })
    .await;
    let now = proxy.json_lines("feed.jsonl").len();
    eventually("more messages", has("feed.jsonl", now + 50)).await;
    upstream.stop();

    let sent = upstream.numbers("sent");
    eventually("every message in both files", || async {
        proxy.json_lines("feed.jsonl").len() >= sent.len() && proxy.json_lines("copy.jsonl").len() >= sent.len()
    })
    .await;
    assert_eq!(
        numbers(&proxy, "feed.jsonl"),
        sent,
        "none lost or twice across the restart"
    );
    assert_eq!(
        numbers(&proxy, "copy.jsonl"),
        sent,
        "the unchanged route saw everything too"
    );
    let tagged: Vec<bool> = proxy
        .json_lines("feed.jsonl")
        .iter()
        .map(|l| l["payload"].as_str().unwrap().starts_with("v2 "))
        .collect();
    assert!(
        tagged.windows(2).all(|w| w[0] <= w[1]),
        "the old chain, then the new one"
    );
    let generations: Vec<Value> = proxy
        .json_lines("copy.jsonl")
        .iter()
        .map(|l| l["meta"]["source.generation"].clone())
        .collect();
    assert!(generations.iter().all(|g| g == "1"), "the source did not reconnect");
}

/// A CA of the test's own, a server certificate it signed for 127.0.0.1 and localhost, a client
/// certificate it signed, and a CA that signed nothing: PEM files in `dir`.
fn certificates(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair};
    let authority = |name: &str| {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert, rcgen::Issuer::new(params, key))
    };
    let (ca_cert, issuer) = authority("framegate test CA");
    let signed = |names: Vec<String>, file: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, file);
        let cert = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.join(format!("{file}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{file}.key")), key.serialize_pem()).unwrap();
    };
    signed(vec!["127.0.0.1".into(), "localhost".into()], "server");
    signed(vec!["framegate".into()], "client");
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("wrong-ca.pem"), authority("another CA").0.pem()).unwrap();
}

#[tokio::test]
async fn wss_with_a_ca_of_its_own_a_wrong_ca_mtls_and_no_verification() {
    let certs = tempfile::tempdir().unwrap();
    certificates(certs.path());
    let file = |name: &str| certs.path().join(name).display().to_string();
    let tls = Upstream::start(&["--cert", &file("server.pem"), "--key", &file("server.key")]);
    let mtls = Upstream::start(&[
        "--cert",
        &file("server.pem"),
        "--key",
        &file("server.key"),
        "--client-ca",
        &file("ca.pem"),
    ]);
    let url = |upstream: &Upstream, host: &str| {
        format!("url = \"wss://{host}:{}/ws\"\nretry_delay_ms = 200\n", upstream.port)
    };
    let ca = format!("tls = {{ ca = \"{}\" }}", file("ca.pem"));
    let client = format!(
        "tls = {{ ca = \"{}\", client_cert = \"{}\", client_key = \"{}\" }}",
        file("ca.pem"),
        file("client.pem"),
        file("client.key")
    );
    let config = [
        head(""),
        fed_route("trusted", &(url(&tls, "127.0.0.1") + &ca)),
        fed_route(
            "by_name",
            &(url(&tls, "127.0.0.1") + &ca.replace(" }", ", server_name = \"localhost\" }")),
        ),
        fed_route(
            "wrong",
            &(url(&tls, "127.0.0.1") + &format!("tls = {{ ca = \"{}\" }}", file("wrong-ca.pem"))),
        ),
        fed_route(
            "misnamed",
            &(url(&tls, "127.0.0.1") + &ca.replace(" }", ", server_name = \"elsewhere\" }")),
        ),
        fed_route("mutual", &(url(&mtls, "127.0.0.1") + &client)),
        fed_route("no_client_cert", &(url(&mtls, "127.0.0.1") + &ca)),
        fed_route(
            "unverified",
            &(url(&tls, "localhost") + "tls = { insecure_skip_verify = true }"),
        ),
        fed_route(
            "gone",
            &format!(
                "url = \"ws://127.0.0.1:{}/\"\nretry_delay_ms = 50\nmax_retries = 2",
                free_port()
            ),
        ),
    ]
    .concat();
    let proxy = Proxy::start(&config, &[], &[]);
    for source in ["trusted", "by_name", "mutual", "unverified"] {
        let file = format!("{source}.jsonl");
        eventually(&format!("{source} receives"), || async {
            proxy.json_lines(&file).len() >= 5
        })
        .await;
    }
    eventually("the refused sources are down with their reasons", || async {
        let ready = readyz(&proxy).await;
        ["wrong", "misnamed", "no_client_cert", "gone"]
            .iter()
            .all(|s| ready.contains(&format!("sources.{s}: down:")))
    })
    .await;
    let ready = readyz(&proxy).await;
    // Each reason names the upstream (`upstream wss://HOST:PORT/ws: `), then what went wrong.
    let reason = |source: &str| {
        let prefix = format!("sources.{source}: down: upstream ");
        let line = ready.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap();
        line.split_once(": ").unwrap().1.to_string()
    };
    assert_eq!(
        reason("wrong"),
        format!(
            "TLS: the server's certificate is not trusted: unknown issuer (trusting the CAs in {})",
            file("wrong-ca.pem")
        )
    );
    assert_eq!(
        reason("misnamed"),
        "TLS: the server's certificate is not valid for the name \"elsewhere\""
    );
    assert!(reason("no_client_cert").contains("client certificate"), "{ready}");
    eventually("the source with max_retries gives up", || async {
        readyz(&proxy)
            .await
            .contains("sources.gone: down: gave up after 3 failed attempts; last: upstream ")
    })
    .await;
    assert!(
        ready.contains("sources.unverified: warning: TLS certificates are not verified"),
        "{ready}"
    );
    assert!(proxy.logs().contains("TLS certificates are NOT verified"));
    assert!(proxy.json_lines("wrong.jsonl").is_empty());
}

#[tokio::test]
async fn a_half_open_upstream_is_caught_by_the_read_idle_deadline() {
    let upstream = Upstream::start(&["--interval-ms", "10"]);
    let options = format!(
        "url = \"ws://127.0.0.1:{}/\"\nping_interval_ms = 200\nread_idle_timeout_ms = 1000\n\
         connect_timeout_ms = 500\nretry_delay_ms = 100\nretry_delay_max_ms = 400",
        upstream.port
    );
    let proxy = Proxy::start(&format!("{}{}", head(""), fed_route("feed", &options)), &[], &[]);
    eventually("the first messages", || async {
        proxy.json_lines("feed.jsonl").len() >= 20
    })
    .await;

    // Frozen: the socket stays open, nothing is answered, not even pings.
    upstream.pause();
    eventually("the source notices", || async {
        readyz(&proxy).await.contains("a half-open connection")
    })
    .await;
    upstream.resume();
    eventually("messages flow on a new connection", || async {
        proxy
            .json_lines("feed.jsonl")
            .last()
            .is_some_and(|l| l["meta"]["source.generation"] != "1")
    })
    .await;
    let received = numbers(&proxy, "feed.jsonl");
    let sent = upstream.numbers("sent");
    assert!(received.windows(2).all(|w| w[0] < w[1]), "no duplicate, in order");
    assert!(received.iter().all(|n| sent.contains(n)));
}

/// An HTTP server that takes its time over each request and keeps the bodies in order.
async fn slow_server(pause: Duration) -> (u16, Arc<Mutex<Vec<Bytes>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let bodies: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let kept = bodies.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let kept = kept.clone();
            let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let kept = kept.clone();
                async move {
                    let body = request
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    tokio::time::sleep(pause).await;
                    kept.lock().unwrap().push(body);
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::new())))
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
            );
        }
    });
    (port, bodies)
}

/// How many messages the slow-sink tests send.
const SLOW_COUNT: usize = 2_000;

/// An upstream sending SLOW_COUNT messages as fast as it can (`upstream` its extra arguments)
/// to a route whose sink is a slow HTTP server; the source's queue holds 8, the sink's 4.
async fn slow_feed(upstream: &[&str], source: &str) -> (Upstream, Proxy, Arc<Mutex<Vec<Bytes>>>) {
    let (http, bodies) = slow_server(Duration::from_millis(2)).await;
    let count = SLOW_COUNT.to_string();
    let upstream = Upstream::start(&[&["--interval-ms", "0", "--count", &count], upstream].concat());
    let config = format!(
        r#"{head}
[sources.feed]
type = "ws"
url = "ws://127.0.0.1:{port}/"
queue = 8
{source}

[sinks.slow]
type = "http"
url = "http://127.0.0.1:{http}/in"
queue = 4

[routes.feed]
feed = "feed"
sinks = ["slow"]
"#,
        head = head(""),
        port = upstream.port
    );
    let proxy = Proxy::start(&config, &[], &[]);
    (upstream, proxy, bodies)
}

/// The numbers the slow server received, in order.
fn received(bodies: &Mutex<Vec<Bytes>>) -> Vec<u64> {
    bodies
        .lock()
        .unwrap()
        .iter()
        .map(|b| serde_json::from_slice::<Value>(b).unwrap()["n"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn a_slow_sink_pauses_the_source_and_loses_nothing() {
    // Uncompressed: TCP pushes back by bytes, and compressed, 20 KiB of padding is a few
    // dozen bytes, so the socket buffers would take every message.
    let (upstream, proxy, bodies) = slow_feed(&["--pad", "20000"], "deflate = { enabled = false }").await;
    let rss_at_start = proxy.rss_kib();
    eventually("a tenth is through", || async {
        bodies.lock().unwrap().len() >= SLOW_COUNT / 10
    })
    .await;
    // The server is held back by TCP: it has sent only a little more than the sink took.
    let sent = upstream.count("sent");
    let delivered = bodies.lock().unwrap().len();
    assert!(sent < SLOW_COUNT, "the server was not slowed down: it sent all {sent}");
    assert!(sent - delivered < 600, "sent {sent}, delivered {delivered}");
    let rss = proxy.rss_kib();
    assert!(
        rss < rss_at_start + 30 * 1024,
        "{rss} KiB against {rss_at_start} KiB at start"
    );

    eventually("every message is delivered", || async {
        bodies.lock().unwrap().len() == SLOW_COUNT
    })
    .await;
    assert_eq!(
        received(&bodies),
        upstream.numbers("sent"),
        "all of them, once, in order"
    );
    assert!(
        proxy
            .metric("framegate_feed_paused_seconds_total{source=\"feed\"}")
            .await
            > 0.5
    );
}

#[tokio::test]
async fn drop_oldest_makes_room_and_counts_what_it_dropped() {
    let (upstream, proxy, bodies) = slow_feed(&[], "on_full = \"drop_oldest\"").await;
    let dropped = || async {
        proxy
            .metric("framegate_feed_total{source=\"feed\",event=\"dropped\"}")
            .await
    };
    eventually("the server sent everything", || async {
        upstream.count("sent") == SLOW_COUNT
    })
    .await;
    eventually("what was kept is delivered", || async {
        let delivered = bodies.lock().unwrap().len();
        delivered + dropped().await as usize == SLOW_COUNT
    })
    .await;
    assert!(dropped().await > 0.0);
    let received = received(&bodies);
    assert!(received.windows(2).all(|w| w[0] < w[1]), "in order, none twice");
}

/// A kind of broken row: the reason and column the schema filter names, and how to make one.
type BrokenKind = (&'static str, &'static str, fn(u64) -> String);

/// The shipped config/taxi-rides.toml, on ports of the test's own, against 100,000 generated
/// rows of which 1 % are broken, of every kind.
#[tokio::test]
async fn the_taxi_rides_config_checks_a_feed_of_100000_rows() {
    let broken_kinds: [BrokenKind; 7] = [
        ("pk_missing", "log_id", |_| {
            r#"{"timestamp":"2024-05-01T10:00:00Z","driver_id":1}"#.into()
        }),
        ("pk_null", "log_id", |_| r#"{"log_id":null,"driver_id":1}"#.into()),
        ("wrong_type", "log_id", |_| r#"{"log_id":"five","driver_id":1}"#.into()),
        ("out_of_range", "driver_id", |i| {
            format!(r#"{{"log_id":{i},"driver_id":4294967296}}"#)
        }),
        ("null", "driver_id", |i| format!(r#"{{"log_id":{i},"driver_id":null}}"#)),
        ("missing", "driver_id", |i| {
            format!(r#"{{"log_id":{i},"timestamp":"t"}}"#)
        }),
        ("not_json", "", |i| format!("ride {i}")),
    ];
    let mut rows = String::new();
    let mut valid = Vec::new();
    let mut broken: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..100_000u64 {
        let row = if i % 100 == 7 {
            let (reason, column, make) = broken_kinds[(i / 100) as usize % broken_kinds.len()];
            *broken.entry(format!("{reason}:{column}")).or_default() += 1;
            make(i)
        } else {
            let row = format!(
                r#"{{"log_id":{i},"timestamp":"2024-05-01T10:{:02}:00Z","driver_id":{}}}"#,
                i % 60,
                i % 977
            );
            valid.push(row.clone());
            row
        };
        rows.push_str(&row);
        rows.push('\n');
    }
    let feed = tempfile::tempdir().unwrap();
    let rows_file = feed.path().join("rows.txt");
    std::fs::write(&rows_file, rows).unwrap();
    let upstream = Upstream::start(&["--rows", rows_file.to_str().unwrap()]);

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = std::fs::read_to_string(root.join("config/taxi-rides.toml")).unwrap();
    let config = shipped
        .replace("127.0.0.1:8765", &format!("127.0.0.1:{}", upstream.port))
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace("127.0.0.1:9090", "127.0.0.1:0")
        .replace("dir = \"target/filters\"", "dir = \"filters\"");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("filters")).unwrap();
    std::fs::copy(
        built_filters().join("schema.wasm"),
        dir.path().join("filters/schema.wasm"),
    )
    .unwrap();
    std::fs::copy(root.join("config/taxi-rides.yaml"), dir.path().join("taxi-rides.yaml")).unwrap();
    std::fs::write(dir.path().join("framegate.toml"), config).unwrap();
    let proxy = Proxy::spawn(dir, &["run", "framegate.toml"]);

    let total = valid.len() + broken.values().sum::<usize>();
    let count = |file: &str| {
        let text = std::fs::read(proxy.dir.path().join(file)).unwrap_or_default();
        text.iter().filter(|b| **b == b'\n').count()
    };
    eventually_within("every row is in one of the files", Duration::from_secs(300), || async {
        count("taxi_rides.jsonl") + count("taxi_rides.rejected.jsonl") == total
    })
    .await;
    let passed: Vec<String> = proxy
        .json_lines("taxi_rides.jsonl")
        .iter()
        .map(|l| l["payload"].as_str().unwrap().to_string())
        .collect();
    assert!(passed == valid, "valid rows pass unchanged, in order");
    let mut refused: BTreeMap<String, usize> = BTreeMap::new();
    for line in proxy.json_lines("taxi_rides.rejected.jsonl") {
        let reasons: Value =
            serde_json::from_str(line["headers"]["framegate-schema-errors"].as_str().unwrap()).unwrap();
        let key = format!(
            "{}:{}",
            reasons[0]["reason"].as_str().unwrap(),
            reasons[0]["column"].as_str().unwrap()
        );
        *refused.entry(key).or_default() += 1;
    }
    assert_eq!(refused, broken, "every broken row is refused for its reason");
    for (key, count) in &broken {
        let series = format!("framegate_filter_custom_total{{filter=\"schema\",name=\"{key}\"}}");
        assert_eq!(proxy.metric(&series).await, *count as f64, "{series}");
    }
}

#[tokio::test]
async fn a_fed_routes_filters_are_held_to_its_message_size_limit() {
    let upstream = Upstream::start(&["--interval-ms", "5"]);
    let options = format!("url = \"ws://127.0.0.1:{}/\"", upstream.port);
    // Every message, tagged with a prefix as long as the limit, is over it: the filter's replace
    // is refused (it then closes its session), so nothing tagged reaches the file; the copy
    // route, fed by the same source without the filter, shows the messages flowed.
    let prefix = "x".repeat(64);
    let config = format!(
        "{}{}\n[sinks.copy]\ntype = \"file\"\npath = \"copy.jsonl\"\nfsync = \"always\"\n\n\
         [routes.copy]\nfeed = \"feed\"\nsinks = [\"copy\"]\n",
        head(""),
        fed_route("feed", &options).replace(
            "[routes.feed]\nfeed = \"feed\"\n",
            &format!(
                "[routes.feed]\nfeed = \"feed\"\nmax_message_size = 64\n\
                 filters = [{{ module = \"tag\", config = {{ prefix = \"{prefix}\" }} }}]\n"
            ),
        )
    );
    let proxy = Proxy::start(&config, &["tag"], &[]);
    eventually("messages on the copy route", || async {
        proxy.json_lines("copy.jsonl").len() >= 50
    })
    .await;
    let tagged = proxy.json_lines("feed.jsonl");
    assert!(tagged.is_empty(), "over the limit yet delivered: {:?}", tagged.first());
}
