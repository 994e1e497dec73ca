//! The `stdout` sink: every record as one JSON line on standard output.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use super::sinks::{Deliver, SinkConnector, Start, json_line};
use crate::types::{DeliveryError, Outcome, Record};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// Metadata keys written with each record.
    #[serde(default)]
    pub meta: Vec<String>,
}

impl SinkConnector for Options {
    fn start(self: Arc<Self>, start: Start) -> BoxFuture<'static, ()> {
        Box::pin(start.run(Stdout { options: self }))
    }
}

pub struct Stdout {
    options: Arc<Options>,
}

impl Deliver for Stdout {
    async fn deliver(&mut self, batch: &[Record]) -> Vec<Outcome> {
        let lines: Vec<u8> = batch.iter().flat_map(|r| json_line(r, &self.options.meta)).collect();
        let mut out = tokio::io::stdout();
        let written = async {
            out.write_all(&lines).await?;
            out.flush().await
        };
        let outcome = written
            .await
            .map(|()| String::new())
            .map_err(|e| DeliveryError::Failed(format!("cannot write to stdout: {e}")));
        vec![outcome; batch.len()]
    }
}
