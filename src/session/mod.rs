//! One connection's life after the upgrade: the read loop, the batching write loop, the filter
//! chain in both directions, the effects filters ask for (sends, records, subscriptions,
//! timers), keepalive, idle timeout, and closing with the right code. It never knows which
//! broker is behind a sink.

mod rate;
pub mod request;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, Sink, SinkExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;
use tokio_util::time::{DelayQueue, delay_queue};

use crate::connectors::sinks::{RouteSink, Waiting};
use crate::connectors::sources::{Sources, Subscription};
use crate::connectors::ws::UpstreamStream;
use crate::filter::abi::{Batch, ConnState, Effect, Emission, Incoming};
use crate::filter::{ChainEffect, Done, HookCall, Lease, Verdict};
use crate::record::Recording;
use crate::route::Route;
use crate::tap::Direction;
use crate::types::{
    Backlog, Delivered, DeliveryError, MessageId, MessageMeta, Opcode, Record, Reply, Settle, SinkResult,
};
use rate::{Charge, RateLimit};

/// Messages handled (read and answered) between two flushes, at most: at 100 B messages, 64
/// made the write syscalls a fifth of the CPU (docs/performance.md); the outbox's bytes bound
/// the batch of large messages (`FLUSH_BYTES`).
const BATCH: usize = 256;
/// Deliveries from subscriptions and the upstream waiting for the chain.
const INBOUND_QUEUE: usize = 256;
/// Bytes waiting for the client past which a flush comes before handling more: with large
/// messages, the outbox holds a few, not `BATCH`.
const FLUSH_BYTES: usize = 1 << 20;
/// How long a closing connection waits for the client's close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// The close code of a connection that broke without one.
const ABNORMAL: u16 = 1006;
/// The close code of a connection closed for breaking a limit.
const POLICY_VIOLATION: u16 = 1008;
/// The reason of a connection closed because it did not take its messages fast enough.
const TOO_SLOW: &str = "too slow";

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// A connection id no other connection, client or feed, has had.
pub fn next_conn_id() -> u64 {
    NEXT_CONN.fetch_add(1, Ordering::Relaxed)
}

