// A filter in Zig: lets text through, drops binary messages (and logs it).
const fg = @import("framegate"); // framegate.zig: the header's constants, the imports bound

export fn fg_abi_v1() void {}

export fn fg_on_message(conn: i64, dir: i32, opcode: i32, len: i32) i32 {
    _ = .{ conn, dir, len };
    if (opcode == fg.c.FG_TEXT) return fg.c.FG_CONTINUE;
    const why = "binary message dropped";
    _ = fg.log(fg.c.FG_LOG_DEBUG, why, why.len);
    return fg.c.FG_DROP;
}
