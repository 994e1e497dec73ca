//! The permessage-deflate handshake (RFC 7692 section 7.1): reading a client's offers and
//! answering the first one framegate can honour, and framegate's own offer as a client with the
//! check of a server's answer. An offer framegate cannot honour is ignored, never refused.

use crate::config::{DeflateConfig, WINDOW_BITS};

/// The extension's name in `Sec-WebSocket-Extensions`.
pub const NAME: &str = "permessage-deflate";

/// The window a peer that names no size compresses with.
const LARGEST_WINDOW: u8 = 15;

/// What both ends agreed, seen from one of them: how this end compresses, and how the peer
/// does (which this end's inflater follows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    pub own_window: u8,
    /// This end starts every message with an empty window (and keeps no state between them).
    pub own_no_context_takeover: bool,
    pub peer_window: u8,
    pub peer_no_context_takeover: bool,
}

/// An answer a client cannot accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    #[error("the server chose an extension framegate did not offer: {0}")]
    NotOffered(String),
    #[error("the server's permessage-deflate answer is not valid: {0}")]
    Invalid(String),
}

/// One permessage-deflate entry of `Sec-WebSocket-Extensions`, its parameters checked (RFC
/// 7692 section 7.1: each at most once, windows 8 to 15, the client's may have no value).
#[derive(Debug, Default, PartialEq, Eq)]
struct Params {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: offered with no value (the client can honour one in the answer).
    client_max_window_bits: Option<Option<u8>>,
}

/// The extensions of `Sec-WebSocket-Extensions` values in order: each one's name and its
/// `name[=value]` parameters (quotes taken off values).
fn extensions<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> impl Iterator<Item = (&'a str, Vec<(&'a str, Option<&'a str>)>)> {
    values
        .into_iter()
        .flat_map(|value| value.split(','))
        .filter_map(|entry| {
            let mut parts = entry.split(';').map(str::trim);
            let name = parts.next().filter(|name| !name.is_empty())?;
            let params = parts
                .map(|param| match param.split_once('=') {
                    Some((key, value)) => (key.trim(), Some(value.trim().trim_matches('"'))),
                    None => (param, None),
                })
                .collect();
            Some((name, params))
        })
}

/// A window size as RFC 7692 writes it: digits, no leading zero, 8 to 15.
fn window(value: Option<&str>) -> Option<u8> {
    let value = value?;
    if value.starts_with('0') || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().filter(|bits| (8..=LARGEST_WINDOW).contains(bits))
}

impl Params {
    /// The parameters of one entry; `None` when any is unknown, repeated or malformed.
    fn parse(params: &[(&str, Option<&str>)]) -> Option<Params> {
        let mut parsed = Params::default();
        for &(key, value) in params {
            let seen = match key.to_ascii_lowercase().as_str() {
                "server_no_context_takeover" if value.is_none() => {
                    std::mem::replace(&mut parsed.server_no_context_takeover, true)
                }
                "client_no_context_takeover" if value.is_none() => {
                    std::mem::replace(&mut parsed.client_no_context_takeover, true)
                }
                "server_max_window_bits" => parsed.server_max_window_bits.replace(window(value)?).is_some(),
                "client_max_window_bits" => {
                    let bits = match value {
                        Some(_) => Some(window(value)?),
                        None => None,
                    };
                    parsed.client_max_window_bits.replace(bits).is_some()
                }
                _ => return None,
            };
            if seen {
                return None;
            }
        }
        Some(parsed)
    }
}

/// A server's choice among a client's offers (the values of its `Sec-WebSocket-Extensions`
/// headers): the first permessage-deflate offer framegate can honour under `config`, and the
/// header value that accepts it. `None`: no extension (other extensions and offers that cannot
/// be honoured are ignored, as RFC 6455 lets a server do).
pub fn accept<'a>(offers: impl IntoIterator<Item = &'a str>, config: &DeflateConfig) -> Option<(Agreed, String)> {
    if !config.enabled {
        return None;
    }
    extensions(offers)
        .filter(|(name, _)| name.eq_ignore_ascii_case(NAME))
        .find_map(|(_, params)| answer(&Params::parse(&params)?, config))
}

