//! The baseline: a plain tokio-tungstenite echo server, writing like framegate does (feed every
//! ready frame, flush once). It is also the upstream of the pass-through cases.

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

pub async fn serve(listen: std::net::SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    eprintln!("echo listening {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            let (mut tx, mut rx) = ws.split();
            while let Some(Ok(message)) = rx.next().await {
                if !matches!(message, Message::Text(_) | Message::Binary(_)) {
                    continue;
                }
                if tx.feed(message).await.is_err() {
                    return;
                }
                // Everything already read goes out in the same flush.
                while let Some(Some(Ok(next))) = futures_util::FutureExt::now_or_never(rx.next()) {
                    if matches!(next, Message::Text(_) | Message::Binary(_)) && tx.feed(next).await.is_err() {
                        return;
                    }
                }
                if tx.flush().await.is_err() {
                    return;
                }
            }
        });
    }
}
