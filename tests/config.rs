//! `framegate check` names the file, the key and what was expected; a changed config file is
//! applied live without dropping connections on routes that did not change.

mod common;

use std::process::Command;

use common::*;

/// Runs `framegate check framegate.toml` in a folder with the bundled echo filter: (ok, output).
fn check(config: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("filters")).unwrap();
    std::fs::copy(built_filters().join("echo.wasm"), dir.path().join("filters/echo.wasm")).unwrap();
    std::fs::write(dir.path().join("framegate.toml"), config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_framegate"))
        .args(["check", "framegate.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn check_accepts_a_good_file_and_names_what_is_wrong_in_a_bad_one() {
    let good = format!(
        "{}\n[routes.e]\npath = \"/e\"\nfilters = [{{ module = \"echo\" }}]\n",
        head("")
    );
    assert_eq!(check(&good), (true, "framegate.toml: ok\n".to_string()));

    let cases = [
        (
            "[routes.e]\npath = \"/e\"\nfilterz = []\n",
            "framegate.toml: (syntax): TOML parse error at line",
        ),
        ("[routes.e]\npath = \"/e\"\nfilterz = []\n", "unknown field `filterz`"),
        (
            "[routes.e]\npath = \"/e\"\nsinks = [\"out\"]\n",
            "framegate.toml: routes.e.sinks[0]: no sink named \"out\" in [sinks]",
        ),
        (
            "[sinks.out]\ntype = \"kafkaa\"\n",
            "framegate.toml: sinks.out.type: unknown sink type \"kafkaa\"",
        ),
        (
            "[sinks.out]\ntype = \"file\"\n",
            "framegate.toml: sinks.out: missing field `path`",
        ),
        (
            "[sinks.up]\ntype = \"ws\"\nurl = \"http://x\"\n",
            "framegate.toml: sinks.up: url: expected a ws:// or wss:// URL",
        ),
        (
            "[routes.e]\npath = \"e\"\n",
            "framegate.toml: routes.e.path: expected a path starting with '/'",
        ),
        (
            "[routes.e]\npath = \"/e\"\nfilters = [{ module = \"echo\", memory_limit_mb = 0 }]\n",
            "framegate.toml: routes.e.filters[0].memory_limit_mb: expected 1 to 256",
        ),
        (
            "[routes.e]\npath = \"/e\"\nfilters = [{ module = \"missing\" }]\n",
            "routes.e: filter module filters/missing.wasm: cannot read",
        ),
        (
            "[sinks.up]\ntype = \"ws\"\nurl = \"ws://x/\"\n[routes.r]\npath = \"/r\"\nsinks = [\"up\"]\nrelay = \"bytes\"\nfilters = [{ module = \"echo\" }]\n",
            "framegate.toml: routes.r.relay: \"bytes\" needs a route with no filters and a single ws sink",
        ),
        (
            "[sinks.a]\ntype = \"stdout\"\ndead_letter = \"b\"\n[sinks.b]\ntype = \"stdout\"\ndead_letter = \"a\"\n",
            "dead letters go round in a circle",
        ),
    ];
    for (body, expected) in cases {
        let (ok, output) = check(&format!("{}\n{body}", head("")));
        assert!(!ok, "accepted:\n{body}");
        assert!(
            output.contains(expected),
            "for\n{body}\nexpected {expected:?} in:\n{output}"
        );
    }
}

#[tokio::test]
async fn a_changed_config_applies_live() {
    let route =
        |name: &str, path: &str| format!("[routes.{name}]\npath = \"{path}\"\nfilters = [{{ module = \"echo\" }}]\n");
    let first = format!("{}\n{}{}", head(""), route("a", "/a"), route("b", "/b"));
    let proxy = Proxy::start(&first, &["echo"], &[]);
    let mut kept = proxy.connect("/a").await;
    let mut changed = proxy.connect("/b").await;

    let second = format!(
        "{}\n{}{}{}",
        head(""),
        route("a", "/a"),
        route("b", "/b2"),
        route("c", "/c")
    );
    proxy.replace_file("framegate.toml", second.as_bytes());
    eventually("route c is served", || async {
        upgrade_status(proxy.ws, "/c").await.0 == 101
    })
    .await;
    assert_eq!(upgrade_status(proxy.ws, "/b").await.0, 404);
    assert_eq!(upgrade_status(proxy.ws, "/b2").await.0, 101);
    // Live connections carry on: the unchanged route's, and the changed route's on its old config.
    for ws in [&mut kept, &mut changed] {
        send_text(ws, "still here").await;
        assert_eq!(next_text(ws).await, "still here");
    }

    proxy.replace_file("framegate.toml", b"[routes.broken\n");
    eventually("the broken config is refused", || async {
        proxy.logs().contains("config reload refused")
    })
    .await;
    assert_eq!(upgrade_status(proxy.ws, "/c").await.0, 101, "the running config stays");
    send_text(&mut kept, "after").await;
    assert_eq!(next_text(&mut kept).await, "after");
}
