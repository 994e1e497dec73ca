// framegate-guest for AssemblyScript: the filter ABI v1 (docs/abi.md) as AssemblyScript
// declarations, and helpers that move strings and bytes across it.
//
// A filter is the entry file given to `asc`: it imports from here and exports the hooks under
// their ABI names (`fg_abi_v1`, `fg_on_message`, and the optional ones). Build with
// `--use abort=` (no `env.abort` import, which the host would refuse), as asconfig.json here
// says (the default incremental runtime: instances are pooled and serve many calls, so what a
// call allocates must be collected):
//
//   asc filter.ts --config asconfig.json --outFile filter.wasm
//
// The raw imports take pointers into this module's memory (`changetype<usize>(buffer)`);
// the helpers below take `string` (UTF-8 on the wire) or `ArrayBuffer`.

// Buffers for buf_len / read.
export const BUF_PAYLOAD: i32 = 0;
export const BUF_CONFIG: i32 = 1;
export const BUF_RESULT: i32 = 2;
export const BUF_CONTEXT: i32 = 3;

// fg_on_message results, fg_on_open results.
export const CONTINUE: i32 = 0;
export const DROP: i32 = 1;
export const CLOSE: i32 = 2;
export const ACCEPT: i32 = 0;
export const REJECT: i32 = 1;

// Directions and opcodes.
export const FROM_CLIENT: i32 = 0;
export const TO_CLIENT: i32 = 1;
export const TEXT: i32 = 1;
export const BINARY: i32 = 2;

// Error codes.
export const NOT_FOUND: i32 = -1;
export const BAD_ARGUMENT: i32 = -2;
export const NOT_ALLOWED: i32 = -3;
export const UNKNOWN_TARGET: i32 = -4;
export const TOO_LARGE: i32 = -5;
export const LIMIT: i32 = -6;

// Log levels, metric kinds.
export const LOG_ERROR: i32 = 0;
export const LOG_WARN: i32 = 1;
export const LOG_INFO: i32 = 2;
export const LOG_DEBUG: i32 = 3;
export const LOG_TRACE: i32 = 4;
export const METRIC_COUNTER: i32 = 0;
export const METRIC_GAUGE: i32 = 1;

// The imports, as docs/abi.md lists them.
@external("framegate", "buf_len") export declare function buf_len(buf: i32): i32;
@external("framegate", "read") export declare function read(buf: i32, offset: i32, dst: usize, cap: i32): i32;
@external("framegate", "next") export declare function next(verdict: i32): i64;
@external("framegate", "replace") export declare function replace(src: usize, len: i32): i32;
@external("framegate", "meta_get") export declare function meta_get(key: usize, klen: i32, dst: usize, cap: i32): i32;
@external("framegate", "meta_keys") export declare function meta_keys(prefix: usize, plen: i32, dst: usize, cap: i32): i32;
@external("framegate", "sink_names") export declare function sink_names(prefix: usize, plen: i32, dst: usize, cap: i32): i32;
@external("framegate", "meta_set") export declare function meta_set(key: usize, klen: i32, val: usize, vlen: i32): i32;
@external("framegate", "send") export declare function send(opcode: i32, src: usize, len: i32): i32;
@external("framegate", "emit") export declare function emit(
  sink: usize, slen: i32, key: usize, klen: i32, src: usize, len: i32,
  hdrs: usize, hlen: i32, ctx: usize, clen: i32,
): i64;
@external("framegate", "subscribe") export declare function subscribe(source: usize, slen: i32, spec: usize, splen: i32): i64;
@external("framegate", "ack") export declare function ack(sub: i64, id: usize, idlen: i32): i32;
@external("framegate", "nack") export declare function nack(sub: i64, id: usize, idlen: i32): i32;
@external("framegate", "unsubscribe") export declare function unsubscribe(sub: i64): i32;
@external("framegate", "hold") export declare function hold(on: i32): i32;
@external("framegate", "set_timer") export declare function set_timer(ms: i32): i64;
@external("framegate", "cancel_timer") export declare function cancel_timer(timer: i64): i32;
@external("framegate", "now_ms") export declare function now_ms(): i64;
@external("framegate", "close") export declare function close(code: i32, reason: usize, rlen: i32): i32;
@external("framegate", "reject") export declare function reject(status: i32, body: usize, blen: i32): i32;
@external("framegate", "log") export declare function log(level: i32, ptr: usize, len: i32): i32;
@external("framegate", "metric") export declare function metric(name: usize, nlen: i32, kind: i32, value: f64): i32;
@external("framegate", "store_get") export declare function store_get(key: usize, klen: i32, dst: usize, cap: i32): i32;
@external("framegate", "store_set") export declare function store_set(key: usize, klen: i32, val: usize, vlen: i32): i32;
@external("framegate", "store_keys") export declare function store_keys(prefix: usize, plen: i32, dst: usize, cap: i32): i32;
@external("framegate", "store_first") export declare function store_first(prefix: usize, plen: i32, dst: usize, cap: i32): i32;
@external("framegate", "store_add") export declare function store_add(key: usize, klen: i32, delta: i64): i64;