/// The answer to one valid offer, if framegate can honour it.
fn answer(offer: &Params, config: &DeflateConfig) -> Option<(Agreed, String)> {
    let mut response = NAME.to_string();
    let own_no_context_takeover = offer.server_no_context_takeover || !config.server_context_takeover;
    if own_no_context_takeover {
        response.push_str("; server_no_context_takeover");
    }
    let peer_no_context_takeover = offer.client_no_context_takeover || !config.client_context_takeover;
    if peer_no_context_takeover {
        response.push_str("; client_no_context_takeover");
    }
    // zlib cannot compress with a window of 8 bits: such an offer is declined.
    let own_window = match offer.server_max_window_bits {
        Some(asked) if !WINDOW_BITS.contains(&asked) => return None,
        Some(asked) => asked.min(config.server_max_window_bits),
        None => config.server_max_window_bits,
    };
    if own_window < LARGEST_WINDOW || offer.server_max_window_bits.is_some() {
        response.push_str(&format!("; server_max_window_bits={own_window}"));
    }
    // The client's window may be limited only if it said it can be (the parameter offered).
    let peer_window = match offer.client_max_window_bits {
        Some(offered) => {
            let offered = offered.unwrap_or(LARGEST_WINDOW);
            if config.client_max_window_bits < offered {
                response.push_str(&format!("; client_max_window_bits={}", config.client_max_window_bits));
            }
            offered.min(config.client_max_window_bits)
        }
        None => LARGEST_WINDOW,
    };
    let agreed = Agreed {
        own_window,
        own_no_context_takeover,
        // An inflater with a window of 9 also reads a stream made with 8.
        peer_window: peer_window.max(*WINDOW_BITS.start()),
        peer_no_context_takeover,
    };
    Some((agreed, response))
}

/// framegate's offer as a client, under `config` (read from the server's side: `server_*` is
/// what the server does, `client_*` what framegate does).
pub fn offer(config: &DeflateConfig) -> String {
    let mut offer = format!("{NAME}; client_max_window_bits");
    if !config.server_context_takeover {
        offer.push_str("; server_no_context_takeover");
    }
    if !config.client_context_takeover {
        offer.push_str("; client_no_context_takeover");
    }
    if config.server_max_window_bits < LARGEST_WINDOW {
        offer.push_str(&format!("; server_max_window_bits={}", config.server_max_window_bits));
    }
    offer
}

