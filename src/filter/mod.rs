//! The filter host: one wasmtime engine (pooling allocator, epoch deadlines), the registry of
//! loaded modules with their current version, loading and checking modules, and hot swap.
//! It knows modules and their configs, never which route or connection a call is for.

pub mod abi;
mod breaker;
mod chain;
mod slot;
mod store;
pub mod transcript;

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use serde::Serialize;
use wasmtime::{Engine, ExternType, InstancePre, Linker, Module, ValType};

use crate::config::FiltersConfig;
use crate::metrics::Metrics;
use abi::CallState;

pub use breaker::BreakerState;
use breaker::{Breaker, BreakerSettings};
pub use chain::{Chain, ChainEffect, Done, Lease, Verdict};
pub use slot::{FilterFailure, HookCall};

/// How often the epoch advances: the unit of every call deadline.
const EPOCH_TICK: Duration = Duration::from_millis(1);

/// What `fg_init` runs with for a filter of a route: the filter's config and the route's sinks
/// (what `emit` takes and the `sink_names` import lists), so that a filter can refuse, at load,
/// a config naming a sink the route does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitWith {
    pub config: String,
    pub sinks: Arc<[String]>,
}

/// What a new version of a module must pass before it is swapped in, beside the load checks:
/// its replay fixtures (src/replay/, set by the proxy). Given the module's name; `Err` says why not.
pub type SwapGate = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Why a module could not be loaded or swapped in.
#[derive(Debug, thiserror::Error)]
#[error("filter module {file}: {reason}")]
pub struct LoadError {
    pub file: String,
    pub reason: String,
}

/// One compiled version of a module, ready to instantiate.
pub struct ModuleVersion {
    pub id: u64,
    pub hash: String,
    pub loaded_at: SystemTime,
    /// The optional hooks the module exports; a hook it lacks is not worth an instance.
    pub exports: Exports,
    pre: InstancePre<CallState>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Exports {
    pub init: bool,
    pub open: bool,
    pub result: bool,
    pub timer: bool,
    pub close: bool,
    /// `fg_on_messages`: every message a read brought, in one call.
    pub batch: bool,
}

/// What `/filters` shows of a module.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ModuleStatus {
    pub name: String,
    pub file: String,
    pub version_hash: Option<String>,
    pub loaded_at_ms: Option<u64>,
    pub reloads: u64,
    pub last_reload_error: Option<String>,
    /// Its circuit breaker: closed, open (its routes answer per `on_error` without calling it)
    /// or half open (the next call decides), and how many times it opened.
    pub breaker: Option<BreakerState>,
    pub breaker_trips: u64,
    /// A file in the filter folder that no route refers to: never loaded, so never checked.
    pub unused: bool,
}

pub struct FilterHost {
    engine: Engine,
    linker: Linker<CallState>,
    dir: PathBuf,
    pool_size: usize,
    metrics: Arc<Metrics>,
    modules: RwLock<HashMap<String, Arc<ArcSwap<ModuleVersion>>>>,
    status: Mutex<BTreeMap<String, ModuleStatus>>,
    /// The filter configs (JSON) each module runs with in the current routes; a new version
    /// must accept all of them before it is swapped in.
    configs: Mutex<HashMap<String, Vec<InitWith>>>,
    next_version: AtomicU64,
    /// Each module's shared store, by module name: it outlives versions (hot swap keeps it).
    stores: Mutex<HashMap<String, Arc<store::Store>>>,
    breaker_settings: BreakerSettings,
    /// Each module's circuit breaker, by module name: shared by its routes, kept across versions
    /// (a fixed version swapped in is tried at the end of the open period like any other).
    breakers: Mutex<HashMap<String, Arc<Breaker>>>,
    /// Checks a new version passes before a swap (its fixtures); none by default.
    swap_gate: RwLock<Option<SwapGate>>,
}

