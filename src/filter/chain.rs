//! A route's ordered filters: runs a hook through them in the right order, applies each
//! filter's failure policy, and gathers the effects tagged with the filter that made them.

use std::sync::Arc;

use bytes::Bytes;

use super::abi::{Batch, ConnState, Effect};
use super::slot::{CallOutput, FilterFailure, FilterSlot, HookCall, Warm};
use super::{FilterHost, LoadError};
use crate::config::{FilterRef, OnError};
use crate::types::{MessageMeta, Meta, Opcode};

/// Close code when a `fail_closed` filter fails.
const INTERNAL_ERROR: u16 = 1011;

/// What becomes of a message after the chain.
#[derive(Debug)]
pub enum Verdict {
    Deliver { opcode: Opcode, payload: Bytes },
    Drop,
    Close(u16, String),
}

/// What became of one message of a batch: its verdict, how many of the effects had been asked
/// for by its end, and the connection's metadata then (what its records carry; `None` when the
/// call had not changed it yet).
#[derive(Debug)]
pub struct Done {
    pub verdict: Verdict,
    pub effects_end: usize,
    pub meta: Option<Meta>,
}

/// An effect and the position of the filter that asked for it (results and timers go back there).
#[derive(Debug)]
pub struct ChainEffect {
    pub filter: usize,
    pub effect: Effect,
}

#[derive(Default)]
pub struct Chain {
    slots: Vec<FilterSlot>,
}

/// Warm instances a caller keeps for a run of calls, one place per filter of a chain: a session
/// takes them at its first call after a wait and gives them back (`Chain::release`) before it
/// waits again, so a message costs no trip through the pools. Dropped without `release`, its
/// instances are dropped, not reused.
#[derive(Default)]
pub struct Lease {
    warm: Vec<Option<Warm>>,
}

impl Chain {
    /// The chain of `filters`, on a route whose filters may `emit` to `sinks`.
    pub fn build(host: &Arc<FilterHost>, filters: &[FilterRef], sinks: &Arc<[String]>) -> Result<Chain, LoadError> {
        let slots = filters
            .iter()
            .map(|f| FilterSlot::new(host, f, sinks))
            .collect::<Result<_, _>>()?;
        Ok(Chain { slots })
    }

    /// Gives the lease's instances back to their pools.
    pub fn release(&self, lease: &mut Lease) {
        for (slot, leased) in self.slots.iter().zip(&mut lease.warm) {
            slot.release(leased);
        }
    }

    /// Runs `f` with a lease given back at the end: for callers that make one call at a time.
    pub fn leasing<R>(&self, f: impl FnOnce(&mut Lease) -> R) -> R {
        let mut lease = Lease::default();
        let result = f(&mut lease);
        self.release(&mut lease);
        result
    }

    /// Calls one filter; `Ok(None)` when it failed open and is to be skipped.
    fn call(
        &self,
        lease: &mut Lease,
        index: usize,
        conn: &mut ConnState,
        call: HookCall,
        effects: &mut Vec<ChainEffect>,
    ) -> Result<Option<CallOutput>, FilterFailure> {
        if lease.warm.len() < self.slots.len() {
            lease.warm.resize_with(self.slots.len(), || None);
        }
        let slot = &self.slots[index];
        match slot.call(&mut lease.warm[index], conn, call, &mut |effect| {
            effects.push(ChainEffect { filter: index, effect })
        }) {
            Ok(output) => Ok(Some(output)),
            Err(_) if slot.on_error == OnError::FailOpen => Ok(None),
            Err(failure) => Err(failure),
        }
    }

