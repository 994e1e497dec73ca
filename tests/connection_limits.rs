//! What one connection may take once it is in: its rate of messages and bytes (slowed or
//! closed, per route), and the memory of messages waiting for it (a bus subscriber that does
//! not read is closed), while other connections keep their pace and get every message.

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

#[tokio::test]
async fn a_bus_subscriber_that_never_reads_is_closed_and_holds_little_while_others_get_everything() {
    let config = format!(
        r#"{head}
[sinks.news]
type = "bus"
topic = "news"

[routes.publish]
path = "/publish"
sinks = ["news"]
max_message_size = 2097152

[routes.news]
path = "/news"
filters = [{{ module = "subscribe", config = {{ spec = "news" }} }}]
max_message_size = 2097152
"#,
        head = head("")
    );
    let proxy = Proxy::start(&config, &["subscribe"], &[]);
    let mut publisher = proxy.connect("/publish").await;
    let mut reader = proxy.connect("/news").await;
    let mut slow = proxy.connect("/news").await; // never read until the end
    // Both subscriptions are live once a message reaches the reader.
    let deadline = Instant::now() + PATIENCE;
    loop {
        publisher.send(Message::text("hello")).await.unwrap();
        let read = tokio::time::timeout(Duration::from_millis(200), reader.next()).await;
        if matches!(read, Ok(Some(Ok(Message::Text(_))))) {
            break;
        }
        assert!(Instant::now() < deadline, "the subscribers never got in");
    }
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(300), reader.next()).await {}
    let before = proxy.rss_kib();

    // 64 MiB in 1 MiB messages, each one published once the reader has the one before.
    const MESSAGES: usize = 64;
    for i in 0..MESSAGES {
        let mut payload = vec![b'x'; 1 << 20];
        payload[..8].copy_from_slice(format!("{i:08}").as_bytes());
        publisher.send(Message::binary(payload.clone())).await.unwrap();
        match next_message(&mut reader).await {
            Message::Binary(got) => assert!(got == payload, "message {i} intact"),
            other => panic!("message {i}: {other:?}"),
        }
    }
    let grown_mib = proxy.rss_kib().saturating_sub(before) / 1024;
    assert!(grown_mib < 24, "the proxy grew by {grown_mib} MiB for 64 MiB published");
    assert_eq!(proxy.metric("framegate_bus_dropped_total{topic=\"news\"}").await, 1.0);

    // The slow one finds what the sockets held, then the end (a close frame when it fitted).
    let mut got = 0;
    let ending = loop {
        match tokio::time::timeout(PATIENCE, slow.next())
            .await
            .expect("the slow one is closed")
        {
            Some(Ok(Message::Binary(_) | Message::Text(_))) => got += 1,
            Some(Ok(Message::Close(frame))) => break frame.map(|f| (u16::from(f.code), f.reason.to_string())),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break None,
        }
    };
    assert!(got < MESSAGES, "{got} messages reached the slow one");
    if let Some(close) = ending {
        assert_eq!(close, (1008, "too slow".to_string()));
    }
    // The reader is untouched.
    publisher.send(Message::text("after")).await.unwrap();
    assert_eq!(next_text(&mut reader).await, "after");
}
