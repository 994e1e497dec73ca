//! `framegate check` names the file, the key and what was expected; a changed config file is
//! applied live without dropping connections on routes that did not change.

mod common;

use std::process::Command;

use common::*;

/// Runs `framegate check framegate.toml` in a folder with the bundled echo filter: (ok, output).
fn check(config: &str) -> (bool, String) {
    check_with(config, &["echo"])
}

/// Runs `framegate check framegate.toml` in a folder with these bundled filters: (ok, output).
fn check_with(config: &str, filters: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("filters")).unwrap();
    for name in filters {
        let file = format!("{name}.wasm");
        std::fs::copy(built_filters().join(&file), dir.path().join("filters").join(&file)).unwrap();
    }
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

#[tokio::test]
async fn a_reload_that_fails_at_its_last_step_changes_nothing() {
    let first = format!(
        "{}\n[sinks.out]\ntype = \"file\"\npath = \"first.jsonl\"\n\
         [routes.a]\npath = \"/a\"\nfilters = [{{ module = \"probe\" }}]\nsinks = [\"out\"]\n",
        head("")
    );
    let proxy = Proxy::start(&first, &["probe"], &[]);
    let mut kept = proxy.connect("/a").await;

    // Everything changes (a sink's file, a new sink, a new broker source, a fed route and its
    // feed), but the last route's filter cannot load: the routes are the last thing built.
    let second = |broken: &str| {
        format!(
            "{}\n[sinks.out]\ntype = \"file\"\npath = \"second.jsonl\"\n\
             [sinks.extra]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:1\"\nstream = \"s\"\n\
             [sources.extra]\ntype = \"nats\"\nurl = \"nats://127.0.0.1:1\"\n\
             [sources.feed]\ntype = \"ws\"\nurl = \"ws://127.0.0.1:1/\"\n\
             [routes.a]\npath = \"/a\"\nfilters = [{{ module = \"probe\" }}]\nsinks = [\"out\", \"extra\"]\n\
             [routes.fed]\nfeed = \"feed\"\nsinks = [\"out\"]\n{broken}",
            head("")
        )
    };
    let broken = "[routes.z]\npath = \"/z\"\nfilters = [{ module = \"missing\" }]\n";
    proxy.replace_file("framegate.toml", second(broken).as_bytes());
    eventually("the reload is refused", || async {
        proxy.logs().contains("config reload refused")
    })
    .await;
    assert!(proxy.logs().contains("routes.z: filter module"), "{}", proxy.logs());

    // The old sinks, sources, routes and health are all still there, and nothing new is.
    let mut fresh = proxy.connect("/a").await;
    for ws in [&mut kept, &mut fresh] {
        let ticket = ask(ws, "emit out kept").await;
        assert!(ticket.starts_with("ok "), "{ticket}");
        assert!(next_text(ws).await.contains(" ok "), "delivered");
    }
    assert!(
        ask(&mut fresh, "sub extra x").await.starts_with("err "),
        "no source extra"
    );
    assert!(ask(&mut fresh, "sub bus x").await.starts_with("ok "));
    let written = std::fs::read_to_string(proxy.dir.path().join("first.jsonl")).unwrap();
    assert_eq!(written.lines().count(), 2, "{written}");
    assert!(!proxy.dir.path().join("second.jsonl").exists());
    assert_eq!(upgrade_status(proxy.ws, "/z").await.0, 404);
    let (_, metrics) = http_get(proxy.admin, "/metrics").await;
    for part in ["sinks.extra", "sources.extra", "sources.feed"] {
        assert!(!metrics.contains(part), "{part} is in /metrics:\n{metrics}");
    }
    assert_eq!(http_get(proxy.admin, "/readyz").await, (200, "ready\n".to_string()));

    // The same change without the broken route applies whole.
    proxy.replace_file("framegate.toml", second("").as_bytes());
    eventually("the new sink is running", || async {
        http_get(proxy.admin, "/metrics").await.1.contains("sinks.extra")
    })
    .await;
    let mut after = proxy.connect("/a").await;
    assert!(ask(&mut after, "sub extra x").await.starts_with("ok "));
    let ticket = ask(&mut after, "emit out changed").await;
    assert!(ticket.starts_with("ok "), "{ticket}");
    eventually("the changed sink writes its new file", || async {
        std::fs::read_to_string(proxy.dir.path().join("second.jsonl")).is_ok_and(|t| t.contains("changed"))
    })
    .await;
}

