// The `stamp` example filter in Zig (the same in Rust, C and AssemblyScript beside it).
// A text message from the client becomes "[USER] TEXT", USER being the `user` query parameter
// ("anonymous" without one); it goes on to the route's sinks, and is emitted to sink `audit`
// with USER as key and itself as context. When the audit record's outcome comes back, the
// client is told: "delivered: [USER] TEXT", or "failed: [USER] TEXT (DETAIL)".
const std = @import("std");
const fg = @import("framegate"); // framegate.zig: the header's constants, the imports bound

const heap = std.heap.wasm_allocator;

export fn fg_abi_v1() void {}

/// A whole buffer (FG_BUF_*), in memory the caller frees.
fn readBuffer(buf: i32) ![]u8 {
    const len = fg.buf_len(buf);
    const bytes = try heap.alloc(u8, @intCast(@max(len, 0)));
    _ = fg.read(buf, 0, bytes.ptr, @intCast(bytes.len));
    return bytes;
}

/// A metadata value, in memory the caller frees; null if the key is absent.
fn meta(key: []const u8) !?[]u8 {
    const len = fg.meta_get(key.ptr, @intCast(key.len), null, 0);
    if (len < 0) return null;
    const value = try heap.alloc(u8, @intCast(len));
    _ = fg.meta_get(key.ptr, @intCast(key.len), value.ptr, len);
    return value;
}

export fn fg_on_message(conn: i64, dir: i32, opcode: i32, len: i32) i32 {
    _ = .{ conn, len };
    if (dir != fg.c.FG_FROM_CLIENT or opcode != fg.c.FG_TEXT) return fg.c.FG_CONTINUE;
    return stamp() catch fg.c.FG_CLOSE; // out of memory: the route's memory_limit_mb
}

fn stamp() !i32 {
    const text = try readBuffer(fg.c.FG_BUF_PAYLOAD);
    defer heap.free(text);
    const found = try meta("query.user");
    defer if (found) |user| heap.free(user);
    const user: []const u8 = found orelse "anonymous";
    const stamped = try std.mem.concat(heap, u8, &.{ "[", user, "] ", text });
    defer heap.free(stamped);
    const n: i32 = @intCast(stamped.len);
    if (fg.replace(stamped.ptr, n) < 0) return fg.c.FG_CLOSE; // over the route's size limit
    const sink = "audit";
    if (fg.emit(sink, sink.len, user.ptr, @intCast(user.len), stamped.ptr, n, null, 0, stamped.ptr, n) < 0) {
        const why = "stamp: no sink `audit` on this route";
        _ = fg.log(fg.c.FG_LOG_WARN, why, why.len);
    }
    return fg.c.FG_CONTINUE;
}

export fn fg_on_result(conn: i64, ticket: i64, status: i32, len: i32) void {
    _ = .{ conn, ticket, len };
    answer(status == 0) catch {};
}

fn answer(delivered: bool) !void {
    const stamped = try readBuffer(fg.c.FG_BUF_CONTEXT);
    defer heap.free(stamped);
    const detail = try readBuffer(fg.c.FG_BUF_RESULT);
    defer heap.free(detail);
    const line = if (delivered)
        try std.mem.concat(heap, u8, &.{ "delivered: ", stamped })
    else
        try std.mem.concat(heap, u8, &.{ "failed: ", stamped, " (", detail, ")" });
    defer heap.free(line);
    _ = fg.send(fg.c.FG_TEXT, line.ptr, @intCast(line.len));
}
