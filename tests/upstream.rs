//! The `ws` sink: each client gets its own upstream connection; client messages go up after
//! the chain, upstream messages come down through it (last filter first). A route with no
//! filter passes frames on in place, or (`relay = "bytes"`) splices the sockets.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

/// An upstream that greets, echoes, records what it got, hangs up on "bye" with a close frame
/// and on "drop" without one.
async fn upstream() -> (std::net::SocketAddr, mpsc::UnboundedReceiver<String>) {
    serve_upstream(None).await
}

/// The same upstream over TLS, with a certificate for 127.0.0.1 signed by a CA of the test's
/// own (written to `dir` as `ca.pem`, beside a CA that signed nothing, `wrong-ca.pem`).
async fn tls_upstream(dir: &std::path::Path) -> (std::net::SocketAddr, mpsc::UnboundedReceiver<String>) {
    use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let authority = |name: &str| {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        (params.self_signed(&key).unwrap(), rcgen::Issuer::new(params, key))
    };
    let (ca, issuer) = authority("framegate test CA");
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("wrong-ca.pem"), authority("another CA").0.pem()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    serve_upstream(Some(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)))).await
}

async fn serve_upstream(
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> (std::net::SocketAddr, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen_tx, seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen_tx = seen_tx.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    Some(acceptor) => {
                        // A client that does not trust the certificate gives up here.
                        if let Ok(stream) = acceptor.accept(stream).await {
                            echo(stream, seen_tx).await;
                        }
                    }
                    None => echo(stream, seen_tx).await,
                }
            });
        }
    });
    (addr, seen)
}

async fn echo<S>(stream: S, seen_tx: mpsc::UnboundedSender<String>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
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
        if text.as_str() == "drop" {
            return;
        }
        ws.send(Message::Text(text)).await.unwrap();
    }
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

fn pass_through(addr: std::net::SocketAddr) -> String {
    format!(
        "{}\n[sinks.backend]\ntype = \"ws\"\nurl = \"ws://{addr}/feed\"\n\
         [routes.pass]\npath = \"/pass\"\nsinks = [\"backend\"]\nmax_message_size = 1000\nping_interval_ms = 200\n",
        head("")
    )
}

#[tokio::test]
async fn a_route_with_no_filter_passes_frames_in_place() {
    let (addr, mut seen) = upstream().await;
    let proxy = Proxy::start(&pass_through(addr), &[], &[]);
    let mut client = proxy.connect("/pass").await;
    assert_eq!(
        next_text(&mut client).await,
        "welcome",
        "the upstream's first frame, read with its 101"
    );
    send_text(&mut client, "one").await;
    assert_eq!(seen.recv().await.unwrap(), "one");
    assert_eq!(next_text(&mut client).await, "one");

    // A fragmented message goes on in its fragments; the upstream puts it together.
    let first = Frame::message(&b"frag"[..], OpCode::Data(Data::Text), false);
    let last = Frame::message(&b"mented"[..], OpCode::Data(Data::Continue), true);
    client.send(Message::Frame(first)).await.unwrap();
    client.send(Message::Frame(last)).await.unwrap();
    assert_eq!(seen.recv().await.unwrap(), "fragmented");
    assert_eq!(next_text(&mut client).await, "fragmented");

    // framegate's own pings go between the upstream's frames.
    let ping = tokio::time::timeout(PATIENCE, async {
        loop {
            if let Some(Ok(Message::Ping(payload))) = client.next().await {
                return payload;
            }
        }
    })
    .await
    .expect("a ping within the interval");
    assert!(ping.is_empty());
    for (dir, count) in [("in", 2.0), ("out", 3.0)] {
        let series = format!("framegate_messages_total{{route=\"pass\",dir=\"{dir}\"}}");
        assert_eq!(proxy.metric(&series).await, count, "{series}");
    }

    // Over the route's limit: both ends get 1009, the upstream none of the message.
    send_text(&mut client, &"x".repeat(1001)).await;
    assert_eq!(closed_with(&mut client).await, (1009, "message too big".to_string()));

    // The upstream's own close frame comes through as it is; an upstream gone without one is
    // told to the client with 1001.
    let mut client = proxy.connect("/pass").await;
    assert_eq!(next_text(&mut client).await, "welcome");
    send_text(&mut client, "bye").await;
    assert_eq!(seen.recv().await.unwrap(), "bye", "and not the message over the limit");
    assert_eq!(closed_with(&mut client).await, (1005, String::new()));
    let mut client = proxy.connect("/pass").await;
    assert_eq!(next_text(&mut client).await, "welcome");
    send_text(&mut client, "drop").await;
    assert_eq!(closed_with(&mut client).await, (1001, "upstream closed".to_string()));
}

/// An HTTP head, read byte by byte so that nothing after it is taken from the stream.
async fn read_head(stream: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    head
}

