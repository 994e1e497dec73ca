//! The outlet: the bounded queue between a `ws` source and one route it feeds. When it is full
//! the source waits (and reads its socket no further) or drops the oldest message, as
//! configured; the fed route's session takes messages from it (src/feed.rs).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::OnFull;

/// A source's message on its way to a fed route.
#[derive(Clone, Debug)]
pub struct FeedMessage {
    pub text: bool,
    pub payload: Bytes,
    /// `source.*` keys, set on the session's metadata when the message is read.
    pub meta: Vec<(String, Bytes)>,
}

/// The queue between a source and one fed route.
pub struct Outlet {
    queue: Mutex<VecDeque<FeedMessage>>,
    capacity: usize,
    /// The session waiting for a message.
    readable: AtomicWaker,
    /// The source waiting for room.
    writable: Notify,
    dropped: Counter,
}

impl Outlet {
    pub fn new(capacity: usize, dropped: Counter) -> Outlet {
        Outlet {
            queue: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
            capacity,
            readable: AtomicWaker::new(),
            writable: Notify::new(),
            dropped,
        }
    }

    /// Queues a message; a full queue waits for room (`block`, the time is returned) or drops
    /// its oldest message (`drop_oldest`, counted). Gives up when `stop` is cancelled.
    pub async fn push(&self, message: FeedMessage, on_full: OnFull, stop: &CancellationToken) -> Duration {
        // The clock runs only once the queue is full: the time paused, not the time to push.
        let mut full_since = None;
        loop {
            let room = self.writable.notified();
            {
                let mut queue = self.queue.lock().unwrap();
                if queue.len() >= self.capacity && on_full == OnFull::DropOldest {
                    queue.pop_front();
                    self.dropped.inc();
                }
                if queue.len() < self.capacity {
                    queue.push_back(message);
                    drop(queue);
                    self.readable.wake();
                    return full_since.map_or(Duration::ZERO, |since: Instant| since.elapsed());
                }
            }
            let since = *full_since.get_or_insert_with(Instant::now);
            tokio::select! {
                () = room => {}
                () = stop.cancelled() => return since.elapsed(),
            }
        }
    }

    pub fn poll_pop(&self, cx: &mut Context<'_>) -> Poll<FeedMessage> {
        self.readable.register(cx.waker());
        let popped = self.queue.lock().unwrap().pop_front();
        match popped {
            Some(message) => {
                self.writable.notify_one();
                Poll::Ready(message)
            }
            None => Poll::Pending,
        }
    }
}
