//! The `redis` source: a consumer of a Redis stream's consumer group (XREADGROUP). Spec: a
//! stream name, or `{"stream", "group", "consumer", "start": "new"|"all", "field",
//! "claim_idle_ms", "count", "block_ms"}`. The group is made if missing (MKSTREAM). A consumer
//! first gets its own pending entries again (those it never acked, from an earlier connection
//! with the same consumer name), then entries other consumers left pending longer than
//! `claim_idle_ms` (XAUTOCLAIM), then new ones. The id is the entry id: ack is XACK; nack takes
//! the entry again (XCLAIM, which counts a delivery) and hands it over once more.
//! The payload is the entry's `field` (default `payload`, as the redis sink writes it), or the
//! whole entry as a JSON object when it has no such field.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redis::aio::ConnectionManager;
use redis::streams::{StreamAutoClaimReply, StreamClaimReply, StreamId, StreamReadReply};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::{SourceOptions, connect};
use crate::connectors::sources::{Feed, parse_spec};
use crate::types::{Opcode, Settle};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    stream: String,
    #[serde(default = "default_group")]
    group: String,
    /// Unacked entries come back to a later connection with the same consumer name.
    consumer: Option<String>,
    /// Where a group made now starts: `new` entries only, or `all` of the stream.
    #[serde(default)]
    start: Start,
    #[serde(default = "default_field")]
    field: String,
    /// Take over other consumers' entries pending this long; 0 never.
    #[serde(default = "default_claim_idle")]
    claim_idle_ms: u64,
    #[serde(default = "default_count")]
    count: usize,
    #[serde(default = "default_block")]
    block_ms: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Start {
    #[default]
    New,
    All,
}

fn default_group() -> String {
    "framegate".into()
}
fn default_field() -> String {
    "payload".into()
}
fn default_claim_idle() -> u64 {
    60_000
}
fn default_count() -> usize {
    64
}
fn default_block() -> u64 {
    1_000
}

/// Pause before reading again after an error.
const RETRY: Duration = Duration::from_secs(1);

struct Group {
    spec: Spec,
    consumer: String,
}

pub async fn run(
    options: Arc<SourceOptions>,
    spec: String,
    feed: Feed,
    verdicts: mpsc::UnboundedReceiver<Settle>,
) -> Result<(), String> {
    let spec: Spec = parse_spec(&spec, "stream")?;
    let consumer = spec
        .consumer
        .clone()
        .unwrap_or_else(|| format!("framegate-{}", feed.sub));
    let group = Group { spec, consumer };
    // Blocking reads get a connection of their own, so that acks never wait behind them, and
    // a reply time above the block time: a read that timed out would leave its entries pending.
    let reply_time = Duration::from_millis(group.spec.block_ms) + Duration::from_secs(5);
    let (reads, settles) = (
        connect(&options.url, reply_time).await?,
        connect(&options.url, Duration::from_secs(5)).await?,
    );
    let mut setup = settles.clone();
    let created: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&group.spec.stream)
        .arg(&group.spec.group)
        .arg(match group.spec.start {
            Start::New => "$",
            Start::All => "0",
        })
        .arg("MKSTREAM")
        .query_async(&mut setup)
        .await;
    if let Err(e) = created
        && e.code() != Some("BUSYGROUP")
    {
        return Err(format!("redis XGROUP CREATE {}: {e}", group.spec.stream));
    }
    feed.health.up();
    tokio::select! {
        ended = read(&group, &feed, reads) => ended,
        ended = settle(&group, &feed, settles, verdicts) => ended,
    }
}

