//! One filter of one route: its module (whatever version is current), its config, its limits,
//! and a small pool of warm instances. Any instance serves any connection: the connection's
//! state is lent to the store for the length of one hook call.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use wasmtime::{Instance, Store, StoreLimitsBuilder, Trap, TypedFunc, UpdateDeadline, WasmParams, WasmResults};

use super::abi::{Batch, CallState, ConnState, Effect, Hook, Note};
use super::breaker::{Breaker, Transition};
use super::{Exports, FilterHost, InitWith, ModuleVersion};
use crate::config::{FilterRef, OnError};
use crate::metrics::FilterMetrics;
use crate::types::{Opcode, Outcome};

/// The limits of every call into one filter.
#[derive(Debug, Clone)]
pub struct Limits {
    pub timeout_ms: u64,
    pub memory_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout_ms: 1_000,
            memory_bytes: 64 << 20,
        }
    }
}

/// Why a call was cut off.
#[derive(Debug, thiserror::Error)]
#[error("filter {filter}: {kind}: {message}")]
pub struct FilterFailure {
    pub filter: Arc<str>,
    pub kind: &'static str,
    pub message: String,
}

/// The hook to call and what it gets.
pub enum HookCall {
    Open,
    Message {
        dir: i32,
        opcode: Opcode,
        payload: Bytes,
    },
    Result {
        ticket: u64,
        outcome: Outcome,
        context: Bytes,
    },
    Timer(u64),
    Close(u16),
}

/// What a call left behind.
#[derive(Default)]
pub struct CallOutput {
    /// The hook's return value (0 for hooks without one).
    pub code: i32,
    /// For `fg_on_message`: the message after the call, as given or as replaced (`replace`).
    pub payload: Bytes,
    pub close: Option<(u16, String)>,
    pub reject: Option<(u16, Bytes)>,
}

struct Hooks {
    on_message: TypedFunc<(i64, i32, i32, i32), i32>,
    on_open: Option<TypedFunc<i64, i32>>,
    on_result: Option<TypedFunc<(i64, i64, i32, i32), ()>>,
    on_timer: Option<TypedFunc<(i64, i64), ()>>,
    on_close: Option<TypedFunc<(i64, i32), ()>>,
    on_messages: Option<TypedFunc<(i64, i32), i32>>,
}

/// An instance ready for calls, of one version of the module.
pub(super) struct Warm {
    version: u64,
    /// The hooks its version exports.
    exports: Exports,
    store: Store<CallState>,
    hooks: Hooks,
}

/// Makes an instance of `version` and runs its `fg_init` with `config`, the route's `sinks` in view.
pub(super) fn instantiate(
    host: &FilterHost,
    version: &ModuleVersion,
    config: Bytes,
    sinks: Arc<[String]>,
    limits: &Limits,
    filter: Arc<str>,
) -> Result<Warm, String> {
    let metrics = Some(host.metrics.filter(&filter));
    let state = CallState {
        store: host.store(&filter),
        limits: StoreLimitsBuilder::new()
            .memory_size(limits.memory_bytes)
            .trap_on_grow_failure(true)
            .instances(1)
            .build(),
        config,
        conn: ConnState {
            sinks,
            ..ConnState::default()
        },
        filter,
        metrics,
        ..CallState::default()
    };
    let mut store = Store::new(&host.engine, state);
    store.limiter(|s| &mut s.limits);
    store.epoch_deadline_callback(at_epoch_deadline);
    // `fg_init` keeps its worker: its whole deadline is one epoch deadline (every config's
    // `fg_init` ran once at load, where one that spins is refused).
    store.set_epoch_deadline(limits.timeout_ms);
    let instance = version.pre.instantiate(&mut store).map_err(|e| format!("{e:#}"))?;
    store.data_mut().memory = instance.get_memory(&mut store, "memory");
    let exports = version.exports;
    let hooks = Hooks {
        on_message: typed(&instance, &mut store, "fg_on_message", true)?.expect("checked at load"),
        on_open: typed(&instance, &mut store, "fg_on_open", exports.open)?,
        on_result: typed(&instance, &mut store, "fg_on_result", exports.result)?,
        on_timer: typed(&instance, &mut store, "fg_on_timer", exports.timer)?,
        on_close: typed(&instance, &mut store, "fg_on_close", exports.close)?,
        on_messages: typed(&instance, &mut store, "fg_on_messages", exports.batch)?,
    };
    if let Some(init) = typed::<i32, i32>(&instance, &mut store, "fg_init", exports.init)? {
        let len = store.data().config.len() as i32;
        match init.call(&mut store, len) {
            Ok(0) => {}
            Ok(code) => {
                let why = store.data_mut().init_complaint.take().unwrap_or_default();
                return Err(format!("fg_init refused the config (returned {code}) {why}")
                    .trim_end()
                    .to_string());
            }
            Err(e) => return Err(describe(&e).1),
        }
    }
    let state = store.data_mut();
    state.config = Bytes::new();
    // What `fg_init` set was on a connection of its own: no call may roll back to it.
    state.meta_before = None;
    Ok(Warm {
        version: version.id,
        exports,
        store,
        hooks,
    })
}

