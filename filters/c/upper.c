/* The bundled `upper` filter, in C: text messages, both ways, become ASCII upper case.
 * Binary messages pass unchanged. It shows that any language with a Wasm target can write a
 * filter: no libc, no allocator, a buffer that grows with the module's memory. */
#include "framegate.h"

extern unsigned char __heap_base;

FG_ABI_V1

/* Room for `len` bytes at the heap's start, growing memory when a message is larger. */
static unsigned char *room(int32_t len) {
    unsigned long end = (unsigned long)&__heap_base + (unsigned long)len;
    unsigned long have = __builtin_wasm_memory_size(0) * 65536ul;
    if (end > have && __builtin_wasm_memory_grow(0, (end - have + 65535) / 65536) < 0) return 0;
    return &__heap_base;
}

FG_EXPORT(fg_on_message)
int32_t on_message(int64_t conn, int32_t dir, int32_t opcode, int32_t len) {
    (void)conn;
    (void)dir;
    if (opcode != FG_TEXT) return FG_CONTINUE;
    unsigned char *text = room(len);
    if (!text) return FG_CLOSE;
    int32_t n = fg_read(FG_BUF_PAYLOAD, 0, text, len);
    for (int32_t i = 0; i < n; i++) {
        if (text[i] >= 'a' && text[i] <= 'z') text[i] -= 'a' - 'A';
    }
    return fg_replace(text, n) < 0 ? FG_CLOSE : FG_CONTINUE;
}
