//! The live tap: a route's messages as they pass (direction, size, first bytes, metadata with
//! configured values hidden), for whoever watches it on the console. Costs one atomic load per
//! message while nobody watches; the channel exists only while someone does, and a rate cap
//! bounds what a busy route hands out.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::broadcast;

use crate::config::ConsoleConfig;
use crate::types::{Meta, Opcode};

/// Messages a slow watcher may fall behind before it skips some.
const WATCHER_QUEUE: usize = 256;
/// The longest metadata value shown, in bytes.
const META_VALUE_BYTES: usize = 64;
const REDACTED: &str = "[redacted]";

/// Which way a message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From the client (or the feeding source), before the chain.
    In,
    /// To the client, after the chain.
    Out,
}

/// One message as a watcher sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tapped {
    pub at_ms: u64,
    pub dir: Direction,
    pub binary: bool,
    pub size: usize,
    /// The first bytes: text as text (cut at a character), binary as hex.
    pub preview: String,
    /// The connection's metadata, values cut short and configured keys hidden.
    pub meta: Vec<(String, String)>,
    /// Messages the rate cap left out since the one before.
    pub skipped: u64,
}

/// The taps of every route by name; a route rebuilt by a reload keeps its tap and watchers.
pub struct Taps {
    settings: Arc<ConsoleConfig>,
    routes: Mutex<HashMap<String, Arc<RouteTap>>>,
}

impl Taps {
    pub fn new(settings: &ConsoleConfig) -> Taps {
        Taps {
            settings: Arc::new(settings.clone()),
            routes: Mutex::default(),
        }
    }

    pub fn route(&self, name: &str) -> Arc<RouteTap> {
        let mut routes = self.routes.lock().unwrap();
        routes
            .entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(RouteTap {
                    watchers: AtomicUsize::new(0),
                    settings: self.settings.clone(),
                    channel: Mutex::new(Channel {
                        sender: None,
                        window: Instant::now(),
                        shown: 0,
                        skipped: 0,
                    }),
                })
            })
            .clone()
    }

    /// The tap of a route, if it has ever been built.
    pub fn find(&self, name: &str) -> Option<Arc<RouteTap>> {
        self.routes.lock().unwrap().get(name).cloned()
    }
}

pub struct RouteTap {
    watchers: AtomicUsize,
    settings: Arc<ConsoleConfig>,
    channel: Mutex<Channel>,
}

struct Channel {
    /// Only while someone watches.
    sender: Option<broadcast::Sender<Arc<Tapped>>>,
    /// The start of the current second of the rate cap, and what it showed and left out.
    window: Instant,
    shown: u32,
    skipped: u64,
}

impl RouteTap {
    /// The hot path's hook: nothing but a load while nobody watches.
    #[inline]
    pub fn see(&self, dir: Direction, opcode: Opcode, payload: &[u8], meta: &Meta) {
        if self.watchers.load(Ordering::Relaxed) != 0 {
            self.show(dir, opcode, payload, meta);
        }
    }

    #[inline(never)]
    fn show(&self, dir: Direction, opcode: Opcode, payload: &[u8], meta: &Meta) {
        let mut channel = self.channel.lock().unwrap();
        let now = Instant::now();
        if now.duration_since(channel.window) >= Duration::from_secs(1) {
            channel.window = now;
            channel.shown = 0;
        }
        if channel.shown >= self.settings.tap_max_per_second {
            channel.skipped += 1;
            return;
        }
        let Some(sender) = channel.sender.clone() else {
            return;
        };
        channel.shown += 1;
        let skipped = std::mem::take(&mut channel.skipped);
        drop(channel);
        let tapped = Tapped {
            at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            dir,
            binary: opcode == Opcode::Binary,
            size: payload.len(),
            preview: preview(opcode, payload, self.settings.tap_preview_bytes),
            meta: meta
                .iter()
                .map(|(key, value)| {
                    let shown = if self.settings.redacts(key) {
                        REDACTED.to_string()
                    } else {
                        preview(Opcode::Text, value, META_VALUE_BYTES)
                    };
                    (key.clone(), shown)
                })
                .collect(),
            skipped,
        };
        let _ = sender.send(Arc::new(tapped)); // the last watcher may have just left
    }

    /// Starts watching: the tap runs until the returned watch is dropped.
    pub fn watch(self: &Arc<Self>) -> Watch {
        let mut channel = self.channel.lock().unwrap();
        let receiver = channel
            .sender
            .get_or_insert_with(|| broadcast::channel(WATCHER_QUEUE).0)
            .subscribe();
        self.watchers.fetch_add(1, Ordering::Relaxed);
        Watch {
            tap: self.clone(),
            receiver,
        }
    }

