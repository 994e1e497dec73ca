//! ABI v1, the host side: the state a call sees (`CallState`), the effects it leaves behind,
//! and the `framegate` imports. Every import is pure bookkeeping on `CallState`; nothing blocks,
//! and the session applies the effects once the hook has returned (docs/abi.md).

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use wasmtime::{AsContextMut, Caller, Linker, Memory, StoreLimits};

use super::store::{Store, StoreError};
use crate::metrics::FilterMetrics;
use crate::types::{MessageMeta, Meta, MetaLimit, Opcode, is_reserved};

pub const BUF_PAYLOAD: i32 = 0;
pub const BUF_CONFIG: i32 = 1;
pub const BUF_RESULT: i32 = 2;
pub const BUF_CONTEXT: i32 = 3;

pub const ERR_NOT_FOUND: i32 = -1;
pub const ERR_BAD_ARGUMENT: i32 = -2;
pub const ERR_NOT_ALLOWED: i32 = -3;
pub const ERR_UNKNOWN_TARGET: i32 = -4;
pub const ERR_TOO_LARGE: i32 = -5;
pub const ERR_LIMIT: i32 = -6;

/// Subscriptions plus timers a connection may hold at once.
const MAX_HANDLES: usize = 1024;

/// Which hook is running: some imports only make sense in some hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Hook {
    #[default]
    Init,
    Open,
    Message,
    Result,
    Timer,
    Close,
}

/// What a connection lends to a filter call: its identity, its metadata, its counters.
#[derive(Debug, Default)]
pub struct ConnState {
    pub id: u64,
    pub meta: Meta,
    /// Names the route's filters may `emit` to.
    pub sinks: Arc<[String]>,
    /// Names the route's filters may `subscribe` to.
    pub sources: Arc<[String]>,
    pub max_message_size: usize,
    /// What filters may set on the connection's metadata.
    pub meta_limit: MetaLimit,
    /// Tickets, subscription and timer ids come from one counter, so none is ever reused.
    pub next_id: u64,
    /// Subscriptions and timers currently held.
    pub handles: usize,
    /// The metadata (`msg.*`) of the delivery towards the client going through the chain now:
    /// lent with the connection, so a chain of filters reads it without a copy per filter.
    pub message_meta: Option<MessageMeta>,
    /// A replay's or a recording's view of the calls (src/filter/replay/); `None` otherwise.
    pub journal: Option<Box<Journal>>,
}

/// What a replay or a recording notes of the calls made for a connection, in the order they
/// happened: effects, and what imports do at once (metadata, store, logs, metrics).
#[derive(Debug, Default)]
pub struct Journal {
    /// The virtual wall clock `now_ms` answers; the real one when `None`.
    pub clock_ms: Option<i64>,
    pub notes: Vec<(Arc<str>, Note)>,
}

/// One thing a filter call did, as a journal notes it.
#[derive(Debug, Clone)]
pub enum Note {
    Effect(Effect),
    Replace(Bytes),
    Meta(String, Option<Bytes>),
    Store(String, Option<Bytes>),
    StoreAdd {
        key: String,
        delta: i64,
        value: i64,
    },
    Log(i32, String),
    Metric {
        counter: bool,
        name: String,
        value: f64,
    },
    /// The call was cut off (trap, deadline, memory): what it asked for is discarded.
    Failed {
        kind: &'static str,
        message: String,
    },
}

impl ConnState {
    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Notes what `filter` did, when someone keeps a journal.
    pub fn note(&mut self, filter: &Arc<str>, note: impl FnOnce() -> Note) {
        if let Some(journal) = &mut self.journal {
            journal.notes.push((filter.clone(), note()));
        }
    }
}

/// Something a filter asked for during a call, applied by the session after it returns.
#[derive(Debug, Clone)]
pub enum Effect {
    Send {
        opcode: Opcode,
        payload: Bytes,
    },
    /// Boxed: the rarer, larger effect keeps every effect small to move (a `send` is the common one).
    Emit(Box<Emission>),
    Subscribe {
        id: u64,
        source: String,
        spec: String,
    },
    Ack {
        sub: u64,
        id: String,
    },
    Nack {
        sub: u64,
        id: String,
    },
    Unsubscribe(u64),
    /// Hold (true) or resume (false) the connection's deliveries from its subscriptions.
    Hold(bool),
    SetTimer {
        id: u64,
        ms: u64,
    },
    CancelTimer(u64),
}

