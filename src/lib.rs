//! framegate: a WebSocket edge proxy whose message filters are hot-swappable WebAssembly.
//!
//! Data flows one way: listener (`server`) -> `session` -> filter chain (`filter`) -> `sink`;
//! and back: `source` / `bus` / upstream -> filter chain -> session writer.

pub mod bus;
pub mod config;
pub mod feed;
pub mod filter;
pub mod health;
pub mod metrics;
pub mod proxy;
pub mod pulsar_id;
pub mod server;
pub mod session;
pub mod sink;
pub mod source;
