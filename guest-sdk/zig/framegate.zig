//! The framegate ABI v1 for Zig: include/framegate.h translated (`c`: constants, types,
//! signatures) and its imports bound to Wasm module "framegate". translate-c drops the header's
//! import_module/import_name attributes, so `c.fg_log` would be imported from "env", which
//! framegate refuses: call `log` here instead. build.zig wires this up as module "framegate".
pub const c = @import("framegate_h");

/// The import `name`, with the signature the header gives `fg_NAME`.
fn import(comptime name: []const u8) *const @TypeOf(@field(c, "fg_" ++ name)) {
    return @extern(*const @TypeOf(@field(c, "fg_" ++ name)), .{ .name = name, .library_name = "framegate" });
}

pub const buf_len = import("buf_len");
pub const read = import("read");
pub const next = import("next");
pub const replace = import("replace");
pub const meta_get = import("meta_get");
pub const meta_keys = import("meta_keys");
pub const sink_names = import("sink_names");
pub const meta_set = import("meta_set");
pub const send = import("send");
pub const emit = import("emit");
pub const subscribe = import("subscribe");
pub const ack = import("ack");
pub const nack = import("nack");
pub const unsubscribe = import("unsubscribe");
pub const hold = import("hold");
pub const set_timer = import("set_timer");
pub const cancel_timer = import("cancel_timer");
pub const now_ms = import("now_ms");
pub const close = import("close");
pub const reject = import("reject");
pub const log = import("log");
pub const metric = import("metric");
pub const store_get = import("store_get");
pub const store_set = import("store_set");
pub const store_keys = import("store_keys");
pub const store_first = import("store_first");
pub const store_add = import("store_add");
