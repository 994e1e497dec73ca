//! The bundled `echo` filter: every message from the client goes straight back to it, with
//! the same opcode, and goes no further; messages towards the client pass unchanged.

use framegate_guest::{Conn, Filter, Message, Verdict, export_filter};

#[derive(Default)]
struct Echo {
    /// Reused for every message: one copy from the host, no allocation once it has grown.
    buffer: Vec<u8>,
}

impl Filter for Echo {
    fn on_message(&mut self, conn: &Conn, message: &mut Message) -> Verdict {
        if !message.from_client() {
            return Verdict::Continue;
        }
        self.buffer.clear();
        message.append_payload(&mut self.buffer);
        match conn.send(message.opcode(), &self.buffer) {
            Ok(()) => Verdict::Drop,
            Err(_) => Verdict::Close,
        }
    }
}

export_filter!(Echo);
