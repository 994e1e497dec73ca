//! The plain types every part shares: a message's opcode, connection metadata, records and their
//! outcomes, deliveries towards connections. This layer imports nothing else of framegate.

mod backlog;
mod delivery;
mod meta;
mod record;

pub use backlog::{Backlog, Held};
pub use delivery::{Delivered, MessageId, MessageMeta, Settle};
pub use meta::{Meta, MetaLimit, is_reserved};
pub use record::{DeliveryError, Outcome, Record, Reply, SinkResult};

/// WebSocket data opcodes, as the ABI numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    Text = 1,
    Binary = 2,
}

impl Opcode {
    /// The opcode an ABI call names; `None` for anything else.
    pub fn from_abi(value: i32) -> Option<Opcode> {
        match value {
            1 => Some(Opcode::Text),
            2 => Some(Opcode::Binary),
            _ => None,
        }
    }

    /// Text when the payload is UTF-8, else binary: for payloads that come without an opcode.
    pub fn of(payload: &[u8]) -> Opcode {
        if std::str::from_utf8(payload).is_ok() {
            Opcode::Text
        } else {
            Opcode::Binary
        }
    }
}
