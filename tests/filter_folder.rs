//! What the filter folder tells an author at /filters: a `.wasm` file that is not Wasm is named
//! as such (not with the text format parser's complaint), a refusal is forgotten once the file
//! is back to the serving version, and a file no route refers to is listed as unused.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// /filters as JSON: the entry of module `name`, if listed.
async fn listed(proxy: &Proxy, name: &str) -> Option<serde_json::Value> {
    let (status, body) = http_get(proxy.admin, "/filters").await;
    assert_eq!(status, 200, "{body}");
    let modules: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    modules.into_iter().find(|m| m["name"] == name)
}

async fn reload_error(proxy: &Proxy, name: &str) -> Option<String> {
    listed(proxy, name).await.unwrap()["last_reload_error"]
        .as_str()
        .map(str::to_string)
}

async fn upper_answers(proxy: &Proxy) {
    let mut ws = proxy.connect("/upper").await;
    ws.send(Message::text("still served")).await.unwrap();
    let answer = tokio::time::timeout(PATIENCE, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(answer, Message::text("STILL SERVED"));
}

#[tokio::test]
async fn a_file_that_is_not_wasm_is_named_so_and_putting_back_the_serving_version_clears_it() {
    let config = format!(
        "{}\n[routes.upper]\npath = \"/upper\"\nfilters = [{{ module = \"upper\" }}, {{ module = \"echo\" }}]\n",
        head("")
    );
    let proxy = Proxy::start(&config, &["upper", "echo"], &[]);
    let serving = std::fs::read(proxy.filter_dir().join("upper.wasm")).unwrap();

    proxy.replace_file("filters/upper.wasm", b"hello: this is a text file, not a module\n");
    let failures = "framegate_filter_reload_failures_total{filter=\"upper\"}";
    eventually("the file refused", || async { proxy.metric(failures).await == 1.0 }).await;
    let error = reload_error(&proxy, "upper").await.expect("a reload error");
    assert!(error.contains("not a Wasm module (bad magic"), "{error}");
    assert!(!error.contains("utf-8"), "the text parser's complaint: {error}");
    upper_answers(&proxy).await;

    // Non-UTF-8 bytes, where the text parser said "input bytes aren't valid utf-8".
    proxy.replace_file("filters/upper.wasm", &[0xff, 0xfe, 0x00, 0x01, 0x02]);
    eventually("the second file refused", || async {
        proxy.metric(failures).await == 2.0
    })
    .await;
    let error = reload_error(&proxy, "upper").await.expect("a reload error");
    assert!(error.contains("not a Wasm module (bad magic"), "{error}");

    proxy.replace_file("filters/upper.wasm", &serving);
    eventually("the refusal forgotten once the serving version is back", || async {
        reload_error(&proxy, "upper").await.is_none()
    })
    .await;
    assert_eq!(proxy.metric(failures).await, 2.0);
    assert_eq!(
        proxy.metric("framegate_filter_reloads_total{filter=\"upper\"}").await,
        0.0,
        "the same version: nothing swapped"
    );
    upper_answers(&proxy).await;
}

#[tokio::test]
async fn a_module_file_no_route_refers_to_is_listed_as_unused() {
    let config = format!(
        "{}\n[routes.upper]\npath = \"/upper\"\nfilters = [{{ module = \"upper\" }}]\n",
        head("")
    );
    let greet: &[u8] = include_bytes!("wat/greet.wat");
    let proxy = Proxy::start(
        &config,
        &["upper", "echo"],
        &[("greet.wat", greet), (".half.wasm", b"\0asm")],
    );
    let upper = listed(&proxy, "upper").await.expect("upper listed");
    assert_eq!(upper["unused"], false);
    assert!(upper["version_hash"].is_string(), "{upper}");
    for name in ["echo", "greet"] {
        let module = listed(&proxy, name).await.unwrap_or_else(|| panic!("{name} listed"));
        assert_eq!(module["unused"], true, "{module}");
        assert!(module["version_hash"].is_null(), "never loaded: {module}");
    }
    assert!(
        listed(&proxy, ".half").await.is_none(),
        "a dotfile is a file being written"
    );
}
