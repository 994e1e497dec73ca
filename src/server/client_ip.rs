//! Who a client is: the socket peer, or, when the peer is a trusted proxy, the address it names
//! in a PROXY protocol v2 header (read before anything else on the connection) or in
//! X-Forwarded-For (read per request).

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use ppp::v2::{Addresses, Command, Header};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::config::ClientIpConfig;

/// The fixed part of a v2 header: its signature, version and command, family, and length.
const FIXED_LENGTH: usize = 16;
/// The longest header read: addresses (216 bytes at most, for Unix sockets) and some TLVs.
const MAX_LENGTH: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("reading the PROXY header: {0}")]
    Read(#[from] std::io::Error),
    #[error("a PROXY v2 header of {0} bytes, over the {MAX_LENGTH} read")]
    TooLong(usize),
    #[error("not a PROXY v2 header: {0}")]
    Parse(#[from] ppp::v2::ParseError),
}

/// Reads the PROXY protocol v2 header a trusted proxy opens its connections with, and nothing
/// after it. The client's address; `None` for the proxy's own connections (`LOCAL`, health
/// checks) and for sources that are not IP (then the socket peer stands).
pub async fn read_proxy_header(stream: &mut (impl AsyncRead + Unpin)) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let mut header = vec![0; FIXED_LENGTH];
    stream.read_exact(&mut header).await?;
    // Checks the signature and version before the length is trusted.
    match Header::try_from(header.as_slice()) {
        Err(ppp::v2::ParseError::Partial(..)) | Ok(_) => {}
        Err(e) => return Err(e.into()),
    }
    let length = FIXED_LENGTH + usize::from(u16::from_be_bytes([header[14], header[15]]));
    if length > MAX_LENGTH {
        return Err(ProxyHeaderError::TooLong(length));
    }
    header.resize(length, 0);
    stream.read_exact(&mut header[FIXED_LENGTH..]).await?;
    let header = Header::try_from(header.as_slice())?;
    if header.command == Command::Local {
        return Ok(None);
    }
    Ok(match header.addresses {
        Addresses::IPv4(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
        Addresses::IPv6(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
        Addresses::Unspecified | Addresses::Unix(_) => None,
    })
}

/// The client a trusted proxy (`peer`) names in X-Forwarded-For: walking the list from its end,
/// the first address that is not a trusted proxy itself. Entries before it were written by
/// whoever connected to that hop and are not believed. With no header, or nothing readable in
/// it, the last trusted hop is the client.
pub fn forwarded_client(peer: IpAddr, headers: &HeaderMap, config: &ClientIpConfig) -> IpAddr {
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for entry in entries.iter().rev() {
        let Some(ip) = parse_forwarded(entry) else {
            break;
        };
        client = ip;
        if !config.trusts(ip) {
            break;
        }
    }
    client.to_canonical()
}

/// An X-Forwarded-For entry: an address, maybe with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TrustedProxy;

    fn config(trusted: &[&str]) -> ClientIpConfig {
        ClientIpConfig {
            trusted_proxies: trusted
                .iter()
                .map(|t| TrustedProxy::try_from(t.to_string()).unwrap())
                .collect(),
            proxy_protocol: false,
        }
    }

    fn client(peer: &str, xff: &[&str], trusted: &[&str]) -> String {
        let mut headers = HeaderMap::new();
        for value in xff {
            headers.append("x-forwarded-for", value.parse().unwrap());
        }
        forwarded_client(peer.parse().unwrap(), &headers, &config(trusted)).to_string()
    }

    #[test]
    fn the_last_untrusted_hop_is_the_client() {
        let trusted = ["10.0.0.0/8"];
        assert_eq!(client("10.0.0.1", &["203.0.113.9"], &trusted), "203.0.113.9");
        // A client that sends its own X-Forwarded-For cannot choose its address.
        assert_eq!(client("10.0.0.1", &["1.1.1.1, 203.0.113.9"], &trusted), "203.0.113.9");
        // Trusted hops are skipped, over several headers.
        assert_eq!(
            client("10.0.0.1", &["1.1.1.1, 203.0.113.9", "10.0.0.7"], &trusted),
            "203.0.113.9"
        );
        assert_eq!(client("10.0.0.1", &["203.0.113.9:4711"], &trusted), "203.0.113.9");
        assert_eq!(client("10.0.0.1", &["[2001:db8::1]:4711"], &trusted), "2001:db8::1");
        assert_eq!(client("10.0.0.1", &["::ffff:203.0.113.9"], &trusted), "203.0.113.9");
    }

    #[test]
    fn nothing_readable_leaves_the_last_trusted_hop() {
        let trusted = ["10.0.0.0/8"];
        assert_eq!(client("10.0.0.1", &[], &trusted), "10.0.0.1");
        assert_eq!(client("10.0.0.1", &["unknown"], &trusted), "10.0.0.1");
        assert_eq!(client("10.0.0.1", &["garbage, 10.0.0.5"], &trusted), "10.0.0.5");
        assert_eq!(client("10.0.0.1", &["10.0.0.2, 10.0.0.5"], &trusted), "10.0.0.2");
    }

    async fn proxied(header: Vec<u8>) -> Result<Option<SocketAddr>, ProxyHeaderError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let sender = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
            stream.write_all(&header).await.unwrap();
            stream.write_all(b"GET /").await.unwrap();
            stream
        });
        let (mut stream, _) = listener.accept().await.unwrap();
        let result = read_proxy_header(&mut stream).await;
        let _sender = sender.await.unwrap();
        if result.is_ok() {
            let mut rest = [0; 5];
            stream.read_exact(&mut rest).await.unwrap();
            assert_eq!(&rest, b"GET /", "the request after the header is left to read");
        }
        result
    }

    #[tokio::test]
    async fn proxy_v2_headers_name_the_client() {
        use ppp::v2::{Builder, Protocol, Version};
        let v4 = Builder::with_addresses(
            Version::Two | Command::Proxy,
            Protocol::Stream,
            (
                "203.0.113.9:4711".parse::<SocketAddr>().unwrap(),
                "127.0.0.1:8080".parse::<SocketAddr>().unwrap(),
            ),
        )
        .write_tlv(0xE0, b"some vendor's data")
        .unwrap()
        .build()
        .unwrap();
        assert_eq!(proxied(v4).await.unwrap(), Some("203.0.113.9:4711".parse().unwrap()));

        let local = Builder::with_addresses(Version::Two | Command::Local, Protocol::Stream, Addresses::Unspecified)
            .build()
            .unwrap();
        assert_eq!(proxied(local).await.unwrap(), None);

        let http = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        assert!(matches!(proxied(http).await, Err(ProxyHeaderError::Parse(_))));

        let mut long = ppp::v2::PROTOCOL_PREFIX.to_vec();
        long.extend_from_slice(&[0x21, 0x11, 0xFF, 0xFF]);
        assert!(matches!(proxied(long).await, Err(ProxyHeaderError::TooLong(_))));
    }
}
