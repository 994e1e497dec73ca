//! Hot swap under load: the echo filter is replaced every second during a throughput run;
//! no message may be lost, and the p99 is set beside the same run without swaps.

use std::time::Duration;

use serde::Serialize;

use crate::load::{self, Load};
use crate::parties::Party;

#[derive(Debug, Serialize)]
pub struct HotSwap {
    pub swaps: u32,
    pub sent: u64,
    pub lost: u64,
    pub messages_per_s_with_swaps: f64,
    pub messages_per_s_without: f64,
    pub p99_us_with_swaps: f64,
    pub p99_us_without: f64,
}

/// The module with a custom section that differs each time: a new version, the same code.
fn version(original: &[u8], n: u8) -> Vec<u8> {
    let name = b"fg-bench";
    let mut module = original.to_vec();
    module.extend_from_slice(&[0, (1 + name.len() + 1) as u8, name.len() as u8]);
    module.extend_from_slice(name);
    module.push(n);
    module
}

pub async fn run(framegate: &Party, measure: Duration) -> anyhow::Result<HotSwap> {
    let filters = framegate
        .dir()
        .expect("framegate runs in its own folder")
        .join("filters");
    let original = std::fs::read(filters.join("echo.wasm"))?;
    let load = Load {
        url: format!("{}echo", framegate.url),
        server_pid: Some(framegate.pid()),
        ..Load::new(16, 100, 32, Duration::from_millis(500), measure)
    };
    let quiet = load::run(&load).await?;

    let swapper = tokio::spawn(async move {
        let mut swaps = 0u32;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            swaps += 1;
            let aside = filters.join(".echo.wasm.tmp");
            if std::fs::write(&aside, version(&original, swaps as u8)).is_err()
                || std::fs::rename(&aside, filters.join("echo.wasm")).is_err()
            {
                return swaps - 1;
            }
            if swaps as f64 >= measure.as_secs_f64() {
                return swaps;
            }
        }
    });
    let swapping = load::run(&load).await?;
    let swaps = swapper.await?;
    let result = HotSwap {
        swaps,
        sent: swapping.sent,
        lost: swapping.lost + swapping.sent - swapping.received,
        messages_per_s_with_swaps: swapping.rate(),
        messages_per_s_without: quiet.rate(),
        p99_us_with_swaps: swapping.quantile_us(0.99),
        p99_us_without: quiet.quantile_us(0.99),
    };
    println!(
        "hot swap: {} swaps under load, {} sent, {} lost; {:.0} msg/s (without swaps {:.0}); p99 {:.0} us (without {:.0} us)",
        result.swaps,
        result.sent,
        result.lost,
        result.messages_per_s_with_swaps,
        result.messages_per_s_without,
        result.p99_us_with_swaps,
        result.p99_us_without
    );
    Ok(result)
}
