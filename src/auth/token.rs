//! Where a client's token comes from (`Authorization: Bearer`, a query parameter, a cookie, a
//! `Sec-WebSocket-Protocol` entry), and taking it out of the request, so that no copy of it
//! reaches connection metadata, records, logs or an upstream.

use http::header::{AUTHORIZATION, COOKIE, SEC_WEBSOCKET_PROTOCOL};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Uri};

use crate::config::{JwtConfig, TokenSource, percent_decode_with};

/// A `Sec-WebSocket-Protocol` entry carrying a token: `bearer.TOKEN` (a JWT's characters are
/// all allowed in a protocol name).
pub const PROTOCOL_PREFIX: &str = "bearer.";

/// What `take` found.
#[derive(Debug, Default, PartialEq)]
pub struct Taken {
    /// The first token found, in the order of the configured sources.
    pub token: Option<String>,
    /// When the token came as a protocol entry: the sub-protocol the 101 must name, the first
    /// other entry the client offered (a browser fails a handshake that names none of its
    /// protocols, and the token entry is not echoed).
    pub protocol: Option<HeaderValue>,
}

/// Takes the token out of every configured place in the request; the first place that has one
/// gives it.
pub fn take<B>(request: &mut Request<B>, config: &JwtConfig) -> Taken {
    let mut taken = Taken::default();
    for source in &config.tokens {
        let found = match source {
            TokenSource::Header => take_bearer(request.headers_mut()),
            TokenSource::Query => take_query_param(request, &config.query_param),
            TokenSource::Cookie => take_cookie(request.headers_mut(), &config.cookie),
            TokenSource::Protocol => {
                let found = take_protocol_entry(request.headers_mut());
                if found.is_some() && taken.token.is_none() {
                    taken.protocol = request
                        .headers()
                        .get(SEC_WEBSOCKET_PROTOCOL)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.split(',').next())
                        .and_then(|first| HeaderValue::from_str(first.trim()).ok());
                }
                found
            }
        };
        if taken.token.is_none() {
            taken.token = found.filter(|t| !t.is_empty());
        }
    }
    taken
}

fn take_bearer(headers: &mut HeaderMap) -> Option<String> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None; // another scheme is the upstream's business
    }
    let token = token.trim().to_string();
    headers.remove(AUTHORIZATION);
    Some(token)
}

fn take_query_param<B>(request: &mut Request<B>, name: &str) -> Option<String> {
    let query = request.uri().query()?;
    let mut token = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if percent_decode_with(key, true) != name {
                return true;
            }
            token.get_or_insert_with(|| percent_decode_with(value, true));
            false
        })
        .collect();
    let token = token?;
    let path = request.uri().path();
    let path_and_query = if kept.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", kept.join("&"))
    };
    let mut parts = request.uri().clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(path_and_query).expect("a part of a valid URI"));
    *request.uri_mut() = Uri::from_parts(parts).expect("the URI it was");
    Some(token)
}

fn take_cookie(headers: &mut HeaderMap, name: &str) -> Option<String> {
    let mut token = None;
    take_list_entries(headers, COOKIE, ';', "; ", |entry| match entry.split_once('=') {
        Some((key, value)) if key.trim() == name => {
            token.get_or_insert_with(|| value.trim().trim_matches('"').to_string());
            false
        }
        _ => true,
    });
    token
}

fn take_protocol_entry(headers: &mut HeaderMap) -> Option<String> {
    let mut token = None;
    take_list_entries(headers, SEC_WEBSOCKET_PROTOCOL, ',', ", ", |entry| {
        match entry.strip_prefix(PROTOCOL_PREFIX) {
            Some(found) => {
                token.get_or_insert_with(|| found.to_string());
                false
            }
            None => true,
        }
    });
    token
}

/// Rewrites a list header (all its lines) keeping the entries `keep` says yes to; the header
/// goes when none is left. A header that is not text is left as it is.
fn take_list_entries(
    headers: &mut HeaderMap,
    name: HeaderName,
    separator: char,
    joiner: &str,
    mut keep: impl FnMut(&str) -> bool,
) {
    let Ok(lines) = headers
        .get_all(&name)
        .iter()
        .map(|v| v.to_str().map(str::to_string))
        .collect::<Result<Vec<_>, _>>()
    else {
        return;
    };
    if lines.is_empty() {
        return;
    }
    let kept: Vec<&str> = lines
        .iter()
        .flat_map(|line| line.split(separator))
        .map(str::trim)
        .filter(|entry| !entry.is_empty() && keep(entry))
        .collect();
    headers.remove(&name);
    if !kept.is_empty() {
        let joined = HeaderValue::from_str(&kept.join(joiner)).expect("parts of a valid header value");
        headers.insert(name, joined);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(tokens: Vec<TokenSource>) -> JwtConfig {
        let mut config: JwtConfig = toml::from_str("algorithms = [\"HS256\"]\nsecret_file = \"s\"\n").unwrap();
        config.tokens = tokens;
        config
    }

    fn request(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder().uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn each_source_gives_its_token_and_keeps_no_copy() {
        use TokenSource::*;
        let all = config(vec![Header, Query, Cookie, Protocol]);
        let mut r = request(
            "/feed?a=1&access_token=Q&b=2",
            &[
                ("authorization", "Bearer H"),
                ("cookie", "theme=dark; access_token=C"),
                ("sec-websocket-protocol", "chat, bearer.P"),
            ],
        );
        let taken = take(&mut r, &all);
        assert_eq!(taken.token.as_deref(), Some("H"));
        assert_eq!(taken.protocol, None, "the token did not come as a protocol");
        assert_eq!(r.uri().to_string(), "/feed?a=1&b=2");
        assert!(r.headers().get("authorization").is_none());
        assert_eq!(r.headers()["cookie"], "theme=dark");
        assert_eq!(r.headers()["sec-websocket-protocol"], "chat");

        let mut r = request("/feed?access_token=a%2Eb", &[]);
        assert_eq!(take(&mut r, &all).token.as_deref(), Some("a.b"));
        assert_eq!(r.uri().to_string(), "/feed");

        let mut r = request("/feed", &[("cookie", "access_token=C")]);
        assert_eq!(take(&mut r, &all).token.as_deref(), Some("C"));
        assert!(r.headers().get("cookie").is_none());
    }

    #[test]
    fn a_protocol_token_names_the_other_protocol_in_the_answer() {
        let protocol = config(vec![TokenSource::Protocol]);
        let mut r = request("/", &[("sec-websocket-protocol", "bearer.P, graphql-ws")]);
        let taken = take(&mut r, &protocol);
        assert_eq!(taken.token.as_deref(), Some("P"));
        assert_eq!(taken.protocol, Some(HeaderValue::from_static("graphql-ws")));
        let mut r = request("/", &[("sec-websocket-protocol", "bearer.P")]);
        assert_eq!(take(&mut r, &protocol).protocol, None);
        assert!(r.headers().get("sec-websocket-protocol").is_none());
    }

    #[test]
    fn unconfigured_places_and_other_schemes_are_left_alone() {
        let header_only = config(vec![TokenSource::Header]);
        let mut r = request("/?access_token=Q", &[("authorization", "Basic dXNlcjpwdw==")]);
        assert_eq!(take(&mut r, &header_only), Taken::default());
        assert_eq!(r.uri().to_string(), "/?access_token=Q");
        assert!(r.headers().get("authorization").is_some());
    }
}
