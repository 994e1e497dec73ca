//! A verified client certificate (mTLS) as connection metadata: `tls.subject`, `tls.issuer`,
//! `tls.serial` and `tls.san` (its subject alternative names, as OpenSSL prints them).

use std::net::IpAddr;

use bytes::Bytes;
use x509_parser::extensions::GeneralName;

/// What the listener learnt of a client's certificate: rustls verified it against
/// `server.tls.client_ca` before the first request was read.
#[derive(Debug, Clone)]
pub struct ClientCert {
    pub meta: Vec<(String, Bytes)>,
}

impl ClientCert {
    /// The metadata of a verified certificate (DER); `None` for one x509-parser cannot read,
    /// which rustls would not have verified anyway.
    pub fn from_der(der: &[u8]) -> Option<ClientCert> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let mut meta = vec![
            ("tls.subject".to_string(), cert.subject().to_string()),
            ("tls.issuer".to_string(), cert.issuer().to_string()),
            ("tls.serial".to_string(), cert.raw_serial_as_string()),
        ];
        let names: Vec<String> = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|san| san.value.general_names.iter().filter_map(san_text).collect())
            .unwrap_or_default();
        if !names.is_empty() {
            meta.push(("tls.san".to_string(), names.join(", ")));
        }
        Some(ClientCert {
            meta: meta.into_iter().map(|(k, v)| (k, Bytes::from(v))).collect(),
        })
    }
}

fn san_text(name: &GeneralName<'_>) -> Option<String> {
    Some(match name {
        GeneralName::DNSName(dns) => format!("DNS:{dns}"),
        GeneralName::RFC822Name(email) => format!("email:{email}"),
        GeneralName::URI(uri) => format!("URI:{uri}"),
        GeneralName::IPAddress(bytes) => {
            let ip = match bytes.len() {
                4 => IpAddr::from(<[u8; 4]>::try_from(*bytes).ok()?),
                16 => IpAddr::from(<[u8; 16]>::try_from(*bytes).ok()?),
                _ => return None,
            };
            format!("IP:{ip}")
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_and_names_become_metadata() {
        let mut params = rcgen::CertificateParams::new(vec!["device-7.example".to_string()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, "device-7");
        params
            .subject_alt_names
            .push(rcgen::SanType::URI("spiffe://example/device-7".try_into().unwrap()));
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("10.1.2.3".parse().unwrap()));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let meta = ClientCert::from_der(cert.der()).unwrap().meta;
        let get = |k: &str| {
            meta.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        assert_eq!(get("tls.subject").as_deref(), Some("CN=device-7"));
        assert_eq!(
            get("tls.san").as_deref(),
            Some("DNS:device-7.example, URI:spiffe://example/device-7, IP:10.1.2.3")
        );
        assert!(ClientCert::from_der(b"not a certificate").is_none());
    }
}