    pub fn watchers(&self) -> usize {
        self.watchers.load(Ordering::Relaxed)
    }
}

/// One watcher of a route's tap.
pub struct Watch {
    tap: Arc<RouteTap>,
    receiver: broadcast::Receiver<Arc<Tapped>>,
}

impl Watch {
    /// The next message; one this watcher fell too far behind for is left out, and counted in
    /// the `skipped` of the next.
    pub async fn next(&mut self) -> Arc<Tapped> {
        let mut lagged = 0;
        loop {
            match self.receiver.recv().await {
                Ok(tapped) if lagged == 0 => return tapped,
                Ok(tapped) => {
                    let mut tapped = Tapped::clone(&tapped);
                    tapped.skipped += lagged;
                    return Arc::new(tapped);
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => lagged += missed,
                // The watch holds the tap, whose channel lives while a watcher does.
                Err(broadcast::error::RecvError::Closed) => unreachable!("a watched tap keeps its channel"),
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut channel = self.tap.channel.lock().unwrap();
        if self.tap.watchers.fetch_sub(1, Ordering::Relaxed) == 1 {
            channel.sender = None;
        }
    }
}

/// Up to `limit` bytes of a payload: text up to a whole character, binary as hex.
fn preview(opcode: Opcode, payload: &[u8], limit: usize) -> String {
    let head = &payload[..payload.len().min(limit)];
    match opcode {
        Opcode::Text => match std::str::from_utf8(head) {
            Ok(text) => text.to_string(),
            Err(e) => String::from_utf8_lossy(&head[..e.valid_up_to()]).into_owned(),
        },
        Opcode::Binary => head.iter().fold(String::with_capacity(head.len() * 2), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;

    use super::*;

    fn meta() -> Meta {
        Arc::new(BTreeMap::from([
            ("header.authorization".to_string(), Bytes::from("Bearer secret")),
            ("route".to_string(), Bytes::from("echo")),
        ]))
    }

    fn taps(max: u32) -> Taps {
        Taps::new(&ConsoleConfig {
            tap_max_per_second: max,
            tap_preview_bytes: 4,
            ..ConsoleConfig::default()
        })
    }

    #[tokio::test]
    async fn a_watcher_sees_messages_cut_short_with_secrets_hidden() {
        let tap = taps(10).route("echo");
        let mut watch = tap.watch();
        tap.see(Direction::In, Opcode::Text, "héllo".as_bytes(), &meta());
        tap.see(Direction::Out, Opcode::Binary, &[0, 1, 254, 255, 7], &meta());
        let text = watch.next().await;
        assert_eq!((text.dir, text.size, text.preview.as_str()), (Direction::In, 6, "hél"));
        assert_eq!(
            text.meta,
            [
                ("header.authorization".to_string(), REDACTED.to_string()),
                ("route".to_string(), "echo".to_string())
            ]
        );
        let binary = watch.next().await;
        assert_eq!((binary.binary, binary.preview.as_str()), (true, "0001feff"));
    }

    #[tokio::test]
    async fn the_rate_cap_counts_what_it_leaves_out() {
        let tap = taps(2).route("echo");
        let mut watch = tap.watch();
        for _ in 0..5 {
            tap.see(Direction::In, Opcode::Text, b"x", &meta());
        }
        tap.channel.lock().unwrap().window -= Duration::from_secs(1);
        tap.see(Direction::In, Opcode::Text, b"y", &meta());
        let skipped: Vec<u64> = [watch.next().await, watch.next().await, watch.next().await]
            .iter()
            .map(|t| t.skipped)
            .collect();
        assert_eq!(skipped, [0, 0, 3]);
    }

    #[test]
    fn the_channel_lives_only_while_someone_watches() {
        let taps = taps(10);
        let tap = taps.route("echo");
        assert!(tap.channel.lock().unwrap().sender.is_none());
        let (first, second) = (tap.watch(), tap.watch());
        assert_eq!(tap.watchers(), 2);
        drop(first);
        assert!(tap.channel.lock().unwrap().sender.is_some());
        drop(second);
        assert_eq!(tap.watchers(), 0);
        assert!(tap.channel.lock().unwrap().sender.is_none());
        assert!(Arc::ptr_eq(&tap, &taps.route("echo")), "a rebuilt route keeps its tap");
    }
}
