//! The module's exports: [`export_filter!`](crate::export_filter) and the glue it expands to,
//! which turns the ABI's integers into the SDK's types and back. Not for direct use.

use crate::{Conn, Filter, Level, Message, Open, SinkResult, Verdict, log, read_buffer, sys};
use std::cell::RefCell;
use std::thread::LocalKey;

/// Where an instance keeps its one filter value (a plain static on wasm32, which has no threads).
pub type Slot<F> = LocalKey<RefCell<Option<F>>>;

fn with<F: Filter, R>(slot: &'static Slot<F>, f: impl FnOnce(&mut F) -> R) -> R {
    slot.with(|cell| f(cell.borrow_mut().get_or_insert_with(F::default)))
}

pub fn init<F: Filter>(slot: &'static Slot<F>, config_len: i32) -> i32 {
    let config = read_buffer(sys::BUF_CONFIG, config_len.max(0) as usize);
    let mut filter = F::default();
    match filter.init(&config) {
        Ok(()) => {
            slot.with(|cell| *cell.borrow_mut() = Some(filter));
            0
        }
        Err(reason) => {
            // Logged at error level during fg_init, it becomes the load error's text.
            log(Level::Error, &reason);
            1
        }
    }
}

pub fn on_open<F: Filter>(slot: &'static Slot<F>, conn: i64) -> i32 {
    with(slot, |f| match f.on_open(&Conn::new(conn)) {
        Open::Accept => 0,
        Open::Reject => 1,
    })
}

fn code(verdict: Verdict) -> i32 {
    match verdict {
        Verdict::Continue => 0,
        Verdict::Drop => 1,
        Verdict::Close => 2,
    }
}

pub fn on_message<F: Filter>(slot: &'static Slot<F>, conn: i64, dir: i32, opcode: i32, len: i32) -> i32 {
    let mut message = Message::new(dir, opcode, len);
    with(slot, |f| code(f.on_message(&Conn::new(conn), &mut message)))
}

/// Every message of a batch through [`Filter::on_message`], one at a time: `next` gives each
/// one's verdict and takes the next, so the host is called once for the lot.
pub fn on_messages<F: Filter>(slot: &'static Slot<F>, conn: i64, dir: i32) -> i32 {
    let conn = Conn::new(conn);
    with(slot, |f| {
        let mut verdict = 0;
        loop {
            // SAFETY: no pointers.
            let next = unsafe { sys::next(verdict) };
            if next < 0 {
                return 0;
            }
            let mut message = Message::new(dir, (next >> 32) as i32, next as u32 as i32);
            verdict = code(f.on_message(&conn, &mut message));
        }
    })
}

pub fn on_result<F: Filter>(slot: &'static Slot<F>, conn: i64, ticket: i64, status: i32, len: i32) {
    // SAFETY: no pointers.
    let context_len = unsafe { sys::buf_len(sys::BUF_CONTEXT) }.max(0) as usize;
    let result = SinkResult {
        ticket: ticket as u64,
        ok: status == 0,
        detail: read_buffer(sys::BUF_RESULT, len.max(0) as usize),
        context: read_buffer(sys::BUF_CONTEXT, context_len),
    };
    with(slot, |f| f.on_result(&Conn::new(conn), result));
}

pub fn on_timer<F: Filter>(slot: &'static Slot<F>, conn: i64, timer: i64) {
    with(slot, |f| f.on_timer(&Conn::new(conn), timer as u64));
}

pub fn on_close<F: Filter>(slot: &'static Slot<F>, conn: i64, code: i32) {
    with(slot, |f| f.on_close(&Conn::new(conn), code as u16));
}

/// Exports a [`Filter`] type as a framegate module: every hook of ABI v1 (with
/// `fg_on_messages`, which runs a batch of messages through [`Filter::on_message`]), and the
/// `fg_abi_v1` marker. Use it once per crate, on a `Default` type; each instance of the module
/// keeps one value of it, made by `Default` then [`Filter::init`].
///
/// ```no_run
/// use framegate_guest::{export_filter, Conn, Filter, Message, Verdict};
///
/// #[derive(Default)]
/// struct PassThrough;
///
/// impl Filter for PassThrough {
///     fn on_message(&mut self, _conn: &Conn, _message: &mut Message) -> Verdict {
///         Verdict::Continue
///     }
/// }
///
/// export_filter!(PassThrough);
/// ```
#[macro_export]
macro_rules! export_filter {
    ($filter:ty) => {
        ::std::thread_local! {
            static FRAMEGATE_FILTER: ::std::cell::RefCell<::std::option::Option<$filter>> =
                const { ::std::cell::RefCell::new(::std::option::Option::None) };
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn fg_abi_v1() {}

        #[unsafe(no_mangle)]
        pub extern "C" fn fg_init(config_len: i32) -> i32 {
            $crate::export::init(&FRAMEGATE_FILTER, config_len)
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn fg_on_open(conn: i64) -> i32 {
            $crate::export::on_open(&FRAMEGATE_FILTER, conn)
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn fg_on_message(conn: i64, dir: i32, opcode: i32, len: i32) -> i32 {
            $crate::export::on_message(&FRAMEGATE_FILTER, conn, dir, opcode, len)
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn fg_on_messages(conn: i64, dir: i32) -> i32 {
            $crate::export::on_messages(&FRAMEGATE_FILTER, conn, dir)
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn fg_on_result(conn: i64, ticket: i64, status: i32, len: i32) {
            $crate::export::on_result(&FRAMEGATE_FILTER, conn, ticket, status, len)
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn fg_on_timer(conn: i64, timer: i64) {
            $crate::export::on_timer(&FRAMEGATE_FILTER, conn, timer)
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn fg_on_close(conn: i64, code: i32) {
            $crate::export::on_close(&FRAMEGATE_FILTER, conn, code)
        }
    };
}