/// The far end of a session: a WebSocket client, or a source feeding a route (src/feed.rs).
pub trait Client: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin + Send {
    /// What the host knows of the message last read (a feed's source, sequence...), set on the
    /// connection's metadata for the filters and the records; nothing for a client.
    fn message_meta(&mut self) -> Vec<(String, Bytes)> {
        Vec::new()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Client for WebSocketStream<S> {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Client for crate::deflate::Deflating<S> {}

/// What a session starts with, prepared during the upgrade.
pub struct Opening {
    pub route: Arc<Route>,
    pub conn: ConnState,
    /// Effects of `fg_on_open` (subscriptions, timers), applied first.
    pub effects: Vec<ChainEffect>,
    /// The upstream connection, when the route has a `ws` sink: its name and stream.
    pub upstream: Option<(Arc<str>, Box<UpstreamStream>)>,
    /// When the client's token expires: the connection is closed then (1008).
    pub expires: Option<Instant>,
    /// The route records this connection (`[routes.NAME.record]`).
    pub recording: Option<Recording>,
}

struct Session {
    route: Arc<Route>,
    conn: ConnState,
    sources: Arc<Sources>,
    /// Messages for the client, written at the next flush.
    outbox: Vec<Message>,
    /// The bytes of the messages in `outbox`.
    outbox_bytes: usize,
    /// An empty vector with room, for the effects of the next message (kept, not reallocated).
    spare_effects: Vec<ChainEffect>,
    /// Messages read one way (from the client, or from the upstream) since the chain last ran: a
    /// route of one filter runs them all at once (`run_held_back`), before anything else is
    /// handled and before a flush.
    held_back: Batch,
    /// Whether the messages in `held_back` go towards the client.
    held_back_towards_client: bool,
    /// The bytes of the messages in `held_back`.
    held_back_bytes: usize,
    /// An empty vector with room, for what became of the next run of `held_back`.
    spare_done: Vec<Done>,
    /// The name of the route's `ws` sink, its upstream's messages' `msg.source`.
    upstream_source: Bytes,
    /// The route's filter instances this session calls while it handles what it has read;
    /// given back before every wait (`release`), so an idle connection holds none.
    lease: Lease,
    /// Whether the route's `ws` sink has its connection.
    has_upstream: bool,
    /// Messages for the upstream, written at the next flush.
    upstream_outbox: Vec<Message>,
    /// Deliveries from subscriptions; made at the first subscription (idle connections are many).
    inbound: Option<(mpsc::Sender<Delivered>, mpsc::Receiver<Delivered>)>,
    /// The room deliveries may take while they wait for the session (`max_backlog_bytes`);
    /// made with `inbound`.
    backlog: Option<Backlog>,
    /// A filter holds deliveries (`hold`): they wait in the sources, which read their brokers no
    /// further, until it resumes them.
    held: bool,
    /// Outcomes of emitted records; made at the first `emit`.
    results: Option<(mpsc::UnboundedSender<SinkResult>, mpsc::UnboundedReceiver<SinkResult>)>,
    /// Records emitted whose outcome has not come back: at `max_in_flight`, the client is not
    /// read until some come (a filter never runs out of room for the requests it answers).
    in_flight: usize,
    /// Told to go (shutdown): the client is no longer read, and the connection closes (1001)
    /// once every record it emitted has its outcome.
    leaving: bool,
    /// Subscription id to the subscription and the filter that made it.
    subscriptions: HashMap<u64, (Subscription, usize)>,
    /// Filter timers; made at the first one.
    timers: Option<DelayQueue<(u64, usize)>>,
    timer_keys: HashMap<u64, delay_queue::Key>,
    /// Set once the session decided to close: (code, reason).
    closing: Option<(u16, String)>,
    /// The code of the client's close frame, once it came.
    peer_close: Option<u16>,
    /// The route's rate limit on what the client sends, and until when the client is not read.
    rate: Option<RateLimit>,
    paused_until: Option<Instant>,
    /// Boxed: most connections are not recorded.
    recording: Option<Box<Recording>>,
    /// Messages and bytes since the last flush, added to the route's counters once a batch: a
    /// shared counter touched per message is a cache line every worker fights over.
    tally: Tally,
    /// Records whose sink's queue was full: the session stops handling, queues them in order,
    /// waiting for room, then writes to the client (a full sink slows the connection feeding
    /// it); at the end of the session, after the close handshake and the close hooks.
    waiting: Vec<Waiting>,
}

/// What a session counted since it last told the route's metrics.
#[derive(Default)]
struct Tally {
    messages_in: u64,
    bytes_in: u64,
    messages_out: u64,
    bytes_out: u64,
}

/// Runs a connection to its end. Events are handled without waiting; what waits (a flush, a full
/// sink's queue) is boxed: the future of an idle connection then stays small, and idle
/// connections are many.
pub async fn run<C: Client>(mut ws: C, opening: Opening, sources: Arc<Sources>, shutdown: CancellationToken) {
    let mut upstream = opening.upstream;
    let mut upstream_seq = 0u64;
    let route = opening.route;
    let mut session = Session {
        route: route.clone(),
        conn: opening.conn,
        sources,
        outbox: Vec::new(),
        outbox_bytes: 0,
        spare_effects: Vec::new(),
        held_back: Batch::default(),
        held_back_towards_client: false,
        held_back_bytes: 0,
        upstream_source: Bytes::from(upstream.as_ref().map_or("upstream".into(), |u| u.0.to_string())),
        spare_done: Vec::new(),
        lease: Lease::default(),
        has_upstream: upstream.is_some(),
        upstream_outbox: Vec::new(),
        inbound: None,
        backlog: None,
        held: false,
        results: None,
        in_flight: 0,
        leaving: false,
        subscriptions: HashMap::new(),
        timers: None,
        timer_keys: HashMap::new(),
        closing: None,
        peer_close: None,
        rate: (route.settings.rate_limit.as_ref()).map(|limit| RateLimit::new(limit, Instant::now())),
        paused_until: None,
        recording: opening.recording.map(Box::new),
        tally: Tally::default(),
        waiting: Vec::new(),
    };
    if let Some(recording) = &mut session.recording {
        recording.after_hook(&mut session.conn, None); // what `fg_on_open` did
    }
    route.metrics.opened.inc();
    route.metrics.active.inc();
    session.apply(opening.effects);
    if !session.waiting.is_empty() {
        Box::pin(session.queue_waiting()).await;
    }
    // What `fg_on_open` sent goes out at once: where the server speaks first, the client must
    // not wait for a message of its own (or a ping) to be greeted.
    let gone = Box::pin(session.flush(&mut ws, upstream.as_mut().map(|u| &mut u.1)))
        .await
        .is_err();

    let settings = &route.settings;
    let mut ping = (settings.ping_interval_ms > 0).then(|| {
        let period = Duration::from_millis(settings.ping_interval_ms);
        tokio::time::interval_at(Instant::now() + period, period)
    });
    let idle_limit = (settings.idle_timeout_ms > 0).then(|| Duration::from_millis(settings.idle_timeout_ms));
    let idle = tokio::time::sleep(idle_limit.unwrap_or(Duration::MAX / 4));
    tokio::pin!(idle);
    let expiry = match opening.expires {
        Some(at) => tokio::time::sleep_until(at),
        None => tokio::time::sleep(Duration::MAX / 4),
    };
    tokio::pin!(expiry);

    'serving: while !gone && session.closing.is_none() {
        tokio::select! {
            biased;
            _ = shutdown.cancelled(), if !session.leaving => session.leave(),
            () = overflowed(session.backlog.clone()) => session.close(POLICY_VIOLATION, TOO_SLOW),
            Some(result) = async { session.results.as_mut().unwrap().1.recv().await }, if session.results.is_some() => {
                if let Some(limit) = idle_limit.filter(|_| !session.reads_client()) {
                    idle.as_mut().reset(Instant::now() + limit); // not read meanwhile: not idle
                }
                session.on_result(result);
            }
            Some(delivered) = async { session.inbound.as_mut().unwrap().1.recv().await }, if session.inbound.is_some() && !session.held => {
                session.towards_client(delivered);
            }
            Some(expired) = async { session.timers.as_mut().unwrap().next().await },
                if session.timers.as_ref().is_some_and(|t| !t.is_empty()) => {
                let (timer, filter) = expired.into_inner();
                session.timer_keys.remove(&timer);
                session.conn.handles = session.conn.handles.saturating_sub(1);
                session.on_timer(timer, filter);
            }
            () = tokio::time::sleep_until(session.paused_until.unwrap_or_else(Instant::now)), if session.paused_until.is_some() => {
                session.paused_until = None;
                if let Some(limit) = idle_limit {
                    idle.as_mut().reset(Instant::now() + limit); // a paused client may have sent plenty
                }
            }
            read = ws.next(), if session.reads_client() => {
                if let Some(limit) = idle_limit {
                    idle.as_mut().reset(Instant::now() + limit);
                }
                let meta = ws.message_meta();
                if !session.on_read(read, meta) {
                    break 'serving;
                }
            }
            _ = async { ping.as_mut().unwrap().tick().await }, if ping.is_some() => {
                session.outbox.push(Message::Ping(Bytes::new()));
            }
            _ = &mut idle, if idle_limit.is_some() && session.reads_client() => session.close(1001, "idle timeout"),
            _ = &mut expiry, if opening.expires.is_some() => {
                route.auth.expired_while_connected();
                session.close(1008, "token expired");
            }
            read = async { upstream.as_mut().unwrap().1.next().await }, if upstream.is_some() => {
                session.upstream_read(&mut upstream_seq, read);
            }
        }
        if session.leaving && session.in_flight == 0 {
            session.close(1001, "server shutting down");
        }
        // Whatever else is ready is handled before writing: one flush answers all of it.
        let mut handled = 0;
        while session.closing.is_none()
            && session.waiting.is_empty()
            && handled < BATCH
            && session.outbox_bytes + session.held_back_bytes < FLUSH_BYTES
        {
            if session.reads_client()
                && let Some(read) = ws.next().now_or_never()
            {
                let meta = ws.message_meta();
                if !session.on_read(read, meta) {
                    break 'serving;
                }
            } else if let Some(delivered) = session.next_delivery() {
                session.towards_client(delivered);
            } else if let Some((_, stream)) = upstream.as_mut()
                && let Some(read) = stream.next().now_or_never()
            {
                session.upstream_read(&mut upstream_seq, read);
            } else {
                break;
            }
            handled += 1;
        }
        session.run_held_back();
        // Records for a full sink are queued before the answers go out, as they were handled.
        if !session.waiting.is_empty() {
            Box::pin(session.queue_waiting()).await;
        }
        // A client that does not read holds the flush up: an overflowing backlog cuts it short.
        let backlog = session.backlog.clone();
        tokio::select! {
            flushed = Box::pin(session.flush(&mut ws, upstream.as_mut().map(|u| &mut u.1))) => {
                if flushed.is_err() {
                    break 'serving;
                }
            }
            () = overflowed(backlog) => session.close(POLICY_VIOLATION, TOO_SLOW),
        }
    }

    let code = match (session.closing.clone(), session.peer_close) {
        (_, Some(code)) => code,
        (Some((code, reason)), None) => {
            let frame = CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            };
            session.outbox.push(Message::Close(Some(frame)));
            // Bounded: a client that reads nothing cannot hold its session (and memory) for ever.
            let flush = Box::pin(session.flush(&mut ws, upstream.as_mut().map(|u| &mut u.1)));
            if let Ok(Ok(())) = tokio::time::timeout(CLOSE_WAIT, flush).await {
                // Wait (briefly) for the client's answer so the close handshake completes.
                let _ = tokio::time::timeout(CLOSE_WAIT, async { while let Some(Ok(_)) = ws.next().await {} }).await;
            }
            code
        }
        (None, None) => ABNORMAL,
    };
    if let Some(recording) = &mut session.recording {
        recording.close(code);
    }
    session.release();
    let farewell = route.chain.close(&mut session.conn, code);
    if let Some(recording) = session.recording.take() {
        recording.finish(&mut session.conn);
    }
    session.apply(farewell);
    session.publish_tally();
    Box::pin(session.queue_waiting()).await;
    if let Some((_, mut upstream)) = upstream {
        let _ = SinkExt::close(&mut upstream).await;
    }
    route.metrics.closed(code);
    route.metrics.active.dec();
}

/// Resolves when the connection's backlog overflowed; never without one.
async fn overflowed(backlog: Option<Backlog>) {
    match backlog {
        Some(backlog) => backlog.overflowed().await,
        None => std::future::pending().await,
    }
}

/// The close a read error calls for; `None` when the connection is simply gone.
fn close_for(error: &WsError) -> Option<(u16, &'static str)> {
    match error {
        WsError::Capacity(_) => Some((1009, "message too big")),
        WsError::Utf8(_) => Some((1007, "invalid UTF-8 in a text message")),
        WsError::Protocol(_) => Some((1002, "protocol error")),
        // A compressed message that does not inflate (src/deflate/).
        WsError::Io(e) if e.kind() == std::io::ErrorKind::InvalidData => Some((1007, "invalid compressed data")),
        _ => None,
    }
}

fn to_message(opcode: Opcode, payload: Bytes) -> Message {
    match opcode {
        // Text payloads were checked as UTF-8 where they entered (tungstenite or `replace`/`send`).
        Opcode::Text => match Utf8Bytes::try_from(payload.clone()) {
            Ok(text) => Message::Text(text),
            Err(_) => Message::Binary(payload),
        },
        Opcode::Binary => Message::Binary(payload),
    }
}

impl Session {
    fn results_sender(&mut self) -> mpsc::UnboundedSender<SinkResult> {
        self.results.get_or_insert_with(mpsc::unbounded_channel).0.clone()
    }

