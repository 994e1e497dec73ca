//! An in-memory stand-in for the framegate host, off wasm32 with feature `native-host`: the
//! imports of [`sys`](crate::sys) read and write this thread's [`Host`], so a filter's hooks run
//! natively, in host-side tests and in the fuzz targets (fuzz/), where a panic is what a trap
//! would be inside framegate. It keeps the ABI's bookkeeping and its error codes, with
//! framegate's default limits on metadata, the store and message sizes; it is not framegate (no
//! sinks run, no timer fires, nothing is delivered).

use std::cell::RefCell;
use std::collections::BTreeMap;

use crate::sys;

/// What one thread's host holds: the buffers of the current hook, the connection's metadata,
/// the module's store and what the calls asked for.
#[derive(Debug, Clone)]
pub struct Host {
    /// `BUF_PAYLOAD`, `BUF_CONFIG`, `BUF_RESULT`, `BUF_CONTEXT`: `None` when not set.
    pub buffers: [Option<Vec<u8>>; 4],
    /// The connection's metadata.
    pub meta: BTreeMap<String, Vec<u8>>,
    /// The module's shared store.
    pub store: BTreeMap<String, Vec<u8>>,
    /// What `emit` and `subscribe` accept.
    pub sinks: Vec<String>,
    #[allow(missing_docs)]
    pub sources: Vec<String>,
    /// `send`s: opcode and payload.
    pub sent: Vec<(i32, Vec<u8>)>,
    /// `emit`s, in order.
    pub emitted: Vec<Emitted>,
    /// Timers set and neither cancelled nor fired (the host fires none: a test does).
    pub timers: Vec<i64>,
    /// A `close`: code and reason.
    pub close: Option<(i32, String)>,
    /// A `reject`: status and body.
    pub reject: Option<(i32, Vec<u8>)>,
    /// The clock `now_ms` reads.
    pub now_ms: i64,
    /// Tickets, subscriptions and timers.
    pub next_id: i64,
    /// framegate's defaults: a route's `max_message_size`, `max_meta_keys`, `max_meta_bytes`.
    pub max_message_size: usize,
    #[allow(missing_docs)]
    pub max_meta_keys: usize,
    #[allow(missing_docs)]
    pub max_meta_bytes: usize,
    /// The module's store: 64 MiB.
    pub max_store_bytes: usize,
}

impl Default for Host {
    fn default() -> Host {
        Host {
            buffers: Default::default(),
            meta: BTreeMap::new(),
            store: BTreeMap::new(),
            sinks: Vec::new(),
            sources: Vec::new(),
            sent: Vec::new(),
            emitted: Vec::new(),
            timers: Vec::new(),
            close: None,
            reject: None,
            now_ms: 1_700_000_000_000,
            next_id: 0,
            max_message_size: 1 << 20,
            max_meta_keys: 1024,
            max_meta_bytes: 256 << 10,
            max_store_bytes: 64 << 20,
        }
    }
}

/// A record a filter emitted.
#[derive(Debug, Clone)]
pub struct Emitted {
    /// What `fg_on_result` gets for it.
    pub ticket: i64,
    #[allow(missing_docs)]
    pub sink: String,
    #[allow(missing_docs)]
    pub payload: Vec<u8>,
    /// What comes back in `BUF_CONTEXT` with the result.
    pub context: Vec<u8>,
}

thread_local! {
    static HOST: RefCell<Host> = RefCell::new(Host::default());
}

/// Runs `f` on this thread's host (to set it up before a hook, or read what the hook did).
pub fn with<R>(f: impl FnOnce(&mut Host) -> R) -> R {
    HOST.with(|host| f(&mut host.borrow_mut()))
}

const NOT_FOUND: i32 = -1;
const BAD_ARGUMENT: i32 = -2;
const NOT_ALLOWED: i32 = -3;
const UNKNOWN_TARGET: i32 = -4;
const TOO_LARGE: i32 = -5;
const LIMIT: i32 = -6;

