//! The Wasm boundary: nanoseconds per filter call through framegate's own chain, in process.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use framegate::config::{FilterRef, FiltersConfig, OnError};
use framegate::filter::abi::ConnState;
use framegate::filter::{Chain, FilterHost};
use framegate::metrics::Metrics;
use framegate::types::Opcode;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct CallCost {
    pub filter: String,
    pub size: usize,
    pub ns_per_call: f64,
}

const CALLS: u32 = 200_000;

pub fn measure() -> anyhow::Result<Vec<CallCost>> {
    let config = FiltersConfig {
        dir: crate::parties::repo().join("target/filters"),
        ..FiltersConfig::default()
    };
    let host = FilterHost::new(&config, Arc::new(Metrics::default()))?;
    let mut costs = Vec::new();
    for (module, what, options) in [
        ("echo", "echo (reads, sends back)", "{}"),
        ("tag", "tag (reads, replaces)", "{ prefix = \"\" }"),
    ] {
        let filter = FilterRef {
            module: module.into(),
            config: toml::from_str(&format!("options = {options}"))
                .map(|t: toml::Table| t["options"].as_table().cloned().unwrap_or_default())?,
            config_file: None,
            on_error: OnError::FailClosed,
            timeout_ms: 1_000,
            memory_limit_mb: 64,
        };
        let chain = Chain::build(&host, &[filter], &Arc::default())?;
        let mut conn = ConnState {
            id: 1,
            max_message_size: 1 << 20,
            ..ConnState::default()
        };
        for size in [100usize, 4096] {
            let payload = Bytes::from(vec![b'x'; size]);
            for _ in 0..1_000 {
                chain.message(&mut conn, false, Opcode::Binary, payload.clone(), Vec::new());
            }
            let started = Instant::now();
            for _ in 0..CALLS {
                std::hint::black_box(chain.message(&mut conn, false, Opcode::Binary, payload.clone(), Vec::new()));
            }
            let ns = started.elapsed().as_nanos() as f64 / f64::from(CALLS);
            println!("wasm call: {what:<26} {size:>5} B: {ns:>7.0} ns per call");
            costs.push(CallCost {
                filter: module.into(),
                size,
                ns_per_call: ns,
            });
        }
    }
    Ok(costs)
}