    /// Whether the client is read now: not while its rate limit pauses it, nor while its
    /// filters wait for `max_in_flight` outcomes, nor while records wait for a full sink, nor
    /// once it was told to go.
    fn reads_client(&self) -> bool {
        self.paused_until.is_none()
            && self.in_flight + self.held_back.messages.len() < self.route.settings.max_in_flight
            && !self.leaving
            && self.waiting.is_empty()
    }

    /// Stops reading the client; the connection closes (1001) once every record it emitted is
    /// answered, and the proxy's grace period bounds that wait.
    fn leave(&mut self) {
        self.leaving = true;
    }

    fn close(&mut self, code: u16, reason: &str) {
        if self.closing.is_none() {
            self.closing = Some((code, reason.to_string()));
        }
    }

    /// Gives the filter instances back to the route's pools: before every wait.
    fn release(&mut self) {
        self.route.chain.release(&mut self.lease);
    }

    /// Queues the records whose sinks were full, in order, waiting for room.
    async fn queue_waiting(&mut self) {
        self.release();
        for waiting in self.waiting.drain(..) {
            waiting.queue().await;
        }
    }

    /// Handles one read from the client; `false` when the connection is gone. A message is held
    /// back when the route runs them together (`holds_back`); anything else runs those first.
    fn on_read(&mut self, read: Option<Result<Message, WsError>>, meta: Vec<(String, Bytes)>) -> bool {
        let message = match read {
            Some(Ok(Message::Text(text))) => Ok((Opcode::Text, text.into())),
            Some(Ok(Message::Binary(bytes))) => Ok((Opcode::Binary, bytes)),
            other => Err(other),
        };
        // A feed's message brings its own metadata, set on the connection before it is run.
        let waits = meta.is_empty() && self.holds_back();
        if !waits || message.is_err() {
            self.run_held_back();
        }
        if !meta.is_empty() {
            Arc::make_mut(&mut self.conn.meta).extend(meta);
        }
        match message {
            // Read after a message held back closed the connection: never handled.
            Ok(_) if self.closing.is_some() => {}
            Ok((opcode, payload)) => self.client_message(opcode, payload, waits),
            // tungstenite answers the close frame; reading on finishes the handshake.
            Err(Some(Ok(Message::Close(frame)))) => self.peer_close = Some(frame.map_or(1005, |f| u16::from(f.code))),
            Err(Some(Ok(_))) => {} // ping, pong: tungstenite answers pings itself
            Err(Some(Err(error))) => match close_for(&error) {
                Some((code, reason)) => self.close(code, reason),
                None => return false,
            },
            Err(None) => return false,
        }
        true
    }

