//! The baseline: a plain tokio-tungstenite echo server, writing like framegate does (feed every
//! ready frame, flush once). It is also the upstream of the pass-through cases.

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

/// Serves on a runtime of its own with `workers` threads (every core when `None`).
pub fn run(listen: std::net::SocketAddr, workers: Option<usize>) -> anyhow::Result<()> {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = workers {
        runtime.worker_threads(workers);
    }
    let runtime = runtime.enable_all().build()?;
    // On a thread of its own: this one is already in the suite's runtime.
    std::thread::spawn(move || runtime.block_on(serve(listen)))
        .join()
        .map_err(|_| anyhow::anyhow!("the echo server panicked"))?
}

async fn serve(listen: std::net::SocketAddr) -> anyhow::Result<()> {
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
