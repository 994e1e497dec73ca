// The `stamp` example filter in AssemblyScript (the same in Rust, C and Zig beside it).
// A text message from the client becomes "[USER] TEXT", USER being the `user` query parameter
// ("anonymous" without one); it goes on to the route's sinks, and is emitted to sink `audit`
// with USER as key and itself as context. When the audit record's outcome comes back, the
// client is told: "delivered: [USER] TEXT", or "failed: [USER] TEXT (DETAIL)".
import * as fg from "../../assemblyscript/assembly/index";

export function fg_abi_v1(): void {}

export function fg_on_message(conn: i64, dir: i32, opcode: i32, len: i32): i32 {
  if (dir != fg.FROM_CLIENT || opcode != fg.TEXT) return fg.CONTINUE;
  const user = fg.meta("query.user", "anonymous");
  const stamped = fg.utf8("[" + user + "] " + fg.text(fg.payload()));
  if (fg.replaceWith(stamped) < 0) return fg.CLOSE; // over the route's size limit
  if (fg.emitTo("audit", fg.utf8(user), stamped, stamped) < 0) {
    fg.logText(fg.LOG_WARN, "stamp: no sink `audit` on this route");
  }
  return fg.CONTINUE;
}

export function fg_on_result(conn: i64, ticket: i64, status: i32, len: i32): void {
  const stamped = fg.text(fg.readBuffer(fg.BUF_CONTEXT)!);
  const answer = status == 0 ? "delivered: " + stamped : "failed: " + stamped + " (" + fg.text(fg.readBuffer(fg.BUF_RESULT)!) + ")";
  fg.sendTo(fg.TEXT, fg.utf8(answer));
}
