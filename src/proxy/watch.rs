//! Hot reload: watches the filter folder and the config file (and the YAML, JSON and TOML
//! files beside either, which filters' `config_file` may name) with notify, waits for writes to settle (editors write a
//! temp file and rename it), then reloads off the async workers. Follows the swap Kubernetes
//! makes when a mounted ConfigMap changes (`..data` pointed at a new folder).

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::Proxy;

/// Quiet time after the last event before acting on a change.
const SETTLE: Duration = Duration::from_millis(150);
/// How long a config file that keeps changing is waited for before it is read anyway (and then
/// most likely refused): a writer that never stops must not hold reloads up for ever.
const SETTLE_AT_MOST: Duration = Duration::from_secs(10);

/// Kubernetes mounts a ConfigMap as a folder whose files are symlinks through `..data`, itself
/// a symlink to a timestamped folder; an update writes a new folder and renames a new `..data`
/// over the old one. The files seen through the links change without an event of their own.
const CONFIGMAP_LINK: &str = "..data";

enum Change {
    Module(String),
    Config,
    /// The filter folder's `..data` was swapped: every module (and the config, which may read
    /// `config_file`s there) may have changed.
    FilterFolder,
}

/// Starts watching; the returned watcher must be kept alive.
pub fn start(proxy: Arc<Proxy>) -> anyhow::Result<notify::RecommendedWatcher> {
    let dir = proxy.host().dir().to_path_buf();
    std::fs::create_dir_all(&dir)?;
    let config_file = proxy.config_path.as_ref().map(std::path::absolute).transpose()?;
    let (events, mut changes) = mpsc::unbounded_channel();
    let dir = std::path::absolute(&dir)?;
    let watched_dir = dir.clone();
    let config_for_events = config_file.clone();
    let config_to_settle = config_file.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event.kind.is_access() {
            return;
        }
        for path in &event.paths {
            if let Some(change) = classify(path, &watched_dir, config_for_events.as_deref()) {
                let _ = events.send(change);
            }
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    if let Some(file) = &config_file {
        // The folder, not the file: an editor's rename replaces the file's inode.
        let parent = file.parent().unwrap_or(Path::new("."));
        watcher.watch(parent, RecursiveMode::NonRecursive)?;
    }
    tokio::spawn(async move {
        while let Some(first) = changes.recv().await {
            let mut modules = HashSet::new();
            let mut config = false;
            let mut note = |change| match change {
                Change::Module(name) => {
                    modules.insert(name);
                }
                Change::Config => config = true,
                Change::FilterFolder => {
                    modules.extend(proxy.host().status().into_iter().map(|module| module.name));
                    config = true;
                }
            };
            note(first);
            while let Ok(Some(next)) = tokio::time::timeout(SETTLE, changes.recv()).await {
                note(next);
            }
            if config && let Some(file) = &config_to_settle {
                settle(file).await;
            }
            let proxy = proxy.clone();
            // Compiling takes milliseconds to seconds: not on the workers serving connections.
            let _ = tokio::task::spawn_blocking(move || {
                for name in modules {
                    proxy.host().reload(&name);
                }
                if config {
                    proxy.reload_config();
                }
            })
            .await;
        }
    });
    Ok(watcher)
}

/// Waits until `file` reads the same twice, `SETTLE` apart: a writer that truncates the file
/// and then writes it in pieces (no rename) is not read halfway.
async fn settle(file: &Path) {
    let give_up = tokio::time::Instant::now() + SETTLE_AT_MOST;
    let mut last = tokio::fs::read(file).await.ok();
    while tokio::time::Instant::now() < give_up {
        tokio::time::sleep(SETTLE).await;
        let now = tokio::fs::read(file).await.ok();
        if now == last {
            return;
        }
        last = now;
    }
}

fn classify(path: &Path, dir: &Path, config: Option<&Path>) -> Option<Change> {
    // The config file, or a file beside it or among the filters that a filter's `config_file`
    // may name: reloading an unchanged config changes nothing.
    let config_like = path
        .extension()
        .is_some_and(|e| ["toml", "yaml", "yml", "json"].iter().any(|x| e == *x))
        && !path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'));
    let config_dir = config.and_then(Path::parent);
    if path.file_name().is_some_and(|n| n == CONFIGMAP_LINK) {
        return if path.parent() == Some(dir) {
            Some(Change::FilterFolder)
        } else {
            (path.parent() == config_dir).then_some(Change::Config)
        };
    }
    if config_like && (path.parent() == config_dir || path.parent() == Some(dir)) {
        return Some(Change::Config);
    }
    if path.parent() != Some(dir) {
        return None;
    }
    let ext = path.extension()?.to_str()?;
    let stem = path.file_stem()?.to_str()?;
    (matches!(ext, "wasm" | "wat") && crate::config::is_module_name(stem)).then(|| Change::Module(stem.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn only_module_files_and_the_config_count() {
        let dir = PathBuf::from("/f");
        let config = PathBuf::from("/c/framegate.toml");
        let name = |p: &str| match classify(Path::new(p), &dir, Some(&config)) {
            Some(Change::Module(n)) => n,
            Some(Change::Config) => "CONFIG".into(),
            Some(Change::FilterFolder) => "FOLDER".into(),
            None => "-".into(),
        };
        assert_eq!(name("/f/echo.wasm"), "echo");
        assert_eq!(name("/f/tag.wat"), "tag");
        assert_eq!(name("/f/.echo.wasm.tmp"), "-");
        assert_eq!(name("/f/sub/echo.wasm"), "-");
        assert_eq!(name("/c/framegate.toml"), "CONFIG");
        assert_eq!(name("/c/schema.yaml"), "CONFIG");
        assert_eq!(name("/c/.schema.yaml.swp"), "-");
        assert_eq!(name("/c/rows.jsonl"), "-");
        assert_eq!(name("/f/schema.yml"), "CONFIG");
        assert_eq!(name("/c/..data"), "CONFIG");
        assert_eq!(name("/f/..data"), "FOLDER");
        assert_eq!(name("/c/..data_tmp"), "-");
        assert_eq!(name("/c/..2026_12_03_06_00_00.1"), "-");
        assert_eq!(name("/elsewhere/..data"), "-");
    }
}
