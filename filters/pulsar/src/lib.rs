//! The `pulsar-ws` filter: Apache Pulsar's WebSocket API (docs/filters/pulsar.md) over the
//! route's `pulsar` sink and source. It owns the protocol only: the endpoint and topic named by
//! the path (v1 and v2 forms), the query parameters (refused with Pulsar's 400 at the upgrade),
//! the JSON frames both ways and Pulsar's error shapes. The broker's work (receipts, message ids,
//! subscriptions, acks, redelivery) is the connectors'.
//!
//! - Producer: each `{"payload", "properties", "key", "context"}` becomes a record for the sink
//!   (decoded payload, key, properties as headers); the answer waits for the sink's result, whose
//!   detail is the broker's message id, already base64 as Pulsar's proxy writes it.
//! - Consumer and reader: `subscribe` to the source at the upgrade with a spec built from the path
//!   and query; each delivery becomes Pulsar's message JSON; `{"messageId"}` acks,
//!   `negativeAcknowledge` nacks. receiverQueueSize (push) or permits (pullMode) bound what is
//!   in the client's hands: beyond it the filter holds the deliveries (ABI `hold`), so the
//!   source reads the broker no further.
//!
//! State is connection metadata (`pulsar.topic`, which the sink's topic template reads,
//! `pulsar.endpoint`, `pulsar.sub`, and the flow's `pulsar.window`, `pulsar.inflight`,
//! `pulsar.pull`), so any instance serves any connection and a hot swap keeps it.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use framegate_guest::{Conn, Filter, Message, Open, Record, SinkResult, Verdict, export_filter};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The filter's config on the route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The `pulsar` sink producers write to (its topic template should be `{meta.pulsar.topic}`).
    #[serde(default = "default_name")]
    sink: String,
    /// The `pulsar` source consumers and readers subscribe to.
    #[serde(default = "default_name")]
    source: String,
}

fn default_name() -> String {
    "pulsar".into()
}

const TOPIC: &str = "pulsar.topic";
const ENDPOINT: &str = "pulsar.endpoint";
const SUB: &str = "pulsar.sub";
/// Flow control: deliveries are held while `pulsar.inflight` >= `pulsar.window`. In push mode
/// the window is receiverQueueSize and acks take messages out of flight; in pull mode
/// (`pulsar.pull`) the window is the permits granted so far and nothing leaves flight.
const WINDOW: &str = "pulsar.window";
const INFLIGHT: &str = "pulsar.inflight";
const PULL: &str = "pulsar.pull";
/// Pulsar caps a consumer's or reader's receiverQueueSize here.
const MAX_QUEUE: u32 = 1000;

/// Pulsar's WebSocket error codes (the seed's table); on an open session they close it with
/// code 4000 + N and the description as the reason.
#[derive(Debug, Clone, Copy)]
enum WsError {
    FailedToSubscribe = 2,
    FailedToDeserializeFromJson = 3,
    PayloadEncodingError = 7,
    UnknownError = 8,
}

impl WsError {
    fn description(self) -> &'static str {
        match self {
            WsError::FailedToSubscribe => "Failed to subscribe",
            WsError::FailedToDeserializeFromJson => "Failed to de-serialize from JSON",
            WsError::PayloadEncodingError => "Invalid payload encoding",
            WsError::UnknownError => "Unknown error",
        }
    }

    fn result(self) -> String {
        format!("send-error:{}", self as u8)
    }

    /// Closes the session: code 4000 + N, the description (and why) as the reason.
    fn close(self, conn: &Conn, why: &str) {
        let mut reason = format!("{}: {why}", self.description());
        if reason.len() > 123 {
            let mut end = 123;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
        }
        let _ = conn.close(4000 + self as u16, &reason);
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Endpoint {
    Producer,
    Consumer,
    Reader,
}

impl Endpoint {
    fn name(self) -> &'static str {
        match self {
            Endpoint::Producer => "producer",
            Endpoint::Consumer => "consumer",
            Endpoint::Reader => "reader",
        }
    }
}