impl FilterHost {
    pub fn new(config: &FiltersConfig, metrics: Arc<Metrics>) -> anyhow::Result<Arc<FilterHost>> {
        // The clock every call is timed with (src/filter/slot.rs) calibrates itself at its first
        // reading, for up to 200 ms: here, not on a client's first message.
        quanta::Instant::now();
        let mut pooling = wasmtime::PoolingAllocationConfig::default();
        pooling
            .total_core_instances(config.max_instances)
            .total_memories(config.max_instances)
            .total_tables(config.max_instances)
            .max_memory_size((config.max_memory_mb as usize) << 20);
        let mut wasm = wasmtime::Config::new();
        wasm.epoch_interruption(true)
            .allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pooling));
        if std::env::var_os("FRAMEGATE_PERF_MAP").is_some() {
            // /tmp/perf-PID.map names the filters' compiled functions in `perf report`.
            wasm.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&wasm).map_err(|e| anyhow::anyhow!("cannot start the Wasm engine: {e:#}"))?;
        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("framegate-epoch".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })?;
        let mut linker = Linker::new(&engine);
        abi::define(&mut linker).map_err(|e| anyhow::anyhow!("cannot define the filter ABI: {e:#}"))?;
        Ok(Arc::new(FilterHost {
            engine,
            linker,
            dir: config.dir.clone(),
            pool_size: config.pool_size,
            metrics,
            modules: RwLock::default(),
            status: Mutex::default(),
            configs: Mutex::default(),
            next_version: AtomicU64::new(1),
            stores: Mutex::default(),
            breaker_settings: BreakerSettings {
                failures: config.breaker_failures,
                window: Duration::from_millis(config.breaker_window_ms),
                open_for: Duration::from_millis(config.breaker_open_ms),
            },
            breakers: Mutex::default(),
            swap_gate: RwLock::default(),
        }))
    }

    /// The shared store of module `name`, made on first use.
    fn store(&self, name: &str) -> Arc<store::Store> {
        self.stores.lock().unwrap().entry(name.to_string()).or_default().clone()
    }

    /// The circuit breaker of module `name`, made on first use.
    fn breaker(&self, name: &str) -> Arc<Breaker> {
        let mut breakers = self.breakers.lock().unwrap();
        let breaker = breakers.entry(name.to_string());
        breaker
            .or_insert_with(|| Arc::new(Breaker::new(self.breaker_settings)))
            .clone()
    }

    /// Sets what every new version must pass before it is swapped in.
    pub fn set_swap_gate(&self, gate: SwapGate) {
        *self.swap_gate.write().unwrap() = Some(gate);
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file a module is loaded from: `NAME.wasm`, else `NAME.wat`.
    fn module_file(&self, name: &str) -> PathBuf {
        let wasm = self.dir.join(format!("{name}.wasm"));
        let wat = self.dir.join(format!("{name}.wat"));
        if !wasm.exists() && wat.exists() { wat } else { wasm }
    }

    /// Records the configs each module serves in the routes about to go live; modules no
    /// route uses any more stay loaded (a later config may use them again) but are not checked.
    pub fn set_configs(&self, configs: HashMap<String, Vec<InitWith>>) {
        *self.configs.lock().unwrap() = configs;
    }

    /// The current version of a module, loading it first if needed, and checked with `config`.
    pub fn module(&self, name: &str, init: &InitWith) -> Result<Arc<ArcSwap<ModuleVersion>>, LoadError> {
        if let Some(current) = self.modules.read().unwrap().get(name) {
            self.check_init(name, &current.load(), init)?;
            return Ok(current.clone());
        }
        let version = self.compile(name, std::slice::from_ref(init))?;
        let mut modules = self.modules.write().unwrap();
        let slot = modules
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(ArcSwap::from_pointee(version)));
        self.record_loaded(name, &slot.load(), false);
        Ok(slot.clone())
    }

    /// Compiles the module's file again and swaps it in if it passes every check; otherwise
    /// the old version keeps serving. Called by the watcher.
    pub fn reload(&self, name: &str) {
        let Some(current) = self.modules.read().unwrap().get(name).cloned() else {
            return; // not used by any route: loaded when a config asks for it
        };
        let configs = self.configs.lock().unwrap().get(name).cloned().unwrap_or_default();
        let configs = if configs.is_empty() {
            vec![InitWith {
                config: "{}".to_string(),
                sinks: Arc::default(),
            }]
        } else {
            configs
        };
        let filter_metrics = self.metrics.filter(name);
        let gate = self.swap_gate.read().unwrap().clone();
        let checked = self.compile(name, &configs).and_then(|version| {
            if version.hash == current.load().hash {
                return Ok(version);
            }
            match gate.map(|gate| gate(name)) {
                Some(Err(reason)) => Err(LoadError {
                    file: self.module_file(name).display().to_string(),
                    reason,
                }),
                _ => Ok(version),
            }
        });
        match checked {
            Ok(version) if version.hash == current.load().hash => {
                tracing::debug!(module = name, "file touched, same contents: nothing to swap");
                // The serving version is back in the file: a refusal of another file is history.
                if let Some(entry) = self.status.lock().unwrap().get_mut(name) {
                    entry.last_reload_error = None;
                }
            }
            Ok(version) => {
                current.store(Arc::new(version));
                filter_metrics.reloads.inc();
                self.record_loaded(name, &current.load(), true);
                tracing::info!(module = name, hash = %current.load().hash, "filter swapped in");
            }
            Err(e) => {
                filter_metrics.reload_failures.inc();
                tracing::error!(module = name, "reload refused, the old version keeps serving: {e}");
                let mut status = self.status.lock().unwrap();
                status.entry(name.to_string()).or_default().last_reload_error = Some(e.to_string());
            }
        }
    }

    fn record_loaded(&self, name: &str, version: &ModuleVersion, reload: bool) {
        let mut status = self.status.lock().unwrap();
        let entry = status.entry(name.to_string()).or_default();
        entry.name = name.to_string();
        entry.file = self.module_file(name).display().to_string();
        entry.version_hash = Some(version.hash.clone());
        entry.loaded_at_ms = version
            .loaded_at
            .duration_since(UNIX_EPOCH)
            .ok()
            .map(|d| d.as_millis() as u64);
        entry.last_reload_error = None;
        entry.reloads += u64::from(reload);
    }

    /// Every loaded module, for the admin listener.
    pub fn status(&self) -> Vec<ModuleStatus> {
        let breakers = self.breakers.lock().unwrap();
        let now = std::time::Instant::now();
        let mut status: Vec<ModuleStatus> = self.status.lock().unwrap().values().cloned().collect();
        for module in &mut status {
            if let Some(breaker) = breakers.get(&module.name) {
                module.breaker = Some(breaker.state(now));
                module.breaker_trips = breaker.trips();
            }
        }
        let loaded: Vec<String> = status.iter().map(|module| module.name.clone()).collect();
        status.extend(self.unused_files(&loaded));
        status.sort_by(|a, b| a.name.cmp(&b.name));
        status
    }

    /// The module files of the filter folder (`NAME.wasm`, `NAME.wat`; dotfiles are files being
    /// written) whose module is not among `loaded`: no route refers to them.
    fn unused_files(&self, loaded: &[String]) -> Vec<ModuleStatus> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut unused: Vec<ModuleStatus> = Vec::new();
        for path in entries.filter_map(Result::ok).map(|entry| entry.path()) {
            let module_file = matches!(path.extension().and_then(|e| e.to_str()), Some("wasm" | "wat"));
            let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            if !module_file || name.starts_with('.') || loaded.iter().any(|l| l == name) {
                continue;
            }
            if unused.iter().all(|u| u.name != name) {
                unused.push(ModuleStatus {
                    name: name.to_string(),
                    file: self.module_file(name).display().to_string(),
                    unused: true,
                    ..ModuleStatus::default()
                });
            }
        }
        unused
    }

    /// Reads, compiles and checks a module file against every config it must accept.
    fn compile(&self, name: &str, configs: &[InitWith]) -> Result<ModuleVersion, LoadError> {
        let path = self.module_file(name);
        let fail = |reason: String| LoadError {
            file: path.display().to_string(),
            reason,
        };
        let bytes = std::fs::read(&path).map_err(|e| fail(format!("cannot read: {e}")))?;
        // A `.wasm` file is binary only: without this, wasmtime would try it as text and
        // answer with the text parser's complaint ("input bytes aren't valid utf-8").
        if path.extension().is_some_and(|e| e == "wasm") && !bytes.starts_with(b"\0asm") {
            return Err(fail(
                "not a Wasm module (bad magic: a .wasm file starts with the bytes \\0asm)".into(),
            ));
        }
        if bytes.starts_with(b"\0asm") && bytes.get(4..8) != Some(&[1, 0, 0, 0]) {
            return Err(fail(
                "a WebAssembly component; framegate loads core modules speaking ABI v1 (docs/abi.md)".into(),
            ));
        }
        let module = Module::new(&self.engine, &bytes).map_err(|e| fail(format!("does not compile: {e:#}")))?;
        check_exports(&module).map_err(fail)?;
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|e| fail(format!("cannot link: {e:#}")))?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        bytes.hash(&mut hasher);
        let version = ModuleVersion {
            id: self.next_version.fetch_add(1, Ordering::Relaxed),
            hash: format!("{:016x}", hasher.finish()),
            loaded_at: SystemTime::now(),
            exports: Exports {
                init: module.get_export("fg_init").is_some(),
                open: module.get_export("fg_on_open").is_some(),
                result: module.get_export("fg_on_result").is_some(),
                timer: module.get_export("fg_on_timer").is_some(),
                close: module.get_export("fg_on_close").is_some(),
                batch: module.get_export("fg_on_messages").is_some(),
            },
            pre,
        };
        for config in configs {
            self.check_init(name, &version, config)?;
        }
        Ok(version)
    }

    /// Runs `fg_init` with `init` in a scratch instance.
    fn check_init(&self, name: &str, version: &ModuleVersion, init: &InitWith) -> Result<(), LoadError> {
        let limits = slot::Limits::default();
        let config = init.config.as_bytes().to_vec().into();
        slot::instantiate(self, version, config, init.sinks.clone(), &limits, name.into())
            .map(drop)
            .map_err(|reason| LoadError {
                file: self.module_file(name).display().to_string(),
                reason: format!("fg_init with config {}: {reason}", init.config),
            })
    }
}