#[tokio::test]
async fn an_unmasked_client_frame_is_closed_with_1002() {
    let (addr, _seen) = upstream().await;
    let proxy = Proxy::start(&pass_through(addr), &[], &[]);
    let mut stream = tokio::net::TcpStream::connect(proxy.ws).await.unwrap();
    stream
        .write_all(
            b"GET /pass HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .unwrap();
    let answer = read_head(&mut stream).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    stream.write_all(&[0x81, 0x02, b'h', b'i']).await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut rest))
        .await
        .expect("the connection ends")
        .unwrap();
    let close = [&[0x88, 23, 0x03, 0xea][..], b"unmasked client frame"].concat();
    let at = rest.windows(close.len()).position(|w| w == close);
    assert!(at.is_some(), "a 1002 close frame after the greeting: {rest:?}");
}

#[tokio::test]
async fn frames_that_come_with_the_upstreams_101_are_passed_first() {
    // An upstream that writes its 101 and a first frame in one write: hyper reads both at once.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let request = String::from_utf8(read_head(&mut stream).await).unwrap();
        let key = request
            .lines()
            .find_map(|l| {
                l.strip_prefix("Sec-WebSocket-Key: ")
                    .or(l.strip_prefix("sec-websocket-key: "))
            })
            .unwrap();
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.trim().as_bytes());
        let answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        stream
            .write_all(&[answer.as_bytes(), &[0x81, 0x05], b"first"].concat())
            .await
            .unwrap();
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
    });
    let proxy = Proxy::start(&pass_through(addr), &[], &[]);
    let mut client = proxy.connect("/pass").await;
    assert_eq!(next_text(&mut client).await, "first");
}

#[tokio::test]
async fn a_relayed_connection_is_closed_when_the_proxy_stops() {
    let (addr, mut seen) = upstream().await;
    let mut proxy = Proxy::start(&pass_through(addr), &[], &[]);
    let mut client = proxy.connect("/pass").await;
    assert_eq!(next_text(&mut client).await, "welcome");
    let stopped = tokio::task::spawn_blocking(move || proxy.terminate());
    assert_eq!(
        closed_with(&mut client).await,
        (1001, "server shutting down".to_string())
    );
    assert!(stopped.await.unwrap().success());
    assert!(seen.try_recv().is_err(), "the upstream got nothing but the close");
}

#[tokio::test]
async fn a_wss_upstream_behind_a_private_ca_serves_every_route_kind() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, mut seen) = tls_upstream(dir.path()).await;
    let file = |name: &str| dir.path().join(name).display().to_string();
    let sink = |name: &str, ca: &str| {
        format!(
            "[sinks.{name}]\ntype = \"ws\"\nurl = \"wss://{addr}/feed\"\nheaders = {{ x-tenant = \"t1\" }}\n\
             tls = {{ ca = \"{}\" }}\n",
            file(ca)
        )
    };
    let config = format!(
        "{}\n{}{}\
         [routes.frames]\npath = \"/frames\"\nsinks = [\"private\"]\n\
         [routes.bytes]\npath = \"/bytes\"\nsinks = [\"private\"]\nrelay = \"bytes\"\n\
         [routes.chain]\npath = \"/chain\"\nfilters = [{{ module = \"tag\", config = {{ prefix = \">\" }} }}]\nsinks = [\"private\"]\n\
         [routes.untrusted]\npath = \"/untrusted\"\nsinks = [\"wrong\"]\n",
        head(""),
        sink("private", "ca.pem"),
        sink("wrong", "wrong-ca.pem"),
    );
    let proxy = Proxy::start(&config, &["tag"], &[]);

    // The frame relay: TLS on the upstream leg, frames passed in place from the decrypted stream.
    let mut client = proxy.connect("/frames").await;
    assert_eq!(next_text(&mut client).await, "welcome");
    send_text(&mut client, "one").await;
    assert_eq!(seen.recv().await.unwrap(), "one");
    assert_eq!(next_text(&mut client).await, "one");
    let first = Frame::message(&b"frag"[..], OpCode::Data(Data::Text), false);
    let last = Frame::message(&b"mented"[..], OpCode::Data(Data::Continue), true);
    client.send(Message::Frame(first)).await.unwrap();
    client.send(Message::Frame(last)).await.unwrap();
    assert_eq!(seen.recv().await.unwrap(), "fragmented");
    assert_eq!(next_text(&mut client).await, "fragmented");
    for (dir, count) in [("in", 2.0), ("out", 3.0)] {
        let series = format!("framegate_messages_total{{route=\"frames\",dir=\"{dir}\"}}");
        assert_eq!(proxy.metric(&series).await, count, "{series}");
    }

    // The byte relay and the message path reach it the same way.
    let mut client = proxy.connect("/bytes").await;
    assert_eq!(next_text(&mut client).await, "welcome");
    send_text(&mut client, "two").await;
    assert_eq!(seen.recv().await.unwrap(), "two");
    assert_eq!(next_text(&mut client).await, "two");
    let mut client = proxy.connect("/chain").await;
    assert_eq!(next_text(&mut client).await, ">welcome");
    send_text(&mut client, "three").await;
    assert_eq!(seen.recv().await.unwrap(), ">three");
    assert_eq!(next_text(&mut client).await, ">>three");

    // A CA that did not sign the upstream's certificate: 502 with the reason, nothing relayed.
    let (status, body) = upgrade_status(proxy.ws, "/untrusted").await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("not trusted: unknown issuer"), "{body}");
    assert!(seen.try_recv().is_err());
}
