/*
 * framegate.h: the framegate filter ABI v1 for C (and the constants for Zig). docs/abi.md is
 * the contract; this header declares it.
 *
 * Build a filter with clang (no libc needed; -fno-builtin keeps clang from calling a memset or
 * memcpy that is not there; docs/abi.md, "Building one in C"):
 *   clang --target=wasm32 -O2 -nostdlib -fno-builtin -Wl,--no-entry -Wl,--export-dynamic \
 *         -I guest-sdk/include -o NAME.wasm NAME.c
 *
 * Define the hooks you need under their ABI names (the prototypes below export them and check
 * their signatures), and write FG_ABI_V1 once:
 *
 *   #include "framegate.h"
 *   FG_ABI_V1
 *   int32_t fg_on_message(int64_t conn, int32_t dir, int32_t opcode, int32_t len) {
 *       return opcode == FG_TEXT ? FG_CONTINUE : FG_DROP;
 *   }
 *
 * The host never allocates in the guest: it passes lengths, the filter reads with fg_read
 * into its own memory (fg_scratch gives room without an allocator). A pointer outside the
 * module's memory traps. Every import returns >= 0 on success, an FG_* error code otherwise.
 *
 * Zig: translate-c keeps the constants and types but drops import_module/import_name, so the
 * functions below would be imported from "env"; guest-sdk/zig/framegate.zig binds them.
 */
#ifndef FRAMEGATE_H
#define FRAMEGATE_H

#include <stdint.h>

/* Buffers for fg_read / fg_buf_len. */
#define FG_BUF_PAYLOAD 0 /* the current message, as replaced so far (fg_on_message) */
#define FG_BUF_CONFIG 1  /* the filter's config as JSON (fg_init) */
#define FG_BUF_RESULT 2  /* a sink result's detail (fg_on_result) */
#define FG_BUF_CONTEXT 3 /* the context given to fg_emit (fg_on_result) */

/* fg_on_message results. */
#define FG_CONTINUE 0 /* on to the next filter, then the sinks (or the client) */
#define FG_DROP 1     /* nobody after this filter sees the message */
#define FG_CLOSE 2    /* close the connection (code and reason from fg_close, 1000 otherwise) */

/* fg_on_open results. */
#define FG_ACCEPT 0
#define FG_REJECT 1 /* status and body from fg_reject, 403 otherwise */

/* Directions (dir) and opcodes. */
#define FG_FROM_CLIENT 0 /* towards the route's sinks */
#define FG_TO_CLIENT 1   /* from a subscription or an upstream server */
#define FG_TEXT 1
#define FG_BINARY 2

/* Error codes. */
#define FG_NOT_FOUND (-1)      /* no such metadata key; buffer not set in this hook */
#define FG_BAD_ARGUMENT (-2)   /* unknown id, value out of range, text or name not UTF-8 */
#define FG_NOT_ALLOWED (-3)    /* not in this hook, or a read-only metadata key */
#define FG_UNKNOWN_TARGET (-4) /* no sink or source of that name on this route */
#define FG_TOO_LARGE (-5)      /* over the route's message size limit */
#define FG_LIMIT (-6)          /* too many timers or subscriptions on the connection; store full */

/* Log levels and metric kinds. */
#define FG_LOG_ERROR 0
#define FG_LOG_WARN 1
#define FG_LOG_INFO 2
#define FG_LOG_DEBUG 3
#define FG_LOG_TRACE 4
#define FG_METRIC_COUNTER 0 /* adds the value (not negative) */
#define FG_METRIC_GAUGE 1   /* sets the value */

#define FG_IMPORT(name) __attribute__((import_module("framegate"), import_name(#name)))
#define FG_EXPORT(name) __attribute__((export_name(#name)))

