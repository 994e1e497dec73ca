/* The `stamp` example filter in C (the same in Rust, Zig and AssemblyScript beside it).
 * A text message from the client becomes "[USER] TEXT", USER being the `user` query parameter
 * ("anonymous" without one); it goes on to the route's sinks, and is emitted to sink `audit`
 * with USER as key and itself as context. When the audit record's outcome comes back, the
 * client is told: "delivered: [USER] TEXT", or "failed: [USER] TEXT (DETAIL)".
 * No libc and no allocator: each hook builds its answer in fg_scratch. */
#include "framegate.h"

FG_ABI_V1

static const char ANONYMOUS[] = "anonymous";

/* Copies n bytes (no libc: -fno-builtin keeps this loop a loop). */
static void copy(unsigned char *dst, const void *src, int32_t n) {
    const unsigned char *from = src;
    for (int32_t i = 0; i < n; i++) dst[i] = from[i];
}

int32_t fg_on_message(int64_t conn, int32_t dir, int32_t opcode, int32_t len) {
    (void)conn;
    if (dir != FG_FROM_CLIENT || opcode != FG_TEXT) return FG_CONTINUE;
    /* "[" USER "] " TEXT, built in place: the user's length first (cap 0 asks only that). */
    int32_t user_len = fg_meta_get_str("query.user", 0, 0);
    int32_t room = 3 + (user_len < 0 ? (int32_t)sizeof ANONYMOUS - 1 : user_len) + len;
    unsigned char *stamped = fg_scratch(room);
    if (!stamped) return FG_CLOSE;
    if (user_len < 0) {
        user_len = sizeof ANONYMOUS - 1;
        copy(stamped + 1, ANONYMOUS, user_len);
    } else {
        fg_meta_get_str("query.user", stamped + 1, user_len);
    }
    stamped[0] = '[';
    stamped[1 + user_len] = ']';
    stamped[2 + user_len] = ' ';
    fg_read(FG_BUF_PAYLOAD, 0, stamped + 3 + user_len, len);
    if (fg_replace(stamped, room) < 0) return FG_CLOSE; /* over the route's size limit */
    if (fg_emit("audit", 5, stamped + 1, user_len, stamped, room, 0, 0, stamped, room) < 0) {
        fg_log_str(FG_LOG_WARN, "stamp: no sink `audit` on this route");
    }
    return FG_CONTINUE;
}

void fg_on_result(int64_t conn, int64_t ticket, int32_t status, int32_t len) {
    (void)conn, (void)ticket;
    static const char DELIVERED[] = "delivered: ", FAILED[] = "failed: ";
    const char *head = status == 0 ? DELIVERED : FAILED;
    int32_t head_len = status == 0 ? (int32_t)sizeof DELIVERED - 1 : (int32_t)sizeof FAILED - 1;
    int32_t context_len = fg_buf_len(FG_BUF_CONTEXT);
    /* head CONTEXT, then " (DETAIL)" on failure */
    int32_t room = head_len + context_len + (status == 0 ? 0 : len + 3);
    unsigned char *answer = fg_scratch(room);
    if (!answer) return;
    copy(answer, head, head_len);
    fg_read(FG_BUF_CONTEXT, 0, answer + head_len, context_len);
    if (status != 0) {
        unsigned char *detail = answer + head_len + context_len;
        detail[0] = ' ';
        detail[1] = '(';
        fg_read(FG_BUF_RESULT, 0, detail + 2, len);
        detail[2 + len] = ')';
    }
    fg_send(FG_TEXT, answer, room);
}