// Helpers: strings travel as UTF-8, bytes as ArrayBuffer.

/** The UTF-8 bytes of a string. */
export function utf8(text: string): ArrayBuffer {
  return String.UTF8.encode(text);
}

/** A string from UTF-8 bytes. */
export function text(bytes: ArrayBuffer): string {
  return String.UTF8.decode(bytes);
}

function ptr(bytes: ArrayBuffer): usize {
  return changetype<usize>(bytes);
}

/** A whole buffer (BUF_*), or null if it is not set in this hook. */
export function readBuffer(buf: i32): ArrayBuffer | null {
  const len = buf_len(buf);
  if (len < 0) return null;
  const bytes = new ArrayBuffer(len);
  read(buf, 0, ptr(bytes), len);
  return bytes;
}

/** The current message's payload (in fg_on_message). */
export function payload(): ArrayBuffer {
  const bytes = readBuffer(BUF_PAYLOAD);
  return bytes === null ? new ArrayBuffer(0) : bytes;
}

/** A metadata value's bytes, or null if the key is absent. */
export function metaBytes(key: string): ArrayBuffer | null {
  const name = utf8(key);
  const len = meta_get(ptr(name), name.byteLength, 0, 0);
  if (len < 0) return null;
  const value = new ArrayBuffer(len);
  meta_get(ptr(name), name.byteLength, ptr(value), len);
  return value;
}

/** A metadata value as text, or `otherwise` if the key is absent. */
export function meta(key: string, otherwise: string = ""): string {
  const value = metaBytes(key);
  return value === null ? otherwise : text(value);
}

/** Sets (or, with null, deletes) a metadata key; 0 or an error code. */
export function setMeta(key: string, value: string | null): i32 {
  const name = utf8(key);
  if (value === null) return meta_set(ptr(name), name.byteLength, 0, -1);
  const bytes = utf8(value);
  return meta_set(ptr(name), name.byteLength, ptr(bytes), bytes.byteLength);
}

/** Replaces the current message (in fg_on_message); 0 or an error code. */
export function replaceWith(bytes: ArrayBuffer): i32 {
  return replace(ptr(bytes), bytes.byteLength);
}

/** Sends a message straight to the client; 0 or an error code. */
export function sendTo(opcode: i32, bytes: ArrayBuffer): i32 {
  return send(opcode, ptr(bytes), bytes.byteLength);
}

/** Emits a record to a sink of the route, with no headers: a ticket (> 0) or an error code.
 *  `context` comes back in BUF_CONTEXT with the result. */
export function emitTo(sink: string, key: ArrayBuffer | null, bytes: ArrayBuffer, context: ArrayBuffer): i64 {
  const name = utf8(sink);
  const keyPtr: usize = key === null ? 0 : ptr(key);
  const keyLen = key === null ? 0 : key.byteLength;
  return emit(
    ptr(name), name.byteLength, keyPtr, keyLen, ptr(bytes), bytes.byteLength,
    0, 0, ptr(context), context.byteLength,
  );
}

/** Logs a line at a LOG_* level. */
export function logText(level: i32, line: string): void {
  const bytes = utf8(line);
  log(level, ptr(bytes), bytes.byteLength);
}

/** Adds to a counter (METRIC_COUNTER) or sets a gauge (METRIC_GAUGE). */
export function count(name: string, kind: i32, value: f64): void {
  const bytes = utf8(name);
  metric(ptr(bytes), bytes.byteLength, kind, value);
}

/** Closes the connection after this hook with a code and a reason. */
export function closeWith(code: i32, reason: string): void {
  const bytes = utf8(reason);
  close(code, ptr(bytes), bytes.byteLength);
}

/** The route's sinks whose names start with `prefix` (what emit takes), sorted. */
export function sinkNames(prefix: string = ""): string[] {
  const wanted = utf8(prefix);
  const len = sink_names(ptr(wanted), wanted.byteLength, 0, 0);
  const names = new Array<string>();
  if (len <= 0) return names;
  const list = new ArrayBuffer(len);
  sink_names(ptr(wanted), wanted.byteLength, ptr(list), len);
  const view = new DataView(list);
  let at = 0;
  while (at + 4 <= len) {
    const n = <i32>view.getUint32(at, true);
    names.push(text(list.slice(at + 4, at + 4 + n)));
    at += 4 + n;
  }
  return names;
}

/** Concatenates byte buffers. */
export function concat(parts: ArrayBuffer[]): ArrayBuffer {
  let len = 0;
  for (let i = 0; i < parts.length; i++) len += parts[i].byteLength;
  const whole = new Uint8Array(len);
  let at = 0;
  for (let i = 0; i < parts.length; i++) {
    whole.set(Uint8Array.wrap(parts[i]), at);
    at += parts[i].byteLength;
  }
  return whole.buffer;
}