    /// Writes every waiting message, then flushes once: a flush per frame costs ~20x. A slow
    /// client makes this wait, and a waiting session reads nothing: TCP pushes back.
    async fn flush<C: Client>(
        &mut self,
        ws: &mut C,
        upstream: Option<&mut Box<UpstreamStream>>,
    ) -> Result<(), WsError> {
        self.release();
        self.publish_tally();
        if let Some(upstream) = upstream
            && !self.upstream_outbox.is_empty()
        {
            for message in self.upstream_outbox.drain(..) {
                upstream.feed(message).await?;
            }
            upstream.flush().await?;
        }
        if self.outbox.is_empty() {
            return Ok(());
        }
        self.outbox_bytes = 0;
        for message in self.outbox.drain(..) {
            ws.feed(message).await?;
        }
        ws.flush().await
    }

    /// Adds what was counted since the last time to the route's counters.
    fn publish_tally(&mut self) {
        let Tally {
            messages_in,
            bytes_in,
            messages_out,
            bytes_out,
        } = std::mem::take(&mut self.tally);
        let metrics = &self.route.metrics;
        for (counter, value) in [
            (&metrics.messages_in, messages_in),
            (&metrics.bytes_in, bytes_in),
            (&metrics.messages_out, messages_out),
            (&metrics.bytes_out, bytes_out),
        ] {
            if value != 0 {
                counter.inc_by(value);
            }
        }
    }