/// A record a filter emitted to one of its route's sinks.
#[derive(Debug, Clone)]
pub struct Emission {
    pub ticket: u64,
    pub sink: String,
    pub key: Option<Bytes>,
    pub payload: Bytes,
    pub headers: Vec<(String, Bytes)>,
    pub context: Bytes,
}

/// A run of messages in one direction that one `fg_on_messages` call handles, one at a time:
/// `next` gives the verdict of the message in hand and takes the next one.
#[derive(Debug, Default)]
pub struct Batch {
    pub messages: Vec<Incoming>,
    /// How many messages `next` has handed out.
    pub started: usize,
    /// Whether the last one handed out is still in hand (its verdict not given yet).
    pub in_hand: bool,
    /// What became of each message handed out, in order.
    pub handled: Vec<Handled>,
    /// A verdict ended the run (a close, or a code that is no verdict): no more messages.
    pub ended: bool,
    /// The filter's timeout, which each message has.
    pub timeout_ms: u64,
}

/// A message waiting in a batch, with its `msg.*` metadata (lent to the call while in hand).
#[derive(Debug)]
pub struct Incoming {
    pub opcode: Opcode,
    pub payload: Bytes,
    pub meta: Option<MessageMeta>,
}

/// What a batch call made of one message, and the connection as that message left it.
#[derive(Debug)]
pub struct Handled {
    /// Its verdict, as `fg_on_message` would have returned it.
    pub code: i32,
    /// Its payload, when the call replaced it.
    pub replaced: Option<Bytes>,
    pub close: Option<(u16, String)>,
    /// How many of the call's effects were asked for by the end of this message.
    pub effects_end: usize,
    /// The connection's metadata when this message was done (what its records carry); `None`
    /// while the call has not changed it.
    pub meta: Option<Meta>,
    /// The connection's subscriptions and timers then.
    pub handles: usize,
}

/// The end of the last message a failed batch call finished.
#[derive(Debug)]
pub struct Finished {
    pub effects: usize,
    /// `None` when the metadata is as before the call.
    pub meta: Option<Meta>,
    pub handles: usize,
}

impl Batch {
    /// Empties the batch for the next run, keeping its room.
    pub fn clear(&mut self) {
        self.messages.clear();
        self.handled.clear();
        self.started = 0;
        self.in_hand = false;
        self.ended = false;
    }
}

/// The store's data: everything the imports read or write during one hook call.
#[derive(Default)]
pub struct CallState {
    pub limits: StoreLimits,
    pub memory: Option<Memory>,
    pub hook: Hook,
    pub conn: ConnState,
    pub opcode: Option<Opcode>,
    pub payload: Bytes,
    pub replaced: bool,
    /// The connection's metadata as it was before the call's first `meta_set`: a call that
    /// fails leaves no trace (src/filter/slot.rs puts it back).
    pub meta_before: Option<Meta>,
    pub config: Bytes,
    pub result: Option<Bytes>,
    pub context: Option<Bytes>,
    /// During a batch call (`fg_on_messages`): its messages, which `next` hands out one by one.
    pub batch: Option<Batch>,
    pub effects: Vec<Effect>,
    /// Where messages copied out of the guest (`send`, `replace`, `emit`) are cut from: one
    /// allocation per chunk instead of one per message.
    pub arena: bytes::BytesMut,
    pub close: Option<(u16, String)>,
    pub reject: Option<(u16, Bytes)>,
    pub filter: Arc<str>,
    pub metrics: Option<Arc<FilterMetrics>>,
    /// The module's shared store (`store_*`).
    pub store: Arc<Store>,
    /// The last error or warning an `fg_init` logged.
    pub init_complaint: Option<String>,
    /// Where a batch call that fails goes back to: the end of the last message it finished
    /// (its effects so far, the metadata and handles then), which stands as done.
    pub finished: Option<Finished>,
    /// While a hook call runs: the ticks it may run on once it has left its worker thread to
    /// the other connections (src/filter/slot.rs); `None` once it has, and during `fg_init`.
    pub ticks_after_handoff: Option<u64>,
}

impl CallState {
    fn buffer(&self, buf: i32) -> Result<Option<&Bytes>, i32> {
        match buf {
            BUF_PAYLOAD => Ok(
                (self.hook == Hook::Message && self.batch.as_ref().is_none_or(|b| b.in_hand)).then(|| self.message()),
            ),
            BUF_CONFIG => Ok((self.hook == Hook::Init).then_some(&self.config)),
            BUF_RESULT => Ok(self.result.as_ref()),
            BUF_CONTEXT => Ok(self.context.as_ref()),
            _ => Err(ERR_BAD_ARGUMENT),
        }
    }

