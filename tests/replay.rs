//! `framegate replay` (docs/replay.md) as a filter author and an operator use it: every bundled
//! filter passes its fixtures (filters/NAME/replay/) through the built command, a changed
//! fixture fails with a diff naming the line, the event, the effect and the field, a route's
//! chain replays from a config file, and a hot swap is refused while a new version breaks one
//! of its module's fixtures (traffic going on, nothing lost), then taken once it is fixed.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

fn framegate(args: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_framegate"))
        .args(args)
        .output()
        .unwrap()
}

fn fixtures(filter: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("filters")
        .join(filter)
        .join("replay")
}

fn module(name: &str) -> PathBuf {
    let file = built_filters().join(format!("{name}.wasm"));
    assert!(
        file.exists(),
        "{} is missing: run scripts/build-filters",
        file.display()
    );
    file
}

#[test]
fn every_bundled_filter_passes_its_fixtures() {
    let bundled = [
        ("echo", "echo"),
        ("tag", "tag"),
        ("subscribe", "subscribe"),
        ("schema", "schema"),
        ("hydra", "hydra"),
        ("pulsar", "pulsar-ws"),
        ("query", "query"),
        ("probe", "probe"),
    ];
    for (folder, name) in bundled {
        let output = framegate(&[Path::new("replay"), &module(name), &fixtures(folder)]);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{folder}: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let cases = std::fs::read_dir(fixtures(folder))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".session.jsonl")
            })
            .count();
        assert!(cases > 0, "{folder} has no fixture");
        assert_eq!(
            stdout.lines().filter(|l| l.starts_with("ok ")).count(),
            cases,
            "{stdout}"
        );
    }
}

/// The example filter in each of the four languages (guest-sdk/examples/stamp) answers its
/// fixtures alike: scripts/build-examples copies them beside each module, named for it.
#[test]
fn the_example_filter_passes_its_fixtures_in_every_language() {
    for lang in ["rust", "c", "zig", "as"] {
        let name = format!("stamp-{lang}");
        let tests = built_filters().join(format!("{name}.tests"));
        let output = framegate(&[Path::new("replay"), &module(&name), &tests]);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{name}: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            stdout.lines().filter(|l| l.starts_with("ok ")).count(),
            3,
            "{name}: {stdout}"
        );
    }
}