    /// A message from the client: counted, then run through the chain, or held back when it
    /// `waits` for the others read with it.
    fn client_message(&mut self, opcode: Opcode, payload: Bytes, waits: bool) {
        let metrics = &self.route.metrics;
        if let Some(rate) = &mut self.rate {
            let now = Instant::now();
            match rate.charge(payload.len(), now) {
                Charge::Within => {}
                Charge::Pause(wait) => {
                    metrics.rate_slowed.inc();
                    self.paused_until = Some(now + wait);
                }
                Charge::Close(reason) => {
                    metrics.rate_closed.inc();
                    self.run_held_back(); // what came before is handled first, as it came
                    return self.close(POLICY_VIOLATION, reason);
                }
            }
        }
        self.tally.messages_in += 1;
        self.tally.bytes_in += payload.len() as u64;
        self.route.tap.see(Direction::In, opcode, &payload, &self.conn.meta);
        if let Some(recording) = &mut self.recording {
            recording.client_message(opcode, &payload);
        }
        if waits {
            let meta = None;
            return self.hold_back(false, Incoming { opcode, payload, meta });
        }
        self.run_client_message(opcode, payload);
    }

    /// Runs one message from the client through the chain and carries out what it made of it.
    fn run_client_message(&mut self, opcode: Opcode, payload: Bytes) {
        let route = self.route.clone();
        let mut effects = std::mem::take(&mut self.spare_effects);
        let verdict = (route.chain).message_into(
            &mut self.lease,
            &mut self.conn,
            false,
            opcode,
            payload,
            None,
            &mut effects,
        );
        if let Some(recording) = &mut self.recording {
            recording.verdict(&mut self.conn, "in", &verdict);
        }
        self.apply(effects);
        self.client_verdict(verdict);
    }

