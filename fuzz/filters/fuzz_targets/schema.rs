//! The `schema` filter (filters/schema): a DataBrew (Blink) YAML file read as framegate reads a
//! route's `config_file` (YAML to JSON), the filter's config reader over it, then messages
//! checked against the schema (common/filter.rs has their steps). The input's first step (up to
//! the first 0 byte) is the YAML. Nothing panics (a trap inside framegate).
#![no_main]

#[macro_use]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (yaml, steps) = data.split_at(data.iter().position(|b| *b == 0).unwrap_or(data.len()));
    let Ok(yaml) = std::str::from_utf8(yaml) else {
        return;
    };
    let Ok(config) = serde_norway::from_str::<serde_json::Value>(yaml) else {
        return;
    };
    let (config, steps) = (config.to_string(), steps.to_vec());
    common::filter::on_guest_stack(move || {
        let hooks = hooks!(schema);
        common::filter::reset(&["dead"], &[], &[]);
        if common::filter::init(&hooks, config.as_bytes()) {
            common::filter::converse(&hooks, &steps, |_, _| {});
        }
    });
});