/// What the request path names, as Pulsar's proxy reads it (AbstractWebSocketHandler).
#[derive(Debug, PartialEq)]
struct Target {
    endpoint: Endpoint,
    /// e.g. `persistent://public/default/orders`.
    topic: String,
    subscription: Option<String>,
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent-encoding in {text:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{text:?} is not UTF-8"))
}

/// `/ws/[v2/]KIND/DOMAIN/...`: v2 names `tenant/namespace/topic`, v1
/// `property/cluster/namespace/topic`; a consumer's last segment is its subscription.
fn parse_path(path: &str) -> Result<Target, String> {
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (v2, rest) = match parts.as_slice() {
        ["ws", "v2", rest @ ..] => (true, rest),
        ["ws", rest @ ..] => (false, rest),
        _ => return Err(format!("{path} is not a Pulsar WebSocket path")),
    };
    let (endpoint, domain, names) = match rest {
        ["producer", domain, names @ ..] => (Endpoint::Producer, *domain, names),
        ["consumer", domain, names @ ..] => (Endpoint::Consumer, *domain, names),
        ["reader", domain, names @ ..] => (Endpoint::Reader, *domain, names),
        _ => return Err(format!("{path}: expected producer, consumer or reader")),
    };
    if domain != "persistent" && domain != "non-persistent" {
        return Err(format!("{path}: the domain must be persistent or non-persistent"));
    }
    let (names, subscription) = match (endpoint, names.split_last()) {
        (Endpoint::Consumer, Some((last, names))) => (names, Some(percent_decode(last)?)),
        _ => (names, None),
    };
    let needed = if v2 { 3 } else { 4 };
    if names.len() < needed || subscription.as_deref() == Some("") {
        return Err(format!("{path}: too few segments for a {} topic", endpoint.name()));
    }
    let names: Vec<String> = names.iter().map(|n| percent_decode(n)).collect::<Result<_, _>>()?;
    Ok(Target {
        endpoint,
        topic: format!("{domain}://{}", names.join("/")),
        subscription,
    })
}

fn parse_num<T: std::str::FromStr>(conn: &Conn, name: &str) -> Result<Option<T>, String> {
    conn.meta_str(&format!("query.{name}"))
        .map(|v| v.parse().map_err(|_| format!("{name}={v} is not a number")))
        .transpose()
}

fn parse_bool(conn: &Conn, name: &str) -> Result<Option<bool>, String> {
    conn.meta_str(&format!("query.{name}"))
        .map(|v| match v.to_ascii_lowercase().as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(format!("{name}={v} is not true or false")),
        })
        .transpose()
}

/// The value of query parameter `name` if it is one of `allowed` (as Pulsar's enums spell them).
fn parse_enum(conn: &Conn, name: &str, allowed: &[&str]) -> Result<Option<String>, String> {
    match conn.meta_str(&format!("query.{name}")) {
        Some(v) if allowed.contains(&v.as_str()) => Ok(Some(v)),
        Some(v) => Err(format!("{name}={v} is not one of {}", allowed.join(", "))),
        None => Ok(None),
    }
}

/// Checks the producer's parameters. The sink's options (batching, compression, timeout, name)
/// are the route's: the parameters are validated as Pulsar does and otherwise left to the sink.
fn producer_query(conn: &Conn) -> Result<(), String> {
    for name in ["sendTimeoutMillis", "batchingMaxMessages", "maxPendingMessages"] {
        parse_num::<i32>(conn, name)?;
    }
    parse_num::<i64>(conn, "batchingMaxPublishDelay")?;
    parse_bool(conn, "batchingEnabled")?;
    parse_enum(
        conn,
        "messageRoutingMode",
        &["SinglePartition", "RoundRobinPartition", "CustomPartition"],
    )?;
    parse_enum(conn, "compressionType", &["NONE", "LZ4", "ZLIB", "ZSTD", "SNAPPY"])?;
    parse_enum(conn, "hashingScheme", &["JavaStringHash", "Murmur3_32Hash"])?;
    Ok(())
}

