//! The `query` filter: NSDb's live query subscriptions (`/ws-stream`) and an insert socket
//! (`/ws-insert`) in front of the bus (docs/filters/query.md). One module, two modes:
//!
//! - `insert`: each message is one NSDb insert body `{db, namespace, metric, bit}` or an array
//!   of them (at most `max_records`); its records are kept in the retained window (the module's
//!   shared store, `retention.rs`), all or none, then emitted to the route's sink (the bus), and
//!   the message is answered once.
//! - `stream`: at the upgrade, `refresh_period` and `retention_size` are checked and the
//!   connection subscribes to the bus topic; subscribe messages are parsed (`sql.rs`), answered
//!   with the window's matching records, and every record the bus delivers is matched against
//!   all of the connection's queries in that one call (`stream.rs`).
//!
//! Filter state lives in connection metadata and the shared store; the parsed queries in the
//! instance are a cache, rebuilt from metadata when an instance has not seen them.

mod eval;
mod insert;
mod mapping;
mod retention;
mod sql;
mod stream;

use std::collections::HashMap;
use std::rc::Rc;

use framegate_guest::{Conn, Filter, Level, Message, Open, SinkResult, Verdict, export_filter, log};
use serde::Deserialize;

use retention::Retention;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    Stream,
    Insert,
}

/// The filter's config on a route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    mode: Mode,
    /// stream: the source records come from, and its spec (the bus topic); `{conn}` in the
    /// spec becomes a name of the connection's own (a Kafka consumer group per connection).
    #[serde(default = "default_source")]
    source: String,
    #[serde(default = "default_topic")]
    topic: String,
    /// insert: the sink records go to.
    sink: Option<String>,
    /// stream: the smallest `refresh_period` a client may ask for, and the one it gets without asking.
    #[serde(default = "default_period")]
    min_refresh_period_ms: u32,
    refresh_period_ms: Option<u32>,
    /// stream: records that may wait for a slow client, per query, without `retention_size`.
    #[serde(default = "default_retention_size")]
    retention_size: u32,
    /// insert: the most records one insert message may hold.
    #[serde(default = "default_max_records")]
    max_records: usize,
    /// Both modes: what each metric keeps (give both routes the same).
    #[serde(default)]
    retention: Retention,
    /// stream: an instance parses a delivery and matches each distinct query once for all the
    /// connections it serves (`false`: each connection alone, the benchmark's baseline).
    #[serde(default = "default_true")]
    share_matches: bool,
    /// stream: how plain JSON records (a source other than framegate's insert route) become
    /// NSDb records; without it, only the insert route's envelopes are read.
    map: Option<mapping::Mapping>,
}

fn default_true() -> bool {
    true
}
fn default_source() -> String {
    "bus".into()
}
fn default_topic() -> String {
    "nsdb".into()
}
fn default_period() -> u32 {
    100
}
fn default_retention_size() -> u32 {
    100
}
fn default_max_records() -> usize {
    1000
}

#[derive(Default)]
struct Query {
    config: Option<Config>,
    /// quid -> parsed subscription: a cache of what `q.def.QUID` metadata holds.
    compiled: HashMap<String, Rc<stream::Compiled>>,
    /// The last deliveries, parsed and matched, for the next connections that get them.
    delivered: std::collections::VecDeque<stream::Delivered>,
}

impl Query {
    fn config(&self) -> &Config {
        self.config.as_ref().expect("fg_init ran")
    }
}

/// `text` as a JSON string, quoted and escaped.
fn json(text: &str) -> String {
    serde_json::to_string(text).expect("strings serialize")
}

/// FNV-1a's offset basis, the usual seed of `fnv1a`.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// The 64-bit FNV-1a hash of `bytes` from `seed`: ids that every instance derives alike.
fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    (bytes.iter()).fold(seed, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// `{"error": ...}`, NSDb's shape for anything that is not a subscription.
fn error_reply(reason: &str) -> String {
    format!("{{\"error\":{}}}", json(reason))
}

impl Filter for Query {
    fn init(&mut self, config: &[u8]) -> Result<(), String> {
        let config: Config = serde_json::from_slice(config).map_err(|e| format!("query config: {e}"))?;
        if config.mode == Mode::Insert && config.sink.is_none() {
            return Err("query config: mode \"insert\" needs `sink`, the sink records go to".into());
        }
        if config
            .refresh_period_ms
            .is_some_and(|p| p < config.min_refresh_period_ms)
        {
            return Err("query config: refresh_period_ms is below min_refresh_period_ms".into());
        }
        if let Some(map) = &config.map {
            map.check()?;
        }
        if config.retention.count == 0 || config.retention_size == 0 || config.max_records == 0 {
            return Err("query config: retention.count, retention_size and max_records must be at least 1".into());
        }
        if !(1024..=retention::MAX_BYTES_CAP).contains(&config.retention.max_bytes) {
            return Err(format!(
                "query config: retention.max_bytes must be from 1024 to {} (the store holds 64 MiB)",
                retention::MAX_BYTES_CAP
            ));
        }
        self.config = Some(config);
        Ok(())
    }

    fn on_open(&mut self, conn: &Conn) -> Open {
        match self.config().mode {
            Mode::Insert => Open::Accept,
            Mode::Stream => stream::open(self.config(), conn),
        }
    }

    fn on_message(&mut self, conn: &Conn, message: &mut Message) -> Verdict {
        let config = self.config.as_ref().expect("fg_init ran");
        match (config.mode, message.from_client()) {
            (Mode::Insert, true) => insert::message(config, conn, message),
            (Mode::Insert, false) => Verdict::Continue,
            (Mode::Stream, true) => stream::message(config, &mut self.compiled, conn, message),
            (Mode::Stream, false) => stream::delivery(config, &mut self.compiled, &mut self.delivered, conn, message),
        }
    }

    /// Only a subscription that could not start comes back here (emits are fire and forget).
    fn on_result(&mut self, _conn: &Conn, result: SinkResult) {
        if !result.ok {
            let why = String::from_utf8_lossy(&result.detail);
            log(
                Level::Warn,
                &format!("{} {}: {why}", self.config().source, self.config().topic),
            );
        }
    }

    fn on_timer(&mut self, conn: &Conn, timer: u64) {
        if self.config().mode == Mode::Stream {
            let config = self.config.as_ref().expect("fg_init ran");
            stream::timer(config, &mut self.compiled, conn, timer);
        }
    }
}

export_filter!(Query);
