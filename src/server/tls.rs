//! TLS for the listener (wss://): rustls with the ring provider, from PEM files; client
//! certificates (mTLS) verified against `client_ca` by rustls' WebPkiClientVerifier.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::auth::ClientCert;
use crate::config::{ClientCertMode, TlsConfig};

pub fn acceptor(tls: &TlsConfig) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let certs = CertificateDer::pem_file_iter(&tls.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("server.tls.cert: cannot read certificates from {}", tls.cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .with_context(|| format!("server.tls.key: cannot read a private key from {}", tls.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder =
        rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let builder = match &tls.client_ca {
        Some(ca) => builder.with_client_cert_verifier(client_verifier(ca, tls.client_cert, provider)?),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .context("server.tls: the certificate and key do not make a usable pair")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Verifies client certificates against the CAs in `ca`; `optional` lets a client without one
/// finish the handshake (a route may still ask for one: src/auth/).
fn client_verifier(
    ca: &Path,
    mode: ClientCertMode,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> anyhow::Result<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("server.tls.client_ca: cannot read certificates from {}", ca.display()))?;
    let (added, _) = roots.add_parsable_certificates(certs);
    anyhow::ensure!(
        added > 0,
        "server.tls.client_ca: no usable CA certificate in {}",
        ca.display()
    );
    let builder = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    let builder = match mode {
        ClientCertMode::Optional => builder.allow_unauthenticated(),
        ClientCertMode::Required => builder,
    };
    builder.build().context("server.tls.client_ca")
}

/// The verified client certificate of a TLS connection, as metadata.
pub fn client_cert(stream: &tokio_rustls::server::TlsStream<tokio::net::TcpStream>) -> Option<Arc<ClientCert>> {
    let (_, connection) = stream.get_ref();
    let leaf = connection.peer_certificates()?.first()?;
    ClientCert::from_der(leaf).map(Arc::new)
}