/// Ticks (milliseconds) a hook call runs on its worker thread; past them it hands the worker's
/// other connections to another thread and runs on alone, until its deadline.
const HANDOFF_TICKS: u64 = 2;

/// What a hook that reached an epoch deadline does: at the first, a long hook call leaves the
/// worker thread it runs on (`block_in_place`: the worker's other connections go on on another
/// thread, so a filter that spins holds only its own connection) and runs on for the rest of
/// its time; at the second, or during `fg_init`, it is cut off.
fn at_epoch_deadline(mut store: wasmtime::StoreContextMut<'_, CallState>) -> wasmtime::Result<UpdateDeadline> {
    match store.data_mut().ticks_after_handoff.take() {
        Some(rest) => {
            if let Ok(runtime) = tokio::runtime::Handle::try_current()
                && runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
            {
                tokio::task::block_in_place(|| await_another_thread(&runtime));
            }
            Ok(UpdateDeadline::Continue(rest))
        }
        None => Ok(UpdateDeadline::Interrupt),
    }
}

/// Waits until the runtime runs a task of ours elsewhere: then the worker this thread gave up
/// (`block_in_place`) has been taken by another thread, and it stays there when the call goes
/// on (a `block_in_place` that returns before that takes its worker back). Bounded: a runtime
/// too busy to answer gets the worker back after a while, as before.
fn await_another_thread(runtime: &tokio::runtime::Handle) {
    let (ran, running) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = ran.send(());
    });
    let _ = running.recv_timeout(std::time::Duration::from_millis(20));
}

/// An export as a typed function, when the module has it (types were checked at load).
fn typed<P: WasmParams, R: WasmResults>(
    instance: &Instance,
    store: &mut Store<CallState>,
    name: &str,
    exported: bool,
) -> Result<Option<TypedFunc<P, R>>, String> {
    if !exported {
        return Ok(None);
    }
    instance
        .get_typed_func(store, name)
        .map(Some)
        .map_err(|e| format!("{e:#}"))
}

/// Sorts a failed call into timeout, memory or trap, with a readable message.
fn describe(error: &wasmtime::Error) -> (&'static str, String) {
    // The outer error is "error while executing at wasm backtrace: ..."; the cause says why.
    let cause = error.root_cause().to_string();
    if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        return ("timeout", "ran past its deadline".into());
    }
    if cause.contains("forcing trap when growing memory") {
        return ("memory", "grew past its memory limit".into());
    }
    ("trap", cause)
}

pub struct FilterSlot {
    pub name: Arc<str>,
    pub on_error: OnError,
    host: Arc<FilterHost>,
    module: Arc<ArcSwap<ModuleVersion>>,
    config: Bytes,
    /// The route's sinks, which `fg_init` sees.
    sinks: Arc<[String]>,
    limits: Limits,
    metrics: Arc<FilterMetrics>,
    /// The module's breaker, shared by every route that runs it.
    breaker: Arc<Breaker>,
    pool: Mutex<Vec<Warm>>,
}

