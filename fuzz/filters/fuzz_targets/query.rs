//! The `query` filter (filters/query): NSDb subscriptions (their SQL, `filters`, `from`/`to`),
//! unsubscribes and inserts, and the records the inserts publish delivered back to the
//! subscriber, run natively (common/filter.rs has the input's steps; `i` is an insert message on
//! a connection of the insert route, whose records the stream connection then receives).
//! Nothing panics (a trap inside framegate: a 1011 instead of NSDb's answer).
#![no_main]

#[macro_use]
mod common;

use framegate_guest::native;
use libfuzzer_sys::fuzz_target;

const STREAM: &str = r#"{"mode": "stream", "topic": "nsdb", "min_refresh_period_ms": 10, "retention_size": 50}"#;
const INSERT: &str = r#"{"mode": "insert", "sink": "nsdb", "max_records": 50}"#;

fuzz_target!(|data: &[u8]| {
    let data = data.to_vec();
    common::filter::on_guest_stack(move || {
        let hooks = hooks!(query);
        common::filter::reset(&["nsdb"], &["bus"], &[("path", "/ws-stream")]);
        assert!(common::filter::init(&hooks, STREAM.as_bytes()));
        assert_eq!((hooks.open)(common::filter::CONN), 0);
        let mut insert_meta = Default::default();
        common::filter::converse(&hooks, &data, |kind, bytes| {
            if kind != b'i' || std::str::from_utf8(bytes).is_err() {
                return;
            }
            // The insert route's connection: its own metadata and config, the same store.
            let stream_meta = native::with(|host| std::mem::replace(&mut host.meta, std::mem::take(&mut insert_meta)));
            assert!(common::filter::init(&hooks, INSERT.as_bytes()));
            common::filter::message(&hooks, 0, 1, bytes);
            let published = native::with(|host| {
                insert_meta = std::mem::replace(&mut host.meta, stream_meta);
                std::mem::take(&mut host.emitted)
            });
            assert!(common::filter::init(&hooks, STREAM.as_bytes()));
            for record in published {
                common::filter::message(&hooks, 1, 1, &record.payload);
            }
        });
    });
});
