//! The `mqtt` sink (rumqttc, MQTT 3.1.1): every record is published to a topic, a template over
//! the record. With QoS 1 (the default) a confirmed record is one the broker acknowledged
//! (PUBACK), and its id is the packet id; with QoS 0 (the default when `delivery =
//! "fire_and_forget"`) a record is done once written to the connection. MQTT 3.1.1 messages
//! have no headers: the record's key and headers are not sent. rumqttc's event loop runs in a
//! task of the sink, which keeps the connection (and reconnects); it hands out packet ids in
//! the order records were published, which is how each PUBACK finds its record.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, Outgoing, Packet, QoS};
use serde::Deserialize;
use tokio::sync::oneshot;

use super::{RETRY, client_options, default_keep_alive, default_url, unique_client_id};
use crate::config::Delivery;
use crate::connectors::sinks::{BATCH, Deliver};
use crate::connectors::template::{self, Template};
use crate::connectors::url::redact;
use crate::health::PartHealth;
use crate::types::{DeliveryError, Outcome, Record};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkOptions {
    /// The broker, `mqtt://HOST:PORT` (plain TCP).
    #[serde(default = "default_url")]
    pub url: String,
    /// The client id; a unique one by default.
    pub client_id: Option<String>,
    /// The topic of each record, e.g. `sensors/{meta.path.device}/temp`.
    #[serde(deserialize_with = "template::deserialize")]
    pub topic: Template,
    /// 0 or 1; by default 1, or 0 when `delivery = "fire_and_forget"`.
    pub qos: Option<u8>,
    /// The broker keeps the last message of each topic for new subscribers.
    #[serde(default)]
    pub retain: bool,
    /// Seconds between keep-alive pings; 0 turns them off.
    #[serde(default = "default_keep_alive")]
    pub keep_alive_s: u64,
    /// How long a batch may wait for the broker's acknowledgements.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
}

fn default_timeout() -> u64 {
    5_000
}

type Queued = Arc<Mutex<VecDeque<oneshot::Sender<Outcome>>>>;

/// The client and the task driving its event loop; the task ends with the sink.
struct Link {
    client: AsyncClient,
    queued: Queued,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

pub struct Mqtt {
    options: Arc<SinkOptions>,
    qos: QoS,
    link: Option<Link>,
    health: PartHealth,
}

impl Mqtt {
    pub fn new(options: Arc<SinkOptions>, delivery: Delivery, health: PartHealth) -> Mqtt {
        // Levels above 1 were refused when the options were checked.
        let qos = match options.qos {
            Some(0) => QoS::AtMostOnce,
            Some(_) => QoS::AtLeastOnce,
            None if delivery == Delivery::FireAndForget => QoS::AtMostOnce,
            None => QoS::AtLeastOnce,
        };
        Mqtt {
            qos,
            options,
            link: None,
            health,
        }
    }

    /// The client, started at first use: the event loop connects in its task.
    fn link(&mut self) -> Result<&Link, String> {
        if self.link.is_none() {
            let client_id = self.options.client_id.clone().unwrap_or_else(unique_client_id);
            let options = client_options(&self.options.url, client_id, self.options.keep_alive_s)?;
            // Room for a whole batch: requests are queued without waiting (see `deliver`).
            let (client, events) = AsyncClient::new(options, 2 * BATCH);
            let queued = Queued::default();
            let driver = tokio::spawn(drive(
                events,
                queued.clone(),
                self.health.clone(),
                self.options.url.clone(),
            ));
            self.link = Some(Link { client, queued, driver });
        }
        Ok(self.link.as_ref().expect("just made"))
    }
}

/// Polls the event loop for as long as the sink lives: sends, pings, reconnects, and settles
/// each record when its packet was written (QoS 0) or acknowledged (QoS 1).
async fn drive(mut events: EventLoop, queued: Queued, health: PartHealth, url: String) {
    let mut unacked: HashMap<u16, oneshot::Sender<Outcome>> = HashMap::new();
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => health.up(),
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                let Some(waiter) = queued.lock().unwrap().pop_front() else {
                    continue;
                };
                if pkid == 0 {
                    let _ = waiter.send(Ok(String::new()));
                } else {
                    unacked.insert(pkid, waiter);
                }
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                if let Some(waiter) = unacked.remove(&ack.pkid) {
                    let _ = waiter.send(Ok(ack.pkid.to_string()));
                }
            }
            Ok(_) => {}
            Err(e) => {
                let reason = format!("mqtt {}: {e}", redact(&url));
                health.down(&reason);
                {
                    // Everything not acknowledged fails now and the runner sends it again.
                    // rumqttc must not resend it by itself, or records and packet ids would
                    // come apart: drop its pending requests, under the lock `deliver` holds
                    // while it queues, so that none slips in between.
                    let mut queued = queued.lock().unwrap();
                    events.clean();
                    events.pending.clear();
                    for waiter in unacked.drain().map(|(_, w)| w).chain(queued.drain(..)) {
                        let _ = waiter.send(Err(DeliveryError::Failed(reason.clone())));
                    }
                }
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

impl Deliver for Mqtt {
    async fn deliver(&mut self, batch: &[Record]) -> Vec<Outcome> {
        let (qos, retain) = (self.qos, self.options.retain);
        let topics: Vec<Result<String, DeliveryError>> = batch.iter().map(|r| self.options.topic.render(r)).collect();
        let link = match self.link() {
            Ok(link) => link,
            Err(e) => return vec![Err(DeliveryError::Failed(e)); batch.len()],
        };
        let mut waiting = Vec::with_capacity(batch.len());
        {
            let mut queued = link.queued.lock().unwrap();
            for (record, topic) in batch.iter().zip(topics) {
                waiting.push(topic.and_then(|topic| {
                    if !rumqttc::valid_topic(&topic) {
                        return Err(DeliveryError::Refused(format!(
                            "mqtt topic {topic:?}: empty, or with a wildcard (+ #)"
                        )));
                    }
                    let (tx, rx) = oneshot::channel();
                    queued.push_back(tx);
                    match link.client.try_publish(&topic, qos, retain, record.payload.to_vec()) {
                        Ok(()) => Ok(rx),
                        Err(e) => {
                            queued.pop_back();
                            Err(DeliveryError::Failed(format!("mqtt publish to {topic:?}: {e}")))
                        }
                    }
                }));
            }
        }
        let timeout = Duration::from_millis(self.options.timeout_ms);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut outcomes = Vec::with_capacity(batch.len());
        for waiter in waiting {
            outcomes.push(match waiter {
                Ok(rx) => match tokio::time::timeout_at(deadline, rx).await {
                    Ok(Ok(outcome)) => outcome,
                    Ok(Err(_)) => Err(DeliveryError::Failed("mqtt: the client stopped".into())),
                    Err(_) => Err(DeliveryError::Failed(format!(
                        "mqtt {}: not acknowledged within {timeout:?}",
                        redact(&self.options.url)
                    ))),
                },
                Err(e) => Err(e),
            });
        }
        outcomes
    }
}
