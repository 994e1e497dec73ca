//! The `hydra` filter (filters/hydra): commands (`-c SET ...`), `-i ID` prefixes, record-key
//! paths and payloads, explicit acks with their results and deadlines, run natively
//! (common/filter.rs has the input's steps). Every text message is answered or waits for its
//! sinks; nothing panics (a trap inside framegate).
#![no_main]

#[macro_use]
mod common;

use libfuzzer_sys::fuzz_target;

const CONFIG: &str = r#"{"ingestors": {"file": {"sink": "file"}, "kafka": {"sink": "kafka", "requires": ["hydra-kafka-topic"]}}, "max_payload_bytes": 4096}"#;

fuzz_target!(|data: &[u8]| {
    let data = data.to_vec();
    common::filter::on_guest_stack(move || {
        let hooks = hooks!(hydra);
        common::filter::reset(&["file", "kafka"], &[], &[("path", "/ws-ingest")]);
        assert!(common::filter::init(&hooks, CONFIG.as_bytes()));
        common::filter::converse(&hooks, &data, |_, _| {});
    });
});
