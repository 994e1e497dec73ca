//! The `pulsar-ws` filter (filters/pulsar): Pulsar's WebSocket API, its paths and query
//! parameters at the upgrade, producer and consumer JSON frames, acks, permits and deliveries
//! (common/filter.rs has the steps; the input's first step is the request path, `m` steps set
//! `query.*` parameters, `o` opens). Nothing panics (a trap inside framegate).
#![no_main]

#[macro_use]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (path, steps) = data.split_at(data.iter().position(|b| *b == 0).unwrap_or(data.len()));
    let Ok(path) = std::str::from_utf8(path) else {
        return;
    };
    let (path, steps) = (path.to_string(), steps.to_vec());
    common::filter::on_guest_stack(move || {
        let hooks = hooks!(pulsar_ws);
        common::filter::reset(&["pulsar"], &["pulsar"], &[("path", &path)]);
        assert!(common::filter::init(&hooks, b"{}"));
        common::filter::converse(&hooks, &steps, |_, _| {});
    });
});
