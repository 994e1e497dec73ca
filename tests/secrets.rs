//! No secret leaks: credentials in every broker's URL (or its options) never reach a log line,
//! /readyz, /metrics or a filter's result, even when every broker is unreachable; secrets can come
//! from files and the environment instead of the config; the admin listener can require a token.

mod common;

use common::*;

/// The password every peer is given: it must show nowhere.
const PASSWORD: &str = "Pw-9f3c1e-never-shown";

/// Every sink kind that talks to a broker, each with the password in its URL (or, for Kafka,
/// in its SASL options), against a port nothing listens on.
fn config(port: u16) -> String {
    let sinks: String = [
        (
            "nats",
            format!("url = \"nats://app:{PASSWORD}@127.0.0.1:{port}\"\nsubject = \"s\""),
        ),
        (
            "jetstream",
            format!("url = \"nats://app:{PASSWORD}@127.0.0.1:{port}\"\nsubject = \"s\""),
        ),
        (
            "redis",
            format!("url = \"redis://app:{PASSWORD}@127.0.0.1:{port}/0\"\nstream = \"s\""),
        ),
        (
            "amqp",
            format!("url = \"amqp://app:{PASSWORD}@127.0.0.1:{port}/%2f\"\nexchange = \"x\"\nrouting_key = \"k\""),
        ),
        (
            "mqtt",
            format!("url = \"mqtt://app:{PASSWORD}@127.0.0.1:{port}\"\ntopic = \"t\""),
        ),
        (
            "pulsar",
            format!("url = \"pulsar://app:{PASSWORD}@127.0.0.1:{port}\"\ntopic = \"t\"\nsend_timeout_ms = 1500"),
        ),
        (
            "http",
            format!("url = \"http://app:{PASSWORD}@127.0.0.1:{port}/in?token={PASSWORD}\"\ntimeout_ms = 1500"),
        ),
        (
            "kafka",
            format!(
                "brokers = \"127.0.0.1:{port}\"\ntopic = \"t\"\ntimeout_ms = 1500\n\
                 properties = {{ \"security.protocol\" = \"SASL_PLAINTEXT\", \"sasl.mechanism\" = \"PLAIN\", \
                 \"sasl.username\" = \"app\", \"sasl.password\" = \"{PASSWORD}\" }}"
            ),
        ),
    ]
    .iter()
    .map(|(kind, options)| format!("[sinks.{kind}]\ntype = \"{kind}\"\nmax_retries = 0\n{options}\n\n"))
    .collect();
    format!(
        r#"{head}
{sinks}
[sinks.upstream]
type = "ws"
url = "ws://app:{PASSWORD}@127.0.0.1:{port}/feed?token={PASSWORD}"

[sources.events]
type = "nats"
url = "nats://app:{PASSWORD}@127.0.0.1:{port}"

[routes.probe]
path = "/probe"
filters = [{{ module = "probe" }}]
emit_sinks = [{kinds}]

[routes.relayed]
path = "/relayed"
sinks = ["upstream"]
"#,
        head = head("admin_token = \"${file:filters/admin-token}\""),
        kinds = KINDS.iter().map(|k| format!("\"{k}\"")).collect::<Vec<_>>().join(", "),
    )
}

const KINDS: [&str; 8] = ["nats", "jetstream", "redis", "amqp", "mqtt", "pulsar", "http", "kafka"];

const TOKEN: &str = "admin-token-7d1";

async fn admin_get(proxy: &Proxy, path: &str) -> (u16, String) {
    http_request(
        proxy.admin,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"),
    )
    .await
}

#[tokio::test]
async fn credentials_reach_no_log_readyz_metric_or_filter_result() {
    let closed = peers::free_port();
    let proxy = Proxy::start(
        &config(closed),
        &["probe"],
        &[("admin-token", format!("{TOKEN}\n").as_bytes())],
    );
    let mut probe = proxy.connect("/probe").await;

    let mut answers = Vec::new();
    for kind in KINDS {
        let result = emit(&mut probe, kind, "x").await;
        assert!(result.starts_with("failed "), "{kind}: {result}");
        answers.push(format!("{kind}: {result}"));
    }
    let subscribed = ask(&mut probe, "sub events orders").await;
    assert!(subscribed.starts_with("ok "), "{subscribed}");
    let (status, refused) = upgrade_status(proxy.ws, "/relayed").await;
    assert_eq!(status, 502, "{refused}");
    answers.push(refused);

    let all_down = |ready: &str| KINDS.iter().all(|kind| ready.contains(&format!("sinks.{kind}: down")));
    let mut ready = String::new();
    for _ in 0..100 {
        ready = admin_get(&proxy, "/readyz").await.1;
        if all_down(&ready) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(all_down(&ready), "every part is down, with its reason: {ready}");
    let (_, metrics) = admin_get(&proxy, "/metrics").await;
    let (_, filters) = admin_get(&proxy, "/filters").await;

    let answers = answers.join("\n");
    for (place, text) in [
        ("a filter's result", &answers),
        ("/readyz", &ready),
        ("/metrics", &metrics),
        ("/filters", &filters),
        ("the log", &proxy.logs()),
    ] {
        assert!(!text.contains(PASSWORD), "the password is in {place}:\n{text}");
    }
    assert!(
        answers.contains("***@127.0.0.1"),
        "URLs are still shown, redacted: {answers}"
    );
}

#[tokio::test]
async fn the_admin_listener_asks_for_its_token() {
    let proxy = Proxy::start(
        &config(peers::free_port()),
        &["probe"],
        &[("admin-token", format!("{TOKEN}\n").as_bytes())],
    );
    for path in ["/healthz", "/readyz", "/metrics", "/filters"] {
        let (status, body) = http_get(proxy.admin, path).await;
        assert_eq!((status, body.as_str()), (401, "admin token required\n"), "{path}");
        let wrong =
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}x\r\nConnection: close\r\n\r\n");
        assert_eq!(
            http_request(proxy.admin, &wrong).await.0,
            401,
            "{path} with a wrong token"
        );
    }
    assert_eq!(admin_get(&proxy, "/healthz").await, (200, "ok\n".to_string()));
}

#[tokio::test]
async fn a_secret_named_from_the_environment_that_is_not_set_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("framegate.toml"),
        "[sinks.n]\ntype = \"nats\"\nurl = \"nats://app:${env:FRAMEGATE_TEST_UNSET_SECRET}@127.0.0.1:1\"\nsubject = \"s\"\n",
    )
    .unwrap();
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_framegate"))
        .args(["check", "framegate.toml"])
        .current_dir(dir.path())
        .env_remove("FRAMEGATE_TEST_UNSET_SECRET")
        .output()
        .unwrap();
    assert!(!check.status.success());
    let said = String::from_utf8_lossy(&check.stderr);
    assert!(
        said.contains("sinks.n.url: ${env:FRAMEGATE_TEST_UNSET_SECRET}: no such environment variable"),
        "{said}"
    );

    let check = std::process::Command::new(env!("CARGO_BIN_EXE_framegate"))
        .args(["check", "framegate.toml"])
        .current_dir(dir.path())
        .env("FRAMEGATE_TEST_UNSET_SECRET", "s3cret")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stdout).to_string() + &String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "{said}");
    assert!(!said.contains("s3cret"), "{said}");
}
