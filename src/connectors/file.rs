//! The `file` sink: every record as one JSON line appended to a file, with an fsync policy.
//! A record is confirmed once its line is written (and synced, under `fsync = "always"`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use super::sinks::{Deliver, SinkConnector, Start, json_line};
use crate::types::{DeliveryError, Outcome, Record};

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Fsync {
    /// Every batch is on disk before its records are confirmed.
    Always,
    /// At most every `fsync_interval_ms`.
    #[default]
    Interval,
    /// Left to the operating system.
    Never,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    pub path: PathBuf,
    #[serde(default)]
    pub fsync: Fsync,
    #[serde(default = "default_interval")]
    pub fsync_interval_ms: u64,
    /// Metadata keys written with each record, under `"meta"`: `source.received_at`, say.
    #[serde(default)]
    pub meta: Vec<String>,
}

fn default_interval() -> u64 {
    1_000
}

impl SinkConnector for Options {
    fn start(self: Arc<Self>, start: Start) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let file = File::new(&start.name, self);
            start.run(file).await
        })
    }
}

pub struct File {
    options: Arc<Options>,
    file: Option<tokio::fs::File>,
    last_sync: Instant,
}

impl File {
    pub fn new(name: &str, options: Arc<Options>) -> File {
        let shown = std::path::absolute(&options.path).unwrap_or_else(|_| options.path.clone());
        tracing::info!(sink = name, "file sink writes JSON lines to {}", shown.display());
        File {
            options,
            file: None,
            last_sync: Instant::now(),
        }
    }

    async fn write(&mut self, batch: &[Record]) -> std::io::Result<()> {
        if self.file.is_none() {
            if let Some(dir) = self.options.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                tokio::fs::create_dir_all(dir).await?;
            }
            let file = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.options.path)
                .await?;
            self.file = Some(file);
        }
        let file = self.file.as_mut().expect("opened above");
        let lines: Vec<u8> = batch.iter().flat_map(|r| json_line(r, &self.options.meta)).collect();
        file.write_all(&lines).await?;
        file.flush().await?;
        let due = match self.options.fsync {
            Fsync::Always => true,
            Fsync::Interval => self.last_sync.elapsed() >= Duration::from_millis(self.options.fsync_interval_ms),
            Fsync::Never => false,
        };
        if due {
            file.sync_data().await?;
            self.last_sync = Instant::now();
        }
        Ok(())
    }
}

impl Deliver for File {
    async fn deliver(&mut self, batch: &[Record]) -> Vec<Outcome> {
        let outcome = self.write(batch).await.map(|()| String::new()).map_err(|e| {
            // Reopen next time: the file may have been moved away or its disk replaced.
            self.file = None;
            DeliveryError::Failed(format!("cannot write {}: {e}", self.options.path.display()))
        });
        vec![outcome; batch.len()]
    }
}
