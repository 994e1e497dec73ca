/*
 * framegate.h: the framegate filter ABI v1 for C and Zig (docs/abi.md says everything).
 *
 * Build a filter with clang (no libc needed):
 *   clang --target=wasm32 -O2 -nostdlib -Wl,--no-entry -Wl,--export-dynamic \
 *         -I guest-sdk/include -o NAME.wasm NAME.c
 * Export the hooks with FG_EXPORT, and always FG_ABI_V1 once:
 *
 *   #include "framegate.h"
 *   FG_ABI_V1
 *   FG_EXPORT(fg_on_message) int32_t on_message(int64_t conn, int32_t dir, int32_t opcode, int32_t len) {
 *       return FG_CONTINUE;
 *   }
 *
 * The host never allocates in the guest: it passes lengths, the filter reads with fg_read
 * into its own memory. Pointers must lie inside the module's memory, or the call traps.
 */
#ifndef FRAMEGATE_H
#define FRAMEGATE_H

#include <stdint.h>

/* Buffers for fg_read / fg_buf_len. */
#define FG_BUF_PAYLOAD 0 /* the current message (fg_on_message) */
#define FG_BUF_CONFIG 1  /* the filter's config as JSON (fg_init) */
#define FG_BUF_RESULT 2  /* a sink result's detail (fg_on_result) */
#define FG_BUF_CONTEXT 3 /* the context given to fg_emit (fg_on_result) */

/* fg_on_message results. */
#define FG_CONTINUE 0
#define FG_DROP 1
#define FG_CLOSE 2

/* fg_on_open results. */
#define FG_ACCEPT 0
#define FG_REJECT 1

/* Directions and opcodes. */
#define FG_FROM_CLIENT 0
#define FG_TO_CLIENT 1
#define FG_TEXT 1
#define FG_BINARY 2

/* Error codes (every import returns >= 0 on success). */
#define FG_NOT_FOUND (-1)
#define FG_BAD_ARGUMENT (-2)
#define FG_NOT_ALLOWED (-3)
#define FG_UNKNOWN_TARGET (-4)
#define FG_TOO_LARGE (-5)
#define FG_LIMIT (-6)

/* Log levels and metric kinds. */
#define FG_LOG_ERROR 0
#define FG_LOG_WARN 1
#define FG_LOG_INFO 2
#define FG_LOG_DEBUG 3
#define FG_LOG_TRACE 4
#define FG_METRIC_COUNTER 0
#define FG_METRIC_GAUGE 1

#define FG_IMPORT(name) __attribute__((import_module("framegate"), import_name(#name)))
#define FG_EXPORT(name) __attribute__((export_name(#name)))
/* The marker every module exports: "speaks ABI v1". */
#define FG_ABI_V1 FG_EXPORT(fg_abi_v1) void fg_abi_v1_marker(void) {}

/* Length of a buffer, or FG_NOT_FOUND if it is not set in this hook. */
FG_IMPORT(buf_len) int32_t fg_buf_len(int32_t buf);
/* Copies min(cap, len - offset) bytes of a buffer to dst; returns the count. */
FG_IMPORT(read) int32_t fg_read(int32_t buf, int32_t offset, void *dst, int32_t cap);
/* Replaces the current message (fg_on_message only; text must stay UTF-8). */
FG_IMPORT(replace) int32_t fg_replace(const void *src, int32_t len);
/* Copies up to cap bytes of a metadata value; returns its whole length, FG_NOT_FOUND if absent. */
FG_IMPORT(meta_get) int32_t fg_meta_get(const char *key, int32_t klen, void *dst, int32_t cap);
/* Sets connection metadata; vlen -1 deletes the key. Host keys are read-only. */
FG_IMPORT(meta_set) int32_t fg_meta_set(const char *key, int32_t klen, const void *val, int32_t vlen);
/* Queues a message straight to the client. */
FG_IMPORT(send) int32_t fg_send(int32_t opcode, const void *src, int32_t len);
/* Enqueues a record to a sink of the route; returns a ticket (> 0). klen 0: no key.
 * hdrs: for each header, u32 LE name length, name, u32 LE value length, value. */
FG_IMPORT(emit) int64_t fg_emit(const char *sink, int32_t slen, const void *key, int32_t klen,
                                const void *src, int32_t len, const void *hdrs, int32_t hlen,
                                const void *ctx, int32_t clen);
/* Starts a flow from a source ("bus" with a topic as spec); returns a subscription id. */
FG_IMPORT(subscribe) int64_t fg_subscribe(const char *source, int32_t slen, const char *spec, int32_t splen);
FG_IMPORT(ack) int32_t fg_ack(int64_t sub, const char *id, int32_t idlen);
FG_IMPORT(nack) int32_t fg_nack(int64_t sub, const char *id, int32_t idlen);
FG_IMPORT(unsubscribe) int32_t fg_unsubscribe(int64_t sub);
/* A one-shot timer; fg_on_timer gets its id. */
FG_IMPORT(set_timer) int64_t fg_set_timer(int32_t ms);
FG_IMPORT(cancel_timer) int32_t fg_cancel_timer(int64_t timer);
/* Milliseconds since the Unix epoch. */
FG_IMPORT(now_ms) int64_t fg_now_ms(void);
/* Closes the connection after this hook (code 1000-4999, reason <= 123 bytes). */
FG_IMPORT(close) int32_t fg_close(int32_t code, const char *reason, int32_t rlen);
/* In fg_on_open: the HTTP status (400-599) and body of a refusal. */
FG_IMPORT(reject) int32_t fg_reject(int32_t status, const void *body, int32_t blen);
FG_IMPORT(log) int32_t fg_log(int32_t level, const char *text, int32_t len);
FG_IMPORT(metric) int32_t fg_metric(const char *name, int32_t nlen, int32_t kind, double value);

/* The length of a NUL-terminated string (no libc here). */
static inline int32_t fg_strlen(const char *s) {
    int32_t n = 0;
    while (s[n]) n++;
    return n;
}

/* Logs a NUL-terminated string. */
static inline void fg_log_str(int32_t level, const char *text) { fg_log(level, text, fg_strlen(text)); }

/* Reads a NUL-terminated metadata key into dst; returns the value's length or FG_NOT_FOUND. */
static inline int32_t fg_meta_get_str(const char *key, void *dst, int32_t cap) {
    return fg_meta_get(key, fg_strlen(key), dst, cap);
}

#endif