/* The hooks (docs/abi.md, "Exports of the guest"): define the ones you need. */
FG_EXPORT(fg_abi_v1) void fg_abi_v1(void);
FG_EXPORT(fg_init) int32_t fg_init(int32_t config_len); /* 0 accepts the config */
FG_EXPORT(fg_on_open) int32_t fg_on_open(int64_t conn); /* FG_ACCEPT or FG_REJECT */
FG_EXPORT(fg_on_message) int32_t fg_on_message(int64_t conn, int32_t dir, int32_t opcode, int32_t len);
FG_EXPORT(fg_on_result) void fg_on_result(int64_t conn, int64_t ticket, int32_t status, int32_t len);
FG_EXPORT(fg_on_timer) void fg_on_timer(int64_t conn, int64_t timer);
FG_EXPORT(fg_on_close) void fg_on_close(int64_t conn, int32_t code);

/* The marker every module exports: "speaks ABI v1". */
#define FG_ABI_V1 \
    void fg_abi_v1(void) {}

/* Length of a buffer, or FG_NOT_FOUND if it is not set in this hook. */
FG_IMPORT(buf_len) int32_t fg_buf_len(int32_t buf);
/* Copies min(cap, len - offset) bytes of a buffer to dst; returns the count. */
FG_IMPORT(read) int32_t fg_read(int32_t buf, int32_t offset, void *dst, int32_t cap);
/* In fg_on_messages (optional export, docs/abi.md): gives the verdict of the message in hand
 * (ignored on the first call), takes the next; answers its opcode << 32 | len, -1 when none is left. */
FG_IMPORT(next) int64_t fg_next(int32_t verdict);
/* Replaces the current message (fg_on_message, fg_on_messages; text must stay UTF-8). */
FG_IMPORT(replace) int32_t fg_replace(const void *src, int32_t len);
/* Copies up to cap bytes of a metadata value; returns its whole length (call again with more
 * room if that is over cap), FG_NOT_FOUND if absent. */
FG_IMPORT(meta_get) int32_t fg_meta_get(const char *key, int32_t klen, void *dst, int32_t cap);
/* Copies up to cap bytes of the list of metadata keys starting with prefix (for each, sorted:
 * u32 LE length, then the name); returns the list's whole length. */
FG_IMPORT(meta_keys) int32_t fg_meta_keys(const char *prefix, int32_t plen, void *dst, int32_t cap);
/* The route's sinks starting with prefix (what fg_emit takes), sorted, encoded as fg_meta_keys
 * encodes keys; returns the list's whole length. Also in fg_init. */
FG_IMPORT(sink_names) int32_t fg_sink_names(const char *prefix, int32_t plen, void *dst, int32_t cap);
/* Sets connection metadata; vlen -1 deletes the key. Host keys are read-only. */
FG_IMPORT(meta_set) int32_t fg_meta_set(const char *key, int32_t klen, const void *val, int32_t vlen);
/* Queues a message straight to the client, past the other filters (not in fg_on_close). */
FG_IMPORT(send) int32_t fg_send(int32_t opcode, const void *src, int32_t len);
/* Enqueues a record to a sink of the route; returns a ticket (> 0) that fg_on_result gets
 * back with ctx. klen 0: no key. hlen 0: no headers; else, for each header: u32 LE name
 * length, name (UTF-8), u32 LE value length, value. */
FG_IMPORT(emit) int64_t fg_emit(const char *sink, int32_t slen, const void *key, int32_t klen, const void *src,
                                int32_t len, const void *hdrs, int32_t hlen, const void *ctx, int32_t clen);
