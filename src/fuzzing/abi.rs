//! The ABI boundary (src/filter/abi.rs): a guest calls every `framegate` import with pointers,
//! lengths and values from the input, in any hook, against the host's own imports (`define`).
//! The host answers an error code or traps cleanly (a pointer outside the guest's memory is the
//! only trap the imports make); it never panics, and what a call leaves behind keeps the
//! host's rules (a replaced message within the size limit, close codes 1000-4999, handles
//! within their cap).

use std::sync::OnceLock;

use crate::filter::abi::{self, CallState, ConnState, Hook};
use crate::types::{MetaLimit, Opcode};
use arbitrary::{Arbitrary, Unstructured};
use wasmtime::{Engine, Func, InstancePre, Linker, Module, Store, Val, ValType};

/// Every import: its name and its parameters and result, as docs/abi.md lists them.
const IMPORTS: &[(&str, &str, &str)] = &[
    ("buf_len", "i32", "i32"),
    ("read", "i32 i32 i32 i32", "i32"),
    ("replace", "i32 i32", "i32"),
    ("meta_get", "i32 i32 i32 i32", "i32"),
    ("meta_keys", "i32 i32 i32 i32", "i32"),
    ("sink_names", "i32 i32 i32 i32", "i32"),
    ("meta_set", "i32 i32 i32 i32", "i32"),
    ("send", "i32 i32 i32", "i32"),
    ("emit", "i32 i32 i32 i32 i32 i32 i32 i32 i32 i32", "i64"),
    ("subscribe", "i32 i32 i32 i32", "i64"),
    ("ack", "i64 i32 i32", "i32"),
    ("nack", "i64 i32 i32", "i32"),
    ("unsubscribe", "i64", "i32"),
    ("hold", "i32", "i32"),
    ("set_timer", "i32", "i64"),
    ("cancel_timer", "i64", "i32"),
    ("now_ms", "", "i64"),
    ("close", "i32 i32 i32", "i32"),
    ("reject", "i32 i32 i32", "i32"),
    ("log", "i32 i32 i32", "i32"),
    ("metric", "i32 i32 i32 f64", "i32"),
    ("store_get", "i32 i32 i32 i32", "i32"),
    ("store_set", "i32 i32 i32 i32", "i32"),
    ("store_keys", "i32 i32 i32 i32", "i32"),
    ("store_first", "i32 i32 i32 i32", "i32"),
    ("store_add", "i32 i32 i64", "i64"),
];

/// The guest's memory: one page, which cannot grow.
const MEMORY: usize = 65536;

/// The guest: each import, and an export `NAME` that calls it with its own arguments.
fn guest() -> String {
    let mut wat = String::from("(module\n");
    for (name, params, result) in IMPORTS {
        wat += &format!("(import \"framegate\" \"{name}\" (func ${name} (param {params}) (result {result})))\n");
    }
    wat += "(memory (export \"memory\") 1 1)\n";
    for (name, params, result) in IMPORTS {
        let args: String = (0..params.split_whitespace().count())
            .map(|i| format!("local.get {i} "))
            .collect();
        wat += &format!("(func (export \"{name}\") (param {params}) (result {result}) {args} call ${name})\n");
    }
    wat + ")"
}

fn guest_pre() -> &'static (Engine, InstancePre<CallState>) {
    static PRE: OnceLock<(Engine, InstancePre<CallState>)> = OnceLock::new();
    PRE.get_or_init(|| {
        let engine = Engine::default();
        let module = Module::new(&engine, guest()).expect("the guest compiles");
        let mut linker = Linker::new(&engine);
        abi::define(&mut linker).expect("the imports");
        let pre = linker.instantiate_pre(&module).expect("every import defined");
        (engine, pre)
    })
}

