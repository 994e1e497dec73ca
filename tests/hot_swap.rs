//! Hot swap under traffic: while clients stream 20,000 messages, the filter file is replaced
//! by a good version and then by a broken one. Every message is answered exactly once and in
//! order, the per-connection metadata survives, messages sent after the swap show the new
//! version, and the broken file changes nothing.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

const CLIENTS: u32 = 4;
const PER_CLIENT: u32 = 5_000;
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

async fn stream(proxy: Arc<Proxy>, swapped: Arc<AtomicBool>) -> Vec<((u8, u32, u32), bool)> {
    let (mut tx, mut rx) = proxy.connect("/count").await.split();
    let (sent_after_swap_tx, mut sent_after_swap) = tokio::sync::mpsc::unbounded_channel();
    let (credit_tx, mut credit) = tokio::sync::mpsc::unbounded_channel::<()>();
    for _ in 0..WINDOW {
        credit_tx.send(()).unwrap();
    }
    let sender = tokio::spawn(async move {
        for seq in 0..PER_CLIENT {
            credit.recv().await.unwrap();
            sent_after_swap_tx.send(swapped.load(Ordering::SeqCst)).unwrap();
            tx.send(Message::binary(seq.to_le_bytes().to_vec())).await.unwrap();
        }
        tx
    });
    let mut answers = Vec::new();
    for _ in 0..PER_CLIENT {
        let message = tokio::time::timeout(PATIENCE, rx.next())
            .await
            .expect("answer in time")
            .unwrap()
            .unwrap();
        answers.push((parse(message), sent_after_swap.recv().await.unwrap()));
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
    let swapped = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| tokio::spawn(stream(proxy.clone(), swapped.clone())))
        .collect();

    let reloads = "framegate_filter_reloads_total{filter=\"counter\"}";
    let failures = "framegate_filter_reload_failures_total{filter=\"counter\"}";
    let answered = "framegate_messages_total{route=\"count\",dir=\"in\"}";
    let total = f64::from(CLIENTS * PER_CLIENT);
    eventually("a third of the traffic", || async {
        proxy.metric(answered).await >= total / 3.0
    })
    .await;
    proxy.replace_file("filters/counter.wat", &counter("B"));
    eventually("the good version swapped in", || async {
        proxy.metric(reloads).await == 1.0
    })
    .await;
    swapped.store(true, Ordering::SeqCst);
    eventually("two thirds of the traffic", || async {
        proxy.metric(answered).await >= 2.0 * total / 3.0
    })
    .await;
    proxy.replace_file("filters/counter.wat", b"(module (this is not wat");
    eventually("the broken file refused", || async {
        proxy.metric(failures).await == 1.0
    })
    .await;

    let mut swapped_clients = 0;
    for client in clients {
        let answers = client.await.unwrap();
        assert_eq!(answers.len() as u32, PER_CLIENT);
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
        // A client that was done before the swap (they run at their own pace) saw A only.
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
    assert_eq!(proxy.metric(answered).await, total);
}
