/* The bundled `upper` filter, in C: text messages, both ways, become ASCII upper case; binary
 * messages pass unchanged. No libc and no allocator: the message is read into fg_scratch. */
#include "framegate.h"

FG_ABI_V1

int32_t fg_on_message(int64_t conn, int32_t dir, int32_t opcode, int32_t len) {
    (void)conn;
    (void)dir;
    if (opcode != FG_TEXT) return FG_CONTINUE;
    unsigned char *text = fg_scratch(len);
    if (!text) return FG_CLOSE;
    int32_t n = fg_read(FG_BUF_PAYLOAD, 0, text, len);
    int changed = 0;
    for (int32_t i = 0; i < n; i++) {
        if (text[i] >= 'a' && text[i] <= 'z') {
            text[i] -= 'a' - 'A';
            changed = 1;
        }
    }
    /* Already upper case: the host keeps its copy, no replace needed. */
    if (!changed) return FG_CONTINUE;
    return fg_replace(text, n) < 0 ? FG_CLOSE : FG_CONTINUE;
}
