//! The `redis` sink: every record is an entry (XADD) of a Redis stream, optionally capped with
//! `MAXLEN ~ N`. Fields: `payload`, `key` (if the record has one) and one `h:NAME` per header.
//! A confirmed record is one Redis answered; its id is the entry id. The stream name is a
//! template over the record. The connection manager reconnects by itself. With
//! `dedupe_window_ms`, each entry is added by a script that first looks for the record's id
//! (kept that long beside the stream), so a retry after a lost answer is not stored twice.

use std::sync::Arc;

use redis::aio::ConnectionManager;
use serde::Deserialize;

use super::{connect, default_url};
use crate::connectors::sinks::{Deliver, fail_pending};
use crate::connectors::template::{self, Template};
use crate::health::PartHealth;
use crate::types::{DeliveryError, Outcome, Record};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkOptions {
    #[serde(default = "default_url")]
    pub url: String,
    /// The stream each record is added to, e.g. `events:{meta.path.tenant}`.
    #[serde(deserialize_with = "template::deserialize")]
    pub stream: Template,
    /// Keep the stream near this length (`MAXLEN ~`).
    pub maxlen: Option<usize>,
    /// How long a batch may wait for Redis's answer before it fails (and is retried).
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Remember each record's id this long, and add a record already added (a retry whose
    /// first answer was lost with the connection) no second time.
    pub dedupe_window_ms: Option<u64>,
}

/// Adds the entry unless the record's id (KEYS[2]) was added within the window (ARGV[1] ms);
/// answers the entry id either way. ARGV[2..] are XADD's arguments after the stream.
const ADD_ONCE: &str = "local id = redis.call('GET', KEYS[2]) \
if id then return id end \
id = redis.call('XADD', KEYS[1], unpack(ARGV, 2)) \
redis.call('SET', KEYS[2], id, 'PX', ARGV[1]) \
return id";

fn default_timeout() -> u64 {
    5_000
}

pub struct Redis {
    options: Arc<SinkOptions>,
    connection: Option<ConnectionManager>,
    health: PartHealth,
}

impl Redis {
    pub fn new(options: Arc<SinkOptions>, health: PartHealth) -> Redis {
        Redis {
            options,
            connection: None,
            health,
        }
    }

    async fn connection(&mut self) -> Result<ConnectionManager, String> {
        if let Some(connection) = &self.connection {
            return Ok(connection.clone());
        }
        let timeout = std::time::Duration::from_millis(self.options.timeout_ms);
        let connection = connect(&self.options.url, timeout).await?;
        self.connection = Some(connection.clone());
        Ok(connection)
    }

    fn command(&self, record: &Record) -> Result<redis::Cmd, DeliveryError> {
        let stream = self.options.stream.render(record)?;
        let mut command = match self.options.dedupe_window_ms {
            Some(window) => {
                let mut eval = redis::cmd("EVAL");
                let seen = format!("framegate:added:{}", record.unique_id());
                eval.arg(ADD_ONCE).arg(2).arg(stream).arg(seen).arg(window.max(1));
                eval
            }
            None => {
                let mut xadd = redis::cmd("XADD");
                xadd.arg(stream);
                xadd
            }
        };
        if let Some(maxlen) = self.options.maxlen {
            command.arg("MAXLEN").arg("~").arg(maxlen);
        }
        command.arg("*").arg("payload").arg(record.payload.as_ref());
        if let Some(key) = &record.key {
            command.arg("key").arg(key.as_ref());
        }
        for (name, value) in &record.headers {
            command.arg(format!("h:{name}")).arg(value.as_ref());
        }
        Ok(command)
    }
}

impl Deliver for Redis {
    async fn deliver(&mut self, batch: &[Record]) -> Vec<Outcome> {
        let mut connection = match self.connection().await {
            Ok(connection) => connection,
            Err(e) => {
                self.health.down(&e);
                return vec![Err(DeliveryError::Failed(e)); batch.len()];
            }
        };
        // One round trip for the batch: the pipeline answers entry ids in order.
        let mut pipeline = redis::pipe();
        let mut outcomes: Vec<Outcome> = Vec::with_capacity(batch.len());
        for record in batch {
            match self.command(record) {
                Ok(command) => {
                    pipeline.add_command(command);
                    outcomes.push(Ok(String::new()));
                }
                Err(e) => outcomes.push(Err(e)),
            }
        }
        let ids: Result<Vec<String>, _> = pipeline.query_async(&mut connection).await;
        match ids {
            Ok(ids) => {
                self.health.up();
                let mut ids = ids.into_iter();
                for outcome in outcomes.iter_mut().filter(|o| o.is_ok()) {
                    *outcome = ids
                        .next()
                        .ok_or_else(|| DeliveryError::Failed("redis answered fewer ids than entries".into()));
                }
            }
            Err(e) => {
                let reason = format!("redis XADD: {e}");
                self.health.down(&reason);
                fail_pending(&mut outcomes, &reason);
            }
        }
        outcomes
    }
}