    /// The message in hand: as replaced, or as it came (in a batch, where it waits).
    fn message(&self) -> &Bytes {
        match &self.batch {
            Some(batch) if !self.replaced && batch.in_hand => &batch.messages[batch.started - 1].payload,
            _ => &self.payload,
        }
    }

    /// `next`: ends the message in hand with `verdict`, then hands out the next one; its opcode
    /// and length (`opcode << 32 | len`), or -1 when there is none.
    fn next_message(&mut self, verdict: i32) -> i64 {
        self.end_message(Some(verdict));
        let Some(batch) = self.batch.as_mut() else {
            return ERR_NOT_ALLOWED as i64;
        };
        match batch.messages.get_mut(batch.started).filter(|_| !batch.ended) {
            Some(message) => {
                if message.meta.is_some() {
                    std::mem::swap(&mut self.conn.message_meta, &mut message.meta);
                }
                self.opcode = Some(message.opcode);
                self.close = None; // a `close` before a message was in hand is no one's
                batch.started += 1;
                batch.in_hand = true;
                ((message.opcode as i64) << 32) | message.payload.len() as i64
            }
            None => {
                self.opcode = None; // nothing in hand to replace
                ERR_NOT_FOUND as i64
            }
        }
    }

    /// Takes the batch back after the call: the message still in hand gets the call's return
    /// value as its verdict. When the call failed (`None`), the messages it finished stand:
    /// `finished` says where the failure's rollback stops.
    pub fn take_batch(&mut self, verdict: Option<i32>) -> Batch {
        self.end_message(verdict);
        let batch = self.batch.take().unwrap_or_default();
        if verdict.is_none() {
            self.finished = batch.handled.last().map(|done| Finished {
                effects: done.effects_end,
                meta: done.meta.clone(),
                handles: done.handles,
            });
        }
        batch
    }

    /// Ends the message in hand, if any: gives its metadata back and, given a verdict, notes what
    /// became of it.
    fn end_message(&mut self, verdict: Option<i32>) {
        let Some(batch) = self.batch.as_mut().filter(|batch| batch.in_hand) else {
            return;
        };
        batch.in_hand = false;
        if self.conn.message_meta.is_some() {
            let message = &mut batch.messages[batch.started - 1];
            std::mem::swap(&mut self.conn.message_meta, &mut message.meta);
        }
        let Some(code) = verdict else { return };
        batch.handled.push(Handled {
            code,
            replaced: std::mem::take(&mut self.replaced).then(|| std::mem::take(&mut self.payload)),
            close: self.close.take(),
            effects_end: self.effects.len(),
            // `meta_before` is set at the call's first change: no copy kept until then.
            meta: self.meta_before.is_some().then(|| self.conn.meta.clone()),
            handles: self.conn.handles,
        });
        batch.ended = !matches!(code, 0 | 1);
    }

    fn meta_value(&self, key: &str) -> Option<Cow<'_, [u8]>> {
        if let Some(name) = key.strip_prefix("msg.") {
            return self.conn.message_meta.as_ref()?.get(name);
        }
        self.conn.meta.get(key).map(|v| Cow::Borrowed(&v[..]))
    }

    /// The names of the metadata keys starting with `prefix`, in the ABI's list encoding
    /// (u32 LE length, then the name, for each), sorted.
    fn meta_keys(&self, prefix: &str) -> Vec<u8> {
        let message_keys: Vec<String> = (self.conn.message_meta.iter()).flat_map(MessageMeta::keys).collect();
        let mut names: Vec<&str> = (self.conn.meta.keys())
            .chain(&message_keys)
            .map(String::as_str)
            .filter(|k| k.starts_with(prefix))
            .collect();
        names.sort_unstable();
        encode_names(names)
    }

    /// Queues an effect for after the call (and notes it in the journal, if any).
    fn push_effect(&mut self, effect: Effect) {
        self.conn.note(&self.filter, || Note::Effect(effect.clone()));
        self.effects.push(effect);
    }

    fn take_handle(&mut self) -> Result<(), i32> {
        if self.conn.handles >= MAX_HANDLES {
            return Err(ERR_LIMIT);
        }
        self.conn.handles += 1;
        Ok(())
    }
}

