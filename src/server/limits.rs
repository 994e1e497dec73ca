//! The listener's counts: open connections (`server.max_connections`), connections in their
//! handshake (`max_upgrades_in_progress`), and per client IP the open connections and a token
//! bucket of new ones. Every place is held by a value that gives it back when dropped; the
//! per-IP table forgets an address once it has no connection and a full bucket.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::EdgeLimits;
use crate::metrics::EdgeMetrics;

use super::guard::Refusal;

/// How often the per-IP table is swept of addresses that need no entry any more.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// New connections per second, with a burst: a bucket of `burst` tokens refilled at `per_s`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rate {
    per_s: f64,
    burst: f64,
}

#[derive(Debug, Clone, Copy)]
struct TokenBucket {
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    fn full(rate: Rate, now: Instant) -> Self {
        TokenBucket {
            tokens: rate.burst,
            updated: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_s).min(rate.burst);
        self.updated = now;
    }

    fn take(&mut self, rate: Rate, now: Instant) -> bool {
        self.refill(rate, now);
        let taken = self.tokens >= 1.0;
        if taken {
            self.tokens -= 1.0;
        }
        taken
    }

    fn is_full(&self, rate: Rate, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens + elapsed * rate.per_s >= rate.burst
    }
}

/// One client IP's entry.
struct Client {
    open: usize,
    bucket: Option<TokenBucket>,
}

impl Client {
    /// Whether the entry says nothing a fresh one would not.
    fn is_idle(&self, rate: Option<Rate>, now: Instant) -> bool {
        self.open == 0
            && rate
                .zip(self.bucket)
                .is_none_or(|(rate, bucket)| bucket.is_full(rate, now))
    }
}

struct Clients {
    by_ip: HashMap<IpAddr, Client>,
    swept: Instant,
}

pub struct Limits {
    max_connections: usize,
    max_handshakes: usize,
    max_per_client: usize,
    rate: Option<Rate>,
    active: AtomicUsize,
    handshaking: AtomicUsize,
    clients: Mutex<Clients>,
    metrics: EdgeMetrics,
}

/// What an admitted connection holds: its place among all connections (shared with its session
/// after the upgrade) and its place among the handshakes (given back at the upgrade).
pub struct Admitted {
    pub slot: ConnectionSlot,
    pub handshake: Handshaking,
}

/// One of `server.max_connections` places, and the client IP's, held until every clone is
/// dropped: the listener's task holds it until the upgrade, the session after it.
#[derive(Clone)]
pub struct ConnectionSlot {
    _place: Arc<Place>,
    _client: Option<Arc<ClientLease>>,
}

impl ConnectionSlot {
    /// The same place, now also holding a client IP's (one that a trusted proxy named).
    pub fn with_client(&self, lease: ClientLease) -> ConnectionSlot {
        ConnectionSlot {
            _place: self._place.clone(),
            _client: Some(Arc::new(lease)),
        }
    }
}

