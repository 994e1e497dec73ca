use serde_json::{Value, json};

use super::*;

/// Emits every message to `out` (key `k`, context `c`), replaces it with `R`, sets `seen`, and
/// closes on a message starting with `x`; sets a 100 ms timer at the open that sends `now_ms`;
/// answers a result with its detail.
const MODULE: &str = r#"(module
  (import "framegate" "read" (func $read (param i32 i32 i32 i32) (result i32)))
  (import "framegate" "send" (func $send (param i32 i32 i32) (result i32)))
  (import "framegate" "emit" (func $emit (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i64)))
  (import "framegate" "replace" (func $replace (param i32 i32) (result i32)))
  (import "framegate" "meta_set" (func $meta_set (param i32 i32 i32 i32) (result i32)))
  (import "framegate" "set_timer" (func $set_timer (param i32) (result i64)))
  (import "framegate" "now_ms" (func $now_ms (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "out")
  (data (i32.const 16) "k")
  (data (i32.const 20) "c")
  (data (i32.const 24) "R")
  (data (i32.const 32) "seen")
  (data (i32.const 40) "1")
  (func (export "fg_abi_v1"))
  (func (export "fg_on_open") (param i64) (result i32)
    (drop (call $set_timer (i32.const 100)))
    (i32.const 0))
  (func (export "fg_on_message") (param i64 i32 i32 i32) (result i32)
    (drop (call $read (i32.const 0) (i32.const 0) (i32.const 1000) (local.get 3)))
    (drop (call $emit (i32.const 0) (i32.const 3) (i32.const 16) (i32.const 1) (i32.const 1000) (local.get 3)
                      (i32.const 0) (i32.const 0) (i32.const 20) (i32.const 1)))
    (drop (call $replace (i32.const 24) (i32.const 1)))
    (drop (call $meta_set (i32.const 32) (i32.const 4) (i32.const 40) (i32.const 1)))
    (if (result i32) (i32.eq (i32.load8_u (i32.const 1000)) (i32.const 120))
      (then (i32.const 2)) (else (i32.const 0))))
  (func (export "fg_on_result") (param i64 i64 i32 i32)
    (drop (call $read (i32.const 2) (i32.const 0) (i32.const 200) (local.get 3)))
    (drop (call $send (i32.const 1) (i32.const 200) (local.get 3))))
  (func (export "fg_on_timer") (param i64 i64)
    (i64.store (i32.const 300) (call $now_ms))
    (drop (call $send (i32.const 2) (i32.const 300) (i32.const 8)))))"#;

fn module_dir() -> (tempfile::TempDir, Subject) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("probe.wat"), MODULE).unwrap();
    let subject = Subject::Module {
        dir: dir.path().to_path_buf(),
        name: "probe".into(),
    };
    (dir, subject)
}

fn kinds(replayed: &Replayed) -> Vec<String> {
    (replayed.effects.iter())
        .map(|e| e["effect"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_session_replays_to_its_effects_in_order() {
    let (_dir, subject) = module_dir();
    let session = r#"{"event":"open","sinks":["out"],"clock_ms":65180}
{"event":"message","text":"hi"}
# a comment line still counts
{"event":"result","emit":1,"detail":"id-9"}
{"event":"time","at":150}
{"event":"message","text":"x"}
"#;
    let replayed = replay(&subject, session).unwrap();
    assert_eq!(
        kinds(&replayed),
        [
            "timer", "emit", "replace", "meta", "pass", "send", "fire", "send", "emit", "replace", "meta", "close"
        ]
    );
    let effects = &replayed.effects;
    assert_eq!(
        effects[0],
        json!({"line": 1, "effect": "timer", "filter": "probe", "id": 1, "ms": 100})
    );
    assert_eq!(
        effects[1],
        json!({"line": 2, "effect": "emit", "filter": "probe", "ticket": 2, "sink": "out", "key": "k",
               "context": "c", "text": "hi"})
    );
    assert_eq!(
        effects[4],
        json!({"line": 2, "effect": "pass", "dir": "in", "opcode": "text", "text": "R"})
    );
    // The result goes back with the emit's ticket; the filter answers with its detail.
    assert_eq!(effects[5]["line"], 4);
    assert_eq!(effects[5]["text"], "id-9");
    // The timer fires at its due time, on the virtual clock: now_ms = clock_ms + 100 (0xff00: not UTF-8, so base64).
    assert_eq!(effects[6], json!({"line": 5, "effect": "fire", "id": 1, "at": 100}));
    let now = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, 65280i64.to_le_bytes());
    assert_eq!(effects[7]["base64"], Value::from(now));
    assert_eq!(
        effects[11],
        json!({"line": 6, "effect": "close", "code": 1000, "reason": ""})
    );
    assert_eq!(replayed.events.get(&4).map(String::as_str), Some("result"));
}

#[test]
fn explicit_timers_fire_only_when_told_and_time_never_goes_back() {
    let (_dir, subject) = module_dir();
    let session = r#"{"event":"open","timers":"explicit"}
{"event":"time","at":500}
{"event":"timer","id":1,"at":501}
"#;
    let replayed = replay(&subject, session).unwrap();
    assert_eq!(kinds(&replayed), ["timer", "fire", "send"]);
    let back = "{\"event\":\"open\"}\n{\"event\":\"time\",\"at\":50}\n{\"event\":\"time\",\"at\":40}\n";
    let error = replay(&subject, back).unwrap_err().to_string();
    assert!(error.starts_with("session line 3: time goes back"), "{error}");
}

#[test]
fn session_mistakes_name_their_line() {
    let (_dir, subject) = module_dir();
    let cases = [
        (
            "{\"event\":\"message\",\"text\":\"a\"}\n",
            "session line 1: a session starts with an `open` event",
        ),
        (
            "{\"event\":\"open\"}\n{\"event\":\"result\",\"emit\":1}\n",
            "session line 2: there is no emit 1",
        ),
        (
            "{\"event\":\"open\"}\n{\"event\":\"message\"}\n",
            "session line 2: a message needs",
        ),
        (
            "{\"event\":\"open\"}\n{\"event\":\"message\",\"text\":\"x\"}\n{\"event\":\"message\",\"text\":\"y\"}\n",
            "session line 3: a filter closed the connection at line 2",
        ),
        ("{\"event\":\"open\"}\nnot json\n", "session line 2: expected"),
    ];
    for (session, expected) in cases {
        let error = replay(&subject, session).unwrap_err().to_string();
        assert!(error.starts_with(expected), "{session}: {error}");
    }
}