/// A list of names in the ABI's encoding: u32 LE length, then the name, for each.
fn encode_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<u8> {
    let mut list = Vec::new();
    for name in names {
        list.extend_from_slice(&(name.len() as u32).to_le_bytes());
        list.extend_from_slice(name.as_bytes());
    }
    list
}

/// The code the guest sees for a refused store operation.
fn store_code(error: StoreError) -> i32 {
    match error {
        StoreError::Full => ERR_LIMIT,
        StoreError::NotACounter => ERR_BAD_ARGUMENT,
    }
}

/// Bytes of guest memory, or a trap: a pointer outside memory is a bug in the filter. An empty
/// region is no bug wherever it points: Zig's empty slices point at the top of the address
/// space, and Rust's at their alignment.
fn guest_slice(data: &[u8], ptr: i32, len: i32) -> wasmtime::Result<&[u8]> {
    let (start, len) = (ptr as u32 as usize, len as u32 as usize);
    if len == 0 {
        return Ok(&[]);
    }
    data.get(start..start.saturating_add(len)).ok_or_else(|| {
        wasmtime::Error::msg(format!(
            "filter passed a pointer outside its memory ({start}+{len}, memory is {} bytes)",
            data.len()
        ))
    })
}

fn guest_slice_mut(data: &mut [u8], ptr: i32, len: i32) -> wasmtime::Result<&mut [u8]> {
    let (start, len) = (ptr as u32 as usize, len as u32 as usize);
    if len == 0 {
        return Ok(&mut []);
    }
    let size = data.len();
    data.get_mut(start..start.saturating_add(len)).ok_or_else(|| {
        wasmtime::Error::msg(format!(
            "filter passed a pointer outside its memory ({start}+{len}, memory is {size} bytes)"
        ))
    })
}

fn memory(caller: &Caller<'_, CallState>) -> wasmtime::Result<Memory> {
    caller
        .data()
        .memory
        .ok_or_else(|| wasmtime::Error::msg("filter has no exported memory"))
}

/// Copies `len` bytes at `ptr` out of the guest.
fn copy_in(caller: &Caller<'_, CallState>, ptr: i32, len: i32) -> wasmtime::Result<Vec<u8>> {
    let mem = memory(caller)?;
    Ok(guest_slice(mem.data(caller), ptr, len)?.to_vec())
}

/// A message piece cut from a chunk lives as long as the whole chunk: small chunks bound what a
/// long-kept message holds on to; larger messages get an allocation of their own.
const ARENA_CHUNK: usize = 4 << 10;
const ARENA_PIECE_MAX: usize = 1 << 10;

/// Copies a message (`len` bytes at `ptr`) out of the guest, cut from the instance's arena.
fn message_in(caller: &mut Caller<'_, CallState>, ptr: i32, len: i32) -> wasmtime::Result<Bytes> {
    let mem = memory(caller)?;
    let (data, state) = mem.data_and_store_mut(caller);
    let piece = guest_slice(data, ptr, len)?;
    if piece.len() > ARENA_PIECE_MAX {
        return Ok(Bytes::copy_from_slice(piece));
    }
    if state.arena.capacity() - state.arena.len() < piece.len() {
        state.arena = bytes::BytesMut::with_capacity(ARENA_CHUNK);
    }
    state.arena.extend_from_slice(piece);
    Ok(state.arena.split().freeze())
}

fn string_in(caller: &Caller<'_, CallState>, ptr: i32, len: i32) -> wasmtime::Result<Result<String, i32>> {
    Ok(String::from_utf8(copy_in(caller, ptr, len)?).map_err(|_| ERR_BAD_ARGUMENT))
}

/// Copies as much of `value` as fits in `cap` bytes at `dst`.
fn copy_out(caller: &mut Caller<'_, CallState>, value: &[u8], dst: i32, cap: i32) -> wasmtime::Result<()> {
    let mem = memory(caller)?;
    let n = value.len().min(cap.max(0) as usize);
    guest_slice_mut(mem.data_mut(caller), dst, n as i32)?.copy_from_slice(&value[..n]);
    Ok(())
}

/// Checks a text payload is UTF-8, since it will travel as a WebSocket text frame.
fn payload_fits(state: &CallState, opcode: Opcode, payload: &[u8]) -> Result<(), i32> {
    if payload.len() > state.conn.max_message_size {
        return Err(ERR_TOO_LARGE);
    }
    if opcode == Opcode::Text && std::str::from_utf8(payload).is_err() {
        return Err(ERR_BAD_ARGUMENT);
    }
    Ok(())
}