#[tokio::test]
async fn a_config_file_caught_empty_or_half_written_is_not_applied() {
    let route =
        |name: &str, path: &str| format!("[routes.{name}]\npath = \"{path}\"\nfilters = [{{ module = \"echo\" }}]\n");
    let first = format!("{}\n{}{}", head(""), route("a", "/a"), route("b", "/b"));
    let proxy = Proxy::start(&first, &["echo"], &[]);
    let file = proxy.dir.path().join("framegate.toml");
    let refused = "framegate_config_reloads_refused_total";

    // Written in place, as `>` in a shell or a careless tool does: first emptied...
    std::fs::write(&file, "").unwrap();
    // The log line is waited for: it may reach the log file after the metric counts the refusal.
    eventually("the empty config is refused", || async {
        (proxy.logs()).contains("refusing an empty config (no routes); keeping the current one")
    })
    .await;
    assert!(proxy.metric(refused).await >= 1.0);
    for path in ["/a", "/b"] {
        assert_eq!(upgrade_status(proxy.ws, path).await.0, 101, "{path} still served");
    }

    // ...then half written, cut in the middle of a line.
    let second = format!(
        "{}\n{}{}{}",
        head(""),
        route("a", "/a"),
        route("b", "/b"),
        route("c", "/c")
    );
    let half = &second[..second.len() / 2];
    assert!(!half.ends_with('\n'));
    std::fs::write(&file, half).unwrap();
    eventually("the half-written config is refused", || async {
        proxy.logs().contains("(syntax): TOML parse error")
    })
    .await;
    for path in ["/a", "/b"] {
        assert_eq!(upgrade_status(proxy.ws, path).await.0, 101, "{path} still served");
    }

    // Whole again: applied.
    std::fs::write(&file, &second).unwrap();
    eventually("route c is served", || async {
        upgrade_status(proxy.ws, "/c").await.0 == 101
    })
    .await;
    assert!(proxy.metric(refused).await >= 2.0);
}

#[test]
fn check_refuses_a_hydra_ingestor_whose_sink_is_not_on_its_route() {
    let config = |ingestor_sink: &str| {
        format!(
            "{}\n[sinks.out]\ntype = \"file\"\npath = \"out.jsonl\"\n[sinks.elsewhere]\ntype = \"stdout\"\n\
             [routes.h]\npath = \"/h\"\nsinks = [\"out\"]\n\
             filters = [{{ module = \"hydra\", config = {{ ingestors = {{ k = {{ sink = \"{ingestor_sink}\" }} }} }} }}]\n",
            head("")
        )
    };
    let (ok, output) = check_with(&config("out"), &["hydra"]);
    assert!(ok, "{output}");
    // Defined in [sinks] but not on the route, or nowhere: every payload would get 500.
    for missing in ["elsewhere", "nope"] {
        let (ok, output) = check_with(&config(missing), &["hydra"]);
        assert!(!ok, "{output}");
        let expected = format!(
            "routes.h: filter module filters/hydra.wasm: fg_init with config {{\"ingestors\":{{\"k\":{{\"sink\":\"{missing}\"}}}}}}: fg_init refused the config (returned 1) hydra config: ingestors.k.sink: no sink \"{missing}\" on this route (its sinks: out)"
        );
        assert!(output.contains(&expected), "expected {expected:?} in:\n{output}");
    }
}
