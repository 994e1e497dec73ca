//! The `stamp` example filter in Rust (the same in C, Zig and AssemblyScript beside it).
//! A text message from the client becomes "[USER] TEXT", USER being the `user` query parameter
//! ("anonymous" without one); it goes on to the route's sinks, and is emitted to sink `audit`
//! with USER as key and itself as context. When the audit record's outcome comes back, the
//! client is told: "delivered: [USER] TEXT", or "failed: [USER] TEXT (DETAIL)".

use framegate_guest::{Conn, Filter, Level, Message, Record, SinkResult, Verdict, export_filter, log};

#[derive(Default)]
struct Stamp;

impl Filter for Stamp {
    fn on_message(&mut self, conn: &Conn, message: &mut Message) -> Verdict {
        if !message.from_client() {
            return Verdict::Continue;
        }
        let Some(text) = message.text() else {
            return Verdict::Continue; // binary: passes unchanged
        };
        let user = conn.meta_str("query.user").unwrap_or_else(|| "anonymous".into());
        let stamped = format!("[{user}] {text}");
        if message.replace(stamped.as_bytes()).is_err() {
            return Verdict::Close; // over the route's size limit
        }
        let record = Record {
            key: Some(user.as_bytes()),
            context: stamped.as_bytes(),
            ..Record::default()
        };
        if conn.emit_with("audit", stamped.as_bytes(), record).is_err() {
            log(Level::Warn, "stamp: no sink `audit` on this route");
        }
        Verdict::Continue
    }

    fn on_result(&mut self, conn: &Conn, result: SinkResult) {
        let stamped = String::from_utf8_lossy(&result.context);
        let answer = if result.ok {
            format!("delivered: {stamped}")
        } else {
            format!("failed: {stamped} ({})", String::from_utf8_lossy(&result.detail))
        };
        let _ = conn.send_text(&answer);
    }
}

export_filter!(Stamp);