    /// The next delivery from the subscriptions, when one waits and they are not held; what was
    /// held back runs first (it may hold them, or close the connection).
    fn next_delivery(&mut self) -> Option<Delivered> {
        if self.inbound.as_ref().is_none_or(|(_, rx)| rx.is_empty()) {
            return None;
        }
        self.run_held_back();
        if self.held || self.closing.is_some() {
            return None;
        }
        self.inbound.as_mut()?.1.try_recv().ok()
    }

    /// Whether messages read together are held back to run through the chain at once: on a
    /// route of one filter that takes them so (`Chain::batches`), when the connection is not
    /// recorded (a recording notes each message's calls apart).
    fn holds_back(&self) -> bool {
        // Holding some already: the module was asked when the first came.
        !self.held_back.messages.is_empty() || (self.route.chain.batches(&self.lease) && self.recording.is_none())
    }

    /// Holds a message back until the others read with it (one way) have come.
    fn hold_back(&mut self, towards_client: bool, message: Incoming) {
        if self.held_back_towards_client != towards_client {
            self.run_held_back();
            self.held_back_towards_client = towards_client;
        }
        if self.closing.is_some() {
            return; // the other way's messages closed the connection: this one is never handled
        }
        self.held_back_bytes += message.payload.len();
        self.held_back.messages.push(message);
    }

    /// Runs the messages held back through the chain, in one call where the filter takes them
    /// so, then carries out each one's effects and verdict in turn (its records carry the
    /// metadata as it was when it was done); those the call did not run go one by one.
    fn run_held_back(&mut self) {
        if self.held_back.messages.is_empty() {
            return;
        }
        self.held_back_bytes = 0;
        let towards_client = self.held_back_towards_client;
        let route = self.route.clone();
        let mut effects = std::mem::take(&mut self.spare_effects);
        let mut done = std::mem::take(&mut self.spare_done);
        let meta_before = self.conn.meta.clone();
        let ran = (route.chain).messages_into(
            &mut self.lease,
            &mut self.conn,
            towards_client,
            &mut self.held_back,
            &mut done,
            &mut effects,
        );
        let meta_after = self.conn.meta.clone();
        let mut in_order = effects.drain(..);
        let mut applied = 0;
        for Done {
            verdict,
            effects_end,
            meta,
        } in done.drain(..)
        {
            // The metadata as this message left it: what its records carry.
            match meta {
                Some(meta) => self.conn.meta = meta,
                None if !Arc::ptr_eq(&self.conn.meta, &meta_before) => self.conn.meta = meta_before.clone(),
                None => {}
            }
            in_order
                .by_ref()
                .take(effects_end - applied)
                .for_each(|effect| self.apply_one(effect));
            applied = effects_end;
            self.verdict(towards_client, verdict);
        }
        self.conn.meta = meta_after;
        in_order.for_each(|effect| self.apply_one(effect));
        self.spare_done = done;
        if effects.capacity() > self.spare_effects.capacity() {
            self.spare_effects = effects;
        }
        let mut messages = std::mem::take(&mut self.held_back.messages);
        for message in messages.drain(ran..) {
            if self.closing.is_some() {
                break; // a verdict closed the connection: the rest are never handled
            }
            if towards_client {
                self.run_towards_client(message);
            } else {
                self.run_client_message(message.opcode, message.payload);
            }
        }
        messages.clear();
        self.held_back.clear();
        self.held_back.messages = messages;
    }

    /// Carries out what the chain made of a message, `towards_client` or from it.
    fn verdict(&mut self, towards_client: bool, verdict: Verdict) {
        if towards_client {
            self.verdict_towards_client(verdict);
        } else {
            self.client_verdict(verdict);
        }
    }

    /// Carries out what the chain made of a message from the client.
    fn client_verdict(&mut self, verdict: Verdict) {
        let route = self.route.clone();
        match verdict {
            Verdict::Deliver { opcode, payload } => {
                for sink in &route.sinks {
                    self.deliver(sink, opcode, None, payload.clone(), Vec::new(), None);
                }
            }
            Verdict::Drop => {}
            Verdict::Close(code, reason) => self.close(code, &reason),
        }
    }

