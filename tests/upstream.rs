//! The `ws` sink: each client gets its own upstream connection; client messages go up after
//! the chain, upstream messages come down through it (last filter first).

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// An upstream that greets, echoes, records what it got, and hangs up on "bye".
async fn upstream() -> (std::net::SocketAddr, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen_tx, seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen_tx = seen_tx.clone();
            tokio::spawn(async move {
                let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
                ws.send(Message::text("welcome")).await.unwrap();
                while let Some(Ok(message)) = ws.next().await {
                    let Message::Text(text) = message else {
                        continue;
                    };
                    seen_tx.send(text.to_string()).unwrap();
                    if text.as_str().ends_with("bye") {
                        ws.close(None).await.unwrap();
                        return;
                    }
                    ws.send(Message::Text(text)).await.unwrap();
                }
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn relays_both_ways_through_the_chain() {
    let (addr, mut seen) = upstream().await;
    let config = format!(
        "{}\n[sinks.backend]\ntype = \"ws\"\nurl = \"ws://{addr}/feed\"\n\
         [sinks.dead]\ntype = \"ws\"\nurl = \"ws://127.0.0.1:1/\"\nconnect_timeout_ms = 500\n\
         [routes.up]\npath = \"/up\"\nfilters = [{{ module = \"tag\", config = {{ prefix = \">\" }} }}]\nsinks = [\"backend\"]\n\
         [routes.down]\npath = \"/down\"\nsinks = [\"dead\"]\n",
        head("")
    );
    let proxy = Proxy::start(&config, &["tag"], &[]);
    let mut client = proxy.connect("/up").await;
    assert_eq!(next_text(&mut client).await, ">welcome");
    for word in ["one", "two", "three"] {
        send_text(&mut client, word).await;
        assert_eq!(seen.recv().await.unwrap(), format!(">{word}"), "up: through the chain");
        assert_eq!(
            next_text(&mut client).await,
            format!(">>{word}"),
            "down: through it again"
        );
    }
    send_text(&mut client, "bye").await;
    assert_eq!(closed_with(&mut client).await, (1001, "upstream closed".to_string()));

    let (status, body) = upgrade_status(proxy.ws, "/down").await;
    assert_eq!(status, 502);
    assert!(body.starts_with("upstream ws://127.0.0.1:1/"), "{body}");
}

#[tokio::test]
async fn byte_relay_splices_the_upgrade_through() {
    let (addr, mut seen) = upstream().await;
    let config = format!(
        "{}\n[sinks.backend]\ntype = \"ws\"\nurl = \"ws://{addr}/feed\"\n\
         [routes.raw]\npath = \"/raw\"\nsinks = [\"backend\"]\nrelay = \"bytes\"\n",
        head("")
    );
    let proxy = Proxy::start(&config, &[], &[]);
    let mut client = proxy.connect("/raw?token=1").await;
    assert_eq!(next_text(&mut client).await, "welcome");
    for word in ["one", "two"] {
        send_text(&mut client, word).await;
        assert_eq!(seen.recv().await.unwrap(), word);
        assert_eq!(next_text(&mut client).await, word);
    }
    send_text(&mut client, "bye").await;
    assert_eq!(
        closed_with(&mut client).await,
        (1005, String::new()),
        "the upstream's own close frame"
    );
    drop(client);
    eventually("the relay's bytes counted", || async {
        proxy.metric("framegate_bytes_total{route=\"raw\",dir=\"in\"}").await > 0.0
    })
    .await;
}
