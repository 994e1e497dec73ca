//! wss://: the listener serves TLS from PEM files (a certificate made by rcgen here), and a
//! client that trusts it talks through the same filters.

mod common;

use std::sync::Arc;

use common::*;
use tokio_tungstenite::Connector;

#[tokio::test]
async fn wss_with_a_pem_certificate() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let config = format!(
        "{}\n[routes.echo]\npath = \"/echo\"\nfilters = [{{ module = \"echo\" }}]\n",
        head("tls = { cert = \"cert.pem\", key = \"key.pem\" }")
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    std::fs::create_dir_all(dir.path().join("filters")).unwrap();
    std::fs::copy(built_filters().join("echo.wasm"), dir.path().join("filters/echo.wasm")).unwrap();
    std::fs::write(dir.path().join("framegate.toml"), config).unwrap();
    let proxy = Proxy::spawn(dir, &["run", "framegate.toml"]);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let url = format!("wss://localhost:{}/echo", proxy.ws.port());
    let (mut ws, _) =
        tokio_tungstenite::connect_async_tls_with_config(url, None, false, Some(Connector::Rustls(Arc::new(client))))
            .await
            .unwrap();
    send_text(&mut ws, "over tls").await;
    assert_eq!(next_text(&mut ws).await, "over tls");

    // A plain-text client gets no answer in HTTP: the listener only speaks TLS.
    assert!(tokio_tungstenite::connect_async(proxy.url("/echo")).await.is_err());
}