#[test]
fn a_changed_fixture_fails_naming_the_event_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let expected = std::fs::read_to_string(fixtures("tag").join("tag.effects.jsonl")).unwrap();
    let changed = expected.replacen("\"[t] hi\"", "\"[t] HI\"", 1);
    assert_ne!(changed, expected);
    let effects = dir.path().join("changed.effects.jsonl");
    std::fs::write(&effects, changed).unwrap();
    let session = fixtures("tag").join("tag.session.jsonl");
    let module = module("tag");
    let replay = |extra: &[&Path]| {
        let mut args = vec![Path::new("replay"), &module, &session, Path::new("--expect"), &effects];
        args.extend_from_slice(extra);
        framegate(&args)
    };
    let output = replay(&[]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(r#"line 3 (message), effect 1 (replace): field `text`: expected "[t] HI", got "[t] hi""#),
        "{stderr}"
    );
    // A mask on that field lets the run pass.
    let output = replay(&[Path::new("--mask"), Path::new("replace.text")]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn a_routes_chain_replays_from_its_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("framegate.toml");
    std::fs::write(
        &config,
        format!(
            "[filters]\ndir = {:?}\n\n[sinks.out]\ntype = \"stdout\"\n\n[routes.chat]\npath = \"/chat/{{room}}\"\n\
             sinks = [\"out\"]\nfilters = [{{ module = \"tag\", config = {{ prefix = \"> \" }} }}, {{ module = \"echo\" }}]\n",
            built_filters()
        ),
    )
    .unwrap();
    let session = dir.path().join("chat.session.jsonl");
    std::fs::write(
        &session,
        "{\"event\":\"open\",\"path\":\"/chat/7\",\"captures\":{\"room\":\"7\"}}\n{\"event\":\"message\",\"text\":\"hi\"}\n",
    )
    .unwrap();
    let output = framegate(&[
        Path::new("replay"),
        Path::new("--config"),
        &config,
        Path::new("--route"),
        Path::new("chat"),
        &session,
    ]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let effects: Vec<serde_json::Value> = (String::from_utf8(output.stdout).unwrap().lines())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // tag first, then echo answers what tag made of it and drops it.
    let kinds: Vec<(&str, &str)> = (effects.iter())
        .map(|e| (e["effect"].as_str().unwrap(), e["filter"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(kinds, [("replace", "tag"), ("send", "echo"), ("drop", "")]);
    assert_eq!(effects[1]["text"], "> hi");
}

fn counter(letter: &str) -> String {
    include_str!("wat/counter.wat").replace("LETTER", letter)
}

/// The counter module's fixture: a message sets `count` and is answered (whatever the letter).
const FIXTURE_SESSION: &str = "{\"event\":\"open\",\"path\":\"/count\"}\n{\"event\":\"message\",\"text\":\"abcd\"}\n";
const FIXTURE_EFFECTS: &str = r#"{"line":2,"effect":"meta","filter":"counter","key":"count","value":"*"}
{"line":2,"effect":"send","filter":"counter","opcode":"binary","text":"*"}
{"line":2,"effect":"drop"}
"#;

/// Sends and reads one message at a time until `done`; every answer's version letter.
async fn talk(proxy: Arc<Proxy>, done: Arc<AtomicBool>) -> (u32, Vec<u8>) {
    let mut ws = proxy.connect("/count").await;
    let (mut sent, mut letters) = (0, Vec::new());
    while !done.load(Ordering::SeqCst) {
        ws.send(Message::text("ping")).await.unwrap();
        sent += 1;
        let answer = tokio::time::timeout(PATIENCE, ws.next()).await.expect("answer in time");
        letters.push(answer.unwrap().unwrap().into_data()[0]);
    }
    (sent, letters)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_that_breaks_a_fixture_is_refused_and_a_fixed_one_swaps() {
    let config = format!(
        "{}\n[routes.count]\npath = \"/count\"\nfilters = [{{ module = \"counter\" }}]\n",
        head("")
    );
    let counter_a = counter("A");
    let proxy = Arc::new(Proxy::start(
        &config,
        &[],
        &[
            ("counter.wat", counter_a.as_bytes()),
            ("counter.tests/basic.session.jsonl", FIXTURE_SESSION.as_bytes()),
            ("counter.tests/basic.effects.jsonl", FIXTURE_EFFECTS.as_bytes()),
        ],
    ));
    let done = Arc::new(AtomicBool::new(false));
    let client = tokio::spawn(talk(proxy.clone(), done.clone()));

    // Version B keeps its counter under another key: the fixture's `meta` effect differs.
    proxy.replace_file(
        "filters/counter.wat",
        counter("B").replace("\"count\"", "\"kount\"").as_bytes(),
    );
    let failures = "framegate_filter_reload_failures_total{filter=\"counter\"}";
    eventually("the broken version is refused", || async {
        proxy.metric(failures).await == 1.0
    })
    .await;
    let (_, filters) = http_get(proxy.admin, "/filters").await;
    assert!(
        filters.contains("replay fixture counter.tests/basic.session.jsonl failed"),
        "{filters}"
    );
    assert!(
        filters.contains(r#"line 2 (message), effect 1 (meta): field `key`: expected \"count\", got \"kount\""#),
        "{filters}"
    );
    assert!(proxy.logs().contains("counter.tests/basic.session.jsonl"));

    // Version C passes: swapped in, and the client sees it.
    proxy.replace_file("filters/counter.wat", counter("C").as_bytes());
    let reloads = "framegate_filter_reloads_total{filter=\"counter\"}";
    eventually("the fixed version swaps in", || async {
        proxy.metric(reloads).await == 1.0
    })
    .await;
    let mut ws = proxy.connect("/count").await;
    ws.send(Message::text("x")).await.unwrap();
    assert_eq!(next_message(&mut ws).await.into_data()[0], b'C');

    done.store(true, Ordering::SeqCst);
    let (sent, letters) = client.await.unwrap();
    assert_eq!(letters.len() as u32, sent, "every message answered");
    assert!(!letters.contains(&b'B'), "the refused version never served");
    let first_c = letters.iter().position(|&l| l == b'C').unwrap_or(letters.len());
    assert!(letters[..first_c].iter().all(|&l| l == b'A'), "A until the fixed swap");
    assert!(first_c > 0, "traffic flowed while the broken version was refused");
}

/// Connects with a secret in a header and in the query, as a client of an authenticated app would.
async fn connect_with_secrets(proxy: &Proxy) -> Ws {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = proxy.url("/probe?room=7&token=q-s3cret").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", "Bearer h-s3cret".parse().unwrap());
    request.headers_mut().insert("x-tenant", "acme".parse().unwrap());
    tokio_tungstenite::connect_async(request).await.unwrap().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_sessions_replay_to_the_same_effects() {
    let config = format!(
        "{}\n[sinks.out]\ntype = \"file\"\npath = \"out.jsonl\"\n\n[routes.probe]\npath = \"/probe\"\n\
         emit_sinks = [\"out\"]\nfilters = [{{ module = \"probe\" }}]\n\
         record = {{ dir = \"recorded\", max_sessions = 1, redact = [\"query.token\"] }}\n",
        head("")
    );
    let proxy = Proxy::start(&config, &["probe"], &[]);
    let mut ws = connect_with_secrets(&proxy).await;
    assert_eq!(ask(&mut ws, "set color blue").await, "ok ");
    assert_eq!(ask(&mut ws, "meta header.x-tenant").await, "acme");
    assert_eq!(emit(&mut ws, "out", "hello").await, "ok  ctx:hello"); // a file sink gives no id
    let timer = ask(&mut ws, "timer 30").await.replace("ok ", "");
    assert_eq!(next_text(&mut ws).await, format!("fired {timer}"));
    assert_eq!(ask(&mut ws, "sadd visits 2").await, "ok 2");
    send_text(&mut ws, "replace changed").await;
    send_text(&mut ws, "close 4000 bye").await;
    assert_eq!(closed_with(&mut ws).await, (4000, "bye".to_string()));
    // Only one session is recorded (max_sessions = 1).
    let mut second = proxy.connect("/probe").await;
    assert_eq!(ask(&mut second, "meta route").await, "probe");
    second.close(None).await.unwrap();

    let recorded = proxy.dir.path().join("recorded");
    eventually("the session is written", || async {
        std::fs::read_dir(&recorded).map_or(0, |d| d.count()) == 2
    })
    .await;
    let file = |suffix: &str| {
        std::fs::read_dir(&recorded)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().ends_with(suffix))
            .unwrap()
    };
    let (session, effects) = (file(".session.jsonl"), file(".effects.jsonl"));
    let text = std::fs::read_to_string(&session).unwrap();
    assert!(!text.contains("s3cret"), "a secret reached the file:\n{text}");
    assert!(text.contains("[redacted]"), "{text}");
    let recorded_effects = std::fs::read_to_string(&effects).unwrap();
    for kind in ["meta", "emit", "timer", "fire", "store_add", "replace", "close"] {
        assert!(
            recorded_effects.contains(&format!("\"effect\":\"{kind}\"")),
            "{kind}: {recorded_effects}"
        );
    }

    // The same module, outside the proxy, on the recorded session: the same effects.
    let output = Command::new(env!("CARGO_BIN_EXE_framegate"))
        .current_dir(proxy.dir.path())
        .args(["replay", "--config", "framegate.toml", "--route", "probe"])
        .arg(&session)
        .arg("--expect")
        .arg(&effects)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}{}\nsession:\n{text}\neffects:\n{recorded_effects}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