impl FilterSlot {
    pub fn new(
        host: &Arc<FilterHost>,
        filter: &FilterRef,
        sinks: &Arc<[String]>,
    ) -> Result<FilterSlot, super::LoadError> {
        let config = filter.config_json();
        let init = InitWith {
            config: config.clone(),
            sinks: sinks.clone(),
        };
        let module = host.module(&filter.module, &init)?;
        Ok(FilterSlot {
            name: filter.module.as_str().into(),
            on_error: filter.on_error,
            host: host.clone(),
            module,
            config: config.into(),
            sinks: sinks.clone(),
            limits: Limits {
                timeout_ms: filter.timeout_ms,
                memory_bytes: (filter.memory_limit_mb as usize) << 20,
            },
            metrics: host.metrics.filter(&filter.module),
            breaker: host.breaker(&filter.module),
            pool: Mutex::default(),
        })
    }

    /// Takes a warm instance of the current version, or makes one.
    fn take(&self, current: &ModuleVersion) -> Result<Warm, FilterFailure> {
        {
            let mut pool = self.pool.lock().unwrap();
            while let Some(warm) = pool.pop() {
                if warm.version == current.id {
                    return Ok(warm);
                }
                // An older version: dropped here, lazily, at the first call after a swap.
            }
        }
        instantiate(
            &self.host,
            current,
            self.config.clone(),
            self.sinks.clone(),
            &self.limits,
            self.name.clone(),
        )
        .map_err(|message| {
            self.metrics.failure("init");
            FilterFailure {
                filter: self.name.clone(),
                kind: "init",
                message,
            }
        })
    }

    /// Counts a failed call towards the breaker; opening it is logged and shown.
    fn breaker_failed(&self) {
        if self.breaker.failed(Instant::now()) == Some(Transition::Opened) {
            self.metrics.breaker_open.set(1);
            self.metrics.breaker_trips.inc();
            tracing::error!(
                filter = &*self.name,
                "circuit breaker open: the filter failed repeatedly; its routes answer per on_error without calling it for a while"
            );
        }
    }

    /// Whether the module that serves (the leased instance's, or the current one) exports
    /// `fg_on_messages`.
    pub(super) fn batches(&self, leased: Option<&Warm>) -> bool {
        match leased {
            Some(warm) => warm.exports.batch,
            None => self.module.load().exports.batch,
        }
    }

    /// Gives a leased instance back to the pool (kept only while the pool has room).
    pub(super) fn release(&self, leased: &mut Option<Warm>) {
        let Some(warm) = leased.take() else { return };
        let mut pool = self.pool.lock().unwrap();
        if pool.len() < self.host.pool_size {
            pool.push(warm);
        }
    }

