//! The Wasm boundary: nanoseconds per filter call through framegate's own chain, in process, as
//! a session makes them (one lease of instances and one effects vector for every message).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use framegate::config::{FilterRef, FiltersConfig, OnError};
use framegate::filter::abi::ConnState;
use framegate::filter::{Chain, FilterHost, Lease};
use framegate::metrics::Metrics;
use framegate::types::Opcode;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct CallCost {
    pub filter: String,
    /// What the filter does with the message.
    pub case: String,
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
    // Each filter gets the messages it acts on (`tag` passes binary ones unread).
    for (module, what, options, opcode) in [
        ("echo", "echo (reads, sends back)", "{}", Opcode::Binary),
        ("tag", "tag (reads, replaces)", "{ prefix = \"\" }", Opcode::Text),
        // The call and its bookkeeping alone: `tag` returns at once.
        ("tag", "tag, binary (returns)", "{ prefix = \"\" }", Opcode::Binary),
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
        let (mut lease, mut effects) = (Lease::default(), Vec::new());
        for size in [100usize, 4096] {
            let payload = Bytes::from(vec![b'x'; size]);
            let mut call = || {
                let verdict = chain.message_into(
                    &mut lease,
                    &mut conn,
                    false,
                    opcode,
                    payload.clone(),
                    Vec::new(),
                    &mut effects,
                );
                std::hint::black_box(verdict);
                effects.clear(); // what a session does with them, once applied
            };
            for _ in 0..1_000 {
                call();
            }
            let started = Instant::now();
            for _ in 0..CALLS {
                call();
            }
            let ns = started.elapsed().as_nanos() as f64 / f64::from(CALLS);
            println!("wasm call: {what:<26} {size:>5} B: {ns:>7.0} ns per call");
            costs.push(CallCost {
                filter: module.into(),
                case: what.into(),
                size,
                ns_per_call: ns,
            });
        }
        chain.release(&mut lease);
    }
    Ok(costs)
}