/// The source's spec (src/connectors/pulsar/source.rs) for a consumer from its parameters.
fn consumer_spec(conn: &Conn, topic: &str, subscription: &str) -> Result<Value, String> {
    let mut spec = serde_json::json!({ "topic": topic, "subscription": subscription });
    let kind = parse_enum(
        conn,
        "subscriptionType",
        &["Exclusive", "Shared", "Failover", "Key_Shared"],
    )?;
    spec["type"] = kind.unwrap_or_else(|| "Exclusive".into()).to_ascii_lowercase().into();
    if let Some(start) = parse_enum(conn, "subscriptionInitialPosition", &["Earliest", "Latest"])? {
        spec["start"] = start.to_ascii_lowercase().into();
    }
    if let Some(size) = parse_num::<u32>(conn, "receiverQueueSize")? {
        spec["receiver_queue_size"] = size.clamp(1, MAX_QUEUE).into();
    }
    if let Some(ms) = parse_num::<u64>(conn, "ackTimeoutMillis")? {
        spec["ack_timeout_ms"] = ms.into();
    }
    if let Some(name) = conn.meta_str("query.consumerName") {
        spec["consumer_name"] = name.into();
    }
    if let Some(count) = parse_num::<u32>(conn, "maxRedeliverCount")?.filter(|&c| c > 0) {
        spec["max_redeliver_count"] = count.into();
        let dlq = conn
            .meta_str("query.deadLetterTopic")
            .unwrap_or_else(|| format!("{topic}-{subscription}-DLQ"));
        spec["dead_letter_topic"] = dlq.into();
    }
    parse_num::<i32>(conn, "priorityLevel")?;
    if let Some(ms) = parse_num::<u64>(conn, "negativeAckRedeliveryDelay")? {
        spec["nack_delay_ms"] = ms.into();
    }
    parse_enum(conn, "subscriptionMode", &["Durable", "NonDurable"])?;
    Ok(spec)
}

/// The source's spec for a reader: `messageId` is `earliest`, `latest` (default) or an id.
fn reader_spec(conn: &Conn, topic: &str) -> Result<Value, String> {
    let mut spec = serde_json::json!({ "topic": topic, "reader": true });
    match conn.meta_str("query.messageId").as_deref() {
        None | Some("latest") => spec["start"] = "latest".into(),
        Some("earliest") => spec["start"] = "earliest".into(),
        Some(id) => {
            STANDARD
                .decode(id)
                .map_err(|e| format!("messageId={id} is not earliest, latest or a base64 id: {e}"))?;
            spec["start_message_id"] = id.into();
        }
    }
    if let Some(size) = parse_num::<u32>(conn, "receiverQueueSize")? {
        spec["receiver_queue_size"] = size.clamp(1, MAX_QUEUE).into();
    }
    if let Some(name) = conn.meta_str("query.readerName") {
        spec["consumer_name"] = name.into();
    }
    Ok(spec)
}

/// A producer's message (ProducerMessage.java). Unknown fields are ignored, as Pulsar's JSON
/// reader does; `deliverAt`, `deliverAfterMs`, `eventTime` and `replicationClusters` are
/// accepted and not applied (the sink has no per-message options).
#[derive(Debug, Deserialize)]
struct ProducerMessage {
    payload: Option<String>,
    #[serde(default)]
    properties: BTreeMap<String, Value>,
    context: Option<Value>,
    key: Option<String>,
}

/// A producer's answer (ProducerAck.java, nulls left out).
#[derive(Debug, Serialize)]
struct ProducerAck<'a> {
    result: String,
    #[serde(rename = "errorMsg", skip_serializing_if = "Option::is_none")]
    error_msg: Option<&'a str>,
    #[serde(rename = "messageId", skip_serializing_if = "Option::is_none")]
    message_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<&'a str>,
}

fn ack_text(ack: &ProducerAck<'_>) -> String {
    serde_json::to_string(ack).expect("plain data serializes")
}

fn failure(error: WsError, message: &str, context: Option<&str>) -> String {
    ack_text(&ProducerAck {
        result: error.result(),
        error_msg: Some(message),
        message_id: None,
        context,
    })
}

