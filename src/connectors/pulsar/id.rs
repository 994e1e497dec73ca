//! Pulsar message ids as text, the way Pulsar's WebSocket proxy writes them: the base64
//! (standard alphabet, padded) of the protobuf `MessageIdData` with `ledgerId`, `entryId`, and
//! `partition`, `batch_index`, `batch_size` only when they mean something (>= 0, >= 0, > 0), as
//! the Java client's `MessageId.toByteArray()` does. The `pulsar` sink's result ids, the
//! `pulsar` source's `msg.id`, and ids a client hands back (a reader's start) all go through
//! here, so that a WebSocket client can use the ids of framegate and of Pulsar alike.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use prost::Message;
use pulsar::proto::MessageIdData;

/// The text form of a message id.
pub fn encode(id: &MessageIdData) -> String {
    let canonical = MessageIdData {
        ledger_id: id.ledger_id,
        entry_id: id.entry_id,
        partition: id.partition.filter(|&p| p >= 0),
        batch_index: id.batch_index.filter(|&i| i >= 0),
        batch_size: id.batch_size.filter(|&s| s > 0),
        ack_set: Vec::new(),
        first_chunk_message_id: None,
    };
    STANDARD.encode(canonical.encode_to_vec())
}

/// A message id from its text form.
pub fn decode(text: &str) -> Result<MessageIdData, String> {
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|e| format!("message id {text:?} is not base64: {e}"))?;
    MessageIdData::decode(bytes.as_slice())
        .map_err(|e| format!("message id {text:?} is not a Pulsar MessageIdData: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ledger_id: u64, entry_id: u64, partition: Option<i32>, batch_index: Option<i32>) -> MessageIdData {
        MessageIdData {
            ledger_id,
            entry_id,
            partition,
            batch_index,
            ..Default::default()
        }
    }

    #[test]
    fn matches_the_java_and_cpp_clients() {
        // Pulsar's Python (C++) client serializes (ledger 0, entry 3, no partition) as CAAQAw==.
        assert_eq!(encode(&id(0, 3, Some(-1), Some(-1))), "CAAQAw==");
        assert_eq!(encode(&id(0, 3, None, None)), "CAAQAw==");
    }

    #[test]
    fn round_trips() {
        let full = id(123_456, 789, Some(2), Some(5));
        let back = decode(&encode(&full)).unwrap();
        assert_eq!(
            (back.ledger_id, back.entry_id, back.partition, back.batch_index),
            (123_456, 789, Some(2), Some(5))
        );
        assert!(decode("not base64!").unwrap_err().contains("not base64"));
        assert!(decode("AAAA").unwrap_err().contains("not a Pulsar MessageIdData"));
    }
}
