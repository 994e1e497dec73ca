//! The `bus` sink: publishes records on an in-process bus topic. The outcome's detail is the
//! number of subscribers that got the record.

use std::sync::Arc;

use serde::Deserialize;

use super::{Deliver, Outcome, Record};
use crate::bus::Bus;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    pub topic: String,
}

pub struct BusSink {
    bus: Arc<Bus>,
    topic: String,
}

impl BusSink {
    pub fn new(bus: Arc<Bus>, options: Options) -> BusSink {
        BusSink {
            bus,
            topic: options.topic,
        }
    }
}

impl Deliver for BusSink {
    async fn deliver(&mut self, batch: &[Record]) -> Vec<Outcome> {
        batch
            .iter()
            .map(|r| Ok(self.bus.publish(&self.topic, r.opcode, r.payload.clone()).to_string()))
            .collect()
    }
}
