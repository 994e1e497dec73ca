//! A connection's backlog: the bytes of messages on their way to it from its subscriptions that
//! its session has not taken yet, held within a budget (the route's `max_backlog_bytes`). A
//! broker subscription waits for room; the bus cannot wait for one subscriber, so it declares
//! the connection overflowed, and the session closes it.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// What a message costs beside its payload (its id, attributes, queue slots): a flood of empty
/// messages is bounded too.
const OVERHEAD: usize = 128;

/// A connection's budget; clones share it.
#[derive(Debug, Clone)]
pub struct Backlog {
    room: Arc<Semaphore>,
    limit: usize,
    overflowed: CancellationToken,
}

/// The room a message takes in its connection's backlog, given back when it is dropped.
#[derive(Debug)]
pub struct Held {
    _room: OwnedSemaphorePermit,
}

impl Backlog {
    pub fn new(limit: usize) -> Backlog {
        let limit = limit.clamp(1, u32::MAX as usize);
        Backlog {
            room: Arc::new(Semaphore::new(limit)),
            limit,
            overflowed: CancellationToken::new(),
        }
    }

    /// A message larger than the whole budget takes all of it: it passes when nothing else waits.
    fn cost(&self, len: usize) -> u32 {
        len.saturating_add(OVERHEAD).min(self.limit) as u32
    }

    /// Room for a message of `len` bytes if there is some now.
    pub fn try_hold(&self, len: usize) -> Option<Held> {
        self.room
            .clone()
            .try_acquire_many_owned(self.cost(len))
            .ok()
            .map(|room| Held { _room: room })
    }

    /// Room for a message of `len` bytes, waiting for the session to take what is ahead of it.
    pub async fn hold(&self, len: usize) -> Held {
        let permit = self.room.clone().acquire_many_owned(self.cost(len)).await;
        Held {
            _room: permit.expect("the backlog's semaphore is never closed"),
        }
    }

    /// The connection cannot keep up with what must reach it: its session closes it.
    pub fn overflow(&self) {
        self.overflowed.cancel();
    }

    /// Resolves once the backlog overflowed.
    pub async fn overflowed(&self) {
        self.overflowed.cancelled().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn room_comes_back_when_a_message_is_dropped() {
        let backlog = Backlog::new(1000);
        let first = backlog.try_hold(500).unwrap();
        let _second = backlog.try_hold(200).unwrap();
        assert!(backlog.try_hold(200).is_none(), "500 + 200 + 200 and 3 x 128 overhead");
        drop(first);
        assert!(backlog.try_hold(200).is_some());
        let huge = Backlog::new(1000);
        let all = huge
            .try_hold(1 << 20)
            .expect("a message over the budget passes an empty backlog");
        assert!(huge.try_hold(0).is_none());
        drop(all);
        let _held = huge.hold(0).await;
    }
}