/* Starts a flow from a source ("bus" with a topic as spec); returns a subscription id (> 0). */
FG_IMPORT(subscribe) int64_t fg_subscribe(const char *source, int32_t slen, const char *spec, int32_t splen);
/* Acknowledges / refuses a delivered message: id is its "msg.id" metadata. */
FG_IMPORT(ack) int32_t fg_ack(int64_t sub, const char *id, int32_t idlen);
FG_IMPORT(nack) int32_t fg_nack(int64_t sub, const char *id, int32_t idlen);
/* Stops a subscription. */
FG_IMPORT(unsubscribe) int32_t fg_unsubscribe(int64_t sub);
/* 1 holds the connection's deliveries (they wait in the sources), 0 resumes them. */
FG_IMPORT(hold) int32_t fg_hold(int32_t on);
/* A one-shot timer; returns its id, which fg_on_timer gets when it fires. */
FG_IMPORT(set_timer) int64_t fg_set_timer(int32_t ms);
/* Cancels a timer that has not fired. */
FG_IMPORT(cancel_timer) int32_t fg_cancel_timer(int64_t timer);
/* Milliseconds since the Unix epoch. */
FG_IMPORT(now_ms) int64_t fg_now_ms(void);
/* Closes the connection after this hook (code 1000-4999, reason <= 123 bytes). */
FG_IMPORT(close) int32_t fg_close(int32_t code, const char *reason, int32_t rlen);
/* In fg_on_open: the HTTP status (400-599) and body of a refusal. */
FG_IMPORT(reject) int32_t fg_reject(int32_t status, const void *body, int32_t blen);
/* Logs a line at an FG_LOG_* level, tagged with the filter and the connection. In fg_init, an
 * error or warning is also the load error's text. */
FG_IMPORT(log) int32_t fg_log(int32_t level, const char *text, int32_t len);
/* Adds to a counter or sets a gauge (FG_METRIC_*), shown at /metrics. */
FG_IMPORT(metric) int32_t fg_metric(const char *name, int32_t nlen, int32_t kind, double value);

/* The module's shared store: one key/value map for every instance of the module, on every
 * route, kept across hot swaps. Writes take effect at once and survive a trap. */
/* Copies up to cap bytes of a value; returns its whole length, FG_NOT_FOUND if absent. */
FG_IMPORT(store_get) int32_t fg_store_get(const char *key, int32_t klen, void *dst, int32_t cap);
/* Sets a value (vlen -1 deletes the key); FG_LIMIT when the store would pass its cap. */
FG_IMPORT(store_set) int32_t fg_store_set(const char *key, int32_t klen, const void *val, int32_t vlen);
/* Copies up to cap bytes of the list of keys starting with prefix (for each, sorted: u32 LE
 * length, then the name); returns the list's whole length. */
FG_IMPORT(store_keys) int32_t fg_store_keys(const char *prefix, int32_t plen, void *dst, int32_t cap);
/* Copies up to cap bytes of the smallest key starting with prefix; returns its whole length,
 * FG_NOT_FOUND if there is none. */
FG_IMPORT(store_first) int32_t fg_store_first(const char *prefix, int32_t plen, void *dst, int32_t cap);
/* Adds delta to the decimal counter at key (absent is 0), atomically; returns the new value,
 * FG_BAD_ARGUMENT if the value is not a decimal integer or the sum would be negative. */
FG_IMPORT(store_add) int64_t fg_store_add(const char *key, int32_t klen, int64_t delta);

/* The length of a NUL-terminated string (no libc here). */
static inline int32_t fg_strlen(const char *s) {
    int32_t n = 0;
    while (s[n]) n++;
    return n;
}

/* Logs a NUL-terminated string. */
static inline void fg_log_str(int32_t level, const char *text) { fg_log(level, text, fg_strlen(text)); }

/* Reads a NUL-terminated metadata key's value into dst; returns its length or FG_NOT_FOUND. */
static inline int32_t fg_meta_get_str(const char *key, void *dst, int32_t cap) {
    return fg_meta_get(key, fg_strlen(key), dst, cap);
}

/* Room for len bytes, without an allocator: the start of the heap, grown as needed. Every call
 * returns the same address, so it holds one thing at a time (say, the current message).
 * Returns 0 if memory cannot grow that far (the route's memory_limit_mb). */
static inline void *fg_scratch(int32_t len) {
    extern unsigned char __heap_base; /* set by wasm-ld: the first byte after static data */
    unsigned long end = (unsigned long)&__heap_base + (unsigned long)len;
    unsigned long have = __builtin_wasm_memory_size(0) * 65536ul;
    if (end > have && __builtin_wasm_memory_grow(0, (end - have + 65535) / 65536) == (unsigned long)-1) return 0;
    return &__heap_base;
}

#endif
