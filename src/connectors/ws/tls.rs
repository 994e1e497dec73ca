//! TLS for the `ws` source: rustls with the system's roots or a CA bundle, an optional client
//! certificate, an SNI override, and a verifier that accepts anything for development. A
//! certificate problem is reported with its reason, not as a bare handshake failure.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::TlsOptions;

/// The client config a source's connections share, built once from its options.
pub fn client_config(options: &TlsOptions) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?;
    let builder = if options.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnything(provider.signature_verification_algorithms)))
    } else {
        builder.with_root_certificates(roots(options)?)
    };
    let mut config = match (&options.client_cert, &options.client_key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("tls.client_cert: cannot read {}: {e}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("tls.client_key: cannot read {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("tls: the client certificate and key do not make a pair: {e}"))?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The CA bundle when one is named, else the system's roots.
fn roots(options: &TlsOptions) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    match &options.ca {
        Some(ca) => {
            let certs = CertificateDer::pem_file_iter(ca)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("tls.ca: cannot read {}: {e}", ca.display()))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!("tls.ca: no usable certificate in {}", ca.display()));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    Ok(roots)
}

/// The TLS handshake, with a reason a person can act on when it fails.
pub async fn handshake(
    config: Arc<rustls::ClientConfig>,
    name: &str,
    tcp: TcpStream,
    options: &TlsOptions,
) -> Result<TlsStream<TcpStream>, String> {
    let server_name =
        ServerName::try_from(name.to_string()).map_err(|e| format!("tls: bad server name {name:?}: {e}"))?;
    let connector = tokio_rustls::TlsConnector::from(config);
    connector.connect(server_name, tcp).await.map_err(|e| {
        let trusted = match &options.ca {
            Some(ca) => format!("the CAs in {}", ca.display()),
            None => "the system's roots".to_string(),
        };
        let cause = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>());
        match cause {
            Some(rustls::Error::InvalidCertificate(problem)) => match problem {
                CertificateError::UnknownIssuer => {
                    format!("TLS: the server's certificate is not trusted: unknown issuer (trusting {trusted})")
                }
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                    format!("TLS: the server's certificate is not valid for the name {name:?}")
                }
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    "TLS: the server's certificate has expired".to_string()
                }
                other => format!("TLS: the server's certificate is refused: {other:?}"),
            },
            Some(rustls::Error::AlertReceived(alert)) => {
                format!("TLS: the server refused the handshake ({alert:?}); does it want a client certificate?")
            }
            Some(other) => format!("TLS handshake failed: {other}"),
            None => format!("TLS handshake failed: {e}"),
        }
    })
}

/// `insecure_skip_verify`: any certificate is taken, but signatures are still checked.
#[derive(Debug)]
struct AcceptAnything(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
