//! framegate as a permessage-deflate client: a route's `ws` sink and a `ws` source offer it to
//! a real compressing server (tests/ws_upstream.py, Python `websockets`, which agrees by
//! default), and a tap on the TCP connection between them shows the frames with RSV1 set both
//! ways while the messages come through whole; `/metrics` counts the bytes on the wire and
//! inflated. With `deflate.enabled = false` nothing is offered and nothing is compressed.

mod common;

use common::wiretap::{Seen, Wiretap};
use common::ws_upstream::PythonUpstream;
use common::*;
use serde_json::Value;

/// tests/ws_upstream.py sending `count` numbered messages padded with `pad` bytes.
fn numbers_server(count: usize, pad: usize) -> PythonUpstream {
    let (count, pad) = (count.to_string(), pad.to_string());
    PythonUpstream::start(&["--count", &count, "--pad", &pad, "--interval-ms", "2"])
}

/// A numbered message as ws_upstream.py makes it, checked whole: its number.
fn number(text: &str, pad: usize) -> u64 {
    let message: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text:.80}"));
    assert_eq!(message["pad"].as_str().unwrap(), "x".repeat(pad));
    message["n"].as_u64().unwrap()
}

fn wire_bytes(frames: &[Seen]) -> f64 {
    frames.iter().map(|f| f.length as f64).sum()
}

const PAD: usize = 2000;
const COUNT: usize = 20;

#[tokio::test]
async fn a_ws_sink_offers_deflate_and_both_directions_go_compressed() {
    let (compressing, plain) = (numbers_server(COUNT, PAD), numbers_server(COUNT, PAD));
    let (tap, plain_tap) = (
        Wiretap::start(compressing.addr()).await,
        Wiretap::start(plain.addr()).await,
    );
    let route = |name: &str, sink: &str| {
        format!(
            "[routes.{name}]\npath = \"/{name}\"\nsinks = [\"{sink}\"]\n\
             filters = [{{ module = \"tag\", config = {{ prefix = \">\" }} }}]\n"
        )
    };
    let config = format!(
        "{}\n[sinks.up]\ntype = \"ws\"\nurl = \"ws://{}/ws\"\n\
         [sinks.up_plain]\ntype = \"ws\"\nurl = \"ws://{}/ws\"\ndeflate = {{ enabled = false }}\n{}{}",
        head(""),
        tap.addr,
        plain_tap.addr,
        route("up", "up"),
        route("plain", "up_plain"),
    );
    let proxy = Proxy::start(&config, &["tag"], &[]);
    let up_message = "y".repeat(1000);
    for (path, upstream) in [("/up", &compressing), ("/plain", &plain)] {
        let mut client = proxy.connect(path).await;
        // Every message the server sent comes down whole, through the chain.
        for n in 1..=COUNT as u64 {
            let text = next_text(&mut client).await;
            assert_eq!(number(text.strip_prefix('>').unwrap(), PAD), n, "{path}");
        }
        send_text(&mut client, &up_message).await;
        eventually("the server to read the client's message", || async {
            !upstream.events("recv").is_empty()
        })
        .await;
        assert_eq!(upstream.events("recv")[0]["text"], format!(">{up_message}"), "{path}");
    }

    // On the wire: the offer, then RSV1 on every data frame each way, much smaller than plain.
    assert_eq!(
        compressing.offer().as_deref(),
        Some("permessage-deflate; client_max_window_bits; server_max_window_bits=12")
    );
    let (down, up) = (tap.data(false), tap.data(true));
    assert_eq!(down.len(), COUNT, "{down:?}");
    assert!(
        down.iter().all(|f| f.rsv1 && f.fin && f.length < PAD as u64 / 4),
        "{down:?}"
    );
    assert_eq!(up.len(), 1);
    assert!(up[0].rsv1 && up[0].length < 100, "{up:?}");
    // Turned off: no offer, and the same messages go plain.
    assert_eq!(plain.offer(), None);
    let (down, up) = (plain_tap.data(false), plain_tap.data(true));
    assert_eq!(down.len(), COUNT);
    assert!(down.iter().all(|f| !f.rsv1 && f.length > PAD as u64), "{down:?}");
    assert!(!up[0].rsv1 && up[0].length == 1001, "{up:?}");

    // The sink's bytes, on the wire and plain, in /metrics.
    let series = |part: &str, dir: &str, form: &str| {
        format!("framegate_upstream_bytes_total{{part=\"sinks.{part}\",dir=\"{dir}\",form=\"{form}\"}}")
    };
    let plain_down: f64 = plain_tap.data(false).iter().map(|f| f.length as f64).sum();
    assert_eq!(
        proxy.metric(&series("up", "in", "wire")).await,
        wire_bytes(&tap.data(false))
    );
    assert_eq!(proxy.metric(&series("up", "in", "plain")).await, plain_down);
    assert_eq!(
        proxy.metric(&series("up", "out", "wire")).await,
        wire_bytes(&tap.data(true))
    );
    assert_eq!(proxy.metric(&series("up", "out", "plain")).await, 1001.0);
    assert_eq!(proxy.metric(&series("up_plain", "in", "wire")).await, plain_down);
    assert_eq!(proxy.metric(&series("up_plain", "in", "plain")).await, plain_down);
}

#[tokio::test]
async fn a_ws_source_inflates_its_server_s_messages_and_counts_the_bytes_saved() {
    let upstream = numbers_server(COUNT, PAD);
    let tap = Wiretap::start(upstream.addr()).await;
    let config = format!(
        "{}\n[sources.feed]\ntype = \"ws\"\nurl = \"ws://{}/ws\"\n\
         [sinks.copy]\ntype = \"file\"\npath = \"copy.jsonl\"\n\
         [routes.feed]\nfeed = \"feed\"\nsinks = [\"copy\"]\n",
        head(""),
        tap.addr
    );
    let proxy = Proxy::start(&config, &[], &[]);
    let copied = || {
        std::fs::read_to_string(proxy.dir.path().join("copy.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["payload"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect::<Vec<_>>()
    };
    eventually("every message in the file sink", || async { copied().len() == COUNT }).await;
    let numbers: Vec<u64> = copied().iter().map(|text| number(text, PAD)).collect();
    assert_eq!(numbers, (1..=COUNT as u64).collect::<Vec<_>>());

    let frames = tap.data(false);
    assert_eq!(frames.len(), COUNT);
    assert!(frames.iter().all(|f| f.rsv1 && f.length < PAD as u64 / 4), "{frames:?}");
    let plain: f64 = copied().iter().map(|text| text.len() as f64).sum();
    let series =
        |form: &str| format!("framegate_upstream_bytes_total{{part=\"sources.feed\",dir=\"in\",form=\"{form}\"}}");
    let wire = proxy.metric(&series("wire")).await;
    assert_eq!(wire, wire_bytes(&frames));
    assert_eq!(proxy.metric(&series("plain")).await, plain);
    assert!(wire < plain / 4.0, "{wire} of {plain}");
    // Every message was compressed, so the compression counts are the same.
    let compressed = "framegate_deflate_bytes_total{part=\"sources.feed\",dir=\"in\",form=\"compressed\"}";
    assert_eq!(proxy.metric(compressed).await, wire);
}