fn decode_headers(mut raw: &[u8]) -> Option<Vec<(String, Bytes)>> {
    fn field<'a>(raw: &mut &'a [u8]) -> Option<&'a [u8]> {
        let len = u32::from_le_bytes(raw.get(..4)?.try_into().ok()?) as usize;
        let value = raw.get(4..4 + len)?;
        *raw = &raw[4 + len..];
        Some(value)
    }
    let mut headers = Vec::new();
    while !raw.is_empty() {
        let name = std::str::from_utf8(field(&mut raw)?).ok()?.to_string();
        let value = Bytes::copy_from_slice(field(&mut raw)?);
        headers.push((name, value));
    }
    Some(headers)
}

/// Turns an `Err(code)` from the bookkeeping into the code the guest sees.
fn code(result: Result<i32, i32>) -> i32 {
    result.unwrap_or_else(|c| c)
}
fn code64(result: Result<i64, i32>) -> i64 {
    result.unwrap_or_else(|c| c as i64)
}

/// Defines import `name`: `(name, nlen, dst, cap) -> i32` copies what `lookup` finds for the
/// name (-1 when nothing) and answers its whole length.
fn define_lookup(
    linker: &mut Linker<CallState>,
    name: &str,
    lookup: fn(&CallState, &str) -> Option<Vec<u8>>,
) -> wasmtime::Result<()> {
    linker.func_wrap(
        "framegate",
        name,
        move |mut caller: Caller<'_, CallState>, key: i32, klen: i32, dst: i32, cap: i32| {
            let Ok(key) = string_in(&caller, key, klen)? else {
                return Ok(ERR_BAD_ARGUMENT);
            };
            let Some(value) = lookup(caller.data(), &key) else {
                return Ok(ERR_NOT_FOUND);
            };
            copy_out(&mut caller, &value, dst, cap)?;
            wasmtime::Result::Ok(value.len() as i32)
        },
    )?;
    Ok(())
}

