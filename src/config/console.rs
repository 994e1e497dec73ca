//! The console's settings, `[server.console]`: whether the admin listener serves the console
//! page, how often it refreshes, and what the live tap shows of a message (its rate cap, how
//! many bytes, which metadata values it hides).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Serve `/console` and its snapshot and event streams on the admin listener.
    pub enabled: bool,
    /// How often the console's event stream sends a snapshot.
    pub refresh_ms: u64,
    /// Serve the live tap (`/console/tap`): the messages of a route as they pass.
    pub tap: bool,
    /// Messages a route's tap shows per second, all watchers together; the rest are counted
    /// as skipped.
    pub tap_max_per_second: u32,
    /// How many bytes of each payload the tap shows; 0: none.
    pub tap_preview_bytes: usize,
    /// Metadata keys whose values the tap hides (`header.authorization`); a key ending in `*`
    /// hides every key it starts (`claim.*`).
    pub tap_redact: Vec<String>,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            refresh_ms: 1000,
            tap: true,
            tap_max_per_second: 20,
            tap_preview_bytes: 64,
            tap_redact: [
                "header.authorization",
                "header.cookie",
                "header.proxy-authorization",
                "header.sec-websocket-key",
                "header.sec-websocket-protocol",
                "query.token",
                "query.access_token",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

impl ConsoleConfig {
    /// Whether the tap hides the value of `key`.
    pub fn redacts(&self, key: &str) -> bool {
        self.tap_redact.iter().any(|pattern| match pattern.strip_suffix('*') {
            Some(prefix) => key.starts_with(prefix),
            None => key.eq_ignore_ascii_case(pattern),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_matches_whole_keys_and_prefixes() {
        let config = ConsoleConfig {
            tap_redact: vec!["header.authorization".into(), "claim.*".into()],
            ..ConsoleConfig::default()
        };
        assert!(config.redacts("header.authorization"));
        assert!(config.redacts("claim.sub"));
        assert!(!config.redacts("header.authorization-hint"));
        assert!(!config.redacts("header.x-claim"));
    }
}