/// Jackson reads a scalar where a string is wanted: `"context": 5` is `"5"`.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// A consumer's or reader's frame (ConsumerCommand.java).
#[derive(Debug, Deserialize)]
struct ConsumerCommand {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(rename = "messageId")]
    message_id: Option<String>,
    #[serde(rename = "permitMessages")]
    permit_messages: Option<i64>,
}

/// A message pushed to a consumer or reader (ConsumerMessage.java, nulls left out).
#[derive(Debug, Serialize)]
struct ConsumerMessage {
    #[serde(rename = "messageId")]
    message_id: String,
    payload: String,
    properties: BTreeMap<String, String>,
    #[serde(rename = "publishTime")]
    publish_time: String,
    #[serde(rename = "redeliveryCount")]
    redelivery_count: u32,
    /// Only when the producer set one.
    #[serde(rename = "eventTime", skip_serializing_if = "Option::is_none")]
    event_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
}

/// Milliseconds since the epoch as ISO-8601 in UTC with milliseconds, as Pulsar's DateFormatter.
fn iso_time(ms: i64) -> String {
    let (days, in_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s, milli) = (
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000,
    );
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

#[derive(Default)]
struct PulsarWs {
    config: Option<Config>,
}

impl PulsarWs {
    fn config(&self) -> &Config {
        self.config.as_ref().expect("fg_init ran")
    }

    fn endpoint(conn: &Conn) -> Option<Endpoint> {
        match conn.meta_str(ENDPOINT)?.as_str() {
            "producer" => Some(Endpoint::Producer),
            "consumer" => Some(Endpoint::Consumer),
            "reader" => Some(Endpoint::Reader),
            _ => None,
        }
    }

    fn open(&self, conn: &Conn) -> Result<(), String> {
        let path = conn.meta_str("path").unwrap_or_default();
        let target = parse_path(&path)?;
        let spec = match target.endpoint {
            Endpoint::Producer => {
                producer_query(conn)?;
                None
            }
            Endpoint::Consumer => {
                let subscription = target.subscription.as_deref().expect("consumers have one");
                Some(consumer_spec(conn, &target.topic, subscription)?)
            }
            Endpoint::Reader => Some(reader_spec(conn, &target.topic)?),
        };
        let _ = conn.set_meta(TOPIC, target.topic.as_bytes());
        let _ = conn.set_meta(ENDPOINT, target.endpoint.name().as_bytes());
        if let Some(spec) = spec {
            let pull = target.endpoint == Endpoint::Consumer && parse_bool(conn, "pullMode")? == Some(true);
            let window = match spec["receiver_queue_size"].as_u64() {
                _ if pull => 0,
                Some(size) => size,
                None => MAX_QUEUE.into(),
            };
            let _ = conn.set_meta(WINDOW, window.to_string().as_bytes());
            if pull {
                let _ = conn.set_meta(PULL, b"1");
                let _ = conn.hold(true);
            }
            let sub = conn
                .subscribe(&self.config().source, &spec.to_string())
                .map_err(|e| format!("source {} refused the subscription: {e}", self.config().source))?;
            let _ = conn.set_meta(SUB, sub.to_string().as_bytes());
        }
        Ok(())
    }

    /// A producer's message: a record for the sink, or Pulsar's failure answer.
    fn produce(&self, conn: &Conn, text: Option<&str>) -> Option<String> {
        let Some(message) = text.and_then(|t| serde_json::from_str::<ProducerMessage>(t).ok()) else {
            let error = WsError::FailedToDeserializeFromJson;
            return Some(failure(error, error.description(), None));
        };
        let context = message.context.as_ref().and_then(scalar_text);
        let payload = match message.payload.as_deref().map(|p| STANDARD.decode(p)) {
            Some(Ok(payload)) => payload,
            Some(Err(e)) => {
                let why = format!("Invalid Base64 message-payload error={e}");
                return Some(failure(WsError::PayloadEncodingError, &why, context.as_deref()));
            }
            None => {
                let why = "Invalid Base64 message-payload error=no payload";
                return Some(failure(WsError::PayloadEncodingError, why, context.as_deref()));
            }
        };
        let properties: Vec<(String, String)> = message
            .properties
            .iter()
            .filter_map(|(name, value)| scalar_text(value).map(|v| (name.clone(), v)))
            .collect();
        let headers: Vec<(&str, &[u8])> = properties
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_bytes()))
            .collect();
        // The context comes back with the result, so the answer needs nothing remembered.
        let saved = serde_json::to_vec(&context).expect("an optional string serializes");
        let record = Record {
            key: message.key.as_deref().map(str::as_bytes),
            headers: &headers,
            context: &saved,
        };
        match conn.emit_with(&self.config().sink, &payload, record) {
            Ok(_) => None,
            Err(e) => {
                let why = format!("sink {} refused the message: {e}", self.config().sink);
                Some(failure(WsError::UnknownError, &why, context.as_deref()))
            }
        }
    }

    /// Counts a message in (+1) or out (-1) of the client's hands, holding deliveries while
    /// the window is full.
    fn in_flight(conn: &Conn, change: i64) {
        Self::flow(conn, change, 0);
    }

    /// Moves the count in flight and the window, and holds deliveries while the window is full.
    fn flow(conn: &Conn, change: i64, grow: i64) {
        let number = |key| conn.meta_str(key).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
        let inflight = (number(INFLIGHT) + change).max(0);
        let window = number(WINDOW).saturating_add(grow);
        let _ = conn.set_meta(INFLIGHT, inflight.to_string().as_bytes());
        let _ = conn.set_meta(WINDOW, window.to_string().as_bytes());
        let _ = conn.hold(inflight >= window);
    }

    /// A consumer's or reader's frame: acks, nacks, and the questions Pulsar answers.
    fn command(&self, conn: &Conn, endpoint: Endpoint, text: Option<&str>) -> Verdict {
        let error = WsError::FailedToDeserializeFromJson;
        let Some(command) = text.and_then(|t| serde_json::from_str::<ConsumerCommand>(t).ok()) else {
            error.close(conn, "not a consumer command");
            return Verdict::Close;
        };
        let sub: u64 = conn.meta_str(SUB).and_then(|s| s.parse().ok()).unwrap_or(0);
        match command.kind.as_deref() {
            // The broker says nothing of a topic's end through the source: never ended.
            Some("isEndOfTopic") => {
                let _ = conn.send_text(r#"{"endOfTopic":false}"#);
            }
            // A reader acks nothing at the broker: its frames only make room.
            _ if endpoint == Endpoint::Reader => Self::in_flight(conn, -1),
            Some("permit") if command.permit_messages.is_none() => {
                error.close(conn, "permit without permitMessages");
                return Verdict::Close;
            }
            Some("permit") => {
                if conn.meta(PULL).is_some() {
                    Self::flow(conn, 0, command.permit_messages.unwrap_or(0).max(0));
                }
            }
            Some("unsubscribe") => {
                let _ = conn.unsubscribe(sub);
            }
            kind => {
                let Some(id) = command.message_id.filter(|id| STANDARD.decode(id).is_ok()) else {
                    error.close(conn, "no valid messageId");
                    return Verdict::Close;
                };
                let _ = if kind == Some("negativeAcknowledge") {
                    conn.nack(sub, &id)
                } else {
                    conn.ack(sub, &id)
                };
                if conn.meta(PULL).is_none() {
                    Self::in_flight(conn, -1);
                }
            }
        }
        Verdict::Drop
    }

    /// A message from the source, as Pulsar pushes it.
    fn deliver(conn: &Conn, message: &mut Message) -> String {
        let properties = conn
            .meta_keys("msg.header.")
            .into_iter()
            .filter_map(|name| {
                let value = conn.meta(&name)?;
                Some((
                    name["msg.header.".len()..].to_string(),
                    String::from_utf8_lossy(&value).into_owned(),
                ))
            })
            .collect();
        let publish_time = conn
            .meta_str("msg.publish_time")
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(framegate_guest::now_ms);
        let pushed = ConsumerMessage {
            message_id: conn.meta_str("msg.id").unwrap_or_default(),
            payload: STANDARD.encode(message.payload()),
            properties,
            publish_time: iso_time(publish_time),
            redelivery_count: conn
                .meta_str("msg.redelivery_count")
                .and_then(|c| c.parse().ok())
                .unwrap_or(0),
            event_time: conn
                .meta_str("msg.event_time")
                .and_then(|t| t.parse().ok())
                .filter(|&t| t != 0)
                .map(iso_time),
            key: conn.meta("msg.key").map(|k| String::from_utf8_lossy(&k).into_owned()),
        };
        serde_json::to_string(&pushed).expect("plain data serializes")
    }
}

