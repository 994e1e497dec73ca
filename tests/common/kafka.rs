//! Kafka helpers for the tests that read or prepare a Kafka-protocol broker (tansu): topics of
//! one partition, and reading a topic back with an independent rdkafka client.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::PATIENCE;

pub fn brokers(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

/// Makes topics of one partition, where order is total (tansu makes topics of several on
/// first use).
pub async fn create_topics(brokers: &str, names: &[&str]) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|name| NewTopic::new(name, 1, TopicReplication::Fixed(1)))
        .collect();
    for result in admin.create_topics(&topics, &AdminOptions::new()).await.unwrap() {
        result.unwrap();
    }
}

/// Every record of a one-partition topic, in offset order, read without a group. tansu's
/// high watermark counts batches rather than records, so the end is a marker written last
/// (one of its own for each reading).
pub async fn read_topic(brokers: &str, topic: &str) -> Vec<OwnedMessage> {
    static READINGS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let end = format!(
        "end of reading {}",
        READINGS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    producer
        .send(FutureRecord::<(), _>::to(topic).payload(&end), PATIENCE)
        .await
        .unwrap();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, 0, Offset::Beginning).unwrap();
    consumer.assign(&assignment).unwrap();
    let mut read = Vec::new();
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        assert!(std::time::Instant::now() < deadline, "topic {topic} not read in time");
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message.unwrap().detach();
        if message.payload() == Some(end.as_bytes()) {
            return read;
        }
        read.push(message);
    }
}

pub fn text(bytes: Option<&[u8]>) -> String {
    String::from_utf8_lossy(bytes.unwrap_or_default()).into_owned()
}

pub fn header(message: &OwnedMessage, name: &str) -> Option<String> {
    let headers = message.headers()?;
    headers.iter().find(|h| h.key == name).map(|h| text(h.value))
}