    /// Runs one hook with the connection's state lent to the instance; a call that succeeds hands
    /// its effects, in order, to `effect`. The instance is the one in `leased`, or one taken from
    /// the pool and left there for the caller's next calls (it gives it back with `release`);
    /// a call that fails drops it. A long call leaves its worker thread to the other connections
    /// (`at_epoch_deadline`), until its `timeout_ms`.
    pub(super) fn call(
        &self,
        leased: &mut Option<Warm>,
        conn: &mut ConnState,
        call: HookCall,
        effect: &mut dyn FnMut(Effect),
    ) -> Result<CallOutput, FilterFailure> {
        let wanted: fn(Exports) -> bool = match &call {
            HookCall::Message { .. } => |_| true,
            HookCall::Open => |exports| exports.open,
            HookCall::Result { .. } => |exports| exports.result,
            HookCall::Timer(_) => |exports| exports.timer,
            HookCall::Close(_) => |exports| exports.close,
        };
        let invoke = |hooks: &Hooks, store: &mut Store<CallState>, conn_id: i64| match call {
            HookCall::Open => {
                store.data_mut().hook = Hook::Open;
                match &hooks.on_open {
                    Some(f) => f.call(&mut *store, conn_id),
                    None => Ok(0),
                }
            }
            HookCall::Message { dir, opcode, payload } => {
                let state = store.data_mut();
                state.hook = Hook::Message;
                state.opcode = Some(opcode);
                let len = payload.len() as i32;
                state.payload = payload;
                hooks.on_message.call(&mut *store, (conn_id, dir, opcode as i32, len))
            }
            HookCall::Result {
                ticket,
                outcome,
                context,
            } => {
                let state = store.data_mut();
                state.hook = Hook::Result;
                let (status, detail) = match outcome {
                    Ok(id) => (0, id),
                    Err(reason) => (1, reason.to_string()),
                };
                let len = detail.len() as i32;
                state.result = Some(detail.into());
                state.context = Some(context);
                match &hooks.on_result {
                    Some(f) => f.call(&mut *store, (conn_id, ticket as i64, status, len)).map(|()| 0),
                    None => Ok(0),
                }
            }
            HookCall::Timer(timer) => {
                store.data_mut().hook = Hook::Timer;
                match &hooks.on_timer {
                    Some(f) => f.call(&mut *store, (conn_id, timer as i64)).map(|()| 0),
                    None => Ok(0),
                }
            }
            HookCall::Close(code) => {
                store.data_mut().hook = Hook::Close;
                match &hooks.on_close {
                    Some(f) => f.call(&mut *store, (conn_id, code as i32)).map(|()| 0),
                    None => Ok(0),
                }
            }
        };
        let output = self.run(leased, conn, wanted, invoke, effect)?;
        Ok(output.unwrap_or_default())
    }

    /// Runs `fg_on_messages` over `batch`: one call for every message in it, handed out by
    /// `next`; what became of each is in `batch.handled`. `Ok(None)` when the module that serves
    /// has no such hook, or its breaker is not closed: the caller runs the messages one by one.
    /// A call that fails is counted as any; the messages it finished stand (their effects and
    /// metadata are kept), and the one in hand, if any, is the one that failed.
    pub(super) fn call_batch(
        &self,
        leased: &mut Option<Warm>,
        conn: &mut ConnState,
        dir: i32,
        batch: &mut Batch,
        effect: &mut dyn FnMut(Effect),
    ) -> Result<Option<i32>, FilterFailure> {
        if !self.breaker.closed() {
            return Ok(None);
        }
        let invoke = |hooks: &Hooks, store: &mut Store<CallState>, conn_id: i64| {
            let state = store.data_mut();
            state.hook = Hook::Message;
            batch.timeout_ms = self.limits.timeout_ms;
            state.batch = Some(std::mem::take(batch));
            let on_messages = hooks.on_messages.as_ref().expect("called only when exported");
            let result = on_messages.call(&mut *store, (conn_id, dir));
            *batch = store.data_mut().take_batch(result.as_ref().ok().copied());
            result
        };
        let output = self.run(leased, conn, |exports| exports.batch, invoke, effect)?;
        Ok(output.map(|output| output.code))
    }