impl Filter for PulsarWs {
    fn init(&mut self, config: &[u8]) -> Result<(), String> {
        self.config = Some(serde_json::from_slice(config).map_err(|e| format!("pulsar-ws config: {e}"))?);
        Ok(())
    }

    fn on_open(&mut self, conn: &Conn) -> Open {
        match self.open(conn) {
            Ok(()) => Open::Accept,
            Err(why) => {
                let _ = conn.reject(400, format!("Invalid query params: {why}").as_bytes());
                Open::Reject
            }
        }
    }

    fn on_message(&mut self, conn: &Conn, message: &mut Message) -> Verdict {
        let Some(endpoint) = Self::endpoint(conn) else {
            return Verdict::Continue;
        };
        if !message.from_client() {
            let text = Self::deliver(conn, message);
            let _ = conn.send_text(&text);
            Self::in_flight(conn, 1);
            return Verdict::Drop;
        }
        let text = message.text().map(str::to_string);
        if endpoint != Endpoint::Producer {
            return self.command(conn, endpoint, text.as_deref());
        }
        if let Some(answer) = self.produce(conn, text.as_deref()) {
            let _ = conn.send_text(&answer);
        }
        Verdict::Drop
    }

    fn on_result(&mut self, conn: &Conn, result: SinkResult) {
        if conn.meta_str(SUB).and_then(|s| s.parse().ok()) == Some(result.ticket) {
            let why = String::from_utf8_lossy(&result.detail);
            WsError::FailedToSubscribe.close(conn, &why);
            return;
        }
        let context: Option<String> = serde_json::from_slice(&result.context).unwrap_or(None);
        let detail = String::from_utf8_lossy(&result.detail);
        let answer = if result.ok {
            ack_text(&ProducerAck {
                result: "ok".into(),
                error_msg: None,
                message_id: Some(&detail),
                context: context.as_deref(),
            })
        } else {
            failure(WsError::UnknownError, &detail, context.as_deref())
        };
        let _ = conn.send_text(&answer);
    }
}

