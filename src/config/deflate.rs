//! A route's `[routes.NAME.deflate]` table: whether permessage-deflate (RFC 7692) is negotiated
//! with its clients, and how framegate's side of it compresses.

use serde::{Deserialize, Serialize};

/// The window sizes RFC 7692 allows a peer to ask for; 8 is refused because zlib deflates with
/// at least 9 (a window of 8 bits cannot be honoured).
pub const WINDOW_BITS: std::ops::RangeInclusive<u8> = 9..=15;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeflateConfig {
    /// Accept a client's permessage-deflate offer. Routes with filters compress at the socket;
    /// pass-through routes forward the offer and the upstream's answer.
    pub enabled: bool,
    /// Keep framegate's compression window from one message to the next (better ratio, about
    /// `2^(window+2) + 2^(mem_level+9)` bytes per busy connection); false: state is freed after
    /// every message (`server_no_context_takeover`).
    pub server_context_takeover: bool,
    /// Let the client keep its window (framegate then keeps a 2^window inflate window per busy
    /// connection); false: framegate asks for `client_no_context_takeover`.
    pub client_context_takeover: bool,
    /// The largest window framegate compresses with (9..=15); smaller if the client asks.
    pub server_max_window_bits: u8,
    /// The largest window the client may compress with (9..=15), asked of clients that offer
    /// `client_max_window_bits`.
    pub client_max_window_bits: u8,
    /// zlib's memLevel (1..=9) of framegate's compressor: memory against speed and ratio.
    pub mem_level: u8,
    /// Messages smaller than this many bytes go out uncompressed (RSV1 clear).
    pub min_size: usize,
    /// The compression level, 0 (stored) to 9 (smallest, slowest).
    pub level: u8,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            server_context_takeover: true,
            client_context_takeover: true,
            server_max_window_bits: 12,
            client_max_window_bits: 15,
            mem_level: 5,
            min_size: 256,
            level: 1,
        }
    }
}

impl DeflateConfig {
    /// The first key (under `deflate`) whose value cannot work, and what was expected.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let window = format!("expected {} to {}", WINDOW_BITS.start(), WINDOW_BITS.end());
        if !WINDOW_BITS.contains(&self.server_max_window_bits) {
            return Err(("server_max_window_bits", window));
        }
        if !WINDOW_BITS.contains(&self.client_max_window_bits) {
            return Err(("client_max_window_bits", window));
        }
        if !(1..=9).contains(&self.mem_level) {
            return Err(("mem_level", "expected 1 to 9".into()));
        }
        if self.level > 9 {
            return Err(("level", "expected 0 to 9".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_zlib_cannot_use_are_refused_by_key() {
        assert_eq!(DeflateConfig::default().check(), Ok(()));
        let bad = [
            DeflateConfig {
                server_max_window_bits: 8,
                ..DeflateConfig::default()
            },
            DeflateConfig {
                client_max_window_bits: 16,
                ..DeflateConfig::default()
            },
            DeflateConfig {
                mem_level: 0,
                ..DeflateConfig::default()
            },
            DeflateConfig {
                level: 10,
                ..DeflateConfig::default()
            },
        ];
        let keys: Vec<_> = bad.iter().map(|c| c.check().unwrap_err().0).collect();
        assert_eq!(
            keys,
            ["server_max_window_bits", "client_max_window_bits", "mem_level", "level"]
        );
    }
}
