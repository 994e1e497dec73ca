//! framegate: a WebSocket edge proxy whose message filters are hot-swappable WebAssembly.
//!
//! Layers, each importing only those below it (docs/architecture.md):
//! - `types`: messages, metadata, records, outcomes; `metrics` and `health` beside them;
//! - `config`: the TOML model, knowing connectors by kind name only;
//! - `bus`, `connectors` (sinks and sources, one folder per peer), `filter` (the Wasm host);
//! - `route` (routes built from the config), then `session` (one connection's life);
//! - `feed`, `server` and, on top, `proxy`; `logs` (the log's writer, masking secrets) beside it.

pub mod auth;
pub mod bus;
pub mod config;
pub mod connectors;
pub mod deflate;
pub mod feed;
pub mod filter;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod health;
pub mod logs;
pub mod metrics;
pub mod proxy;
pub mod record;
pub mod replay;
pub mod route;
pub mod scaffold;
pub mod server;
pub mod session;
pub mod tap;
pub mod types;
