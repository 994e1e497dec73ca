//! A filter that spins holds only its own connection: the other connections of its worker
//! thread go on while it runs to its deadline. A filter that keeps failing trips its circuit
//! breaker, which keeps it from being called for a while and then lets it try again.
//! A filter that greets in `fg_on_open` is heard before the client says anything.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const SPIN: (&str, &[u8]) = ("spin.wat", include_bytes!("wat/spin_on_s.wat"));

fn config(server: &str, filters: &str, spin_timeout_ms: u64) -> String {
    format!(
        r#"{head}{filters}
[routes.echo]
path = "/echo"
filters = [{{ module = "echo" }}]

[routes.spin]
path = "/spin"
filters = [{{ module = "spin", timeout_ms = {spin_timeout_ms} }}]
"#,
        head = head(server)
    )
}

/// The breaker of module `name` as /filters shows it, and how often it opened.
async fn breaker(proxy: &Proxy, name: &str) -> (String, u64) {
    let (_, body) = http_get(proxy.admin, "/filters").await;
    let modules: Value = serde_json::from_str(&body).unwrap();
    let module = modules
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("{name} in {body}"));
    (
        module["breaker"].as_str().unwrap_or("none").to_string(),
        module["breaker_trips"].as_u64().unwrap(),
    )
}

async fn spin_once(proxy: &Proxy, message: &str) -> (u16, String) {
    let mut victim = proxy.connect("/spin").await;
    send_text(&mut victim, message).await;
    closed_with(&mut victim).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spinning_filter_holds_only_its_own_connection() {
    // One worker thread: the spinning call and the bystander share it.
    let proxy = Proxy::start(
        &config("workers = 1", "breaker_failures = 0\n", 200),
        &["echo"],
        &[SPIN],
    );
    let mut bystander = proxy.connect("/echo").await;
    send_text(&mut bystander, "warm").await;
    assert_eq!(next_text(&mut bystander).await, "warm");

    let runaways = {
        let (ws, admin) = (proxy.ws, proxy.admin);
        tokio::spawn(async move {
            for _ in 0..20 {
                let (mut victim, _) = tokio_tungstenite::connect_async(format!("ws://{ws}/spin"))
                    .await
                    .unwrap();
                send_text(&mut victim, "spin").await;
                assert_eq!(closed_with(&mut victim).await, (1011, "filter spin failed".into()));
            }
            admin
        })
    };
    let mut round_trips = Vec::new();
    while !runaways.is_finished() {
        let sent = Instant::now();
        send_text(&mut bystander, "ping").await;
        assert_eq!(next_text(&mut bystander).await, "ping");
        round_trips.push(sent.elapsed());
    }
    runaways.await.unwrap();
    round_trips.sort();
    let p99 = round_trips[round_trips.len() * 99 / 100];
    println!(
        "bystander during 20 calls spinning to their 200 ms deadline: {} round trips, p50 {:?}, p99 {:?}, max {:?}",
        round_trips.len(),
        round_trips[round_trips.len() / 2],
        p99,
        round_trips.last().unwrap()
    );
    assert_eq!(
        proxy
            .metric("framegate_filter_failures_total{filter=\"spin\",kind=\"timeout\"}")
            .await,
        20.0
    );
    // 20 calls of 200 ms each: a bystander held by them would wait up to 200 ms at each (p99
    // about 200 ms). Once a call has run 2 ms, its worker's other connections go on elsewhere:
    // p99 under 5 ms here even with the machine's cores busy with builds; the bound leaves room.
    assert!(round_trips.len() > 100, "{} round trips", round_trips.len());
    assert!(p99 < Duration::from_millis(10), "bystander p99 {p99:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_filter_trips_its_breaker_then_is_tried_again() {
    let proxy = Proxy::start(
        &config(
            "",
            "breaker_failures = 3\nbreaker_window_ms = 60000\nbreaker_open_ms = 1500\n",
            20,
        ),
        &["echo"],
        &[SPIN],
    );
    let failures = |kind: &str| format!("framegate_filter_failures_total{{filter=\"spin\",kind=\"{kind}\"}}");
    let breaker_open = "framegate_filter_breaker_open{filter=\"spin\"}";
    let mut answering = proxy.connect("/spin").await;
    send_text(&mut answering, "x").await;
    assert_eq!(next_text(&mut answering).await, "x");
    assert_eq!(breaker(&proxy, "spin").await, ("closed".into(), 0));

    for _ in 0..3 {
        assert_eq!(spin_once(&proxy, "spin").await, (1011, "filter spin failed".into()));
    }
    assert_eq!(breaker(&proxy, "spin").await, ("open".into(), 1));
    assert_eq!(proxy.metric(breaker_open).await, 1.0);
    assert_eq!(
        proxy
            .metric("framegate_filter_breaker_trips_total{filter=\"spin\"}")
            .await,
        1.0
    );

    // Open: the filter is not called, whatever the message; the route answers per on_error.
    send_text(&mut answering, "x").await;
    assert_eq!(closed_with(&mut answering).await, (1011, "filter spin failed".into()));
    assert_eq!(spin_once(&proxy, "spin").await, (1011, "filter spin failed".into()));
    assert_eq!(proxy.metric(&failures("timeout")).await, 3.0);
    assert_eq!(proxy.metric(&failures("breaker_open")).await, 2.0);
    // Other routes are untouched.
    let mut echo = proxy.connect("/echo").await;
    send_text(&mut echo, "fine").await;
    assert_eq!(next_text(&mut echo).await, "fine");

    // After the open period, the next call decides: it succeeds, the breaker closes.
    eventually("the breaker half open", || async {
        breaker(&proxy, "spin").await.0 == "half_open"
    })
    .await;
    let mut again = proxy.connect("/spin").await;
    send_text(&mut again, "y").await;
    assert_eq!(next_text(&mut again).await, "y");
    assert_eq!(breaker(&proxy, "spin").await, ("closed".into(), 1));
    assert_eq!(proxy.metric(breaker_open).await, 0.0);
    assert_eq!(proxy.metric(&failures("timeout")).await, 3.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_greeting_from_fg_on_open_reaches_the_client_before_it_sends_anything() {
    let config = format!(
        "{head}\n[routes.greet]\npath = \"/greet\"\nfilters = [{{ module = \"greet\" }}]\n",
        head = head("")
    );
    let proxy = Proxy::start(&config, &[], &[("greet.wat", include_bytes!("wat/greet.wat"))]);
    let mut client = proxy.connect("/greet").await;
    let greeted = Instant::now();
    let greeting = tokio::time::timeout(Duration::from_millis(100), next_text(&mut client))
        .await
        .expect("greeted within 100 ms of the upgrade");
    assert_eq!(greeting, "hello");
    println!("greeting read {:?} after the upgrade", greeted.elapsed());
}