/// Reads entries and hands them over: own pending ones first, then claimed, then new ones.
async fn read(group: &Group, feed: &Feed, mut connection: ConnectionManager) -> Result<(), String> {
    let spec = &group.spec;
    let mut pending_from = Some("0".to_string());
    let mut claim_from = (spec.claim_idle_ms > 0).then(|| "0-0".to_string());
    loop {
        let entries: redis::RedisResult<Vec<StreamId>> = if let Some(from) = &pending_from {
            xreadgroup(group, from, None)
                .query_async(&mut connection)
                .await
                .map(ids)
        } else if let Some(from) = &claim_from {
            redis::cmd("XAUTOCLAIM")
                .arg(&spec.stream)
                .arg(&spec.group)
                .arg(&group.consumer)
                .arg(spec.claim_idle_ms)
                .arg(from)
                .arg("COUNT")
                .arg(spec.count)
                .query_async(&mut connection)
                .await
                .map(|reply: StreamAutoClaimReply| {
                    claim_from = Some(reply.next_stream_id);
                    reply.claimed
                })
        } else {
            xreadgroup(group, ">", Some(spec.block_ms))
                .query_async(&mut connection)
                .await
                .map(ids)
        };
        let entries = match entries {
            Ok(entries) => entries,
            Err(e) => {
                feed.health.down(&format!("redis XREADGROUP {}: {e}", spec.stream));
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        feed.health.up();
        if let Some(from) = &mut pending_from {
            match entries.last() {
                Some(last) => *from = last.id.clone(),
                None => pending_from = None,
            }
        } else if claim_from.as_deref() == Some("0-0") {
            // XAUTOCLAIM went round the whole pending list once: new entries from here on.
            claim_from = None;
        }
        for entry in entries {
            if !hand_over(group, feed, entry).await {
                return Ok(());
            }
        }
    }
}

/// Carries out the filter's verdicts.
async fn settle(
    group: &Group,
    feed: &Feed,
    mut connection: ConnectionManager,
    mut verdicts: mpsc::UnboundedReceiver<Settle>,
) -> Result<(), String> {
    let spec = &group.spec;
    while let Some(verdict) = verdicts.recv().await {
        let outcome = match &verdict {
            Settle::Ack(id) => redis::cmd("XACK")
                .arg(&spec.stream)
                .arg(&spec.group)
                .arg(id)
                .query_async::<i64>(&mut connection)
                .await
                .map(drop),
            Settle::Nack(id) => {
                let claimed: redis::RedisResult<StreamClaimReply> = redis::cmd("XCLAIM")
                    .arg(&spec.stream)
                    .arg(&spec.group)
                    .arg(&group.consumer)
                    .arg(0)
                    .arg(id)
                    .query_async(&mut connection)
                    .await;
                match claimed {
                    Ok(reply) => {
                        for entry in reply.ids {
                            if !hand_over(group, feed, entry).await {
                                return Ok(());
                            }
                        }
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
        };
        match outcome {
            Ok(()) => feed.settled(&verdict),
            Err(e) => tracing::warn!(source = &*feed.source, "redis {verdict:?}: {e}"),
        }
    }
    Ok(())
}

fn xreadgroup(group: &Group, from: &str, block_ms: Option<u64>) -> redis::Cmd {
    let mut command = redis::cmd("XREADGROUP");
    command
        .arg("GROUP")
        .arg(&group.spec.group)
        .arg(&group.consumer)
        .arg("COUNT")
        .arg(group.spec.count);
    if let Some(ms) = block_ms {
        command.arg("BLOCK").arg(ms);
    }
    command.arg("STREAMS").arg(&group.spec.stream).arg(from);
    command
}

fn ids(reply: StreamReadReply) -> Vec<StreamId> {
    reply.keys.into_iter().flat_map(|key| key.ids).collect()
}

async fn hand_over(group: &Group, feed: &Feed, entry: StreamId) -> bool {
    let bytes = |value: &redis::Value| -> Option<Bytes> {
        match value {
            redis::Value::BulkString(bytes) => Some(Bytes::copy_from_slice(bytes)),
            redis::Value::SimpleString(text) => Some(Bytes::copy_from_slice(text.as_bytes())),
            _ => None,
        }
    };
    let mut attrs = vec![("topic".to_string(), Bytes::from(group.spec.stream.clone()))];
    for (name, value) in &entry.map {
        let Some(value) = bytes(value) else { continue };
        if name == "key" {
            attrs.push(("key".into(), value));
        } else if let Some(header) = name.strip_prefix("h:") {
            attrs.push((format!("header.{header}"), value));
        }
    }
    let payload = match entry.map.get(&group.spec.field).and_then(bytes) {
        Some(payload) => payload,
        None => {
            let fields: serde_json::Map<String, serde_json::Value> = entry
                .map
                .iter()
                .filter_map(|(k, v)| bytes(v).map(|b| (k.clone(), String::from_utf8_lossy(&b).into_owned().into())))
                .collect();
            serde_json::to_vec(&fields).expect("strings serialize").into()
        }
    };
    let opcode = Opcode::of(&payload);
    feed.deliver(entry.id, opcode, payload, attrs).await
}
