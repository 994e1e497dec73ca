//! What one connection may take once it is in: its rate of messages and bytes (slowed or
//! closed, per route), while other connections keep their pace.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

fn rate_config() -> String {
    format!(
        r#"{head}
[routes.echo]
path = "/echo"
filters = [{{ module = "echo" }}]

[routes.flood]
path = "/flood"
filters = [{{ module = "echo" }}]
rate_limit = {{ messages_per_s = 100, messages_burst = 10 }}

[routes.strict]
path = "/strict"
filters = [{{ module = "echo" }}]
rate_limit = {{ bytes_per_s = 10000, bytes_burst = 20000, action = "close" }}
"#,
        head = head("")
    )
}

/// The median of a few round trips on `ws`.
async fn median_round_trip(ws: &mut Ws, count: usize) -> Duration {
    let mut times = Vec::new();
    for i in 0..count {
        let start = Instant::now();
        send_text(ws, &format!("ping {i}")).await;
        assert_eq!(next_text(ws).await, format!("ping {i}"));
        times.push(start.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    times.sort();
    times[count / 2]
}

#[tokio::test]
async fn a_flooding_connection_is_slowed_to_its_rate_while_a_bystander_keeps_its_pace() {
    let proxy = Proxy::start(&rate_config(), &["echo"], &[]);
    let mut bystander = proxy.connect("/echo").await;
    let calm = median_round_trip(&mut bystander, 10).await;

    // 300 messages as fast as the client can write them; the echoes show the pace the proxy read them at.
    let (mut to_proxy, mut from_proxy) = proxy.connect("/flood").await.split();
    const FLOOD: usize = 300;
    let start = Instant::now();
    let writer = tokio::spawn(async move {
        for i in 0..FLOOD {
            to_proxy.send(Message::text(format!("flood {i}"))).await.unwrap();
        }
        to_proxy
    });
    let reader = tokio::spawn(async move {
        for i in 0..FLOOD {
            let message = tokio::time::timeout(PATIENCE, from_proxy.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!(message.into_text().unwrap().as_str(), format!("flood {i}"));
        }
    });
    let during = median_round_trip(&mut bystander, 20).await;
    reader.await.unwrap();
    let elapsed = start.elapsed();
    let _ = writer.await.unwrap();

    // The burst (10) at once, the other 290 at 100/s: 2.9 s at least, however fast the machine.
    let rate = FLOOD as f64 / elapsed.as_secs_f64();
    assert!(
        elapsed >= Duration::from_millis(2800),
        "{FLOOD} messages in {elapsed:?}: {rate:.0}/s"
    );
    assert!(rate > 50.0, "slowed to its limit, not stopped: {rate:.0}/s");
    // The bystander's round trips stay low (a generous bound: a debug build on a busy machine).
    assert!(
        during < calm + Duration::from_millis(200),
        "bystander median {during:?} during the flood, {calm:?} before"
    );
    let slowed = proxy
        .metric("framegate_rate_limited_total{route=\"flood\",action=\"slow\"}")
        .await;
    assert!(slowed >= 250.0, "{slowed}");
}

#[tokio::test]
async fn a_connection_past_its_byte_rate_is_closed_with_1008_when_so_configured() {
    let proxy = Proxy::start(&rate_config(), &["echo"], &[]);
    let mut bystander = proxy.connect("/echo").await;
    let mut ws = proxy.connect("/strict").await;
    let kilobyte = "k".repeat(1000);
    for _ in 0..100 {
        if ws.send(Message::text(kilobyte.clone())).await.is_err() {
            break;
        }
    }
    assert_eq!(
        closed_with(&mut ws).await,
        (1008, "byte rate over the limit".to_string())
    );
    let closed = proxy
        .metric("framegate_rate_limited_total{route=\"strict\",action=\"close\"}")
        .await;
    assert_eq!(closed, 1.0);
    send_text(&mut bystander, "still here").await;
    assert_eq!(next_text(&mut bystander).await, "still here");
}