/// The guest's bytes at `ptr`; a negative length is none.
unsafe fn bytes<'a>(ptr: *const u8, len: i32) -> &'a [u8] {
    if len <= 0 || ptr.is_null() {
        return &[];
    }
    // SAFETY: the SDK passes its own buffers with their lengths.
    unsafe { std::slice::from_raw_parts(ptr, len as usize) }
}

unsafe fn text(ptr: *const u8, len: i32) -> Option<String> {
    String::from_utf8(unsafe { bytes(ptr, len) }.to_vec()).ok()
}

/// Copies what fits of `value` to `dst`; the whole length.
unsafe fn copy_out(value: &[u8], dst: *mut u8, cap: i32) -> i32 {
    let n = value.len().min(cap.max(0) as usize);
    if n > 0 {
        // SAFETY: the SDK passes a buffer of `cap` bytes.
        unsafe { std::ptr::copy_nonoverlapping(value.as_ptr(), dst, n) };
    }
    value.len() as i32
}

fn names<'a>(names: impl Iterator<Item = &'a String>) -> Vec<u8> {
    let mut out = Vec::new();
    for name in names {
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
    }
    out
}

fn meta_fits(host: &Host, key: &str, len: usize) -> bool {
    let others = host.meta.iter().filter(|(k, _)| *k != key);
    let bytes: usize = others.clone().map(|(k, v)| k.len() + v.len()).sum();
    others.count() < host.max_meta_keys && bytes + key.len() + len <= host.max_meta_bytes
}

fn store_fits(host: &Host, key: &str, len: usize) -> bool {
    let bytes: usize = (host.store.iter().filter(|(k, _)| *k != key))
        .map(|(k, v)| k.len() + v.len())
        .sum();
    bytes + key.len() + len <= host.max_store_bytes
}

fn next_id(host: &mut Host) -> i64 {
    host.next_id += 1;
    host.next_id
}

pub(crate) unsafe fn buf_len(buf: i32) -> i32 {
    with(
        |host| match usize::try_from(buf).ok().and_then(|b| host.buffers.get(b)) {
            Some(Some(bytes)) => bytes.len() as i32,
            Some(None) => NOT_FOUND,
            None => BAD_ARGUMENT,
        },
    )
}

pub(crate) unsafe fn read(buf: i32, offset: i32, dst: *mut u8, cap: i32) -> i32 {
    with(
        |host| match usize::try_from(buf).ok().and_then(|b| host.buffers.get(b)) {
            Some(Some(bytes)) => {
                let rest = &bytes[(offset.max(0) as usize).min(bytes.len())..];
                let n = rest.len().min(cap.max(0) as usize);
                unsafe { copy_out(&rest[..n], dst, cap) }
            }
            Some(None) => NOT_FOUND,
            None => BAD_ARGUMENT,
        },
    )
}

/// The in-memory host runs hooks one message at a time: it never calls `fg_on_messages`.
pub(crate) unsafe fn next(_verdict: i32) -> i64 {
    NOT_ALLOWED as i64
}

pub(crate) unsafe fn replace(src: *const u8, len: i32) -> i32 {
    let payload = unsafe { bytes(src, len) }.to_vec();
    with(|host| {
        if payload.len() > host.max_message_size {
            return TOO_LARGE;
        }
        host.buffers[sys::BUF_PAYLOAD as usize] = Some(payload);
        0
    })
}

/// `meta_get`, `meta_keys`, `sink_names`, `store_get`, `store_keys`, `store_first`.
unsafe fn lookup(
    key: *const u8,
    klen: i32,
    dst: *mut u8,
    cap: i32,
    find: impl FnOnce(&Host, &str) -> Option<Vec<u8>>,
) -> i32 {
    let Some(key) = (unsafe { text(key, klen) }) else {
        return BAD_ARGUMENT;
    };
    match with(|host| find(host, &key)) {
        Some(value) => unsafe { copy_out(&value, dst, cap) },
        None => NOT_FOUND,
    }
}

