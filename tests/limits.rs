//! Filters that loop, eat memory or pass wild pointers are cut off; the connection sees its
//! filter's failure policy, and every other connection and route keeps working.

mod common;

use common::*;

fn config() -> String {
    format!(
        r#"{head}
[routes.echo]
path = "/echo"
filters = [{{ module = "echo" }}]

[routes.spin]
path = "/spin"
filters = [{{ module = "spin", timeout_ms = 50 }}]

[routes.hog]
path = "/hog"
filters = [{{ module = "hog", memory_limit_mb = 8, timeout_ms = 5000 }}]

[routes.wild]
path = "/wild"
filters = [{{ module = "wild" }}]

[routes.spin_open]
path = "/spin-open"
filters = [{{ module = "spin", on_error = "fail_open", timeout_ms = 20 }}, {{ module = "echo" }}]
"#,
        head = head("")
    )
}

#[tokio::test]
async fn runaway_filters_are_cut_off_and_others_keep_serving() {
    let proxy = Proxy::start(
        &config(),
        &["echo"],
        &[
            ("spin.wat", include_bytes!("wat/spin.wat")),
            ("hog.wat", include_bytes!("wat/hog.wat")),
            ("wild.wat", include_bytes!("wat/wild.wat")),
        ],
    );
    let mut bystander = proxy.connect("/echo").await;
    send_text(&mut bystander, "before").await;
    assert_eq!(next_text(&mut bystander).await, "before");

    let cases: [(&str, &str, &str); 5] = [
        ("/spin", "x", "spin"),
        ("/hog", "x", "hog"),
        ("/wild", "read", "wild"),
        ("/wild", "send", "wild"),
        ("/wild", "meta", "wild"),
    ];
    for (path, message, filter) in cases {
        let mut victim = proxy.connect(path).await;
        send_text(&mut victim, message).await;
        let (code, reason) = closed_with(&mut victim).await;
        assert_eq!(
            (code, reason.as_str()),
            (1011, format!("filter {filter} failed").as_str()),
            "{path} {message}"
        );
        // The proxy, the bystander and its route are untouched.
        send_text(&mut bystander, path).await;
        assert_eq!(next_text(&mut bystander).await, path);
    }

    // fail_open skips the looping filter: the message reaches the echo filter after it.
    let mut open = proxy.connect("/spin-open").await;
    for i in 0..3 {
        send_text(&mut open, &format!("m{i}")).await;
        assert_eq!(next_text(&mut open).await, format!("m{i}"));
    }

    let failures =
        |filter: &str, kind: &str| format!("framegate_filter_failures_total{{filter=\"{filter}\",kind=\"{kind}\"}}");
    assert_eq!(proxy.metric(&failures("spin", "timeout")).await, 4.0);
    assert_eq!(proxy.metric(&failures("hog", "memory")).await, 1.0);
    assert_eq!(proxy.metric(&failures("wild", "trap")).await, 3.0);
    assert!(proxy.logs().contains("filter passed a pointer outside its memory"));
}

/// A call that fails leaves the connection's metadata as it was before that call, even on an
/// instance whose `fg_init` changed metadata of its own (on a connection of its own).
#[tokio::test]
async fn a_failed_call_keeps_the_connections_metadata() {
    let config = format!(
        "{head}\n[routes.keep]\npath = \"/keep\"\nfilters = [{{ module = \"meta_keeper\", on_error = \"fail_open\" }}]\n",
        head = head("")
    );
    let proxy = Proxy::start(
        &config,
        &[],
        &[("meta_keeper.wat", include_bytes!("wat/meta_keeper.wat"))],
    );
    let mut client = proxy.connect("/keep").await;
    send_text(&mut client, "trap").await;
    send_text(&mut client, "x").await;
    assert_eq!(next_text(&mut client).await, "keep");
    let trapped = "framegate_filter_failures_total{filter=\"meta_keeper\",kind=\"trap\"}";
    assert_eq!(proxy.metric(trapped).await, 1.0);
}
