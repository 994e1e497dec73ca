//! The raw ABI v1 (docs/abi.md): the `framegate` imports and their buffer ids. Filters use the
//! safe API of the crate root; this module is for what it does not cover.
//!
//! ```no_run
//! use framegate_guest::sys;
//! // SAFETY: no pointers.
//! let len = unsafe { sys::buf_len(sys::BUF_PAYLOAD) };
//! ```
//!
//! Off wasm32 (documentation, host-side unit tests) the imports are stand-ins that panic: the
//! real ones exist only inside framegate. With feature `native-host` they are an in-memory host
//! instead ([`native`](crate::native)), for running a filter's hooks natively (fuzz/).

/// The current message (in `fg_on_message`).
pub const BUF_PAYLOAD: i32 = 0;
/// The filter's config as JSON (in `fg_init`).
pub const BUF_CONFIG: i32 = 1;
/// A sink result's detail: the broker's id, or the error (in `fg_on_result`).
pub const BUF_RESULT: i32 = 2;
/// The context given to `emit` (in `fg_on_result`).
pub const BUF_CONTEXT: i32 = 3;

/// Declares the imports once: real ones on wasm32, stand-ins elsewhere.
macro_rules! imports {
    ($($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)?;)*) => {
        #[cfg(target_arch = "wasm32")]
        #[link(wasm_import_module = "framegate")]
        unsafe extern "C" {
            $($(#[$doc])* pub fn $name($($arg: $ty),*) $(-> $ret)?;)*
        }
        $(
            #[cfg(not(target_arch = "wasm32"))]
            $(#[$doc])*
            ///
            /// # Safety
            /// Pointers and lengths must describe the caller's own memory.
            #[allow(unused_variables, clippy::too_many_arguments)]
            pub unsafe fn $name($($arg: $ty),*) $(-> $ret)? {
                #[cfg(feature = "native-host")]
                // SAFETY: the caller's promise, passed on.
                return unsafe { crate::native::$name($($arg),*) };
                #[cfg(not(feature = "native-host"))]
                panic!(concat!("framegate::", stringify!($name), " exists only inside framegate (wasm32)"))
            }
        )*
    };
}

imports! {
    /// Length of a buffer, or -1 if it is not set in this hook.
    fn buf_len(buf: i32) -> i32;
    /// Copies up to `cap` bytes of a buffer from `offset`; returns the count.
    fn read(buf: i32, offset: i32, dst: *mut u8, cap: i32) -> i32;
    /// In `fg_on_messages`: gives the verdict of the message in hand (ignored before the
    /// first) and takes the next one; answers its `opcode << 32 | len`, or -1 when none is left.
    fn next(verdict: i32) -> i64;
    /// Replaces the current message.
    fn replace(src: *const u8, len: i32) -> i32;
    /// Copies up to `cap` bytes of a metadata value; returns its whole length, -1 if absent.
    fn meta_get(key: *const u8, klen: i32, dst: *mut u8, cap: i32) -> i32;
    /// Copies up to `cap` bytes of the list of metadata keys starting with a prefix (each a u32
    /// LE length, then the name); returns the list's whole length.
    fn meta_keys(prefix: *const u8, plen: i32, dst: *mut u8, cap: i32) -> i32;
    /// Copies up to `cap` bytes of the list of the route's sinks starting with a prefix (as
    /// `meta_keys` encodes it); returns the list's whole length. Also in `fg_init`.
    fn sink_names(prefix: *const u8, plen: i32, dst: *mut u8, cap: i32) -> i32;
    /// Sets connection metadata; `vlen` -1 deletes the key.
    fn meta_set(key: *const u8, klen: i32, val: *const u8, vlen: i32) -> i32;
    /// Queues a message to the client.
    fn send(opcode: i32, src: *const u8, len: i32) -> i32;
    /// Enqueues a record to a sink of the route; returns a ticket.
    fn emit(
        sink: *const u8, slen: i32, key: *const u8, klen: i32, src: *const u8, len: i32,
        hdrs: *const u8, hlen: i32, ctx: *const u8, clen: i32
    ) -> i64;
    /// Starts a flow from a source to this connection; returns a subscription id.
    fn subscribe(source: *const u8, slen: i32, spec: *const u8, splen: i32) -> i64;
    /// Acknowledges a delivered message.
    fn ack(sub: i64, id: *const u8, idlen: i32) -> i32;
    /// Refuses a delivered message.
    fn nack(sub: i64, id: *const u8, idlen: i32) -> i32;
    /// Stops a subscription.
    fn unsubscribe(sub: i64) -> i32;
    /// Holds (1) or resumes (0) the connection's deliveries.
    fn hold(on: i32) -> i32;
    /// A one-shot timer; returns its id.
    fn set_timer(ms: i32) -> i64;
    /// Cancels a timer.
    fn cancel_timer(timer: i64) -> i32;
    /// Milliseconds since the Unix epoch.
    fn now_ms() -> i64;
    /// Closes the connection after this call.
    fn close(code: i32, reason: *const u8, rlen: i32) -> i32;
    /// In `fg_on_open`: the HTTP status and body of a refusal.
    fn reject(status: i32, body: *const u8, blen: i32) -> i32;
    /// Logs a line: 0 error, 1 warn, 2 info, 3 debug, 4 trace.
    fn log(level: i32, ptr: *const u8, len: i32) -> i32;
    /// Kind 0 adds to a counter, kind 1 sets a gauge.
    fn metric(name: *const u8, nlen: i32, kind: i32, value: f64) -> i32;
    /// Copies up to `cap` bytes of a value of the module's shared store; returns its whole
    /// length, -1 if absent.
    fn store_get(key: *const u8, klen: i32, dst: *mut u8, cap: i32) -> i32;
    /// Sets a value of the module's shared store; `vlen` -1 deletes the key.
    fn store_set(key: *const u8, klen: i32, val: *const u8, vlen: i32) -> i32;
    /// Copies up to `cap` bytes of the list of the store's keys starting with a prefix (each a
    /// u32 LE length, then the name); returns the list's whole length.
    fn store_keys(prefix: *const u8, plen: i32, dst: *mut u8, cap: i32) -> i32;
    /// Copies up to `cap` bytes of the smallest key starting with a prefix; returns its whole
    /// length, -1 if there is none.
    fn store_first(prefix: *const u8, plen: i32, dst: *mut u8, cap: i32) -> i32;
    /// Adds `delta` to a decimal counter of the store, at once for every instance; returns the
    /// new value.
    fn store_add(key: *const u8, klen: i32, delta: i64) -> i64;
}
