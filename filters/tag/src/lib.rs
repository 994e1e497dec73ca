//! The bundled `tag` filter: prefixes every text message, both ways, with `config.prefix`.
//! A small example of a configured filter.

use framegate_guest::{Conn, Filter, Message, Opcode, Verdict, export_filter};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    prefix: String,
}

#[derive(Default)]
struct Tag {
    prefix: Vec<u8>,
}

impl Filter for Tag {
    fn init(&mut self, config: &[u8]) -> Result<(), String> {
        let config: Config = serde_json::from_slice(config).map_err(|e| format!("tag: config: {e}"))?;
        self.prefix = config.prefix.into_bytes();
        Ok(())
    }

    fn on_message(&mut self, _conn: &Conn, message: &mut Message) -> Verdict {
        if message.opcode() != Opcode::Text {
            return Verdict::Continue;
        }
        let tagged = [self.prefix.as_slice(), message.payload()].concat();
        match message.replace(&tagged) {
            Ok(()) => Verdict::Continue,
            Err(_) => Verdict::Close,
        }
    }
}

export_filter!(Tag);