/// A server's answer to `offer(config)` (its `Sec-WebSocket-Extensions` values; nothing was
/// offered unless `config.enabled`): `None` when it chose no extension.
pub fn accepted<'a>(
    answers: impl IntoIterator<Item = &'a str>,
    config: &DeflateConfig,
) -> Result<Option<Agreed>, AnswerError> {
    let mut chosen = None;
    for (name, params) in extensions(answers) {
        if !name.eq_ignore_ascii_case(NAME) || chosen.is_some() || !config.enabled {
            return Err(AnswerError::NotOffered(name.to_string()));
        }
        let answer = Params::parse(&params).ok_or_else(|| AnswerError::Invalid(format!("{params:?}")))?;
        let own_window = match answer.client_max_window_bits {
            Some(Some(bits)) if WINDOW_BITS.contains(&bits) => bits,
            Some(_) => return Err(AnswerError::Invalid("client_max_window_bits".into())),
            None => LARGEST_WINDOW,
        };
        let peer_window = answer.server_max_window_bits.unwrap_or(LARGEST_WINDOW);
        if peer_window > config.server_max_window_bits && config.server_max_window_bits < LARGEST_WINDOW {
            return Err(AnswerError::Invalid(
                "server_max_window_bits larger than offered".into(),
            ));
        }
        if !answer.server_no_context_takeover && !config.server_context_takeover {
            return Err(AnswerError::Invalid("server_no_context_takeover missing".into()));
        }
        chosen = Some(Agreed {
            own_window: own_window.min(config.client_max_window_bits),
            own_no_context_takeover: answer.client_no_context_takeover || !config.client_context_takeover,
            peer_window: peer_window.max(*WINDOW_BITS.start()),
            peer_no_context_takeover: answer.server_no_context_takeover,
        });
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept_one(offer: &str) -> Option<(Agreed, String)> {
        accept([offer], &DeflateConfig::default())
    }

    #[test]
    fn a_browser_offer_is_answered_with_framegate_s_window() {
        let (agreed, answer) = accept_one("permessage-deflate; client_max_window_bits").unwrap();
        assert_eq!(answer, "permessage-deflate; server_max_window_bits=12");
        assert_eq!(
            agreed,
            Agreed {
                own_window: 12,
                own_no_context_takeover: false,
                peer_window: 15,
                peer_no_context_takeover: false,
            }
        );
    }

    #[test]
    fn the_client_s_requests_are_honoured() {
        let (agreed, answer) = accept_one(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=9; client_max_window_bits=10",
        )
        .unwrap();
        assert_eq!(
            answer,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9"
        );
        assert_eq!((agreed.own_window, agreed.peer_window), (9, 10));
        assert!(agreed.own_no_context_takeover && agreed.peer_no_context_takeover);
    }

    #[test]
    fn offers_that_cannot_be_honoured_are_skipped_not_refused() {
        // Unknown parameters, repeats, bad values, a window of 8, another extension: ignored.
        for offer in [
            "permessage-deflate; foo=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_max_window_bits=8",
            "x-webkit-deflate-frame",
            "",
        ] {
            assert_eq!(accept_one(offer), None, "{offer}");
        }
        // The first offer that can be honoured wins, in whatever header it came.
        let (agreed, answer) = accept(
            [
                "x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=8",
                "permessage-deflate; server_max_window_bits=\"10\"",
            ],
            &DeflateConfig::default(),
        )
        .unwrap();
        assert_eq!(answer, "permessage-deflate; server_max_window_bits=10");
        assert_eq!(agreed.own_window, 10);
    }

    #[test]
    fn the_config_limits_what_is_agreed() {
        let config = DeflateConfig {
            server_context_takeover: false,
            client_context_takeover: false,
            server_max_window_bits: 15,
            client_max_window_bits: 11,
            ..DeflateConfig::default()
        };
        let (agreed, answer) = accept(["permessage-deflate; client_max_window_bits"], &config).unwrap();
        assert_eq!(
            answer,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=11"
        );
        assert_eq!((agreed.own_window, agreed.peer_window), (15, 11));
        // A client that cannot be limited keeps its window; framegate's inflater follows it.
        let (agreed, answer) = accept(["permessage-deflate"], &config).unwrap();
        assert_eq!(agreed.peer_window, 15);
        assert!(!answer.contains("client_max_window_bits"));
        let off = DeflateConfig {
            enabled: false,
            ..DeflateConfig::default()
        };
        assert_eq!(accept(["permessage-deflate"], &off), None);
    }

    #[test]
    fn a_client_checks_the_server_s_answer() {
        let config = DeflateConfig::default();
        assert_eq!(
            offer(&config),
            "permessage-deflate; client_max_window_bits; server_max_window_bits=12"
        );
        assert_eq!(accepted([], &config), Ok(None));
        let agreed = accepted(
            ["permessage-deflate; server_max_window_bits=10; client_max_window_bits=9"],
            &config,
        )
        .unwrap()
        .unwrap();
        assert_eq!((agreed.own_window, agreed.peer_window), (9, 10));
        for answer in [
            "x-webkit-deflate-frame",
            "permessage-deflate; server_max_window_bits=15",
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate, permessage-deflate",
        ] {
            assert!(accepted([answer], &config).is_err(), "{answer}");
        }
        // Nothing offered: any extension is refused.
        let off = DeflateConfig {
            enabled: false,
            ..config
        };
        assert!(accepted(["permessage-deflate"], &off).is_err());
        assert_eq!(accepted([], &off), Ok(None));
    }
}
