// A filter in Zig: lets text through, drops binary. The ABI comes from guest-sdk/include.
const fg = @import("framegate");

export fn fg_abi_v1() void {}

export fn fg_on_message(conn: i64, dir: i32, opcode: i32, len: i32) i32 {
    _ = conn;
    _ = dir;
    _ = len;
    return if (opcode == fg.FG_TEXT) fg.FG_CONTINUE else fg.FG_DROP;
}