/// Defines every import of module `framegate`.
pub fn define(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    const M: &str = "framegate";

    linker.func_wrap(M, "buf_len", |caller: Caller<'_, CallState>, buf: i32| {
        code(match caller.data().buffer(buf) {
            Ok(Some(b)) => Ok(b.len() as i32),
            Ok(None) => Err(ERR_NOT_FOUND),
            Err(c) => Err(c),
        })
    })?;

    linker.func_wrap(
        M,
        "read",
        |mut caller: Caller<'_, CallState>, buf: i32, offset: i32, dst: i32, cap: i32| {
            let mem = memory(&caller)?;
            // The guest's memory and the state at once: the buffer is read where it is.
            let (data, state) = mem.data_and_store_mut(&mut caller);
            let bytes = match state.buffer(buf) {
                Ok(Some(b)) => b,
                Ok(None) => return Ok(ERR_NOT_FOUND),
                Err(c) => return Ok(c),
            };
            let start = (offset.max(0) as usize).min(bytes.len());
            let n = (bytes.len() - start).min(cap.max(0) as usize);
            guest_slice_mut(data, dst, n as i32)?.copy_from_slice(&bytes[start..start + n]);
            wasmtime::Result::Ok(n as i32)
        },
    )?;

    linker.func_wrap(M, "next", |mut caller: Caller<'_, CallState>, verdict: i32| {
        let state = caller.data_mut();
        let answer = state.next_message(verdict);
        // Each message has the filter's whole timeout once the call has left its worker thread
        // (before that, the call is young: the hand-off comes first, for the whole batch).
        if answer >= 0 && state.ticks_after_handoff.is_none() {
            let ticks = state.batch.as_ref().map_or(0, |batch| batch.timeout_ms);
            caller.as_context_mut().set_epoch_deadline(ticks);
        }
        answer
    })?;

    linker.func_wrap(M, "replace", |mut caller: Caller<'_, CallState>, src: i32, len: i32| {
        let payload = message_in(&mut caller, src, len)?;
        let state = caller.data_mut();
        wasmtime::Result::Ok(code((|| {
            let opcode = state
                .opcode
                .filter(|_| state.hook == Hook::Message)
                .ok_or(ERR_NOT_ALLOWED)?;
            payload_fits(state, opcode, &payload)?;
            state.payload = payload;
            state.replaced = true;
            state.conn.note(&state.filter, || Note::Replace(state.payload.clone()));
            Ok(0)
        })()))
    })?;

    // Lookups: a name in, bytes out; the answer is their whole length (the guest asks again
    // with more room when that is over `cap`).
    define_lookup(linker, "meta_get", |state, key| {
        state.meta_value(key).map(Cow::into_owned)
    })?;
    define_lookup(linker, "meta_keys", |state, prefix| Some(state.meta_keys(prefix)))?;
    define_lookup(linker, "sink_names", |state, prefix| {
        let mut names: Vec<&str> = (state.conn.sinks.iter())
            .map(String::as_str)
            .filter(|name| name.starts_with(prefix))
            .collect();
        names.sort_unstable();
        Some(encode_names(names))
    })?;
    define_lookup(linker, "store_get", |state, key| {
        state.store.get(key).map(|v| v.to_vec())
    })?;
    define_lookup(linker, "store_keys", |state, prefix| {
        Some(encode_names(state.store.keys(prefix).iter().map(String::as_str)))
    })?;
    define_lookup(linker, "store_first", |state, prefix| {
        state.store.first(prefix).map(String::into_bytes)
    })?;

    linker.func_wrap(
        M,
        "meta_set",
        |mut caller: Caller<'_, CallState>, key: i32, klen: i32, val: i32, vlen: i32| {
            let Ok(key) = string_in(&caller, key, klen)? else {
                return Ok(ERR_BAD_ARGUMENT);
            };
            if is_reserved(&key) {
                return Ok(ERR_NOT_ALLOWED);
            }
            let value = (vlen >= 0).then(|| copy_in(&caller, val, vlen)).transpose()?;
            let state = caller.data();
            if let Some(value) = &value
                && !state.conn.meta_limit.allows(&state.conn.meta, &key, value.len())
            {
                if let Some(metrics) = &state.metrics {
                    metrics.meta_refused.inc();
                }
                return Ok(ERR_LIMIT);
            }
            let state = caller.data_mut();
            let value = value.map(Bytes::from);
            state
                .conn
                .note(&state.filter, || Note::Meta(key.clone(), value.clone()));
            state.meta_before.get_or_insert_with(|| state.conn.meta.clone());
            let meta = Arc::make_mut(&mut state.conn.meta);
            match value {
                Some(v) => meta.insert(key, v),
                None => meta.remove(&key),
            };
            wasmtime::Result::Ok(0)
        },
    )?;

    linker.func_wrap(
        M,
        "send",
        |mut caller: Caller<'_, CallState>, opcode: i32, src: i32, len: i32| {
            let payload = message_in(&mut caller, src, len)?;
            let state = caller.data_mut();
            wasmtime::Result::Ok(code((|| {
                let opcode = Opcode::from_abi(opcode).ok_or(ERR_BAD_ARGUMENT)?;
                if state.hook == Hook::Close {
                    return Err(ERR_NOT_ALLOWED);
                }
                payload_fits(state, opcode, &payload)?;
                state.push_effect(Effect::Send { opcode, payload });
                Ok(0)
            })()))
        },
    )?;

    linker.func_wrap(
        M,
        "emit",
        |mut caller: Caller<'_, CallState>,
         sink: i32,
         slen: i32,
         key: i32,
         klen: i32,
         src: i32,
         len: i32,
         hdrs: i32,
         hlen: i32,
         ctx: i32,
         clen: i32| {
            let sink = string_in(&caller, sink, slen)?;
            let key = (klen > 0).then(|| copy_in(&caller, key, klen)).transpose()?;
            let payload = message_in(&mut caller, src, len)?;
            let headers = copy_in(&caller, hdrs, hlen)?;
            let context = copy_in(&caller, ctx, clen)?;
            let state = caller.data_mut();
            wasmtime::Result::Ok(code64((|| {
                let sink = sink?;
                if !state.conn.sinks.contains(&sink) {
                    return Err(ERR_UNKNOWN_TARGET);
                }
                if payload.len() > state.conn.max_message_size {
                    return Err(ERR_TOO_LARGE);
                }
                let headers = decode_headers(&headers).ok_or(ERR_BAD_ARGUMENT)?;
                let ticket = state.conn.next_id();
                state.push_effect(Effect::Emit(Box::new(Emission {
                    ticket,
                    sink,
                    key: key.map(Bytes::from),
                    payload,
                    headers,
                    context: context.into(),
                })));
                Ok(ticket as i64)
            })()))
        },
    )?;

    linker.func_wrap(
        M,
        "subscribe",
        |mut caller: Caller<'_, CallState>, source: i32, slen: i32, spec: i32, splen: i32| {
            let source = string_in(&caller, source, slen)?;
            let spec = string_in(&caller, spec, splen)?;
            let state = caller.data_mut();
            wasmtime::Result::Ok(code64((|| {
                let (source, spec) = (source?, spec?);
                if !state.conn.sources.contains(&source) {
                    return Err(ERR_UNKNOWN_TARGET);
                }
                state.take_handle()?;
                let id = state.conn.next_id();
                state.push_effect(Effect::Subscribe { id, source, spec });
                Ok(id as i64)
            })()))
        },
    )?;

    for (name, is_ack) in [("ack", true), ("nack", false)] {
        linker.func_wrap(
            M,
            name,
            move |mut caller: Caller<'_, CallState>, sub: i64, id: i32, idlen: i32| {
                let id = string_in(&caller, id, idlen)?;
                let state = caller.data_mut();
                wasmtime::Result::Ok(code((|| {
                    let (sub, id) = (sub as u64, id?);
                    state.push_effect(if is_ack {
                        Effect::Ack { sub, id }
                    } else {
                        Effect::Nack { sub, id }
                    });
                    Ok(0)
                })()))
            },
        )?;
    }

    linker.func_wrap(M, "unsubscribe", |mut caller: Caller<'_, CallState>, sub: i64| {
        caller.data_mut().push_effect(Effect::Unsubscribe(sub as u64));
        0
    })?;

    linker.func_wrap(M, "hold", |mut caller: Caller<'_, CallState>, on: i32| {
        if !(0..=1).contains(&on) {
            return ERR_BAD_ARGUMENT;
        }
        caller.data_mut().push_effect(Effect::Hold(on == 1));
        0
    })?;

    linker.func_wrap(M, "set_timer", |mut caller: Caller<'_, CallState>, ms: i32| {
        let state = caller.data_mut();
        code64((|| {
            if ms < 0 {
                return Err(ERR_BAD_ARGUMENT);
            }
            state.take_handle()?;
            let id = state.conn.next_id();
            state.push_effect(Effect::SetTimer { id, ms: ms as u64 });
            Ok(id as i64)
        })())
    })?;

    linker.func_wrap(M, "cancel_timer", |mut caller: Caller<'_, CallState>, timer: i64| {
        caller.data_mut().push_effect(Effect::CancelTimer(timer as u64));
        0
    })?;

    linker.func_wrap(M, "now_ms", |caller: Caller<'_, CallState>| {
        let virtual_clock = caller.data().conn.journal.as_ref().and_then(|j| j.clock_ms);
        virtual_clock.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64)
        })
    })?;

    linker.func_wrap(
        M,
        "close",
        |mut caller: Caller<'_, CallState>, close_code: i32, reason: i32, rlen: i32| {
            let reason = string_in(&caller, reason, rlen)?;
            let state = caller.data_mut();
            wasmtime::Result::Ok(code((|| {
                let reason = reason?;
                if !(1000..=4999).contains(&close_code) || reason.len() > 123 {
                    return Err(ERR_BAD_ARGUMENT);
                }
                state.close = Some((close_code as u16, reason));
                Ok(0)
            })()))
        },
    )?;

    linker.func_wrap(
        M,
        "reject",
        |mut caller: Caller<'_, CallState>, status: i32, body: i32, blen: i32| {
            let body = copy_in(&caller, body, blen)?;
            let state = caller.data_mut();
            wasmtime::Result::Ok(code((|| {
                if state.hook != Hook::Open {
                    return Err(ERR_NOT_ALLOWED);
                }
                if !(400..=599).contains(&status) {
                    return Err(ERR_BAD_ARGUMENT);
                }
                state.reject = Some((status as u16, body.into()));
                Ok(0)
            })()))
        },
    )?;

    linker.func_wrap(
        M,
        "log",
        |mut caller: Caller<'_, CallState>, level: i32, ptr: i32, len: i32| {
            let text = String::from_utf8_lossy(&copy_in(&caller, ptr, len)?).into_owned();
            if level <= 1 && caller.data().hook == Hook::Init {
                // Why an init refused its config: shown in the load error.
                caller.data_mut().init_complaint = Some(text.clone());
            }
            let state = caller.data_mut();
            if (0..=4).contains(&level) {
                state.conn.note(&state.filter, || Note::Log(level, text.clone()));
            }
            let (filter, conn) = (&*state.filter, state.conn.id);
            match level {
                0 => tracing::error!(filter, conn, "{text}"),
                1 => tracing::warn!(filter, conn, "{text}"),
                2 => tracing::info!(filter, conn, "{text}"),
                3 => tracing::debug!(filter, conn, "{text}"),
                4 => tracing::trace!(filter, conn, "{text}"),
                _ => return Ok(ERR_BAD_ARGUMENT),
            }
            wasmtime::Result::Ok(0)
        },
    )?;

    linker.func_wrap(
        M,
        "metric",
        |mut caller: Caller<'_, CallState>, name: i32, nlen: i32, kind: i32, value: f64| {
            let Ok(name) = string_in(&caller, name, nlen)? else {
                return Ok(ERR_BAD_ARGUMENT);
            };
            let counter = match kind {
                0 if value >= 0.0 => true,
                1 => false,
                _ => return Ok(ERR_BAD_ARGUMENT),
            };
            let state = caller.data_mut();
            state.conn.note(&state.filter, || Note::Metric {
                counter,
                name: name.clone(),
                value,
            });
            // Past a module's cap of names, nothing is counted (ERR_LIMIT).
            let counted = match state.metrics.as_ref() {
                Some(metrics) if counter => metrics.custom_counter(&name, value),
                Some(metrics) => metrics.custom_gauge(&name, value),
                None => true,
            };
            wasmtime::Result::Ok(if counted { 0 } else { ERR_LIMIT })
        },
    )?;
    define_store(linker)
}