    /// Asks every filter, in order, whether the upgrade may go on: `Err` is the HTTP refusal.
    pub fn open(&self, conn: &mut ConnState) -> (Result<(), (u16, Bytes)>, Vec<ChainEffect>) {
        let mut effects = Vec::new();
        let verdict = self.leasing(|lease| {
            for index in 0..self.slots.len() {
                match self.call(lease, index, conn, HookCall::Open, &mut effects) {
                    Ok(Some(output)) if output.code != 0 => {
                        return Err(output.reject.unwrap_or((403, Bytes::new())));
                    }
                    Ok(_) => {}
                    Err(_) => return Err((500, Bytes::from_static(b"filter failed\n"))),
                }
            }
            Ok(())
        });
        (verdict, effects)
    }

    /// Runs a message through the chain: first to last from the client, last to first towards it.
    pub fn message(
        &self,
        conn: &mut ConnState,
        towards_client: bool,
        opcode: Opcode,
        payload: Bytes,
        message_meta: Option<MessageMeta>,
    ) -> (Verdict, Vec<ChainEffect>) {
        let mut effects = Vec::new();
        let verdict = self.leasing(|lease| {
            self.message_into(lease, conn, towards_client, opcode, payload, message_meta, &mut effects)
        });
        (verdict, effects)
    }

    /// `message` with the instances of `lease`, adding the effects to `effects`: a session
    /// passes the same lease and vector for every message it has read, so the hot path takes
    /// no lock and allocates nothing.
    #[allow(clippy::too_many_arguments)]
    pub fn message_into(
        &self,
        lease: &mut Lease,
        conn: &mut ConnState,
        towards_client: bool,
        opcode: Opcode,
        payload: Bytes,
        message_meta: Option<MessageMeta>,
        effects: &mut Vec<ChainEffect>,
    ) -> Verdict {
        conn.message_meta = message_meta;
        let verdict = self.through(lease, conn, towards_client, opcode, payload, effects);
        conn.message_meta = None;
        verdict
    }

    fn through(
        &self,
        lease: &mut Lease,
        conn: &mut ConnState,
        towards_client: bool,
        opcode: Opcode,
        mut payload: Bytes,
        effects: &mut Vec<ChainEffect>,
    ) -> Verdict {
        let last = self.slots.len().saturating_sub(1);
        for step in 0..self.slots.len() {
            let index = if towards_client { last - step } else { step };
            // The message is moved into the call and comes back in its output; a filter that
            // fails open is skipped with the message as it was.
            let kept = (self.slots[index].on_error == OnError::FailOpen).then(|| payload.clone());
            let call = HookCall::Message {
                dir: i32::from(towards_client),
                opcode,
                payload: std::mem::take(&mut payload),
            };
            let output = match self.call(lease, index, conn, call, effects) {
                Ok(Some(output)) => output,
                Ok(None) => {
                    payload = kept.unwrap_or_default();
                    continue;
                }
                Err(failure) => return failed(&failure),
            };
            if let Some(verdict) = self.judge(index, output.code, output.close) {
                return verdict;
            }
            payload = output.payload;
        }
        // A message keeps its opcode through the chain (`replace` checks text stays UTF-8).
        Verdict::Deliver { opcode, payload }
    }

    /// What `code`, filter `index`'s answer to a message, makes of it: `None` to go on.
    fn judge(&self, index: usize, code: i32, close: Option<(u16, String)>) -> Option<Verdict> {
        match code {
            0 => None,
            1 => Some(Verdict::Drop),
            2 => {
                let (code, reason) = close.unwrap_or((1000, String::new()));
                Some(Verdict::Close(code, reason))
            }
            other => {
                let failure = FilterFailure {
                    filter: self.slots[index].name.clone(),
                    kind: "verdict",
                    message: format!("fg_on_message returned {other}, expected 0, 1 or 2"),
                };
                Some(failed(&failure))
            }
        }
    }

    /// Whether runs of messages may go through in one call (`messages_into`): on a route of one
    /// filter whose module (the leased instance's, or the current one) exports `fg_on_messages`.
    /// Through several, each message goes through the whole chain before the next comes, as
    /// filters that share the connection's metadata expect.
    pub fn batches(&self, lease: &Lease) -> bool {
        match &self.slots[..] {
            [slot] => slot.batches(lease.warm.first().and_then(Option::as_ref)),
            _ => false,
        }
    }

