//! The `stdout` sink: every record as one JSON line on standard output.

use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use super::{Deliver, Outcome, Record, json_line};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// Metadata keys written with each record.
    #[serde(default)]
    pub meta: Vec<String>,
}

pub struct Stdout {
    pub options: Options,
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
            .map_err(|e| format!("cannot write to stdout: {e}"));
        vec![outcome; batch.len()]
    }
}