/// The exports ABI v1 requires, with their types.
fn check_exports(module: &Module) -> Result<(), String> {
    use ValType::{I32, I64};
    if module.get_export("proxy_abi_version_0_2_1").is_some() {
        return Err("a Proxy-Wasm module; framegate loads modules speaking its own ABI v1 (docs/abi.md)".into());
    }
    let expected: [(&str, &[ValType], &[ValType], bool); 8] = [
        ("fg_abi_v1", &[], &[], true),
        ("fg_on_message", &[I64, I32, I32, I32], &[I32], true),
        ("fg_init", &[I32], &[I32], false),
        ("fg_on_open", &[I64], &[I32], false),
        ("fg_on_result", &[I64, I64, I32, I32], &[], false),
        ("fg_on_timer", &[I64, I64], &[], false),
        ("fg_on_close", &[I64, I32], &[], false),
        ("fg_on_messages", &[I64, I32], &[I32], false),
    ];
    match module.get_export("memory") {
        Some(ExternType::Memory(_)) => {}
        _ => return Err("missing export `memory`".into()),
    }
    for (name, params, results, required) in expected {
        match module.get_export(name) {
            None if required => {
                return Err(format!("missing export `{name}` (ABI v1, docs/abi.md)"));
            }
            None => {}
            Some(ExternType::Func(f)) => {
                let same = |a: &mut dyn ExactSizeIterator<Item = ValType>, b: &[ValType]| {
                    a.len() == b.len() && a.zip(b).all(|(x, y)| ValType::eq(&x, y))
                };
                if !same(&mut f.params(), params) || !same(&mut f.results(), results) {
                    return Err(format!(
                        "export `{name}` has type {f}, expected params {params:?} results {results:?}"
                    ));
                }
            }
            Some(_) => return Err(format!("export `{name}` is not a function")),
        }
    }
    Ok(())
}
