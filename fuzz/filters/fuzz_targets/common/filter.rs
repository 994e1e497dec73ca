//! Runs a bundled filter natively over the guest SDK's in-memory host (feature `native-host`):
//! the fuzz input is a conversation, steps separated by a 0 byte, each step's first byte saying
//! what it is and the rest its bytes:
//!
//!   `c` a text message from the client     `b` a binary message from the client
//!   `d` a delivery towards the client      `r` / `f` an emit's result, ok / failed (byte 1 picks it)
//!   `t` the oldest timer fires             `m` `KEY=VALUE`: metadata the host sets (headers, path)
//!   `o` the open hook runs                 anything else: the filter's own use (the target's)
//!
//! A panic is what a trap is inside framegate: a 1011 where the protocol has an answer. Hooks run
//! on a thread with a wasm32 guest's stack (1 MiB), so a recursion a guest could not afford
//! overflows here too.

use framegate_guest::native::{self, Host};

/// The exports `export_filter!` makes.
pub struct Hooks {
    pub init: extern "C" fn(i32) -> i32,
    pub open: extern "C" fn(i64) -> i32,
    pub message: extern "C" fn(i64, i32, i32, i32) -> i32,
    pub result: extern "C" fn(i64, i64, i32, i32),
    pub timer: extern "C" fn(i64, i64),
    pub close: extern "C" fn(i64, i32),
}

pub const CONN: i64 = 7;
const BUF_PAYLOAD: usize = 0;
const BUF_CONFIG: usize = 1;
const BUF_RESULT: usize = 2;
const BUF_CONTEXT: usize = 3;

/// A fresh host for one input: the route's sinks and sources, and the host's own metadata.
pub fn reset(sinks: &[&str], sources: &[&str], meta: &[(&str, &str)]) {
    native::with(|host| {
        *host = Host::default();
        host.sinks = sinks.iter().map(|s| s.to_string()).collect();
        host.sources = sources.iter().map(|s| s.to_string()).collect();
        for (key, value) in meta {
            host.meta.insert(key.to_string(), value.as_bytes().to_vec());
        }
        host.meta.insert("conn.id".into(), CONN.to_string().into_bytes());
    });
}

/// `fg_init` with `config`: whether the filter took it.
pub fn init(hooks: &Hooks, config: &[u8]) -> bool {
    native::with(|host| host.buffers[BUF_CONFIG] = Some(config.to_vec()));
    let took = (hooks.init)(config.len() as i32) == 0;
    native::with(|host| host.buffers[BUF_CONFIG] = None);
    took
}

/// One message through the filter: `dir` 0 from the client, 1 towards it; opcode 1 text, 2 binary.
pub fn message(hooks: &Hooks, dir: i32, opcode: i32, payload: &[u8]) -> i32 {
    native::with(|host| host.buffers[BUF_PAYLOAD] = Some(payload.to_vec()));
    let verdict = (hooks.message)(CONN, dir, opcode, payload.len() as i32);
    native::with(|host| host.buffers[BUF_PAYLOAD] = None);
    verdict
}

/// Runs the steps of `data` after `init`; `other` gets the steps this module does not know.
pub fn converse(hooks: &Hooks, data: &[u8], mut other: impl FnMut(u8, &[u8])) {
    for step in data.split(|b| *b == 0) {
        let Some((&kind, bytes)) = step.split_first() else {
            continue;
        };
        match kind {
            b'c' if std::str::from_utf8(bytes).is_ok() => drop(message(hooks, 0, 1, bytes)),
            b'b' => drop(message(hooks, 0, 2, bytes)),
            b'd' => drop(message(
                hooks,
                1,
                1 + i32::from(std::str::from_utf8(bytes).is_err()),
                bytes,
            )),
            b'r' | b'f' => {
                // The result of one emitted record: the first byte picks which.
                let (pick, detail) = bytes.split_first().map_or((0, &[][..]), |(p, d)| (*p, d));
                let Some(emitted) = native::with(|host| {
                    let emitted = host.emitted.get(usize::from(pick) % host.emitted.len().max(1))?.clone();
                    host.buffers[BUF_RESULT] = Some(detail.to_vec());
                    host.buffers[BUF_CONTEXT] = Some(emitted.context.clone());
                    Some(emitted)
                }) else {
                    continue;
                };
                (hooks.result)(CONN, emitted.ticket, i32::from(kind == b'f'), detail.len() as i32);
                native::with(|host| {
                    host.buffers[BUF_RESULT] = None;
                    host.buffers[BUF_CONTEXT] = None;
                });
            }
            b't' => {
                // The oldest timer fires, a minute later.
                let Some(timer) = native::with(|host| {
                    host.now_ms += 60_000;
                    (!host.timers.is_empty()).then(|| host.timers.remove(0))
                }) else {
                    continue;
                };
                (hooks.timer)(CONN, timer);
            }
            b'm' => {
                let text = String::from_utf8_lossy(bytes);
                let (key, value) = text.split_once('=').unwrap_or((&text, ""));
                native::with(|host| host.meta.insert(key.to_string(), value.as_bytes().to_vec()));
            }
            b'o' => drop((hooks.open)(CONN)),
            _ => other(kind, bytes),
        }
    }
    (hooks.close)(CONN, 1000);
}

/// Runs `f` with a wasm32 guest's stack, propagating a panic.
pub fn on_guest_stack(f: impl FnOnce() + Send + 'static) {
    let thread = std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(f)
        .expect("a thread");
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}