    /// A delivery from a subscription (or a recorded connection's upstream) down the chain.
    fn towards_client(&mut self, delivered: Delivered) {
        // What a subscription had on its way when the filter ended it is not delivered: a
        // broker redelivers it to whoever subscribes next, as it was never acked.
        if delivered.sub.is_some_and(|sub| !self.subscriptions.contains_key(&sub)) {
            return;
        }
        if let Some(recording) = &mut self.recording {
            recording.towards_client(&delivered);
        }
        let meta = Some(MessageMeta {
            source: Bytes::from(delivered.source.to_string()),
            id: MessageId::Given(Bytes::from(delivered.id)),
            sub: delivered.sub,
            attrs: delivered.attrs,
        });
        self.run_towards_client(Incoming {
            opcode: delivered.opcode,
            payload: delivered.payload,
            meta,
        });
    }

    /// Runs one message towards the client through the chain and carries out what it made of it.
    fn run_towards_client(&mut self, Incoming { opcode, payload, meta }: Incoming) {
        let route = self.route.clone();
        let mut effects = std::mem::take(&mut self.spare_effects);
        let verdict = (route.chain).message_into(
            &mut self.lease,
            &mut self.conn,
            true,
            opcode,
            payload,
            meta,
            &mut effects,
        );
        if let Some(recording) = &mut self.recording {
            recording.verdict(&mut self.conn, "out", &verdict);
        }
        self.apply(effects);
        self.verdict_towards_client(verdict);
    }

    /// Carries out what the chain made of a message towards the client.
    fn verdict_towards_client(&mut self, verdict: Verdict) {
        match verdict {
            Verdict::Deliver { opcode, payload } => self.send_to_client(opcode, payload),
            Verdict::Drop => {}
            Verdict::Close(code, reason) => self.close(code, &reason),
        }
    }

    /// A read from the upstream: a message goes down the chain (held back with the others read
    /// with it, where the route does that); the end of it ends the session.
    fn upstream_read(&mut self, seq: &mut u64, read: Option<Result<Message, WsError>>) {
        let (opcode, payload) = match read {
            Some(Ok(Message::Text(text))) => (Opcode::Text, text.into()),
            Some(Ok(Message::Binary(bytes))) => (Opcode::Binary, bytes),
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => return,
            Some(Ok(Message::Close(_)) | Err(_)) | None => {
                self.run_held_back(); // what the upstream sent before is handled first
                return self.close(1001, "upstream closed");
            }
        };
        *seq += 1;
        if self.recording.is_some() {
            let delivered = Delivered {
                sub: None,
                source: String::from_utf8_lossy(&self.upstream_source).into(),
                id: seq.to_string(),
                opcode,
                payload,
                attrs: Vec::new(),
                held: None,
            };
            return self.towards_client(delivered);
        }
        let meta = Some(MessageMeta {
            source: self.upstream_source.clone(),
            id: MessageId::Place(*seq),
            ..MessageMeta::default()
        });
        let message = Incoming { opcode, payload, meta };
        if self.holds_back() {
            return self.hold_back(true, message);
        }
        self.run_towards_client(message);
    }

    fn send_to_client(&mut self, opcode: Opcode, payload: Bytes) {
        self.tally.messages_out += 1;
        self.tally.bytes_out += payload.len() as u64;
        self.route.tap.see(Direction::Out, opcode, &payload, &self.conn.meta);
        self.outbox_bytes += payload.len();
        self.outbox.push(to_message(opcode, payload));
    }

    fn on_result(&mut self, result: SinkResult) {
        if let Some(recording) = &mut self.recording {
            recording.result(&result);
        }
        // A failed subscription is over: it no longer counts against the connection's limit.
        if result.outcome.is_err() && self.subscriptions.remove(&result.ticket).is_some() {
            self.conn.handles = self.conn.handles.saturating_sub(1);
        } else {
            self.in_flight = self.in_flight.saturating_sub(1);
        }
        let call = HookCall::Result {
            ticket: result.ticket,
            outcome: result.outcome,
            context: result.context,
        };
        let route = self.route.clone();
        let (close, effects) = route.chain.notify(&mut self.lease, &mut self.conn, result.filter, call);
        self.after_hook(close, effects);
    }

    fn on_timer(&mut self, timer: u64, filter: usize) {
        let route = self.route.clone();
        if let Some(recording) = &mut self.recording {
            recording.timer(timer);
        }
        let (close, effects) = (route.chain).notify(&mut self.lease, &mut self.conn, filter, HookCall::Timer(timer));
        self.after_hook(close, effects);
    }

