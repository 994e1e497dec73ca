//! Records on their way to a sink, the outcome of each, and where that outcome goes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{Meta, Opcode};

/// One message on its way to a sink.
#[derive(Debug, Clone)]
pub struct Record {
    /// Unique in this process, the same for every attempt: brokers that deduplicate use it.
    pub id: u64,
    pub route: Arc<str>,
    pub conn: u64,
    pub opcode: Opcode,
    pub key: Option<Bytes>,
    pub payload: Bytes,
    pub headers: Vec<(String, Bytes)>,
    /// The connection's metadata when the record was made.
    pub meta: Meta,
}

impl Record {
    pub fn next_id() -> u64 {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }

    /// The id, unique across restarts too: the process's start time, then the record's number.
    pub fn unique_id(&self) -> String {
        static BOOT: OnceLock<u128> = OnceLock::new();
        let boot = BOOT.get_or_init(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        });
        format!("{boot:x}-{}", self.id)
    }
}

/// Why a record was not delivered, and whether trying again can help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// The record itself cannot be delivered (a template it cannot fill, a name the protocol
    /// cannot carry, a peer's final answer such as an HTTP 4xx): never retried, and it says
    /// nothing of the peer's health.
    #[error("refused: {0}")]
    Refused(String),
    /// The peer could not take it now (unreachable, timed out, a broken channel): retried.
    #[error("{0}")]
    Failed(String),
}

impl DeliveryError {
    /// Whether another attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, DeliveryError::Failed(_))
    }
}

/// The outcome of one record: the peer's id of it, or why it failed.
pub type Outcome = Result<String, DeliveryError>;

/// Where a record's outcome goes: back to the filter that emitted it.
#[derive(Debug)]
pub struct Reply {
    pub to: mpsc::UnboundedSender<SinkResult>,
    pub ticket: u64,
    pub filter: usize,
    pub context: Bytes,
}

impl Reply {
    pub fn send(self, outcome: Outcome) {
        // The connection may be gone; then nobody waits for the outcome.
        let _ = self.to.send(SinkResult {
            ticket: self.ticket,
            filter: self.filter,
            context: self.context,
            outcome,
        });
    }
}

/// A record's outcome as its connection receives it.
#[derive(Debug)]
pub struct SinkResult {
    pub ticket: u64,
    pub filter: usize,
    pub context: Bytes,
    pub outcome: Outcome,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_final_and_say_so() {
        let refused = DeliveryError::Refused("amqp routing key: too long".into());
        assert!(!refused.is_retryable());
        assert_eq!(refused.to_string(), "refused: amqp routing key: too long");
        let failed = DeliveryError::Failed("amqp: connection refused".into());
        assert!(failed.is_retryable());
        assert_eq!(failed.to_string(), "amqp: connection refused");
    }
}