struct Place(Arc<Limits>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection's place in its client IP's count.
pub struct ClientLease {
    limits: Arc<Limits>,
    ip: IpAddr,
}

impl Drop for ClientLease {
    fn drop(&mut self) {
        self.limits.release_client(self.ip, Instant::now());
    }
}

/// A connection in its handshake: counted in `max_upgrades_in_progress` and the gauge.
pub struct Handshaking(Arc<Limits>);

impl Drop for Handshaking {
    fn drop(&mut self) {
        self.0.handshaking.fetch_sub(1, Ordering::AcqRel);
        self.0.metrics.handshaking.dec();
    }
}

/// Takes a place under `max` in `count`, or leaves the count as it was.
fn take_place(count: &AtomicUsize, max: usize) -> bool {
    count
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
        .is_ok()
}

impl Limits {
    pub fn new(max_connections: usize, settings: &EdgeLimits, metrics: EdgeMetrics) -> Limits {
        let per_s = settings.new_connections_per_ip_per_s;
        let burst = match settings.new_connections_burst_per_ip {
            0 => per_s.max(1.0),
            burst => f64::from(burst),
        };
        Limits {
            max_connections,
            max_handshakes: settings.max_upgrades_in_progress,
            max_per_client: settings.max_connections_per_ip,
            rate: (per_s > 0.0).then_some(Rate { per_s, burst }),
            active: AtomicUsize::new(0),
            handshaking: AtomicUsize::new(0),
            clients: Mutex::new(Clients {
                by_ip: HashMap::new(),
                swept: Instant::now(),
            }),
            metrics,
        }
    }

    /// Lets a new connection in, or says why not. `client` is `None` when the client's address
    /// is not known yet (a trusted proxy's connection, whose clients it names per request).
    pub fn admit(self: &Arc<Self>, client: Option<IpAddr>) -> Result<Admitted, Refusal> {
        let lease = client.map(|ip| self.admit_client(ip)).transpose()?;
        if !take_place(&self.active, self.max_connections) {
            return Err(Refusal::Connections);
        }
        let place = Arc::new(Place(self.clone()));
        if !take_place(&self.handshaking, self.max_handshakes) {
            return Err(Refusal::Handshakes);
        }
        self.metrics.handshaking.inc();
        Ok(Admitted {
            slot: ConnectionSlot {
                _place: place,
                _client: lease.map(Arc::new),
            },
            handshake: Handshaking(self.clone()),
        })
    }

    /// A place for one more connection of `ip`, if its rate and its count allow.
    pub fn admit_client(self: &Arc<Self>, ip: IpAddr) -> Result<ClientLease, Refusal> {
        let ip = ip.to_canonical();
        self.take_client(ip, Instant::now())?;
        Ok(ClientLease {
            limits: self.clone(),
            ip,
        })
    }

    fn take_client(&self, ip: IpAddr, now: Instant) -> Result<(), Refusal> {
        if self.rate.is_none() && self.max_per_client == 0 {
            return Ok(());
        }
        let mut clients = self.clients.lock().unwrap();
        if now.saturating_duration_since(clients.swept) >= SWEEP_EVERY {
            let rate = self.rate;
            clients.by_ip.retain(|_, client| !client.is_idle(rate, now));
            clients.swept = now;
        }
        let client = clients.by_ip.entry(ip).or_insert_with(|| Client {
            open: 0,
            bucket: self.rate.map(|rate| TokenBucket::full(rate, now)),
        });
        if let (Some(rate), Some(bucket)) = (self.rate, client.bucket.as_mut())
            && !bucket.take(rate, now)
        {
            return Err(Refusal::ClientRate);
        }
        if self.max_per_client > 0 && client.open >= self.max_per_client {
            return Err(Refusal::ClientConnections);
        }
        client.open += 1;
        Ok(())
    }

    fn release_client(&self, ip: IpAddr, now: Instant) {
        if self.rate.is_none() && self.max_per_client == 0 {
            return;
        }
        let mut clients = self.clients.lock().unwrap();
        let Some(client) = clients.by_ip.get_mut(&ip) else {
            return;
        };
        client.open -= 1;
        if client.is_idle(self.rate, now) {
            clients.by_ip.remove(&ip);
        }
    }

    /// Client IPs with an entry in the table.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.clients.lock().unwrap().by_ip.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    fn limits(max_connections: usize, settings: EdgeLimits) -> Arc<Limits> {
        Arc::new(Limits::new(max_connections, &settings, Metrics::default().edge()))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let rate = Rate {
            per_s: 10.0,
            burst: 3.0,
        };
        let start = Instant::now();
        let mut bucket = TokenBucket::full(rate, start);
        assert!((0..3).all(|_| bucket.take(rate, start)));
        assert!(!bucket.take(rate, start));
        assert!(!bucket.take(rate, start + Duration::from_millis(50)));
        assert!(bucket.take(rate, start + Duration::from_millis(110)));
        assert!(!bucket.is_full(rate, start + Duration::from_millis(200)));
        assert!(bucket.is_full(rate, start + Duration::from_secs(1)));
    }

    #[test]
    fn places_are_given_back_when_dropped() {
        let limits = limits(2, EdgeLimits::default());
        let first = limits.admit(None).unwrap();
        let second = limits.admit(None).unwrap();
        assert_eq!(limits.admit(None).err(), Some(Refusal::Connections));
        // The session keeps the place after the upgrade: a clone outlives the handshake.
        let session = first.slot.clone();
        drop(first);
        assert_eq!(limits.admit(None).err(), Some(Refusal::Connections));
        drop(session);
        let third = limits.admit(None).unwrap();
        assert_eq!(limits.handshaking.load(Ordering::Acquire), 2);
        drop((second, third));
        assert_eq!(limits.active.load(Ordering::Acquire), 0);
        assert_eq!(limits.handshaking.load(Ordering::Acquire), 0);
    }

    #[test]
    fn handshakes_in_flight_are_capped() {
        let limits = limits(
            10,
            EdgeLimits {
                max_upgrades_in_progress: 1,
                ..EdgeLimits::default()
            },
        );
        let first = limits.admit(None).unwrap();
        assert_eq!(limits.admit(None).err(), Some(Refusal::Handshakes));
        // An upgraded connection leaves the handshakes but keeps its place.
        let Admitted { slot, handshake } = first;
        drop(handshake);
        let _second = limits.admit(None).unwrap();
        assert_eq!(limits.active.load(Ordering::Acquire), 2);
        drop(slot);
    }

    #[test]
    fn each_client_ip_has_its_own_cap() {
        let limits = limits(
            100,
            EdgeLimits {
                max_connections_per_ip: 2,
                ..EdgeLimits::default()
            },
        );
        let a = ip("10.0.0.1");
        let held: Vec<_> = (0..2).map(|_| limits.admit(Some(a)).unwrap()).collect();
        assert_eq!(limits.admit(Some(a)).err(), Some(Refusal::ClientConnections));
        assert_eq!(
            limits.admit(Some(ip("::ffff:10.0.0.1"))).err(),
            Some(Refusal::ClientConnections),
            "a v4-mapped address is the same client"
        );
        let _other = limits.admit(Some(ip("10.0.0.2"))).unwrap();
        drop(held);
        assert_eq!(limits.tracked(), 1, "only 10.0.0.2 is left");
        let _again = limits.admit(Some(a)).unwrap();
    }

    #[test]
    fn new_connections_per_ip_are_rate_limited_and_forgotten_when_idle() {
        let limits = limits(
            100,
            EdgeLimits {
                new_connections_per_ip_per_s: 10.0,
                new_connections_burst_per_ip: 2,
                ..EdgeLimits::default()
            },
        );
        let a = ip("10.0.0.1");
        let start = Instant::now();
        assert!(limits.take_client(a, start).is_ok());
        assert!(limits.take_client(a, start).is_ok());
        assert_eq!(limits.take_client(a, start), Err(Refusal::ClientRate));
        assert!(limits.take_client(ip("10.0.0.2"), start).is_ok());
        limits.release_client(a, start);
        limits.release_client(a, start);
        limits.release_client(ip("10.0.0.2"), start);
        assert_eq!(limits.tracked(), 2, "the buckets are not full yet");
        // A later admission sweeps the entries whose buckets filled up meanwhile.
        let later = start + Duration::from_secs(2);
        assert!(limits.take_client(ip("10.0.0.3"), later).is_ok());
        assert_eq!(limits.tracked(), 1);
        assert!(limits.take_client(a, later).is_ok());
    }

    #[test]
    fn no_per_ip_setting_keeps_no_table() {
        let limits = limits(100, EdgeLimits::default());
        let _held: Vec<_> = (0..50)
            .map(|i| limits.admit(Some(IpAddr::from([10, 0, 0, i]))).unwrap())
            .collect();
        assert_eq!(limits.tracked(), 0);
    }
}