    fn after_hook(&mut self, close: Option<(u16, String)>, effects: Vec<ChainEffect>) {
        if let Some(recording) = &mut self.recording {
            recording.after_hook(&mut self.conn, close.as_ref());
        }
        self.apply(effects);
        if let Some((code, reason)) = close {
            self.close(code, &reason);
        }
    }

    /// Hands a record to a sink; `reply` brings the outcome back to the filter that emitted it.
    fn deliver(
        &mut self,
        sink: &RouteSink,
        opcode: Opcode,
        key: Option<Bytes>,
        payload: Bytes,
        headers: Vec<(String, Bytes)>,
        reply: Option<Reply>,
    ) {
        match sink {
            RouteSink::Queued(handle) => {
                let record = Record {
                    id: Record::next_id(),
                    route: self.route.name.clone(),
                    conn: self.conn.id,
                    opcode,
                    key,
                    payload,
                    headers,
                    meta: self.conn.meta.clone(),
                };
                handle.submit_or_wait(record, reply, &mut self.waiting);
            }
            RouteSink::Upstream(name, _) => {
                let outcome = if self.has_upstream {
                    self.upstream_outbox.push(to_message(opcode, payload));
                    Ok(String::new())
                } else {
                    Err(DeliveryError::Failed(format!("upstream {name} is not connected")))
                };
                if let Some(reply) = reply {
                    reply.send(outcome);
                }
            }
        }
    }

    /// Carries out what the filters asked for, in the order they asked; the emptied vector is
    /// kept for the next message's effects.
    fn apply(&mut self, mut effects: Vec<ChainEffect>) {
        for effect in effects.drain(..) {
            self.apply_one(effect);
        }
        if effects.capacity() > self.spare_effects.capacity() {
            self.spare_effects = effects;
        }
    }

    /// Carries out one thing a filter asked for.
    fn apply_one(&mut self, ChainEffect { filter, effect }: ChainEffect) {
        match effect {
            Effect::Send { opcode, payload } => self.send_to_client(opcode, payload),
            Effect::Emit(emission) => {
                let Emission {
                    ticket,
                    sink,
                    key,
                    payload,
                    headers,
                    context,
                } = *emission;
                let reply = Reply {
                    to: self.results_sender(),
                    ticket,
                    filter,
                    context,
                };
                let Some(target) = self.route.sink(&sink) else {
                    return; // `emit` only hands out tickets for the route's sinks
                };
                let opcode = Opcode::of(&payload);
                self.in_flight += 1;
                self.deliver(&target, opcode, key, payload, headers, Some(reply));
            }
            Effect::Subscribe { id, source, spec } => {
                let inbound = self
                    .inbound
                    .get_or_insert_with(|| mpsc::channel(INBOUND_QUEUE))
                    .0
                    .clone();
                let max_backlog = self.route.settings.max_backlog_bytes;
                let backlog = self.backlog.get_or_insert_with(|| Backlog::new(max_backlog)).clone();
                // A subscription that cannot start, or ends for good, tells the filter
                // through its result hook, with the id as ticket.
                let failed = Reply {
                    to: self.results_sender(),
                    ticket: id,
                    filter,
                    context: Bytes::new(),
                };
                let subscription = self.sources.subscribe(&source, &spec, id, inbound, backlog, failed);
                self.subscriptions.insert(id, (subscription, filter));
            }
            Effect::Ack { sub, id } => {
                if let Some((subscription, _)) = self.subscriptions.get(&sub) {
                    subscription.settle(Settle::Ack(id));
                }
            }
            Effect::Nack { sub, id } => {
                if let Some((subscription, _)) = self.subscriptions.get(&sub) {
                    subscription.settle(Settle::Nack(id));
                }
            }
            Effect::Unsubscribe(sub) => {
                if self.subscriptions.remove(&sub).is_some() {
                    self.conn.handles = self.conn.handles.saturating_sub(1);
                }
            }
            Effect::Hold(on) => self.held = on,
            Effect::SetTimer { id, ms } => {
                let timers = self.timers.get_or_insert_with(DelayQueue::new);
                let key = timers.insert((id, filter), Duration::from_millis(ms));
                self.timer_keys.insert(id, key);
            }
            Effect::CancelTimer(id) => {
                if let Some(key) = self.timer_keys.remove(&id) {
                    if let Some(timers) = self.timers.as_mut() {
                        timers.remove(&key);
                    }
                    self.conn.handles = self.conn.handles.saturating_sub(1);
                }
            }
        }
    }
}
