//! The Wasm boundary: nanoseconds per message through framegate's own chain, in process, as a
//! session makes the calls (one lease of instances and one effects vector for every message):
//! a call per message, and the messages a read brought in one call (`fg_on_messages`).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use framegate::config::{FilterRef, FiltersConfig, OnError};
use framegate::filter::abi::{Batch, ConnState, Incoming};
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
    /// Messages a call handles: 1, or a batch of as many.
    pub batch: usize,
    /// Nanoseconds per message.
    pub ns_per_call: f64,
}

const CALLS: u32 = 200_000;
/// Messages a batch call handles: what 100 B messages a busy connection's read brings, at least.
const BATCH: usize = 16;

pub fn measure() -> anyhow::Result<Vec<CallCost>> {
    let config = FiltersConfig {
        dir: crate::parties::repo().join("target/filters"),
        ..FiltersConfig::default()
    };
    let host = FilterHost::new(&config, Arc::new(Metrics::default()))?;
    let mut costs = Vec::new();
    // Each filter gets the messages it acts on (`tag` passes binary ones unread).
    for (module, what, options, opcode) in [
        ("echo", "echo (reads, sends back)", "{}", Opcode::Text),
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
        let (mut lease, mut effects, mut done) = (Lease::default(), Vec::new(), Vec::new());
        let mut batch = Batch::default();
        for (size, in_batch) in [(100usize, 1), (100, BATCH), (4096, 1), (4096, BATCH)] {
            let payload = Bytes::from(vec![b'x'; size]);
            let mut call = || {
                if in_batch == 1 {
                    let verdict = chain.message_into(
                        &mut lease,
                        &mut conn,
                        false,
                        opcode,
                        payload.clone(),
                        None,
                        &mut effects,
                    );
                    std::hint::black_box(verdict);
                } else {
                    batch.messages.extend((0..in_batch).map(|_| Incoming {
                        opcode,
                        payload: payload.clone(),
                        meta: None,
                    }));
                    let ran = chain.messages_into(&mut lease, &mut conn, false, &mut batch, &mut done, &mut effects);
                    assert_eq!(ran, in_batch, "one call runs them all");
                    std::hint::black_box(done.drain(..).count());
                    batch.clear();
                }
                effects.clear(); // what a session does with them, once applied
            };
            let rounds = CALLS / in_batch as u32;
            for _ in 0..1_000 {
                call();
            }
            let started = Instant::now();
            for _ in 0..rounds {
                call();
            }
            let ns = started.elapsed().as_nanos() as f64 / f64::from(rounds * in_batch as u32);
            println!("wasm call: {what:<26} {size:>5} B, {in_batch:>2} a call: {ns:>7.0} ns per message");
            costs.push(CallCost {
                filter: module.into(),
                case: what.into(),
                size,
                batch: in_batch,
                ns_per_call: ns,
            });
        }
        chain.release(&mut lease);
    }
    Ok(costs)
}
