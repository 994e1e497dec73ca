//! The `mqtt` source (rumqttc, MQTT 3.1.1): a client subscribed to a topic filter. Spec: a
//! filter like `sensors/+/temp`, or `{"filter", "qos", "client_id", "clean_session"}`. With QoS
//! 1 (the default) acks are manual: the id of a message is its packet id, and ack sends its
//! PUBACK. MQTT has no nack: a nacked message is left unacknowledged, and the broker sends it
//! again when the same client id connects again with a persistent session (`clean_session =
//! false`), as it does every message unacked when the connection closed. With a clean session
//! (the default) unacked messages are gone with the connection. With QoS 0 there is nothing to
//! settle. A subscription that cannot start (broker unreachable, subscription refused) fails;
//! one that started connects again after losing the broker.

use std::collections::HashMap;
use std::sync::Arc;

use rumqttc::{AsyncClient, Event, Packet, Publish, SubscribeReasonCode};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::{RETRY, client_options, default_keep_alive, default_url, qos, unique_client_id};
use crate::connectors::sources::{Feed, parse_spec};
use crate::connectors::url::redact;
use crate::types::{Opcode, Settle};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceOptions {
    /// The broker, `mqtt://HOST:PORT` (plain TCP).
    #[serde(default = "default_url")]
    pub url: String,
    /// Seconds between keep-alive pings; 0 turns them off.
    #[serde(default = "default_keep_alive")]
    pub keep_alive_s: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    filter: String,
    /// 0 or 1.
    #[serde(default = "one")]
    qos: u8,
    /// A fixed client id: with `clean_session = false`, the broker keeps the subscription and
    /// the unacked messages for the next connection with this id. A unique one by default.
    client_id: Option<String>,
    #[serde(default = "yes")]
    clean_session: bool,
}

fn one() -> u8 {
    1
}

fn yes() -> bool {
    true
}

pub async fn run(
    options: Arc<SourceOptions>,
    spec: String,
    feed: Feed,
    mut verdicts: mpsc::UnboundedReceiver<Settle>,
) -> Result<(), String> {
    let spec: Spec = parse_spec(&spec, "filter")?;
    let level = qos(spec.qos)?;
    if !rumqttc::valid_filter(&spec.filter) {
        return Err(format!("mqtt topic filter {:?}: not a valid filter", spec.filter));
    }
    let client_id = spec.client_id.clone().unwrap_or_else(unique_client_id);
    let mut mqtt = client_options(&options.url, client_id, options.keep_alive_s)?;
    mqtt.set_clean_session(spec.clean_session).set_manual_acks(true);
    let (client, mut events) = AsyncClient::new(mqtt, 64);
    let filter = &spec.filter;
    let mut started = false;
    // Messages handed to the client and not yet settled, by packet id.
    let mut unsettled: HashMap<String, Publish> = HashMap::new();
    loop {
        tokio::select! {
            verdict = verdicts.recv() => {
                let Some(verdict) = verdict else { return Ok(()) };
                match &verdict {
                    Settle::Ack(id) => {
                        let Some(publish) = unsettled.remove(id) else { continue };
                        if let Err(e) = client.try_ack(&publish) {
                            tracing::warn!(source = &*feed.source, "mqtt ack of {id} on {filter:?}: {e}");
                            continue;
                        }
                    }
                    // Left unacked: the broker sends it again to the next session with this id.
                    Settle::Nack(id) => {
                        if unsettled.remove(id).is_none() {
                            continue;
                        }
                    }
                }
                feed.settled(&verdict);
            }
            event = events.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    feed.health.up();
                    if ack.session_present {
                        // The broker kept the subscription.
                        started = true;
                    } else {
                        client
                            .try_subscribe(filter.as_str(), level)
                            .map_err(|e| format!("mqtt subscribe {filter:?}: {e}"))?;
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    if ack.return_codes.contains(&SubscribeReasonCode::Failure) {
                        return Err(format!(
                            "mqtt {}: the broker refused the subscription to {filter:?}",
                            redact(&options.url)
                        ));
                    }
                    started = true;
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let id = publish.pkid.to_string();
                    let attrs = vec![
                        ("topic".to_string(), publish.topic.clone().into_bytes().into()),
                        ("redelivery_count".to_string(), (if publish.dup { "1" } else { "0" }).into()),
                    ];
                    let payload = publish.payload.clone();
                    if publish.qos != rumqttc::QoS::AtMostOnce {
                        unsettled.insert(id.clone(), publish);
                    }
                    if !feed.deliver(id, Opcode::of(&payload), payload, attrs).await {
                        return Ok(());
                    }
                }
                Ok(_) => {}
                Err(e) if !started => return Err(format!("mqtt {}: {e}", redact(&options.url))),
                Err(e) => {
                    feed.health.down(&format!("mqtt {}: {e}", redact(&options.url)));
                    // Packet ids of the lost connection mean nothing on the next one; the
                    // broker sends unacked messages again there (persistent session).
                    unsettled.clear();
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }
}
