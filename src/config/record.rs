//! `[routes.NAME.record]`: writing a route's sessions as replay files (docs/replay.md).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Metadata always written as `[redacted]` unless named in `keep`.
pub const ALWAYS_REDACTED: [&str; 3] = ["header.authorization", "header.cookie", "header.proxy-authorization"];

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RecordConfig {
    /// The folder the session files go to (made if missing); relative to the working directory.
    pub dir: PathBuf,
    /// Sessions recorded at most, from the start of the process; later ones are not.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// Bytes written at most, all sessions together; a session past it is cut short.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Metadata keys written as `[redacted]` (`header.x-api-key`, `query.token`, `claim.email`).
    #[serde(default)]
    pub redact: Vec<String>,
    /// Keys of `ALWAYS_REDACTED` to write as they are after all.
    #[serde(default)]
    pub keep: Vec<String>,
}

fn default_max_sessions() -> usize {
    100
}
fn default_max_bytes() -> u64 {
    64 << 20
}

impl RecordConfig {
    /// Whether metadata `key` is written as `[redacted]`.
    pub fn redacts(&self, key: &str) -> bool {
        self.redact.iter().any(|k| k == key) || (ALWAYS_REDACTED.contains(&key) && !self.keep.iter().any(|k| k == key))
    }
}
