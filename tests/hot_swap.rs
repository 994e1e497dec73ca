//! Hot swap under traffic: while clients stream messages (they go on until both swaps are
//! done, however fast the machine), the filter file is replaced by a good version and then by
//! a broken one. Every message is answered exactly once and in
//! order, the per-connection metadata survives, messages sent after the swap show the new
//! version, and the broken file changes nothing.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

const CLIENTS: u32 = 4;
/// Messages answered before the first swap, and after each.
const BETWEEN_SWAPS: f64 = 2_000.0;
/// Messages a client keeps in flight.
const WINDOW: u32 = 64;

fn counter(letter: &str) -> Vec<u8> {
    include_str!("wat/counter.wat").replace("LETTER", letter).into_bytes()
}

/// One answer: (version letter, connection counter, sequence number sent).
fn parse(message: Message) -> (u8, u32, u32) {
    let Message::Binary(bytes) = message else {
        panic!("expected binary, got {message:?}")
    };
    assert_eq!(bytes.len(), 9, "letter + counter + sequence");
    let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    (bytes[0], word(1), word(5))
}

/// Streams until `done`; each answer with whether its message was sent after the swap.
async fn stream(proxy: Arc<Proxy>, swapped: Arc<AtomicBool>, done: Arc<AtomicBool>) -> Vec<((u8, u32, u32), bool)> {
    let (mut tx, mut rx) = proxy.connect("/count").await.split();
    let (sent_after_swap_tx, mut sent_after_swap) = tokio::sync::mpsc::unbounded_channel();
    let (credit_tx, mut credit) = tokio::sync::mpsc::unbounded_channel::<()>();
    for _ in 0..WINDOW {
        credit_tx.send(()).unwrap();
    }
    let sender = tokio::spawn(async move {
        let mut seq: u32 = 0;
        while credit.recv().await.is_some() && !done.load(Ordering::SeqCst) {
            sent_after_swap_tx.send(swapped.load(Ordering::SeqCst)).unwrap();
            tx.send(Message::binary(seq.to_le_bytes().to_vec())).await.unwrap();
            seq += 1;
        }
        tx
    });
    // One answer per message sent: the flags end when the sender stops.
    let mut answers = Vec::new();
    while let Some(after_swap) = sent_after_swap.recv().await {
        let message = tokio::time::timeout(PATIENCE, rx.next())
            .await
            .expect("answer in time")
            .unwrap()
            .unwrap();
        answers.push((parse(message), after_swap));
        let _ = credit_tx.send(());
    }
    drop(sender.await.unwrap());
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swap_under_traffic_loses_nothing() {
    let config = format!(
        "{}\n[routes.count]\npath = \"/count\"\nfilters = [{{ module = \"counter\" }}]\n",
        head("")
    );
    let proxy = Arc::new(Proxy::start(&config, &[], &[("counter.wat", &counter("A"))]));
    let (swapped, done) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| tokio::spawn(stream(proxy.clone(), swapped.clone(), done.clone())))
        .collect();

    let reloads = "framegate_filter_reloads_total{filter=\"counter\"}";
    let failures = "framegate_filter_reload_failures_total{filter=\"counter\"}";
    let answered = "framegate_messages_total{route=\"count\",dir=\"in\"}";
    let traffic = async |what: &str, since: f64| {
        eventually(what, || async { proxy.metric(answered).await >= since + BETWEEN_SWAPS }).await;
        proxy.metric(answered).await
    };
    traffic("traffic before the swap", 0.0).await;
    proxy.replace_file("filters/counter.wat", &counter("B"));
    eventually("the good version swapped in", || async {
        proxy.metric(reloads).await == 1.0
    })
    .await;
    swapped.store(true, Ordering::SeqCst);
    let at_swap = proxy.metric(answered).await;
    traffic("traffic after the swap", at_swap).await;
    proxy.replace_file("filters/counter.wat", b"(module (this is not wat");
    eventually("the broken file refused", || async {
        proxy.metric(failures).await == 1.0
    })
    .await;
    let at_refusal = proxy.metric(answered).await;
    traffic("traffic after the broken file", at_refusal).await;
    done.store(true, Ordering::SeqCst);

    let (mut swapped_clients, mut total) = (0, 0);
    for client in clients {
        let answers = client.await.unwrap();
        total += answers.len();
        let mut letters = Vec::new();
        for (i, ((letter, count, seq), sent_after_swap)) in answers.into_iter().enumerate() {
            let i = i as u32;
            assert_eq!(seq, i, "answers come once each, in order");
            assert_eq!(count, i + 1, "the metadata counter runs on across swaps");
            if sent_after_swap {
                assert_eq!(letter, b'B', "message {i} was sent after the swap");
            }
            if letters.last() != Some(&letter) {
                letters.push(letter);
            }
        }
        // A client the scheduler left out while the swap came may have seen A only.
        assert!(
            matches!(letters.as_slice(), b"A" | b"AB"),
            "version A, then B, never back: {:?}",
            String::from_utf8_lossy(&letters)
        );
        swapped_clients += usize::from(letters == b"AB");
    }
    assert!(swapped_clients > 0, "no client saw the swap");
    assert_eq!(proxy.metric(reloads).await, 1.0);
    let (_, filters) = http_get(proxy.admin, "/filters").await;
    assert!(
        filters.contains("last_reload_error") && filters.contains("does not compile"),
        "{filters}"
    );
    assert_eq!(
        proxy.metric(answered).await,
        total as f64,
        "every message answered once"
    );
}
