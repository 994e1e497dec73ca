//! Health of the parts that talk to peers (sinks and sources): each says whether its broker is
//! reachable, and why not. `/readyz` lists the parts that are down; `framegate_peer_up` shows
//! each part as 1 or 0.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::gauge::Gauge;

use crate::metrics::Metrics;
use crate::types::Outcome;

#[derive(Default)]
pub struct Health {
    /// Part name (`sinks.NAME`, `sources.NAME`) to the reason it is down.
    down: Mutex<BTreeMap<String, String>>,
    /// Part name to what an operator should know even while it is up (TLS checks turned off).
    warnings: Mutex<BTreeMap<String, String>>,
}

impl Health {
    /// A handle for one part, starting as up.
    pub fn part(self: &Arc<Self>, name: String, metrics: &Metrics) -> PartHealth {
        let gauge = metrics.peer_up(&name);
        gauge.set(1);
        self.down.lock().unwrap().remove(&name);
        self.warnings.lock().unwrap().remove(&name);
        PartHealth {
            health: self.clone(),
            name: name.into(),
            gauge,
        }
    }

    /// The parts that are down, with the reason of each.
    pub fn down(&self) -> BTreeMap<String, String> {
        self.down.lock().unwrap().clone()
    }

    pub fn warnings(&self) -> BTreeMap<String, String> {
        self.warnings.lock().unwrap().clone()
    }
}

/// What a connector reports of its broker.
#[derive(Clone)]
pub struct PartHealth {
    health: Arc<Health>,
    name: Arc<str>,
    gauge: Gauge,
}

impl PartHealth {
    pub fn up(&self) {
        if self.gauge.set(1) == 0 {
            self.health.down.lock().unwrap().remove(&*self.name);
            tracing::info!(part = &*self.name, "peer reachable again");
        }
    }

    /// Up when the peer took any record of a batch; down, with the first reason, when every
    /// record failed in a way a retry may mend. A refused record says nothing of the peer.
    pub fn report(&self, outcomes: &[Outcome]) {
        if outcomes.iter().any(|o| o.is_ok()) {
            self.up();
        } else if outcomes.iter().all(|o| matches!(o, Err(e) if e.is_retryable()))
            && let Some(Err(reason)) = outcomes.first()
        {
            self.down(&reason.to_string());
        }
    }

    /// Shown in /readyz beside the part's state, without making it unready.
    pub fn warn(&self, text: &str) {
        self.health
            .warnings
            .lock()
            .unwrap()
            .insert(self.name.to_string(), text.to_string());
    }

    pub fn down(&self, reason: &str) {
        if self.gauge.set(0) == 1 {
            tracing::warn!(part = &*self.name, "peer unreachable: {reason}");
        }
        self.health
            .down
            .lock()
            .unwrap()
            .insert(self.name.to_string(), reason.to_string());
    }
}