export_filter!(PulsarWs);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let v2 = parse_path("/ws/v2/consumer/persistent/public/default/orders/sub-1").unwrap();
        assert_eq!(
            v2,
            Target {
                endpoint: Endpoint::Consumer,
                topic: "persistent://public/default/orders".into(),
                subscription: Some("sub-1".into()),
            }
        );
        let v1 = parse_path("/ws/producer/persistent/sample/standalone/ns1/my%20topic").unwrap();
        assert_eq!(v1.topic, "persistent://sample/standalone/ns1/my topic");
        assert_eq!(v1.endpoint, Endpoint::Producer);
        let reader = parse_path("/ws/v2/reader/non-persistent/t/n/x").unwrap();
        assert_eq!(reader.topic, "non-persistent://t/n/x");
        assert!(parse_path("/ws/v2/producer/persistent/t/n").is_err());
        assert!(parse_path("/ws/v2/producer/durable/t/n/x").is_err());
        assert!(parse_path("/ws/v2/consumer/persistent/t/n/x").is_err());
    }

    #[test]
    fn times_and_answers() {
        assert_eq!(iso_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_time(1_472_575_557_785), "2016-08-30T16:45:57.785Z");
        let error = WsError::FailedToDeserializeFromJson;
        assert_eq!(
            failure(error, error.description(), None),
            r#"{"result":"send-error:3","errorMsg":"Failed to de-serialize from JSON"}"#
        );
        assert_eq!(scalar_text(&serde_json::json!(5)).as_deref(), Some("5"));
    }
}