    /// Runs a hook the module serving exports (`wanted`; `Ok(None)` when it has not) with
    /// `invoke`, the connection's state lent to the instance.
    fn run(
        &self,
        leased: &mut Option<Warm>,
        conn: &mut ConnState,
        wanted: impl FnOnce(Exports) -> bool,
        invoke: impl FnOnce(&Hooks, &mut Store<CallState>, i64) -> wasmtime::Result<i32>,
        effect: &mut dyn FnMut(Effect),
    ) -> Result<Option<CallOutput>, FilterFailure> {
        // The TSC, calibrated (quanta): a call is timed for `filter_call_seconds`, and two readings
        // of the system's clock cost as much as a short call in a virtual machine.
        let started = quanta::Instant::now();
        // The hooks of the version that serves: a leased instance's (current when it was taken:
        // a swap applies from the caller's next lease), or the current one, loaded once here.
        let current = leased.is_none().then(|| self.module.load());
        let exports = match (&*leased, &current) {
            (Some(warm), _) => warm.exports,
            (None, Some(current)) => current.exports,
            (None, None) => unreachable!("loaded when nothing is leased"),
        };
        if !wanted(exports) {
            return Ok(None);
        }
        // The breaker's clock, read only when it is not closed: a success then tells it when the
        // call began (a call that began before the breaker opened closes nothing).
        let breaker_started = (!self.breaker.closed()).then(Instant::now);
        if breaker_started.is_some_and(|now| !self.breaker.admits(now)) {
            self.metrics.failure("breaker_open");
            return Err(FilterFailure {
                filter: self.name.clone(),
                kind: "breaker_open",
                message: "not called: its circuit breaker is open after repeated failures".into(),
            });
        }
        let warm = match leased {
            Some(warm) => warm,
            None => {
                let current = current.as_deref().expect("loaded when nothing is leased");
                leased.insert(self.take(current).inspect_err(|_| self.breaker_failed())?)
            }
        };
        // A call that fails leaves no trace: its effects are dropped, and so are its changes to
        // the connection (the metadata as it was is kept by `meta_set`, when it first changes).
        let handles_before = conn.handles;
        let state = warm.store.data_mut();
        std::mem::swap(&mut state.conn, conn);
        let timeout = self.limits.timeout_ms;
        state.ticks_after_handoff = (timeout > HANDOFF_TICKS).then(|| timeout - HANDOFF_TICKS);
        let conn_id = state.conn.id as i64;
        let hooks = &warm.hooks;
        let store = &mut warm.store;
        store.set_epoch_deadline(timeout.min(HANDOFF_TICKS));
        let result = invoke(hooks, store, conn_id);
        self.metrics.call_seconds.observe(started.elapsed());
        let state = warm.store.data_mut();
        state.ticks_after_handoff = None;
        std::mem::swap(&mut state.conn, conn);
        let meta_before = state.meta_before.take();
        let finished = state.finished.take();
        let output = CallOutput {
            code: 0,
            payload: std::mem::take(&mut state.payload),
            close: state.close.take(),
            reject: state.reject.take(),
        };
        state.replaced = false;
        state.opcode = None;
        state.result = None;
        state.context = None;
        // Drained, not taken: the instance keeps the vector's room for its next call.
        let effects = state.effects.drain(..);
        match result {
            Ok(code) => {
                effects.for_each(effect);
                if breaker_started.is_some_and(|began| self.breaker.succeeded(began) == Some(Transition::Closed)) {
                    self.metrics.breaker_open.set(0);
                    tracing::info!(filter = &*self.name, "circuit breaker closed: the filter answers again");
                }
                Ok(Some(CallOutput { code, ..output }))
            }
            Err(error) => {
                // What a batch call finished stands; the rest of what it asked for is dropped.
                match finished {
                    Some(finished) => {
                        effects.take(finished.effects).for_each(effect);
                        if let Some(meta) = finished.meta.or(meta_before) {
                            conn.meta = meta;
                        }
                        conn.handles = finished.handles;
                    }
                    None => {
                        drop(effects);
                        if let Some(meta) = meta_before {
                            conn.meta = meta;
                        }
                        conn.handles = handles_before;
                    }
                }
                // The instance may be in any state: it is dropped, a fresh one serves the next call.
                *leased = None;
                let (kind, message) = describe(&error);
                conn.note(&self.name, || Note::Failed {
                    kind,
                    message: message.clone(),
                });
                self.metrics.failure(kind);
                tracing::warn!(
                    filter = &*self.name,
                    conn = conn_id,
                    kind,
                    "filter call cut off: {message}"
                );
                self.breaker_failed();
                Err(FilterFailure {
                    filter: self.name.clone(),
                    kind,
                    message,
                })
            }
        }
    }
}