/// A pointer or length: mostly near the guest's data or the end of its memory, some anything.
fn int32(u: &mut Unstructured) -> arbitrary::Result<i32> {
    Ok(match u.int_in_range(0..=5)? {
        0 => u.int_in_range(0..=64)?,
        1 => u.int_in_range(0..=4096)?,
        2 => MEMORY as i32 - u.int_in_range(-64..=64)?,
        3 => -u.int_in_range(1..=2)?,
        4 => u.int_in_range(1000..=5000)?,
        _ => i32::arbitrary(u)?,
    })
}

fn run(u: &mut Unstructured) -> arbitrary::Result<()> {
    let (engine, pre) = guest_pre();
    let hooks = [
        Hook::Init,
        Hook::Open,
        Hook::Message,
        Hook::Result,
        Hook::Timer,
        Hook::Close,
    ];
    let buffer = |u: &mut Unstructured| -> arbitrary::Result<Option<bytes::Bytes>> {
        Ok(Option::<Vec<u8>>::arbitrary(u)?.map(Into::into))
    };
    let max_message_size = u.int_in_range(0..=4096)?;
    let mut meta = std::collections::BTreeMap::new();
    for _ in 0..u.int_in_range(0..=4)? {
        meta.insert(String::arbitrary(u)?, Vec::<u8>::arbitrary(u)?.into());
    }
    let state = CallState {
        hook: *u.choose(&hooks)?,
        opcode: *u.choose(&[None, Some(Opcode::Text), Some(Opcode::Binary)])?,
        payload: buffer(u)?.unwrap_or_default(),
        config: buffer(u)?.unwrap_or_default(),
        result: buffer(u)?,
        context: buffer(u)?,
        conn: ConnState {
            id: 7,
            meta: meta.into(),
            sinks: ["s".to_string(), "sink".to_string()].into(),
            sources: ["bus".to_string()].into(),
            max_message_size,
            meta_limit: MetaLimit { keys: 8, bytes: 512 },
            ..ConnState::default()
        },
        ..CallState::default()
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limits);
    let instance = pre.instantiate(&mut store).expect("the guest instantiates");
    let memory = instance.get_memory(&mut store, "memory").expect("a memory");
    store.data_mut().memory = Some(memory);
    let image_len = u.int_in_range(0..=4096)?;
    let image = u.bytes(image_len)?;
    memory.write(&mut store, 0, image).expect("within one page");

    let funcs: Vec<Func> = (IMPORTS.iter())
        .map(|(name, _, _)| instance.get_func(&mut store, name).expect("exported"))
        .collect();
    for _ in 0..u.int_in_range(1..=32)? {
        let func = *u.choose(&funcs)?;
        let ty = func.ty(&store);
        let mut args = Vec::new();
        for param in ty.params() {
            args.push(match param {
                ValType::I32 => Val::I32(int32(u)?),
                ValType::I64 => Val::I64(match u.ratio(1, 2)? {
                    true => u.int_in_range(-2..=64)?,
                    false => i64::arbitrary(u)?,
                }),
                ValType::F64 => Val::F64(f64::arbitrary(u)?.to_bits()),
                other => unreachable!("no import takes {other}"),
            });
        }
        let mut result = [Val::I32(0)];
        if let Err(trap) = func.call(&mut store, &args, &mut result) {
            let why = format!("{trap:?}");
            assert!(why.contains("outside its memory"), "an unexpected trap: {why}");
            // As framegate does: a trapped instance is thrown away.
            return Ok(());
        }
        let state = store.data();
        if state.replaced {
            assert!(
                state.payload.len() <= max_message_size,
                "a replaced message over the limit"
            );
        }
        if let Some((code, reason)) = &state.close {
            assert!((1000..=4999).contains(code) && reason.len() <= 123);
        }
        assert!(state.conn.handles <= 1024, "handles past their cap");
    }
    Ok(())
}

/// One input: panics on what must not happen.
pub fn check(data: &[u8]) {
    let _ = run(&mut Unstructured::new(data));
}