pub(crate) unsafe fn meta_get(key: *const u8, klen: i32, dst: *mut u8, cap: i32) -> i32 {
    unsafe { lookup(key, klen, dst, cap, |host, key| host.meta.get(key).cloned()) }
}

pub(crate) unsafe fn meta_keys(prefix: *const u8, plen: i32, dst: *mut u8, cap: i32) -> i32 {
    unsafe {
        lookup(prefix, plen, dst, cap, |host, prefix| {
            Some(names(host.meta.keys().filter(|k| k.starts_with(prefix))))
        })
    }
}

pub(crate) unsafe fn sink_names(prefix: *const u8, plen: i32, dst: *mut u8, cap: i32) -> i32 {
    unsafe {
        lookup(prefix, plen, dst, cap, |host, prefix| {
            let mut sinks: Vec<&String> = host.sinks.iter().filter(|s| s.starts_with(prefix)).collect();
            sinks.sort();
            Some(names(sinks.into_iter()))
        })
    }
}

pub(crate) unsafe fn meta_set(key: *const u8, klen: i32, val: *const u8, vlen: i32) -> i32 {
    let Some(key) = (unsafe { text(key, klen) }) else {
        return BAD_ARGUMENT;
    };
    let value = (vlen >= 0).then(|| unsafe { bytes(val, vlen) }.to_vec());
    with(|host| match value {
        Some(value) if !meta_fits(host, &key, value.len()) => LIMIT,
        Some(value) => {
            host.meta.insert(key, value);
            0
        }
        None => {
            host.meta.remove(&key);
            0
        }
    })
}

pub(crate) unsafe fn send(opcode: i32, src: *const u8, len: i32) -> i32 {
    let payload = unsafe { bytes(src, len) }.to_vec();
    with(|host| {
        if !(1..=2).contains(&opcode) || (opcode == 1 && std::str::from_utf8(&payload).is_err()) {
            return BAD_ARGUMENT;
        }
        if payload.len() > host.max_message_size {
            return TOO_LARGE;
        }
        host.sent.push((opcode, payload));
        0
    })
}

#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn emit(
    sink: *const u8,
    slen: i32,
    _key: *const u8,
    _klen: i32,
    src: *const u8,
    len: i32,
    _hdrs: *const u8,
    _hlen: i32,
    ctx: *const u8,
    clen: i32,
) -> i64 {
    let Some(sink) = (unsafe { text(sink, slen) }) else {
        return BAD_ARGUMENT.into();
    };
    let payload = unsafe { bytes(src, len) }.to_vec();
    let context = unsafe { bytes(ctx, clen) }.to_vec();
    with(|host| {
        if !host.sinks.contains(&sink) {
            return UNKNOWN_TARGET.into();
        }
        if payload.len() > host.max_message_size {
            return TOO_LARGE.into();
        }
        let ticket = next_id(host);
        host.emitted.push(Emitted {
            ticket,
            sink,
            payload,
            context,
        });
        ticket
    })
}

pub(crate) unsafe fn subscribe(source: *const u8, slen: i32, _spec: *const u8, _splen: i32) -> i64 {
    let Some(source) = (unsafe { text(source, slen) }) else {
        return BAD_ARGUMENT.into();
    };
    with(|host| match host.sources.contains(&source) {
        true => next_id(host),
        false => UNKNOWN_TARGET.into(),
    })
}

pub(crate) unsafe fn ack(_sub: i64, _id: *const u8, _idlen: i32) -> i32 {
    0
}

pub(crate) unsafe fn nack(_sub: i64, _id: *const u8, _idlen: i32) -> i32 {
    0
}

pub(crate) unsafe fn unsubscribe(_sub: i64) -> i32 {
    0
}

pub(crate) unsafe fn hold(on: i32) -> i32 {
    if (0..=1).contains(&on) { 0 } else { BAD_ARGUMENT }
}

