//! Config loading (src/config/mod.rs): TOML text as `framegate run` and a reload read it,
//! parsed and validated (routes, sinks, sources, filters, limits, secrets' references), then
//! every connector's options parsed by its connector as a load does. Nothing panics: a bad
//! config is an error that names its key.
#![no_main]

use framegate::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = Config::parse(text, "fuzz.toml") {
        let _ = framegate::connectors::Catalog::parse(&config);
    }
});