/// `store_set` and `store_add`: writes to the module's shared store, at once (not effects).
fn define_store(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    const M: &str = "framegate";

    linker.func_wrap(
        M,
        "store_set",
        |mut caller: Caller<'_, CallState>, key: i32, klen: i32, val: i32, vlen: i32| {
            let Ok(key) = string_in(&caller, key, klen)? else {
                return Ok(ERR_BAD_ARGUMENT);
            };
            let value = (vlen >= 0).then(|| copy_in(&caller, val, vlen)).transpose()?;
            let value = value.map(Bytes::from);
            let state = caller.data_mut();
            let stored = state.store.set(&key, value.clone());
            if stored.is_ok() {
                state.conn.note(&state.filter, || Note::Store(key, value));
            }
            wasmtime::Result::Ok(code(stored.map(|()| 0).map_err(store_code)))
        },
    )?;

    linker.func_wrap(
        M,
        "store_add",
        |mut caller: Caller<'_, CallState>, key: i32, klen: i32, delta: i64| {
            let Ok(key) = string_in(&caller, key, klen)? else {
                return Ok(i64::from(ERR_BAD_ARGUMENT));
            };
            let state = caller.data_mut();
            let sum = state.store.add(&key, delta);
            if let Ok(value) = sum {
                state.conn.note(&state.filter, || Note::StoreAdd { key, delta, value });
            }
            wasmtime::Result::Ok(code64(sum.map_err(store_code)))
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_reject_truncation() {
        let mut raw = Vec::new();
        for (n, v) in [("a", "1"), ("bb", "")] {
            raw.extend((n.len() as u32).to_le_bytes());
            raw.extend(n.as_bytes());
            raw.extend((v.len() as u32).to_le_bytes());
            raw.extend(v.as_bytes());
        }
        let headers = decode_headers(&raw).unwrap();
        assert_eq!(
            headers,
            vec![("a".into(), Bytes::from("1")), ("bb".into(), Bytes::new())]
        );
        assert!(decode_headers(&raw[..raw.len() - 1]).is_none());
        assert_eq!(decode_headers(&[]).unwrap(), vec![]);
    }

    #[test]
    fn an_empty_region_is_no_trap_wherever_it_points_and_one_byte_past_the_end_is() {
        let mut memory = [0u8; 8];
        assert!(guest_slice(&memory, -1, 0).unwrap().is_empty(), "Zig's empty slice");
        assert!(guest_slice_mut(&mut memory, 1 << 20, 0).unwrap().is_empty());
        assert_eq!(guest_slice(&memory, 6, 2).unwrap().len(), 2);
        assert!(guest_slice(&memory, 7, 2).is_err());
        assert!(guest_slice_mut(&mut memory, -1, 1).is_err());
    }
}
