//! The bundled `tag` filter: prefixes every text message, both ways, with `config.prefix`
//! (binary messages pass unchanged). A small example of a configured filter.

use framegate_guest::{Conn, Filter, Message, Opcode, Verdict, export_filter};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    prefix: String,
}

#[derive(Default)]
struct Tag {
    /// The prefix, then the last message: cut back to `prefix_len` for each new one, so the
    /// prefix is written once and the buffer is reused.
    tagged: Vec<u8>,
    prefix_len: usize,
}

impl Filter for Tag {
    fn init(&mut self, config: &[u8]) -> Result<(), String> {
        let config: Config = serde_json::from_slice(config).map_err(|e| format!("tag: config: {e}"))?;
        self.prefix_len = config.prefix.len();
        self.tagged = config.prefix.into_bytes();
        Ok(())
    }

    fn on_message(&mut self, _conn: &Conn, message: &mut Message) -> Verdict {
        if message.opcode() != Opcode::Text {
            return Verdict::Continue;
        }
        self.tagged.truncate(self.prefix_len);
        message.append_payload(&mut self.tagged);
        match message.replace(&self.tagged) {
            Ok(()) => Verdict::Continue,
            // Over the size limit once tagged: fail visibly rather than pass it untagged.
            Err(_) => Verdict::Close,
        }
    }
}

export_filter!(Tag);
