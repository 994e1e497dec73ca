//! Config loading (src/config/mod.rs): TOML text as `framegate run` and a reload read it,
//! parsed and validated (routes, sinks, sources, filters, limits, secrets' references), then
//! every connector's options parsed by its connector as a load does. Nothing panics: a bad
//! config is an error that names its key.

use crate::config::Config;

/// One input: panics on what must not happen.
pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = Config::parse(text, "fuzz.toml") {
        let _ = crate::connectors::Catalog::parse(&config);
    }
}