    /// Runs the messages of `batch` (all one way) through the route's one filter in one call,
    /// when its module exports `fg_on_messages`: adds what became of each message it ran to
    /// `done`, in order, and answers how many it ran, from the first. The rest are the caller's
    /// to run one by one (unless a verdict closed the connection): all of them when the module
    /// lacks the hook, its breaker is open or there is only one, those after an early return or
    /// a failure. A failure on a message is that message's, as one by one: counted, and the
    /// filter's `on_error` applies to it.
    pub fn messages_into(
        &self,
        lease: &mut Lease,
        conn: &mut ConnState,
        towards_client: bool,
        batch: &mut Batch,
        done: &mut Vec<Done>,
        effects: &mut Vec<ChainEffect>,
    ) -> usize {
        if batch.messages.len() < 2 {
            return 0; // one call for one message saves nothing: `fg_on_message` takes it
        }
        if lease.warm.is_empty() {
            lease.warm.push(None);
        }
        let before = effects.len();
        let slot = &self.slots[0];
        let dir = i32::from(towards_client);
        let called = slot.call_batch(&mut lease.warm[0], conn, dir, batch, &mut |effect| {
            effects.push(ChainEffect { filter: 0, effect })
        });
        let failure = match called {
            Ok(None) => return 0,
            Ok(Some(_)) => None,
            Err(failure) => Some(failure),
        };
        let mut ran = batch.handled.len();
        for (handled, message) in batch.handled.drain(..).zip(&mut batch.messages) {
            let verdict = self
                .judge(0, handled.code, handled.close)
                .unwrap_or_else(|| Verdict::Deliver {
                    opcode: message.opcode,
                    payload: handled.replaced.unwrap_or_else(|| std::mem::take(&mut message.payload)),
                });
            let (effects_end, meta) = (before + handled.effects_end, handled.meta);
            done.push(Done {
                verdict,
                effects_end,
                meta,
            });
        }
        // The message in hand when the call failed is the one that failed.
        if let Some(failure) = failure
            && ran < batch.started
        {
            let message = &mut batch.messages[ran];
            let verdict = match slot.on_error {
                OnError::FailOpen => Verdict::Deliver {
                    opcode: message.opcode,
                    payload: std::mem::take(&mut message.payload),
                },
                _ => failed(&failure),
            };
            let (effects_end, meta) = (effects.len(), Some(conn.meta.clone()));
            done.push(Done {
                verdict,
                effects_end,
                meta,
            });
            ran += 1;
        }
        ran
    }

    /// Hands a hook that belongs to one filter (a result, a timer) to that filter.
    pub fn notify(
        &self,
        lease: &mut Lease,
        conn: &mut ConnState,
        filter: usize,
        call: HookCall,
    ) -> (Option<(u16, String)>, Vec<ChainEffect>) {
        let mut effects = Vec::new();
        if filter >= self.slots.len() {
            return (None, effects);
        }
        match self.call(lease, filter, conn, call, &mut effects) {
            Ok(Some(output)) => (output.close, effects),
            Ok(None) => (None, effects),
            Err(failure) => match failed(&failure) {
                Verdict::Close(code, reason) => (Some((code, reason)), effects),
                _ => (None, effects),
            },
        }
    }

    /// Tells every filter the connection ended; what they emit on the way out still goes.
    pub fn close(&self, conn: &mut ConnState, code: u16) -> Vec<ChainEffect> {
        let mut effects = Vec::new();
        self.leasing(|lease| {
            for index in 0..self.slots.len() {
                let _ = self.call(lease, index, conn, HookCall::Close(code), &mut effects);
            }
        });
        effects
    }
}

fn failed(failure: &FilterFailure) -> Verdict {
    let mut reason = format!("filter {} failed", failure.filter);
    reason.truncate(123);
    Verdict::Close(INTERNAL_ERROR, reason)
}