pub(crate) unsafe fn set_timer(ms: i32) -> i64 {
    if ms < 0 {
        return BAD_ARGUMENT.into();
    }
    with(|host| {
        let id = next_id(host);
        host.timers.push(id);
        id
    })
}

pub(crate) unsafe fn cancel_timer(timer: i64) -> i32 {
    with(|host| host.timers.retain(|t| *t != timer));
    0
}

pub(crate) unsafe fn now_ms() -> i64 {
    with(|host| host.now_ms)
}

pub(crate) unsafe fn close(code: i32, reason: *const u8, rlen: i32) -> i32 {
    match unsafe { text(reason, rlen) } {
        Some(reason) if (1000..=4999).contains(&code) && reason.len() <= 123 => {
            with(|host| host.close = Some((code, reason)));
            0
        }
        _ => BAD_ARGUMENT,
    }
}

pub(crate) unsafe fn reject(status: i32, body: *const u8, blen: i32) -> i32 {
    if !(400..=599).contains(&status) {
        return BAD_ARGUMENT;
    }
    let body = unsafe { bytes(body, blen) }.to_vec();
    with(|host| host.reject = Some((status, body)));
    0
}

pub(crate) unsafe fn log(level: i32, _ptr: *const u8, _len: i32) -> i32 {
    if (0..=4).contains(&level) { 0 } else { BAD_ARGUMENT }
}

pub(crate) unsafe fn metric(name: *const u8, nlen: i32, kind: i32, value: f64) -> i32 {
    match (unsafe { text(name, nlen) }, kind) {
        (Some(_), 0) if value >= 0.0 => 0,
        (Some(_), 1) => 0,
        _ => BAD_ARGUMENT,
    }
}

pub(crate) unsafe fn store_get(key: *const u8, klen: i32, dst: *mut u8, cap: i32) -> i32 {
    unsafe { lookup(key, klen, dst, cap, |host, key| host.store.get(key).cloned()) }
}

pub(crate) unsafe fn store_set(key: *const u8, klen: i32, val: *const u8, vlen: i32) -> i32 {
    let Some(key) = (unsafe { text(key, klen) }) else {
        return BAD_ARGUMENT;
    };
    let value = (vlen >= 0).then(|| unsafe { bytes(val, vlen) }.to_vec());
    with(|host| match value {
        Some(value) if !store_fits(host, &key, value.len()) => LIMIT,
        Some(value) => {
            host.store.insert(key, value);
            0
        }
        None => {
            host.store.remove(&key);
            0
        }
    })
}

pub(crate) unsafe fn store_keys(prefix: *const u8, plen: i32, dst: *mut u8, cap: i32) -> i32 {
    unsafe {
        lookup(prefix, plen, dst, cap, |host, prefix| {
            Some(names(host.store.keys().filter(|k| k.starts_with(prefix))))
        })
    }
}

pub(crate) unsafe fn store_first(prefix: *const u8, plen: i32, dst: *mut u8, cap: i32) -> i32 {
    unsafe {
        lookup(prefix, plen, dst, cap, |host, prefix| {
            let first = host.store.range(prefix.to_string()..).next()?.0;
            first.starts_with(prefix).then(|| first.clone().into_bytes())
        })
    }
}

pub(crate) unsafe fn store_add(key: *const u8, klen: i32, delta: i64) -> i64 {
    let Some(key) = (unsafe { text(key, klen) }) else {
        return BAD_ARGUMENT.into();
    };
    with(|host| {
        let current = match host.store.get(&key) {
            None => Some(0),
            Some(v) => std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .filter(|n| *n >= 0),
        };
        match current.and_then(|c| c.checked_add(delta)).filter(|n| *n >= 0) {
            Some(sum) => {
                host.store.insert(key, sum.to_string().into_bytes());
                sum
            }
            None => BAD_ARGUMENT.into(),
        }
    })
}
